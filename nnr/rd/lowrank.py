"""Rank choice for low-rank decomposition (the encoder's `low_rank` option, HLS §9.4): per weight, the
rank and factor QP whose stream is smallest among those with no more squared error than the weight
coded alone at its QP, so that a decomposition is used only where it saves bits at equal distortion.

For every float weight with at least `min_side` rows and columns (as a rows × rest matrix), the
candidate ranks are the powers of two whose factors hold fewer numbers than the weight; a rank whose
truncation alone (the discarded singular values) errs more than the plain stream is skipped. Each
candidate is coded for real (the weight alone in a stream, with the caller's options, G and H at the
weight's QP and `qp_steps` finer), decoded and measured.
"""
import numpy as np

from nnr.errors import EncoderConfigError


def _sse(a, b):
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64).reshape(np.shape(a))
    return float(np.dot(d.ravel(), d.ravel()))


def choose_ranks(tensors, *, qp_steps=(0, -1, -2, -3, -4, -6), min_side=16, progress=None, **options) -> dict:
    """{weight name: (rank, factor QP)} for nnr.encode(tensors, low_rank={name: rank},
    qp_per_tensor={name_G: QP, name_H: QP}, **options): the weights (see the module docstring) whose
    decomposition codes smaller at no more squared error; progress(done, total, name)."""
    import nnr
    for key in ("low_rank", "target_bpp", "block_id_and_param_type", "bnf"):
        if options.get(key) is not None and options.get(key) is not False:
            raise EncoderConfigError(f"nnr.rd.choose_ranks: the option {key} does not apply to one weight coded alone")
    user_qps = dict(options.pop("qp_per_tensor", None) or {})
    names = [n for n, w in tensors.items() if np.asarray(w).dtype.kind == "f" and np.ndim(w) >= 2
             and min(np.shape(w)[0], np.size(w) // np.shape(w)[0]) >= min_side]
    chosen = {}
    for done, name in enumerate(names, 1):
        w = np.ascontiguousarray(tensors[name], dtype=np.float32)
        qps = {name: user_qps[name]} if name in user_qps else None
        dec = nnr.Decoder(keep_state=False)
        plain = nnr.encode({name: w}, qp_per_tensor=qps, **options)
        out = dec.decode_tensors(plain)
        d0, b0, qp = _sse(w, out[0].values), len(plain), out[0].qp
        rows, cols = w.shape[0], w.size // w.shape[0]
        s = np.linalg.svd(w.astype(np.float64).reshape(rows, cols), compute_uv=False)
        tail = np.concatenate([np.cumsum((s ** 2)[::-1])[::-1], [0.0]])      # tail[r] = sum of s[r:]^2
        best = None
        rank = 1
        while rank * (rows + cols) < rows * cols and rank <= min(rows, cols):
            if tail[rank] <= d0:
                for step in qp_steps:
                    q = qp + step
                    data = nnr.encode({name: w}, low_rank={name: rank},
                                      qp_per_tensor={name + "_G": q, name + "_H": q}, **options)
                    if len(data) >= (b0 if best is None else best[0]):
                        continue
                    if _sse(w, nnr.decode(data)[name]) <= d0:
                        best = (len(data), rank, q)
            rank *= 2
        if best is not None:
            chosen[name] = (best[1], best[2])
        if progress is not None:
            progress(done, len(names), name)
    return chosen


def encode_low_rank(tensors, *, qp_steps=(0, -1, -2, -3, -4, -6), min_side=16, progress=None, **options) -> bytes:
    """nnr.encode(tensors, **options) with the weights that choose_ranks picks decomposed, their factors
    at the QPs it found."""
    import nnr
    opts = dict(options)
    chosen = choose_ranks(tensors, qp_steps=qp_steps, min_side=min_side, progress=progress, **dict(opts))
    qps = {f"{name}{suffix}": qp for name, (_, qp) in chosen.items() for suffix in ("_G", "_H")}
    opts["qp_per_tensor"] = {**qps, **(opts.get("qp_per_tensor") or {})} or None
    return nnr.encode(tensors, low_rank={name: rank for name, (rank, _) in chosen.items()} or None, **opts)
