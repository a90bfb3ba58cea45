"""Update coders for federated training, one per method, numpy in and bytes out:

* float32: every value as float32 (FedAvg's plain messages);
* dgc: top-k of each tensor (Deep Gradient Compression / Gradient Dropping style), the kept
  positions' gaps as uint32 and values as float32, zlib level 9;
* sbc: Sparse Binary Compression as published (Sattler et al., IJCNN 2019): per tensor the larger
  of the top-k positive / top-k negative sets, binarised to its mean, positions Golomb-Rice coded;
* nnc: an NNC incremental bitstream (ISO/IEC 15938-17 parent signalling, TCA, optional HDSP) of the
  update sparsified by top-k or by SBC's binarisation, each tensor at its own QP.

A coder's `encode(update)` returns (message bytes, the update the receiver reconstructs);
`decode(message)` is the receiver's side. Both sides know the tensors' names and shapes (the model's
layout, `layout`); a coder keeps per-stream state (NNC's incremental coder state), so one coder
object serves one sender and its `decoder()` one receiver. Error feedback is nnr.fl.feedback's."""
import math
import struct
import zlib

import numpy as np

from nnr.errors import BitstreamError, EncoderConfigError
from nnr.fl import golomb
from nnr.fl.sparsify import check_fraction, dense, global_threshold, kept_count, sbc, sbc_of, topk_indices

def _layout(layout):
    return [(str(n), tuple(int(s) for s in shape)) for n, shape in layout]


def _f32(update, layout):
    out = {}
    for n, shape in layout:
        if n not in update:
            raise EncoderConfigError(f"the update has no tensor {n!r}")
        a = np.asarray(update[n], dtype=np.float32)
        if a.shape != shape:
            raise EncoderConfigError(f"update tensor {n!r} has shape {a.shape}, the layout says {shape}")
        if not np.all(np.isfinite(a)):
            raise EncoderConfigError(f"update tensor {n!r} holds NaN or infinite values")
        out[n] = a
    return out


class _Reader:
    """Bounds-checked reads from a message (BitstreamError naming the offset on a short message)."""

    def __init__(self, data, what):
        self.data, self.pos, self.what = memoryview(data), 0, what

    def take(self, n):
        if n < 0 or self.pos + n > len(self.data):
            raise BitstreamError(f"{self.what} message: {n} bytes needed at byte {self.pos}, "
                                 f"{len(self.data) - self.pos} left")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def done(self):
        if self.pos != len(self.data):
            raise BitstreamError(f"{self.what} message: {len(self.data) - self.pos} bytes after its end")


class Float32Coder:
    """Plain float32 arrays in layout order."""
    name = "float32"

    def __init__(self, layout):
        self.layout = _layout(layout)

    def encode(self, update):
        u = _f32(update, self.layout)
        return b"".join(u[n].tobytes() for n, _ in self.layout), u

    def decoder(self):
        return self

    def decode(self, data):
        r = _Reader(data, "float32")
        out = {n: np.frombuffer(r.take(4 * math.prod(s)), np.float32).reshape(s).copy() for n, s in self.layout}
        r.done()
        return out


