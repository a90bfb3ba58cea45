"""Import placeholders for the reference NNCodec 2.1.3 in its test venv (never loaded by nnr itself).

NNCodec imports torchvision, cv2, pandas and scikit-learn at module level, for its dataset, image
transform and report helpers only; the tensor and model coding that nnr's tests, benchmarks and
conformance runner drive never calls them. Installing those four (several hundred MB, and
torchvision must match torch's build) would only slow the peer's set-up down, so this file, put on
the peer's PYTHONPATH, makes them importable as placeholders: any attribute is a class that can be
built (NNCodec builds `transforms.Compose([...])` at import time) and subclassed, but using one of
its instances raises. Other scripts reuse the finder for their own package list
(`PlaceholderFinder(packages)`, e.g. bitstreams/nncodec-1.x-codebook1/generate.py for NNCodec 1.x).
"""
import importlib.abc
import importlib.machinery
import sys
import types

PLACEHOLDER_PACKAGES = ("torchvision", "cv2", "pandas", "sklearn")


class _PlaceholderType(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{cls.__module__}.{cls.__name__}", name)


class _Unavailable(metaclass=_PlaceholderType):
    """Stands in for any class, function or submodule of a placeholder package."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{type(self).__module__}.{type(self).__name__} is a placeholder in nnr's "
                           "NNCodec test venv (nnr/testenv/nncodec_stubs)")

    def __getattr__(self, name):
        self()


class _PlaceholderModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _placeholder(self.__name__, name)
        setattr(self, name, value)
        return value


def _placeholder(module, name):
    return _PlaceholderType(name, (_Unavailable,), {"__module__": module})


class PlaceholderFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the placeholder packages and every submodule below them."""

    def __init__(self, packages=PLACEHOLDER_PACKAGES):
        self.packages = tuple(packages)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".", 1)[0] not in self.packages:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        module = _PlaceholderModule(spec.name)
        module.__path__ = []
        module.__version__ = "0+nnr.placeholder"
        return module

    def exec_module(self, module):
        pass


if __name__ == "sitecustomize":          # loaded by the interpreter from PYTHONPATH, not imported by a script
    sys.meta_path.insert(0, PlaceholderFinder())
