"""Incremental NNC test material from simulated federated training runs (issue 4): a numpy MLP on
scikit-learn's digits (`mlp`, `fl`; needs scikit-learn), the federated benchmark's Fashion-MNIST run
of its nnr method (`fashion`, `fashion_writer`; needs torch and the data set), and the on-disk
layout, manifest and checksum verification (`writer`)."""
from nnr.material.fl import VARIANT_FLAGS, MaterialConfig, MaterialConfigError, run
from nnr.material.writer import OutputExistsError, prepare_output_dir, verify, write_material

__all__ = ["MaterialConfig", "MaterialConfigError", "OutputExistsError", "VARIANT_FLAGS", "prepare_output_dir",
           "run", "verify", "write_material"]
