"""Federated learning on Flower with NNC incremental coding (ISO/IEC 15938-17): a client Mod and a
server strategy wrapper. flwr is optional (pip install "nnr[flower]") and imported on first use."""
from nnr.flower.codec import CoderStateError, UpdateReceiver, UpdateSender


def __getattr__(name):
    if name == "nnc_mod":
        from nnr.flower.mod import nnc_mod
        return nnc_mod
    if name == "NNCStrategy":
        from nnr.flower.strategy import NNCStrategy
        return NNCStrategy
    raise AttributeError(f"module 'nnr.flower' has no attribute {name!r}")


__all__ = ["nnc_mod", "NNCStrategy", "UpdateSender", "UpdateReceiver", "CoderStateError"]
