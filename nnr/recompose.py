"""The decoder's output as a model: low-rank pairs recomposed, W = G·H (HLS §9.4), and on request
each local-scaling vector multiplied into its weight's rows (HLS §9.5), as the reference's
decompress does (recompose_params always, apply_lsa with reconstruct_lsa).

The product is taken in float64 and rounded once to the members' dtype (float32, or float64 for
codebook members). The standard fixes G and H bit-exactly but not the order in which a product's
terms are summed: NNCodec's float32 g.dot(h) depends on the BLAS it runs on, and can differ from
nnr's W in the last bit."""
import numpy as np

from nnr.errors import ConstraintViolationError


def _weight_name(g_name: str) -> str:
    # REF-QUIRK: the reference names the members <weight>_G and <weight>_H and W by the prefix
    return g_name[:-2] if g_name.endswith("_G") else g_name


def _ls_targets(decoded):
    """{LS name: the W or G its factors scale}: the one in its own unit, else <weight> of <weight>_scaling."""
    names = {t.name for t in decoded}
    weight_of_unit = {}
    for t in decoded:
        if t.role in ("W", "G"):
            weight_of_unit.setdefault(t.unit_index, t.name)
    out = {}
    for t in decoded:
        if t.role != "LS":
            continue
        if t.unit_index in weight_of_unit:
            out[t.name] = weight_of_unit[t.unit_index]
        elif t.name.endswith("_scaling") and t.name[: -len("_scaling")] in names:
            out[t.name] = t.name[: -len("_scaling")]
        elif t.name.endswith("_scaling") and t.name[: -len("_scaling")] + "_G" in names:
            out[t.name] = t.name[: -len("_scaling")] + "_G"
        else:
            raise ConstraintViolationError(f"local-scaling vector {t.name!r} has no weight to scale",
                                           unit_index=t.unit_index, element="topology_elem_id", value=t.name)
    return out


def tensor_dict(decoded, recompose=True, lsa=False) -> dict:
    """{name: array} of Decoder.decode_tensors' records: with `recompose`, each G and the H after it
    become W (under G's name without its "_G" suffix, at G's place, W's tensor_dimensions); with
    `lsa`, each LS multiplies its weight's rows (G's before recomposing) and is dropped."""
    values = {t.name: t.values for t in decoded}
    if lsa:
        for ls_name, target in _ls_targets(decoded).items():
            w = np.array(values[target], dtype=np.result_type(values[target], np.float32))
            ls = np.asarray(values[ls_name])
            if w.ndim == 0 or w.shape[0] != ls.shape[0]:
                raise ConstraintViolationError(f"local-scaling vector {ls_name!r} has {ls.shape[0]} factors for "
                                               f"the {w.shape[0] if w.ndim else 0} rows of {target!r}",
                                               element="tensor_dimensions")
            w *= ls.reshape((-1,) + (1,) * (w.ndim - 1)).astype(w.dtype)
            values[target] = w
            del values[ls_name]
    if not recompose or not any(t.role == "G" for t in decoded):
        return values
    out = {}
    skip = set()
    for i, t in enumerate(decoded):
        if t.name in skip or t.name not in values:
            continue
        if t.role != "G":
            out[t.name] = values[t.name]
            continue
        h = next((u for u in decoded[i + 1:] if u.role == "H"), None)
        if h is None or h.full_shape is None:
            out[t.name] = values[t.name]
            continue
        g, hv = values[t.name], values[h.name]
        dtype = np.result_type(g, hv)
        w = (np.asarray(g, np.float64) @ np.asarray(hv, np.float64)).astype(dtype).reshape(h.full_shape)
        name = _weight_name(t.name)
        if name != t.name and (name in values or name in out):
            raise ConstraintViolationError(f"the recomposed weight {name!r} of {t.name!r} and {h.name!r} is also "
                                           "a decoded tensor", unit_index=t.unit_index, element="topology_elem_id",
                                           value=name)
        out[name] = w
        skip.add(h.name)
    return out
