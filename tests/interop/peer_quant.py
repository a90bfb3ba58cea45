"""Run under the reference's own venv (NNCodec 2.1.3): quantizes a batch of tensors with quantLayer.

Usage: python peer_quant.py JOBS.npz OUT.npz. JOBS.npz holds, for every job j = 0 .. n-1,
`w{j}` (float32, any shape) and `o{j}` = int64 [dq_flag, qp_density, qp, scan_order,
cabac_unary_length_minus1, general_profile_idc] plus `l{j}` = float32 [lambda_scale]. OUT.npz gets
`levels{j}` (int32, w's shape) and `qp{j}` (the QP after the overflow guard), or `error{j}`.
The call is the one of nncodec/nnc_core/approximator/baseline.py: a fresh context initialisation
with cabac_unary_length_minus1, then Encoder.quantLayer on a zero int32 array of w's shape.
This file is a test peer: it imports nncodec, never nnr.
"""
import sys

import numpy as np


def main(jobs_path, out_path):
    from nncodec.extensions import deepCABAC
    results = {}
    with np.load(jobs_path) as z:
        n = int(z["count"])
        for j in range(n):
            w = np.ascontiguousarray(z[f"w{j}"], dtype=np.float32)
            dq, qp_density, qp, scan_order, unary, gpi = (int(v) for v in z[f"o{j}"])
            lam = float(z[f"l{j}"][0])
            try:
                encoder = deepCABAC.Encoder()
                levels = np.zeros(w.shape, dtype=np.int32)
                encoder.initCtxModels(unary, 0)
                got_qp = encoder.quantLayer(w, levels, dq, qp_density, qp, lam, unary, scan_order, gpi)
                results[f"levels{j}"] = levels
                results[f"qp{j}"] = np.array([got_qp], dtype=np.int64)
            except Exception as exc:   # noqa: BLE001 - reported to the test
                results[f"error{j}"] = np.array(repr(exc))
    np.savez(out_path, **results)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
