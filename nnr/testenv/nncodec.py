"""The reference NNCodec 2.1.3 as a test peer: installed from PyPI into a venv of its own, found again.

NNCodec pins numpy<2 and imports torch, so it cannot share nnr's environment: tests, benchmarks and
`nnr_conformance run --decoder nncodec` drive it in a subprocess under its venv's interpreter, with
the placeholder modules of `nncodec_stubs/` on its PYTHONPATH. It is never a runtime dependency.

    python -m nnr.testenv.nncodec [--venv DIR]     # install (a no-op when it is already there)

The venv is `$NNR_NNCODEC_VENV`, else `nncodec-2.1.3` in nnr's cache folder
(`$XDG_CACHE_HOME/nnr`, default `~/.cache/nnr`), so fresh clones share one install.
"""
import argparse
import functools
import os
import subprocess
import sys
import venv

from nnr.testenv import torch_cpu

VERSION = "2.1.3"
STUBS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nncodec_stubs")
# NNCodec's own requirements minus what the stubs stand in for (torchvision, cv2, pandas, sklearn)
# and what the coding path never imports (ptflops, torchmetrics, Click, pybind11 at run time).
REQUIREMENTS = ("numpy<2", "tqdm", "h5py")
_SOURCE_TREE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cache_dir():
    """nnr's cache folder: $XDG_CACHE_HOME/nnr, default ~/.cache/nnr."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nnr")


def default_venv():
    """Where `install` puts the reference: $NNR_NNCODEC_VENV, else <cache>/nncodec-2.1.3."""
    return os.environ.get("NNR_NNCODEC_VENV") or os.path.join(cache_dir(), f"nncodec-{VERSION}")


def _python(venv_dir):
    return os.path.join(venv_dir, "Scripts" if os.name == "nt" else "bin",
                        "python.exe" if os.name == "nt" else "python")


def candidates():
    """Interpreters that may hold the reference, in the order they are tried."""
    found = [os.environ.get("NNR_NNCODEC_PYTHON"), _python(default_venv())]
    if os.path.exists(os.path.join(_SOURCE_TREE, "pyproject.toml")):      # a source checkout
        found.append(_python(os.path.join(_SOURCE_TREE, ".venv-nncodec")))
    return [p for p in found if p]


def works(python):
    """Whether `python` imports NNCodec's coder with the placeholders on its path."""
    if not os.path.exists(python):
        return False
    r = subprocess.run([python, "-c", "import nncodec.nnc, nncodec.tensor"], env=peer_env(),
                       capture_output=True, timeout=300)
    return r.returncode == 0


def peer_env():
    """The environment a peer process runs in: the placeholders on PYTHONPATH."""
    env = dict(os.environ, PYTHONPATH=STUBS)
    env.pop("OPENBLAS_CORETYPE", None)
    return env


@functools.lru_cache(maxsize=None)
def find_reference():
    """((python, stubs folder), None) for an installed reference, else (None, reason)."""
    for python in candidates():
        if works(python):
            return (os.path.abspath(python), STUBS), None
    return None, (f"the reference NNCodec {VERSION} is not installed: run `python -m nnr.testenv.nncodec` "
                  f"(installs it into {default_venv()}), or set NNR_NNCODEC_PYTHON to its venv's python")


def install(venv_dir=None, *, log=print):
    """Install NNCodec 2.1.3 into `venv_dir` unless it works there already (without `venv_dir`:
    unless find_reference() finds it, else into default_venv()); returns the venv's python. Takes 3-5 minutes on 2 cores (NNCodec compiles a C++ extension)."""
    if venv_dir is None:
        found, _ = find_reference()
        if found is not None:
            log(f"NNCodec {VERSION} already installed: {found[0]}")
            return found[0]
    venv_dir = os.path.abspath(venv_dir or default_venv())
    python = _python(venv_dir)
    if works(python):
        log(f"NNCodec {VERSION} already installed in {venv_dir}")
        return python
    log(f"installing NNCodec {VERSION} into {venv_dir} (3-5 minutes)")
    venv.EnvBuilder(with_pip=True, clear=os.path.exists(venv_dir)).create(venv_dir)
    torch_cpu.install(python, log=log)
    pip = [python, "-m", "pip", "install", "-q"]
    subprocess.run(pip + list(REQUIREMENTS), check=True)
    subprocess.run(pip + ["--no-deps", f"nncodec=={VERSION}"], check=True)
    if not works(python):
        raise RuntimeError(f"NNCodec {VERSION} was installed into {venv_dir} but does not import")
    _smoke_test(python, log)
    find_reference.cache_clear()
    return python


_SMOKE = """
import tempfile, numpy as np
from nncodec.tensor import encode, decode
x = np.random.RandomState(0).randn(64, 64).astype(np.float32)
with tempfile.TemporaryDirectory() as d:
    bs = encode(x, {"results": d, "verbose": False})
y = decode(bs)
print(f"{len(bs)} {float(np.abs(y - x).max())}")
"""


def _smoke_test(python, log):
    r = subprocess.run([python, "-c", _SMOKE], env=peer_env(), capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"NNCodec {VERSION} fails its smoke test: {r.stderr.strip()[-500:]}")
    size, err = r.stdout.split()
    log(f"NNCodec {VERSION} ready: a 64x64 tensor codes to {size} bytes, max error {float(err):.4g}")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m nnr.testenv.nncodec", description=__doc__.split("\n\n")[0])
    p.add_argument("--venv", help=f"the venv to install into (default {default_venv()})")
    args = p.parse_args(argv)
    try:
        install(args.venv)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as err:
        print(f"nnr.testenv.nncodec: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
