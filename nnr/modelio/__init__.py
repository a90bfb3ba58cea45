"""Model file input/output for nnr_encode / nnr_decode: PyTorch, safetensors, .npz and HDF5."""
from nnr.modelio.model import FORMATS, Model, detect_format, load_model, save_model

__all__ = ["Model", "load_model", "save_model", "detect_format", "FORMATS"]
