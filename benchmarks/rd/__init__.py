"""Rate-distortion at equal task quality, nnr's modes against the reference: `python -m benchmarks.rd`."""
