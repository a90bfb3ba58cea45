"""NNC incremental coding of Flower ArrayRecords (ISO/IEC 15938-17 parent signalling, parameter
update tree, TCA, optional HDSP), with per-peer coder state and error feedback.

One *stream* is a sequence of model updates from one sender to one receiver (or, on the downlink,
to every client, each with its own decoder). The sender keeps an `nnr.Encoder`, a mirror
`nnr.Decoder` (to know exactly what the receiver reconstructs) and the error-feedback residual
e: it codes u = update + e and keeps e <- u - decode(u), so the quantization error is sent later
instead of being lost. The receiver keeps an `nnr.Decoder`; tensors an update omits (all-zero
updates, HLS §13.5) come back as zeros.

Wire format: the ArrayRecord at a message key is replaced by a ConfigRecord at the same key:
  "nnr.format"    FORMAT (a version tag)
  "nnr.first"     index of the first bitstream carried (the receiver skips ones it already has)
  "nnr.streams"   list of NNC bitstreams, applied in order (catch-up for a client that missed steps)
  "nnr.manifest"  JSON [[name, shape, dtype], ...] of the coded arrays (order of the ArrayRecord), or
                  {"entries": [...], "flat": element} when the update is one element (sparsify);
                  sent with a stream's first bitstream, since an all-zero tensor of the first
                  bitstream is not in it at all
  "nnr.raw"       names of non-float arrays, carried uncoded in an ArrayRecord at `key + RAW_SUFFIX`
  "nnr.stream"    a random id of the sender's stream, new with every (re)start: a receiver holding
                  another stream's state starts over, a bitstream of another stream is out of step
  "nnr.ack"       (client -> server) downlink bitstreams the client has applied
  "nnr.up_received"  (server -> client) uplink bitstreams of the client's stream the server decoded
  "nnr.resync"    (client -> server, no bitstreams) why the client could not apply the downlink; it
                  holds "nnr.ack" bitstreams, and the server sends the rest with its next message
Resynchronisation after a lost or replayed message: replayed bitstreams are skipped; the server sends
each client the downlink bitstreams it has not acknowledged; a client whose uplink stream the server
has not fully received (a reply lost, e.g. after the round's timeout) restarts that stream (first
bitstream 0, with the manifest), and the server leaves out a reply it cannot decode.
Only this module touches flwr's record types; everything else here is numpy."""
import collections
import json
import os
import pickle

import numpy as np

from nnr.errors import EncoderConfigError, NNRError, UnsupportedFeatureError
from nnr.optional import import_optional

FORMAT = "nnc-incremental-3"        # 3: a manifest may name a flat element (sparsify)
RAW_SUFFIX = ".nnr-raw"
FLAT_ELEMENT = "0"                 # the element of a sparsified update (nnr.fl: element_names="index")
INSTALL_HINT = 'Flower support needs the optional extra: pip install "nnr[flower]" (installs flwr)'


class CoderStateError(NNRError):
    """Sender and receiver of an NNC update stream are out of step (a lost or replayed message)."""


def require_flwr():
    """Import flwr.app, or raise UnsupportedFeatureError with the install hint."""
    return import_optional("flwr.app", INSTALL_HINT)


def is_float(a) -> bool:
    return np.issubdtype(np.asarray(a).dtype, np.floating)


def _f32(tensors):
    return {n: np.asarray(a, dtype=np.float32) for n, a in tensors.items()}


def topk_sparsify(tensors, fraction):
    """Keep the `fraction` largest-magnitude entries of each tensor with more than one row (weights);
    1-D tensors (biases) are kept whole. What is dropped stays in the error-feedback residual."""
    out = {}
    for n, a in tensors.items():
        if a.ndim < 2 or fraction >= 1.0:
            out[n] = a
            continue
        k = max(1, int(np.ceil(fraction * a.size)))
        flat = np.abs(a).ravel()
        thresh = np.partition(flat, a.size - k)[a.size - k]
        out[n] = np.where(np.abs(a) >= thresh, a, np.float32(0)).astype(np.float32)
    return out


