"""`python -m nnr.demo`: decode the bundled example model and report size, ratio and error.

The example is a small CNN (conv 3->8 + BN, conv 8->16 + BN, fc 256->64, fc 64->10) coded by the
reference implementation NNCodec 2.1.3 at qp -32 with dependent quantization (bitstreams/PROVENANCE.md).
"""
import argparse
import os
import sys
import time

import numpy as np

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m nnr.demo", description=__doc__.splitlines()[0])
    p.add_argument("--bitstream", default=os.path.join(DATA, "example_cnn.nnc"))
    p.add_argument("--original", default=os.path.join(DATA, "example_cnn_input.npz"))
    args = p.parse_args(argv)

    import nnr
    with open(args.bitstream, "rb") as f:
        data = f.read()
    with np.load(args.original) as z:
        original = {k: z[k] for k in z.files}
    t0 = time.perf_counter()
    decoded = nnr.decode(data)
    elapsed = time.perf_counter() - t0

    print(f"{'tensor':<22} {'shape':<16} {'params':>8} {'max |err|':>11}")
    n_params = 0
    raw_bytes = 0
    max_err = 0.0
    sq_err = 0.0
    for name, ref in original.items():
        got = decoded[name]
        err = np.abs(got.astype(np.float64) - ref.astype(np.float64))
        n_params += ref.size
        raw_bytes += ref.nbytes
        max_err = max(max_err, float(err.max()))
        sq_err += float((err ** 2).sum())
        print(f"{name:<22} {str(list(ref.shape)):<16} {ref.size:>8} {float(err.max()):>11.3g}")
    print()
    print(f"parameters          {n_params}")
    print(f"float32 size        {raw_bytes} bytes")
    print(f"NNC bitstream       {len(data)} bytes ({8 * len(data) / n_params:.3f} bits/parameter)")
    print(f"compression ratio   {raw_bytes / len(data):.2f}x")
    print(f"max |error|         {max_err:.4g}   RMSE {np.sqrt(sq_err / n_params):.4g}")
    print(f"decode time         {elapsed * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
