"""Incremental NNC test material from a simulated federated training run (issue 4): a numpy MLP
(`mlp`), the FedAvg simulation that codes every update with nnr (`fl`) and the on-disk layout,
manifest and checksum verification (`writer`). Needs scikit-learn for the data set."""
from nnr.material.fl import VARIANT_FLAGS, MaterialConfig, MaterialConfigError, run
from nnr.material.writer import OutputExistsError, prepare_output_dir, verify, write_material

__all__ = ["MaterialConfig", "MaterialConfigError", "OutputExistsError", "VARIANT_FLAGS", "prepare_output_dir",
           "run", "verify", "write_material"]
