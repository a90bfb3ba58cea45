"""Server side: a Flower strategy wrapper that sends the global model as NNC incremental updates
and decodes the clients' NNC-coded updates (ISO/IEC 15938-17 incremental coding, see codec.py).

NNCStrategy(inner) behaves as `inner` (any flwr.serverapp.strategy.Strategy, e.g. FedAvg):
  * downlink: one stream for all clients. Whenever the global model differs from what the clients
    hold, the difference (+ the server's error-feedback residual) is coded as the next bitstream
    by the server's encoder. A message carries the bitstreams its node has not acknowledged yet
    (normally one; all of them for a node joining late), each client decoding with its own decoder;
  * uplink: one decoder per client node; a coded reply holds W_k - G (G: the global model the
    client trained from), and the inner strategy sees the reconstructed G + decode(...);
  * after aggregation the downlink bitstream is coded at once and the strategy returns the model
    the clients will decode, so Flower's evaluate_fn evaluates exactly the model clients hold.
`traffic[round]` counts the bytes of the actual bitstreams (plus manifests) in each direction,
and what the same messages would cost as float32 arrays.

Resynchronisation (codec.py): a client's reply acknowledges the downlink bitstreams it holds, so a
client that missed messages, or lost its state and asks for a resync, is sent all it lacks. A coded
reply that does not continue the client's uplink stream (an earlier reply was lost, e.g. after a
round's timeout) cannot be decoded: it is left out of the aggregation, and the next message tells
the client to restart its stream. `resyncs` lists these events: (round, node id, event, detail)."""
import logging

import numpy as np

from nnr.flower import codec

log = logging.getLogger("nnr")


def _strategy_base():
    codec.require_flwr()
    try:
        from flwr.serverapp.strategy import Strategy
    except ImportError as e:
        from nnr.errors import UnsupportedFeatureError
        raise UnsupportedFeatureError(f"this flwr has no Message-API strategies (flwr.serverapp.strategy); "
                                      f"{codec.INSTALL_HINT} ({e})") from e
    return Strategy


def NNCStrategy(strategy=None, **options):
    """Wrap `strategy` (default: flwr's FedAvg()) so the model travels as NNC incremental bitstreams.

    options: qp=-22, nonweight_qp=-75, dq=True (encoder options of the downlink), tca=True,
    hdsp=False, error_feedback=True, topk=None (fraction of weight entries kept per downlink update),
    sparsify=None, fraction=None (the downlink update as one element of which `fraction` is kept, as
    nnr.fl.NncCoder: "ternary", "sbc" or "topk"; the first message, the model, is coded whole on qp's step),
    device_id=0 (of the downlink stream), arrays_key (default: the inner strategy's
    `arrayrecord_key`, else "arrays"), jobs=1 (coder threads)."""
    cls = _nnc_strategy_class()
    if strategy is None:
        from flwr.serverapp.strategy import FedAvg
        strategy = FedAvg()
    return cls(strategy, **options)


_CLASS = None


def _nnc_strategy_class():
    # The class derives from flwr's Strategy, so it is built on first use (flwr stays optional).
    global _CLASS
    if _CLASS is None:
        _CLASS = type("NNCStrategy", (_NNCStrategyMixin, _strategy_base()), {"__doc__": NNCStrategy.__doc__})
    return _CLASS


