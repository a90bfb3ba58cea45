"""What the encoder's trace shows of an NDU payload it wrote (the format: nnr_core/bitstream/trace.py).

The header elements are traced by the syntax walker as the units are written; a payload is traced
from the encoder's own account of it: the elements it coded (the coding prepared by the entropy
coder's argument checks, which both engines use), the entry points it measured and the levels a
decoder returns."""
from nnr_core import cabac
from nnr_core.bitstream.trace import PayloadTensor
from nnr_core.cabac.pytwin_enc import prepare


def coder_position(encoder) -> int:
    """The bit position P (HLS §8.5) of a CabacEncoder: shifts of its low register since
    the start, 23 - BL + 8 * (bytes written + pending bytes) (nnr_core/cabac/README.md)."""
    s = encoder.state()
    return 23 - s["BL"] + 8 * (s["bytes_written"] + s["NB"])


def positions(encodings, variant) -> list:
    """P before each tensor's first bin. Only a payload of several tensors (a block) has a tensor
    that does not start at 0: the tensors before the last are coded again to measure them."""
    encoder = cabac.CabacEncoder()
    out = [coder_position(encoder)]
    for t in encodings[:-1]:
        encoder.encode_tensor(t, variant)
        out.append(coder_position(encoder))
    return out


def payload_tensors(names, encodings, entry_points, levels, variant) -> list:
    """[PayloadTensor] of a payload coded from `encodings` (TensorEncoding, payload order) whose
    tensors are `names`, with the `entry_points` the coder returned and the `levels` a decoder
    will return for each."""
    out = []
    for name, t, pos, eps, held in zip(names, encodings, positions(encodings, variant), entry_points, levels):
        coded = prepare(t, variant)
        out.append(PayloadTensor(name, pos, coded.qp_offset if t.coding.has_qp_offset else None,
                                 coded.hdsp_flag, coded.rowskip_flag, coded.skip, list(eps), held))
    return out
