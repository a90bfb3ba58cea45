"""python -m nnr.testenv [--check]: install (or check) what the test suite needs beside nnr."""
import argparse
import importlib.util
import subprocess
import sys

from nnr.testenv import fashion_mnist, nncodec, torch_cpu

# imported by the tests; installed by `pip install -e ".[test]"`
TEST_PACKAGES = ("pytest", "hypothesis", "safetensors", "h5py", "sklearn", "onnx", "onnxruntime",
                 "matplotlib", "flwr", "ray")
# ships the PP-OCR detector and recogniser as .onnx files (the ONNX round-trip tests read only those);
# --no-deps: its OpenCV and friends are for running OCR, which the tests do not
RAPIDOCR = "rapidocr_onnxruntime==1.4.4"


def _have(module):
    return importlib.util.find_spec(module) is not None


def check():
    """{item: where or None}."""
    ref, _ = nncodec.find_reference()
    return {
        "test packages": None if any(not _have(m) for m in TEST_PACKAGES) else "installed",
        "torch": torch_cpu.installed_version(sys.executable),
        "PP-OCR models (rapidocr_onnxruntime)": "installed" if _have("rapidocr_onnxruntime") else None,
        f"NNCodec {nncodec.VERSION}": ref[0] if ref else None,
        "Fashion-MNIST": fashion_mnist.find(),
    }


def install():
    missing = [m for m in TEST_PACKAGES if not _have(m)]
    if missing:
        raise RuntimeError(f"missing test packages {', '.join(missing)}: pip install -e \".[test]\" first")
    torch_cpu.install(sys.executable)
    if not _have("rapidocr_onnxruntime"):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", RAPIDOCR], check=True)
    print(f"{RAPIDOCR} installed (its .onnx models)")
    nncodec.install()
    fashion_mnist.fetch()


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m nnr.testenv", description=__doc__)
    p.add_argument("--check", action="store_true", help="report what is there, install nothing")
    args = p.parse_args(argv)
    if not args.check:
        try:
            install()
        except (RuntimeError, OSError, subprocess.CalledProcessError) as err:
            print(f"nnr.testenv: {err}", file=sys.stderr)
            return 1
    status = check()
    for item, where in status.items():
        print(f"{item:40s} {where or 'MISSING'}")
    return 0 if all(status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
