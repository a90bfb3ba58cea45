"""What the test suite, the benchmarks and the examples use beside nnr, and how to install it.

`python -m nnr.testenv` installs torch's CPU build, the PP-OCR ONNX models, the reference NNCodec
2.1.3 (in a venv of its own) and Fashion-MNIST, each only if it is missing; `--check` reports
without installing. None of it is a runtime dependency of nnr.
"""
