"""Low-rank decomposition in the encoder (NNR_CPT_DC, HLS §9.4): a weight W of R rows is coded as
G (R × rank) and H (rank × NumElements(W)/R), W ≈ G·H, in two consecutive NDUs (G first) that carry
W's dimensions, decomposition_rank and g_number_of_rows. G and H are the balanced factors of the
truncated SVD of W as an R × (NumElements/R) matrix: G = U·√S, H = √S·Vᵀ. The option says which
tensors and at which rank (`nnr.rd.choose_ranks` picks them by rate and distortion); the members are
named `<W>_G` / `<W>_H` (the reference's naming) and quantized like any weight, at the QP of W or of
their own qp_per_tensor entries.
"""
from dataclasses import replace

import numpy as np

from nnr_core.errors import EncoderConfigError
from nnr_core.syntax.constants import NNR_CPT_DC


def check_option(low_rank) -> None:
    """The option's structure: {tensor name: rank >= 1}."""
    if not isinstance(low_rank, dict):
        raise EncoderConfigError(f"low_rank must be a dict {{tensor name: rank}}, not {type(low_rank).__name__}")
    for name, rank in low_rank.items():
        if not isinstance(rank, (int, np.integer)) or isinstance(rank, bool) or rank < 1:
            raise EncoderConfigError(f"low_rank[{name!r}] = {rank!r}: the rank must be an integer >= 1")


def factors(w: np.ndarray, rank: int):
    """(G, H) float32: the balanced rank-`rank` factors of W as a rows × (size/rows) matrix."""
    m = np.asarray(w, np.float64).reshape(w.shape[0], -1)
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    root = np.sqrt(s[:rank])
    return (u[:, :rank] * root).astype(np.float32), (root[:, None] * vt[:rank]).astype(np.float32)


def split(inputs, low_rank: dict, raw_float=(), blocked=()):
    """(inputs with each listed weight replaced by its G and H, {member name: (W shape, rank, is H)})."""
    by_name = {t.name: t for t in inputs}
    for name, rank in low_rank.items():
        t = by_name.get(name)
        if t is None:
            raise EncoderConfigError(f"low_rank names {name!r}, which is not a tensor of the model")
        if t.is_int or name in raw_float or name in blocked:
            raise EncoderConfigError(f"low_rank: {name!r} is an integer, raw_float or block tensor; only plain "
                                     "float tensors are decomposed")
        if t.data.ndim < 2:
            raise EncoderConfigError(f"low_rank: {name!r} has {t.data.ndim} dimension(s); a decomposed weight has 2 or more")
        rows, cols = t.data.shape[0], t.data.size // t.data.shape[0]
        if rank > min(rows, cols):
            raise EncoderConfigError(f"low_rank: rank {rank} of {name!r} exceeds min(rows, columns) = {min(rows, cols)} "
                                     f"of its {rows} x {cols} matrix")
        for member in (name + "_G", name + "_H"):
            if member in by_name:
                raise EncoderConfigError(f"low_rank: {member!r} is already a tensor of the model")
    out, dc = [], {}
    for t in inputs:
        if t.name not in low_rank:
            out.append(t)
            continue
        rank = int(low_rank[t.name])
        shape = tuple(int(d) for d in t.data.shape)
        for suffix, part in zip(("_G", "_H"), factors(t.data, rank)):
            part = np.ascontiguousarray(part)
            out.append(replace(t, name=t.name + suffix, data=part, is_weight=True, param_type="",
                               value_range=(float(part.min()), float(part.max()))))
            dc[t.name + suffix] = (shape, rank, suffix == "_H")
    return out, dc


def dc_fields(fields: dict, w_shape: tuple, rank: int) -> None:
    """Turn a G or H unit's header fields into a decomposed member's (W's dimensions, the DC values)."""
    fields["compressed_parameter_types"] = int(fields.get("compressed_parameter_types", 0)) | NNR_CPT_DC
    fields["decomposition_rank"] = int(rank)
    fields["g_number_of_rows"] = int(w_shape[0])
    fields["count_tensor_dimensions"] = len(w_shape)
    fields["tensor_dimensions"] = list(w_shape)