class _NNCStrategyMixin:
    def __init__(self, strategy, *, qp=-22, nonweight_qp=-75, dq=True, tca=True, hdsp=False,
                 error_feedback=True, topk=None, sparsify=None, fraction=None, device_id=0, arrays_key=None, jobs=1):
        codec.check_sparse_options(sparsify, fraction, topk)
        self.inner = strategy
        self.key = arrays_key or getattr(strategy, "arrayrecord_key", "arrays")
        self.sender_options = dict(qp=qp, nonweight_qp=nonweight_qp, dq=dq, tca=tca, hdsp=hdsp,
                                   error_feedback=error_feedback, topk=topk, sparsify=sparsify, fraction=fraction,
                                   device_id=device_id, jobs=jobs)
        self.jobs = jobs
        self.down = None                 # codec.UpdateSender of the downlink
        self.down_steps = []             # every downlink bitstream, for clients that catch up
        self.down_manifest_json = None
        self.global_model = None         # {name: float32}: what the clients hold after all steps
        self.global_raw = {}             # non-float arrays of the global model (sent uncoded)
        self.acked = {}                  # node id -> downlink bitstreams the node confirmed
        self.in_flight = {}              # node id -> downlink bitstreams sent in its last message
        self.uplinks = {}                # node id -> codec.UpdateReceiver
        self.traffic = {}                # round -> byte counts (see _count)
        self.resyncs = []                # [round, node id, event, detail] (see the module docstring)

    # -- Strategy API ---------------------------------------------------------------------------
    def summary(self):
        o = self.sender_options
        coding = (f"qp {o['qp']}, dq {o['dq']}, top-k {o['topk']}" if o["sparsify"] is None else
                  f"one element, {o['sparsify']} {o['fraction']:g}, base on qp {o['qp']}")
        log.info("NNCStrategy: NNC incremental coding (%s, tca %s, hdsp %s, error feedback %s) around %s",
                 coding, o["tca"], o["hdsp"], o["error_feedback"], type(self.inner).__name__)
        self.inner.summary()

    def configure_train(self, server_round, arrays, config, grid):
        self._sync_global(arrays)
        return [self._code_downlink(m, server_round) for m in self.inner.configure_train(server_round, arrays,
                                                                                        config, grid)]

    def configure_evaluate(self, server_round, arrays, config, grid):
        self._sync_global(arrays)
        return [self._code_downlink(m, server_round) for m in self.inner.configure_evaluate(server_round, arrays,
                                                                                           config, grid)]

    def aggregate_train(self, server_round, replies):
        replies = self._decode_replies(replies, server_round)
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        if arrays is None:
            return None, metrics
        self._sync_global(arrays)
        return self.global_record(), metrics

    def aggregate_evaluate(self, server_round, replies):
        replies = self._decode_replies(replies, server_round)
        return self.inner.aggregate_evaluate(server_round, replies)

    def global_record(self):
        """The global model the clients hold (after every downlink bitstream) as an ArrayRecord."""
        return codec.to_array_record(self.global_model, self.down.manifest, self.global_raw,
                                     list(self.global_raw))

    def __getattr__(self, name):
        # options of the wrapped strategy (fraction_train, arrayrecord_key, ...) read through
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    # -- downlink -------------------------------------------------------------------------------
    def _sync_global(self, arrays):
        """Code a downlink bitstream if `arrays` differ from what the clients hold."""
        floats, raw = codec.split_arrays(arrays, None if self.down is None else self.global_model)
        self.global_raw = raw
        if self.down is None:
            self.down = codec.UpdateSender(**self.sender_options)
            update = floats          # the first bitstream is the model itself (the base)
        else:
            if all(np.array_equal(np.asarray(floats[n], np.float32), self.global_model[n]) for n in floats) \
                    and set(floats) == set(self.global_model):
                return
            update = {n: np.asarray(a, np.float32) - self.global_model[n] for n, a in floats.items()}
        data, manifest_json, decoded = self.down.send(update, base=not self.down_steps)
        if manifest_json is not None:
            self.down_manifest_json = manifest_json
        self.down_steps.append(data)
        self.global_model = decoded if self.global_model is None else \
            {n: self.global_model[n] + decoded[n] for n in decoded}

    def _code_downlink(self, msg, server_round):
        app = codec.require_flwr()
        rec = msg.content.get(self.key)
        if not isinstance(rec, app.ArrayRecord):
            return msg
        node = msg.metadata.dst_node_id
        first = self.acked.get(node, 0)
        content = app.RecordDict({k: v for k, v in msg.content.items() if k != self.key})
        up = self.uplinks.get(node)
        coded = codec.coded_record(self.down_steps[first:], first,
                                   self.down_manifest_json if first == 0 else None, list(self.global_raw),
                                   stream=self.down.stream, up_received=0 if up is None else up.received)
        content[self.key] = coded
        raw_bytes = 0
        if self.global_raw:
            content[self.key + codec.RAW_SUFFIX] = app.ArrayRecord(dict(self.global_raw))
            raw_bytes = content[self.key + codec.RAW_SUFFIX].count_bytes()
        self.in_flight[node] = len(self.down_steps)
        self._count(server_round, "down", codec.coded_bytes(coded) + raw_bytes,
                    codec.float32_bytes(self.down.manifest) + raw_bytes)
        # a new RecordDict per message: the inner strategy may share one between its messages
        msg.content = content
        return msg

    # -- uplink ---------------------------------------------------------------------------------
    def _decode_replies(self, replies, server_round):
        decoded = (self._decode_uplink(m, server_round) for m in replies)
        return [m for m in decoded if m is not None]

    def _decode_uplink(self, msg, server_round):
        """The reply with its update decoded, or None when it cannot be used (a resync request, or a
        bitstream that does not continue the node's uplink stream)."""
        if msg.has_error():
            return msg
        node = msg.metadata.src_node_id
        rec = msg.content.get(self.key)
        coded = rec is not None and codec.is_coded(rec)
        ctl = codec.read_control(rec) if coded else codec.Control(None, None, None, None)
        if ctl.ack is not None:
            self.acked[node] = min(ctl.ack, len(self.down_steps))
        elif node in self.in_flight:
            self.acked[node] = self.in_flight[node]
        if not coded:
            return msg
        if ctl.resync is not None:
            self._resync(server_round, node, "downlink-resync", f"the node holds {ctl.ack} bitstreams: {ctl.resync}")
            return None
        app = codec.require_flwr()
        streams, first, manifest_json, raw_names = codec.read_coded(rec)
        raw_key = self.key + codec.RAW_SUFFIX
        raw_bytes = msg.content[raw_key].count_bytes() if raw_names else 0
        self._count(server_round, "up", codec.coded_bytes(rec) + raw_bytes,
                    codec.float32_bytes(self.down.manifest) + raw_bytes)
        receiver = self.uplinks.get(node)
        if first == 0 and manifest_json is not None and (receiver is None or receiver.stream != ctl.stream):
            if receiver is not None:
                self._resync(server_round, node, "uplink-restart",
                             f"a new stream after {receiver.received} bitstreams")
            receiver = self.uplinks[node] = codec.UpdateReceiver(jobs=self.jobs)
            receiver.stream = ctl.stream
        elif receiver is None or receiver.stream != ctl.stream or first != receiver.received:
            self._resync(server_round, node, "uplink-out-of-step",
                         f"bitstream {first} of stream {ctl.stream} arrived, "
                         f"{0 if receiver is None else receiver.received} of {getattr(receiver, 'stream', None)} "
                         f"expected (a reply lost or replayed): reply left out, the node restarts its stream")
            return None
        update = receiver.receive(streams, first, manifest_json)
        model = {n: self.global_model[n] + update[n] for n in update}
        raw = dict(msg.content[raw_key].items()) if raw_names else {}
        content = app.RecordDict({k: v for k, v in msg.content.items() if k not in (self.key, raw_key)})
        content[self.key] = codec.to_array_record(model, receiver.manifest, raw, raw_names)
        msg.content = content
        return msg

    def _resync(self, server_round, node, event, detail):
        log.warning("NNCStrategy, round %d, node %d: %s (%s)", server_round, node, event, detail)
        self.resyncs.append([int(server_round), int(node), event, detail])

    def _count(self, server_round, direction, nbytes, f32_bytes):
        t = self.traffic.setdefault(server_round, {"up_bytes": 0, "up_float32_bytes": 0, "up_messages": 0,
                                                   "down_bytes": 0, "down_float32_bytes": 0,
                                                   "down_messages": 0})
        t[f"{direction}_bytes"] += int(nbytes)
        t[f"{direction}_float32_bytes"] += int(f32_bytes)
        t[f"{direction}_messages"] += 1