class DgcCoder:
    """Top-k per tensor: count, uint32 gaps, float32 values, all zlib-compressed."""
    name = "dgc"

    def __init__(self, layout, fraction):
        self.layout = _layout(layout)
        self.fraction = check_fraction(fraction, "dgc fraction")

    def encode(self, update):
        u = _f32(update, self.layout)
        parts, sent = [], {}
        for n, shape in self.layout:
            flat = u[n].reshape(-1)
            idx = topk_indices(flat, kept_count(flat.size, self.fraction))
            vals = flat[idx]
            parts += [struct.pack("<I", idx.size), np.diff(idx, prepend=0).astype("<u4").tobytes(),
                      vals.astype("<f4").tobytes()]
            sent[n] = dense(shape, idx, vals)
        return zlib.compress(b"".join(parts), 9), sent

    def decoder(self):
        return self

    def decode(self, data):
        z = zlib.decompressobj()
        try:
            # at most 8 bytes per parameter plus the counts: a bound before inflating anything
            raw = z.decompress(data, sum(8 * math.prod(s) + 4 for _, s in self.layout) + 1)
        except zlib.error as e:
            raise BitstreamError(f"dgc message: not a zlib stream ({e})") from None
        if not z.eof or z.unused_data or z.unconsumed_tail:
            raise BitstreamError("dgc message: the zlib stream is truncated, too long or followed by other bytes")
        r = _Reader(raw, "dgc")
        out = {}
        for n, shape in self.layout:
            size = math.prod(shape)
            k = r.u32()
            if k > size:
                raise BitstreamError(f"dgc message: tensor {n!r} claims {k} entries of {size}")
            idx = np.cumsum(np.frombuffer(r.take(4 * k), "<u4").astype(np.int64))
            vals = np.frombuffer(r.take(4 * k), "<f4")
            if k and idx[-1] >= size:
                raise BitstreamError(f"dgc message: tensor {n!r} has position {int(idx[-1])} of {size}")
            out[n] = dense(shape, idx, vals)
        r.done()
        return out


class SbcCoder:
    """Per tensor: count (uint32), the signed mean (float32), Golomb-Rice coded positions."""
    name = "sbc"

    def __init__(self, layout, fraction):
        self.layout = _layout(layout)
        self.fraction = check_fraction(fraction, "sbc fraction")

    def encode(self, update):
        u = _f32(update, self.layout)
        parts, sent = [], {}
        for n, shape in self.layout:
            idx, mean = sbc(u[n], self.fraction)
            size = math.prod(shape)
            coded = golomb.encode_positions(idx, golomb.rice_parameter(idx.size, size))
            parts += [struct.pack("<If", idx.size, float(mean)), coded]
            sent[n] = dense(shape, idx, mean)
        return b"".join(parts), sent

    def decoder(self):
        return self

    def decode(self, data):
        r = _Reader(data, "sbc")
        out = {}
        for n, shape in self.layout:
            size = math.prod(shape)
            k, mean = struct.unpack("<If", r.take(8))
            if k > size or not math.isfinite(mean):
                raise BitstreamError(f"sbc message: tensor {n!r} claims {k} entries of {size}, mean {mean}")
            pos, nbytes = golomb.decode_positions(r.data[r.pos:], k, golomb.rice_parameter(k, size), size)
            r.take(nbytes)
            out[n] = dense(shape, pos, np.float32(mean))
        r.done()
        return out



def qp_for_step(step, qp_density) -> int:
    """The QP whose step size (CABAC §9.1: (1 + frac / 2^d) * 2^e) is nearest to `step` > 0."""
    k = 1 << qp_density
    m, e = math.frexp(float(step))            # step = m * 2^e, m in [0.5, 1)
    frac = round((2.0 * m - 1.0) * k)         # step = (1 + frac / k) * 2^(e - 1)
    return (e - 1) * k + frac                 # frac == k is the next octave's frac 0: the same QP


