"""Optional packages (onnx, torch, flwr, h5py, safetensors, ...) are imported lazily through here."""
import importlib

from nnr.errors import UnsupportedFeatureError


def import_optional(name, hint):
    """Import module `name`, or raise UnsupportedFeatureError "<hint> (<why the import failed>)"."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise UnsupportedFeatureError(f"{hint} ({exc})") from exc