class Manifest:
    """Names, shapes and dtypes of the coded (float) arrays, in ArrayRecord order; `flat`: the name of
    the one topology element that carries a whole update (the arrays concatenated in this order), or
    None when each array is its own element."""

    def __init__(self, entries, flat=None):
        self.entries = [(str(n), tuple(int(s) for s in shape), str(dt)) for n, shape, dt in entries]
        self.flat = None if flat is None else str(flat)

    @classmethod
    def of(cls, tensors, flat=None):
        return cls([(n, a.shape, np.asarray(a).dtype.str) for n, a in tensors.items()], flat)

    def to_json(self) -> str:
        entries = [[n, list(s), d] for n, s, d in self.entries]
        return json.dumps(entries if self.flat is None else {"entries": entries, "flat": self.flat},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text):
        try:
            obj = json.loads(text)
            if isinstance(obj, dict):
                return cls(obj["entries"], obj["flat"])
            return cls(obj)
        except (ValueError, KeyError, TypeError) as e:
            raise CoderStateError(f"NNC update stream: unreadable manifest ({e})") from None

    @property
    def layout(self):
        return [(n, s) for n, s, _ in self.entries]

    def zeros(self):
        return {n: np.zeros(s, np.float32) for n, s, _ in self.entries}


def new_stream_id() -> int:
    """A random 48-bit stream id (it only has to differ from the ids the receiver saw before)."""
    return int.from_bytes(os.urandom(6), "big")


SPARSIFY = ("ternary", "sbc", "topk")


def check_sparse_options(sparsify, fraction, topk):
    """Raise EncoderConfigError (a ValueError) unless the sparsification options are consistent (see UpdateSender)."""
    if topk is not None and not 0 < topk <= 1:
        raise EncoderConfigError(f"topk must be None or a fraction in (0, 1], not {topk!r}")
    if sparsify is None:
        if fraction is not None:
            raise EncoderConfigError("fraction is the kept share of a sparsify method: give sparsify too")
        return
    if sparsify not in SPARSIFY:
        raise EncoderConfigError(f"sparsify must be None or one of {SPARSIFY}, not {sparsify!r}")
    if topk is not None:
        raise EncoderConfigError("topk belongs to the QP-coded updates (sparsify=None); a sparsify method keeps `fraction`")
    if fraction is None or not 0 < fraction <= 1:
        raise EncoderConfigError(f"sparsify={sparsify!r} needs fraction in (0, 1], not {fraction!r}")