class NncCoder:
    """An NNC incremental stream of sparsified updates. sparsify: "sbc" (binarised as SbcCoder, each
    tensor's step the mean, so its levels are 0 and +-1), "ternary" (every kept entry at +-the mean
    kept magnitude: levels 0 and +-1 with both signs) or "topk" (the kept values rounded on a step
    equal to the smallest kept magnitude). selection: "tensor" (each tensor keeps its fraction, as
    SBC does) or "global" (one threshold over all tensors: a tensor with nothing above it is an
    omitted zero update, HLS §13.5, and costs no unit). packing: "tensors" (one topology element,
    so one NNR_NDU, per tensor) or "flat" (the whole update as one 1-D element, the layout's tensors
    concatenated in order: one unit header, one QP, one CABAC flush per message; selection is then
    that element's top-k). element_names: "model" (the tensors' names; "update" for the flat
    element) or "index" (their position in the layout, "0", "1", ...: shorter unit headers; both
    ends know the layout). schedule: ((first message, factor), ...): from the message of each
    first index on (counting from 0) the kept fraction is fraction x factor, as in DGC's sparsity
    warm-up (None: fraction throughout). tca / hdsp: Encoder.encode's flags; device_id: the
    stream's device (parent signalling)."""
    name = "nnc"

    def __init__(self, layout, fraction, *, sparsify="sbc", selection="tensor", element_names="model",
                 packing="tensors", schedule=None, qp_density=7, tca=True, hdsp=False, device_id=0, jobs=1):
        import nnr
        for what, value, allowed in (("sparsify", sparsify, ("sbc", "ternary", "topk")),
                                     ("selection", selection, ("tensor", "global")),
                                     ("element_names", element_names, ("model", "index")),
                                     ("packing", packing, ("tensors", "flat"))):
            if value not in allowed:
                raise EncoderConfigError(f"nnc {what} must be one of {allowed}, not {value!r}")
        self.selection, self.element_names, self.packing = selection, element_names, packing
        self.layout = _layout(layout)
        self.fraction = check_fraction(fraction, "nnc fraction")
        self.schedule = check_schedule(schedule, self.fraction)
        self.messages = 0                       # messages encoded so far: the schedule's clock
        self.sparsify = sparsify
        self.qp_density = qp_density
        self.flags = {"tca": tca, "hdsp": hdsp}
        self.jobs = jobs
        self.encoder = nnr.Encoder(qp_density=qp_density, dq=False, device_id=device_id, jobs=jobs)
        self.mirror = self.decoder()
        self.qp_limits = (-(1 << (5 + qp_density)), (1 << (5 + qp_density)) - 1)

    def fraction_at(self, message) -> float:
        """The kept fraction of message `message` (counting from 0) under the schedule."""
        return self.fraction * next((f for m, f in reversed(self.schedule) if m <= message), 1.0)

    def _sparse(self, a, fraction, threshold=None):
        """(dense float32 tensor to code, its step) of one tensor; step None: nothing to send.
        threshold: the global selection's (None: the tensor's own top-k of `fraction`)."""
        flat = a.reshape(-1)
        if threshold is not None:
            cand = np.flatnonzero(np.abs(flat) >= threshold) if threshold > 0 else np.flatnonzero(flat)
        if self.sparsify == "sbc":
            idx, mean = sbc(a, fraction) if threshold is None else sbc_of(a, cand)
            step = abs(float(mean))
            vals = np.float32(mean)
        elif self.sparsify == "ternary":
            idx = topk_indices(flat, kept_count(flat.size, fraction)) if threshold is None else cand
            step = float(np.mean(np.abs(flat[idx].astype(np.float64)))) if idx.size else 0.0
            vals = np.sign(flat[idx]) * np.float32(step)
        else:
            idx = topk_indices(flat, kept_count(flat.size, fraction)) if threshold is None else cand
            vals = flat[idx]
            step = float(np.min(np.abs(vals))) if idx.size else 0.0
        if idx.size == 0 or step == 0.0:
            return np.zeros_like(a), None
        return dense(a.shape, idx, vals), step

    def _parts(self, u):
        """{element name before renaming: dense float32 tensor} of an update: the flat element or the tensors."""
        if self.packing == "flat":
            return {flat_element_name(self.element_names): np.concatenate([u[n].reshape(-1) for n, _ in self.layout])}
        return u

    def encode(self, update):
        u = _f32(update, self.layout)
        fraction = self.fraction_at(self.messages)
        self.messages += 1
        parts = self._parts(u)
        threshold = global_threshold(list(u.values()), fraction) \
            if self.packing != "flat" and self.selection == "global" else None
        coded, qps = {}, {}
        for n, a in parts.items():
            dense, step = self._sparse(a, fraction, threshold)
            qp = qp_for_step(step, self.qp_density) if step else 0
            lo, hi = self.qp_limits
            if step is None or not lo <= qp <= hi:       # nothing kept, or a step no QP can carry
                dense, qp = np.zeros_like(a), 0
            coded[n], qps[n] = dense, qp
        return self._code(coded, qps)

    def encode_dense(self, update, step):
        """Code `update` whole, every entry on the QP whose step is nearest `step` (no sparsification):
        for a stream whose first message is a model rather than an update (a Flower downlink's base)."""
        if not (isinstance(step, (int, float)) and math.isfinite(step) and step > 0):
            raise EncoderConfigError(f"nnc dense step must be a finite number > 0, not {step!r}")
        qp = qp_for_step(step, self.qp_density)
        lo, hi = self.qp_limits
        if not lo <= qp <= hi:
            raise EncoderConfigError(f"nnc dense step {step!r} needs qp {qp}, outside {lo}..{hi}")
        self.messages += 1
        parts = self._parts(_f32(update, self.layout))
        return self._code(parts, {n: qp for n in parts})

    def _code(self, coded, qps):
        """(bitstream, what the receiver decodes) of the dense tensors `coded` at their QPs."""
        if self.element_names == "index" and self.packing == "tensors":
            coded = {str(i): coded[n] for i, (n, _) in enumerate(self.layout)}
            qps = {str(i): qps[n] for i, (n, _) in enumerate(self.layout)}
        self.encoder.reconfigure(qp_per_tensor=qps)
        data = self.encoder.encode(coded, incremental=True, **self.flags)
        return data, self.mirror.decode(data)

    def decoder(self):
        if self.packing == "flat":
            return _NncDecoder(self.layout, self.jobs, flat=flat_element_name(self.element_names))
        return _NncDecoder(self.layout, self.jobs, self.element_names == "index")


