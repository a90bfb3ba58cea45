"""`python -m nnr.demo`: encode and decode the bundled example model; report sizes, ratio and error.

The example is a small CNN (conv 3->8 + BN, conv 8->16 + BN, fc 256->64, fc 64->10). nnr encodes it
with the default configuration (qp -32, dependent quantization) and compares its bitstream with the
one the reference implementation NNCodec 2.1.3 wrote for the same input (bitstreams/PROVENANCE.md).
"""
import argparse
import os
import sys
import time

import numpy as np

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m nnr.demo", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.path.join(DATA, "example_cnn_input.npz"), help="a .npz of float32 tensors")
    p.add_argument("--reference", default=os.path.join(DATA, "example_cnn.nnc"),
                   help="the reference's bitstream for the default model ('' to skip the comparison)")
    p.add_argument("--qp", type=int, default=-32)
    args = p.parse_args(argv)

    import nnr
    with np.load(args.model) as z:
        original = {k: z[k] for k in z.files}
    t0 = time.perf_counter()
    data = nnr.encode(original, qp=args.qp)
    t1 = time.perf_counter()
    decoded = nnr.decode(data)
    t2 = time.perf_counter()

    print(f"{'tensor':<22} {'shape':<16} {'params':>8} {'max |err|':>11}")
    n_params = raw_bytes = 0
    max_err = sq_err = 0.0
    for name, ref in original.items():
        err = np.abs(decoded[name].astype(np.float64) - ref.astype(np.float64))
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
    print(f"encode / decode     {(t1 - t0) * 1e3:.1f} ms / {(t2 - t1) * 1e3:.1f} ms")
    if args.reference and os.path.exists(args.reference) and args.qp == -32:
        with open(args.reference, "rb") as f:
            same = f.read() == data
        print(f"same bytes as the reference (NNCodec 2.1.3): {'yes' if same else 'NO'}")
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