class UpdateSender:
    """Codes a sequence of updates as one NNC incremental stream, with error feedback.

    Two codings. sparsify=None: every array its own topology element, quantized on `qp` (encoder
    options are nnr.Encoder's: qp, nonweight_qp, dq, device_id, ...; `tca`/`hdsp` are
    Encoder.encode's flags; `topk`, None or a fraction in (0, 1], sparsifies weight updates first).
    sparsify="ternary" | "sbc" | "topk": nnr.fl.NncCoder, the federated benchmark's coding: the whole
    update one 1-D element, its `fraction` largest magnitudes kept (ternary: at +- their mean
    magnitude), so one unit per message; a `base` message (a model, not an update) is coded whole
    on the step of `qp` instead."""

    def __init__(self, *, error_feedback=True, tca=True, hdsp=False, topk=None, sparsify=None, fraction=None,
                 **encoder_options):
        import nnr
        check_sparse_options(sparsify, fraction, topk)
        encoder_options.setdefault("jobs", 1)
        self.sparsify, self.fraction = sparsify, fraction
        self.encoder_options = encoder_options
        self.encoder = nnr.Encoder(**encoder_options) if sparsify is None else None
        self.coder = None                # nnr.fl.NncCoder of a sparsified stream, made with the manifest
        # what the receiver decodes (a sparsified stream's NncCoder keeps its own)
        self.mirror = UpdateReceiver(jobs=encoder_options["jobs"]) if sparsify is None else None
        self.error_feedback = error_feedback
        self.flags = {"tca": tca, "hdsp": hdsp}
        self.topk = topk
        self.residual = None             # {name: float32 array}
        self.manifest = None
        self.sent = 0                    # bitstreams sent so far
        self.stream = new_stream_id()

    def send(self, update, base=False):
        """Code one update {name: float array} (base: it is the model itself, the stream's first
        message). Returns (bitstream, manifest json or None, decoded): `decoded` is exactly what the
        receiver will reconstruct; the manifest goes with the first bitstream."""
        update = _f32(update)
        manifest_json = None
        if self.manifest is None:
            self.manifest = Manifest.of(update, None if self.sparsify is None else FLAT_ELEMENT)
            if self.mirror is not None:
                self.mirror.manifest = self.manifest
            manifest_json = self.manifest.to_json()
            self.residual = self.manifest.zeros()
        names = [n for n, _, _ in self.manifest.entries]
        if sorted(names) != sorted(update):
            raise CoderStateError(f"the arrays of an update changed: the stream codes {names}, "
                                  f"this update has {list(update)}")
        u = {n: update[n] + self.residual[n] for n in names} if self.error_feedback else update
        if self.sparsify is None:
            coded = topk_sparsify(u, self.topk) if self.topk else u
            data = self.encoder.encode(coded, incremental=True, **self.flags)
            decoded = self.mirror.receive([data], first=self.sent)
        else:
            data, decoded = self._coder().encode_dense(u, self._base_step()) if base else self._coder().encode(u)
        if self.error_feedback:
            self.residual = {n: u[n] - decoded[n] for n in names}
        self.sent += 1
        return data, manifest_json, decoded

    def _base_step(self):
        """The step of the encoder options' qp at their qp_density (nnr.Encoder's defaults where unset)."""
        from nnr.encoder import EncoderConfig
        from nnr_core.quant.reconstruct import step_size
        o = self.encoder_options
        return step_size(o.get("qp", EncoderConfig.qp), o.get("qp_density", EncoderConfig.qp_density))

    def _coder(self):
        if self.coder is None:
            from nnr.fl.methods import NncCoder
            o = self.encoder_options
            self.coder = NncCoder(self.manifest.layout, self.fraction, sparsify=self.sparsify, packing="flat",
                                  element_names="index", device_id=o.get("device_id", 0), jobs=o["jobs"],
                                  **self.flags)
        return self.coder


class UpdateReceiver:
    """Decodes one NNC incremental stream; keeps the decoder state and the count of bitstreams."""

    def __init__(self, jobs=1):
        import nnr
        self.decoder = nnr.Decoder(jobs=jobs)
        self.manifest = None
        self.received = 0
        self.stream = None               # the sender's stream id, once known

    def receive(self, streams, first, manifest_json=None):
        """Apply bitstreams number first, first+1, ... (ones already applied are skipped); returns
        the sum of the new updates {name: float32 array} in manifest order."""
        if manifest_json is not None and self.manifest is None:
            self.manifest = Manifest.from_json(manifest_json)
        if self.manifest is None:
            raise CoderStateError("an NNC update stream must start with its manifest (first bitstream lost?)")
        if first > self.received:
            raise CoderStateError(f"NNC update stream: bitstream {first} arrived but only "
                                  f"{self.received} were received before (a message was lost)")
        total = self.manifest.zeros()
        for i, data in enumerate(streams):
            if first + i < self.received:
                continue                 # a replayed bitstream this receiver already applied
            for t in self.decoder.decode_tensors(data):
                if self.manifest.flat is not None:
                    if t.name != self.manifest.flat:
                        raise CoderStateError(f"NNC update stream carries element {t.name!r}, its manifest "
                                              f"says the update is the one element {self.manifest.flat!r}")
                    self._add_flat(total, t.values)
                    continue
                if t.name not in total:
                    raise CoderStateError(f"NNC update stream carries tensor {t.name!r}, not in its manifest")
                total[t.name] += np.asarray(t.values, dtype=np.float32).reshape(total[t.name].shape)
            self.received += 1
        # keep the pickled state small: the last bitstream's units are only for inspection
        self.decoder.units, self.decoder.tensors = [], []
        return total

    def _add_flat(self, total, values):
        from nnr.fl.methods import split_flat
        v = np.asarray(values, dtype=np.float32).reshape(-1)
        want = sum(a.size for a in total.values())
        if v.size != want:
            raise CoderStateError(f"NNC update stream: element {self.manifest.flat!r} has {v.size} values, "
                                  f"the manifest's arrays {want}")
        for n, a in split_flat(v, self.manifest.layout).items():
            total[n] += a