def check_schedule(schedule, fraction):
    """schedule as a tuple of (first message, factor) pairs, checked: indices rising from 0, every
    fraction x factor in (0, 1]; None or empty: ()."""
    if not schedule:
        return ()
    try:
        pairs = tuple((int(m), float(f)) for m, f in schedule)
    except (TypeError, ValueError):
        raise EncoderConfigError(f"nnc schedule must be (first message, factor) pairs, not {schedule!r}") from None
    if pairs[0][0] != 0 or any(b[0] <= a[0] for a, b in zip(pairs, pairs[1:])):
        raise EncoderConfigError(f"nnc schedule must start at message 0 and rise, not {schedule!r}")
    for _, f in pairs:
        check_fraction(fraction * f, "nnc fraction x schedule factor")
    return pairs


def flat_element_name(element_names) -> str:
    """The name of the one topology element of a flat-packed update."""
    return "0" if element_names == "index" else "update"


class _NncDecoder:
    """The receiving end of one NNC incremental stream: tensors a bitstream omits are zero updates.
    flat: the name of the one element that holds the whole update (packing "flat"), else None."""

    def __init__(self, layout, jobs=1, indexed=False, flat=None):
        import nnr
        self.layout = layout
        self.decoder = nnr.Decoder(jobs=jobs)
        self.size = sum(math.prod(s) for _, s in layout)
        # the stream's element names -> the layout's
        self.names = {flat: None} if flat is not None else \
            {(str(i) if indexed else n): n for i, (n, _) in enumerate(layout)}

    def decode(self, data):
        out = {n: np.zeros(s, np.float32) for n, s in self.layout}
        for t in self.decoder.decode_tensors(data):
            if t.name not in self.names:
                raise BitstreamError(f"nnc message: tensor {t.name!r} is not in the model's layout")
            v = np.asarray(t.values, dtype=np.float32)
            name = self.names[t.name]
            want = self.size if name is None else out[name].size
            if v.size != want:
                raise BitstreamError(f"nnc message: tensor {t.name!r} has {v.size} values, the layout {want}")
            if name is None:                    # the flat element: the whole update
                out = split_flat(v, self.layout)
            else:
                out[name] = v.reshape(out[name].shape)
        self.decoder.units, self.decoder.tensors = [], []
        return out


def split_flat(v, layout) -> dict:
    """{name: tensor} of a flat-packed update vector v (the layout's tensors concatenated in order)."""
    out, off = {}, 0
    for n, s in layout:
        k = math.prod(s)
        out[n] = np.asarray(v[off:off + k], dtype=np.float32).reshape(s)
        off += k
    return out
