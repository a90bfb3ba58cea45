"""Side-by-side speed and memory benchmarks of nnr and the reference NNCodec 2.1.3 (README.md)."""
