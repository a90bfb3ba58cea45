"""torch's CPU build for an interpreter: the version the tests, examples and the reference peer use.

A plain `pip install torch` takes a CUDA build of several GB on Linux; the CPU build is asked for by
its local version label (`2.13.0+cpu`), from a wheel pip already knows of (a find-links folder, a
local mirror) or else from PyTorch's CPU package index.
"""
import subprocess

TORCH_VERSION = "2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def installed_version(python):
    """torch.__version__ under `python`, or None."""
    r = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def install(python, *, log=print):
    """Install torch's CPU build into `python`'s environment unless a torch is already there."""
    have = installed_version(python)
    if have is not None:
        log(f"torch {have} already installed")
        return have
    pip = [python, "-m", "pip", "install", "-q"]
    if subprocess.run(pip + [f"torch=={TORCH_VERSION}+cpu"]).returncode != 0:
        log(f"torch=={TORCH_VERSION}+cpu is not on the configured indexes; trying {CPU_INDEX}")
        subprocess.run(pip + [f"torch=={TORCH_VERSION}", "--index-url", CPU_INDEX,
                              "--extra-index-url", "https://pypi.org/simple"], check=True)
    have = installed_version(python)
    if have is None:
        raise RuntimeError(f"torch is still not importable under {python} after installing it")
    log(f"torch {have} installed")
    return have