# -- ArrayRecord <-> wire ---------------------------------------------------------------------
def split_arrays(record, coded_names=None):
    """ArrayRecord -> ({name: float ndarray}, {name: other Array}) preserving order. Once a stream
    exists its manifest decides (`coded_names`): an inner strategy may average an integer array
    into a float one, which still travels uncoded."""
    floats, raw = {}, {}
    for name, arr in record.items():
        a = arr.numpy()
        if (name in coded_names) if coded_names is not None else is_float(a):
            floats[name] = a
        else:
            raw[name] = arr
    return floats, raw


def is_coded(record) -> bool:
    app = require_flwr()
    return isinstance(record, app.ConfigRecord) and record.get("nnr.format") is not None


def coded_record(streams, first, manifest_json=None, raw_names=(), *, stream=None, ack=None, up_received=None,
                 resync=None):
    """The wire record (see the module docstring); the keyword fields are left out when None."""
    app = require_flwr()
    rec = {"nnr.format": FORMAT, "nnr.first": int(first), "nnr.streams": list(streams),
           "nnr.raw": list(raw_names)}
    for key, value in (("nnr.manifest", manifest_json), ("nnr.stream", stream), ("nnr.ack", ack),
                       ("nnr.up_received", up_received), ("nnr.resync", resync)):
        if value is not None:
            rec[key] = value
    return app.ConfigRecord(rec)


Control = collections.namedtuple("Control", "stream ack up_received resync")


def read_control(record):
    """Control(stream, ack, up_received, resync) of a wire record, each None when absent."""
    def num(key):
        return None if record.get(key) is None else int(record[key])
    return Control(num("nnr.stream"), num("nnr.ack"), num("nnr.up_received"), record.get("nnr.resync"))


def coded_bytes(record) -> int:
    """Bytes an NNC-coded record costs on the wire: bitstreams plus manifest."""
    return sum(len(s) for s in record["nnr.streams"]) + len(record.get("nnr.manifest", "") or "")


def read_coded(record):
    """ConfigRecord -> (streams, first, manifest json or None, raw names), checking the format."""
    fmt = record.get("nnr.format")
    if fmt != FORMAT:
        raise UnsupportedFeatureError(f"NNC Flower record format {fmt!r}; this nnr reads {FORMAT!r}")
    return (list(record.get("nnr.streams", [])), int(record["nnr.first"]), record.get("nnr.manifest"),
            list(record.get("nnr.raw", [])))


def to_array_record(tensors, manifest, raw=None, raw_names=()):
    """{name: float32} in manifest order (cast back to each array's dtype) + raw Arrays ->
    ArrayRecord."""
    app = require_flwr()
    out = {}
    for name, _, dtype in manifest.entries:
        out[name] = app.Array(np.ascontiguousarray(tensors[name].astype(np.dtype(dtype))))
    for name in raw_names:
        out[name] = raw[name]
    return app.ArrayRecord(out)


def float32_bytes(manifest) -> int:
    """Bytes of the coded arrays as float32 (the uncompressed reference)."""
    return 4 * sum(int(np.prod(s)) for _, s, _ in manifest.entries)


# -- state persistence (Flower keeps node state in Context.state) ----------------------------
def dump_state(obj) -> bytes:
    # The peer's own state, stored in its own Context: trusted, never from the network.
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def load_state(data):
    return pickle.loads(data)
