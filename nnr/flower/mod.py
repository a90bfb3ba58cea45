"""Client side: a Flower Mod that decodes the NNC-coded global model and codes the client's update
(ISO/IEC 15938-17 incremental coding, see codec.py).

    app = ClientApp(mods=[nnc_mod()])          # or @app.train(mods=[nnc_mod()])

On an incoming message whose ArrayRecord the server's NNCStrategy coded, the mod decodes the
downlink bitstreams with this client's own decoder, adds them to the global model it holds and
hands the train/evaluate function an ordinary ArrayRecord. On the reply to a train message it
replaces the returned ArrayRecord W by the NNC-coded update W - G (+ the error-feedback residual),
coded by this client's own encoder. Uncoded messages pass through untouched.

The coder state (decoder, encoder, residual, global model) lives in Context.state, where Flower
keeps a node's state between messages (also when each message runs in a new process).

Out of step (codec.py says how): a message whose bitstreams the client cannot apply (its state was
lost, or a message was) is answered, without calling the app, by a resync request with the number of
downlink bitstreams the client holds; when the server has decoded fewer of this client's uplink
bitstreams than it sent (a reply was lost), the client starts a new uplink stream (its residual too)."""
import logging

import numpy as np

from nnr.flower import codec

log = logging.getLogger("nnr")

STATE_KEY = "nnr.flower"


class ClientCoderState:
    """What one client keeps between rounds."""

    def __init__(self, sender_options, jobs):
        self.sender_options = sender_options
        self.downlink = codec.UpdateReceiver(jobs=jobs)
        self.uplink = codec.UpdateSender(**sender_options)
        self.global_model = None     # {name: float32}: every downlink update applied


def _device_id(context):
    # a small id is cheap (ue(1)); simulation nodes have a partition id, deployed nodes a 64-bit id
    pid = context.node_config.get("partition-id")
    return int(pid) + 1 if isinstance(pid, int) else int(context.node_id % 4096) + 1


def nnc_mod(*, qp=-22, nonweight_qp=-75, dq=True, tca=True, hdsp=False, error_feedback=True, topk=None,
            sparsify=None, fraction=None, device_id=None, arrays_key="arrays", jobs=1, state_key=STATE_KEY):
    """Return the Mod. Options are those of the uplink encoder: qp, nonweight_qp, dq (nnr.Encoder),
    tca, hdsp (Encoder.encode), error_feedback, topk (None or the fraction of weight entries kept
    per update; the rest stays in the residual), sparsify ("ternary", "sbc" or "topk": the update as
    one element of which `fraction` is kept, as nnr.fl.NncCoder; qp, nonweight_qp, dq and topk then
    do not apply; see codec.UpdateSender), device_id (default: partition id + 1), arrays_key (the
    message key of the model, as the server strategy's), jobs (coder threads)."""
    codec.require_flwr()
    codec.check_sparse_options(sparsify, fraction, topk)

    def mod(msg, context, call_next):
        app = codec.require_flwr()
        rec = msg.content.get(arrays_key) if msg.has_content() else None
        if rec is None or not codec.is_coded(rec):
            return call_next(msg, context)
        streams, first, manifest_json, raw_names = codec.read_coded(rec)
        ctl = codec.read_control(rec)
        state = _load(context, state_key)
        if state is not None and state.downlink.stream not in (None, ctl.stream):
            # another downlink stream (another server, or run): nothing held so far belongs to it
            log.info("nnc_mod: a new downlink stream; this client's coder state starts over")
            state = None
        if state is None:
            options = dict(qp=qp, nonweight_qp=nonweight_qp, dq=dq, tca=tca, hdsp=hdsp,
                           error_feedback=error_feedback, topk=topk, sparsify=sparsify, fraction=fraction,
                           jobs=jobs,
                           device_id=_device_id(context) if device_id is None else device_id)
            state = ClientCoderState(options, jobs)
        state.downlink.stream = ctl.stream
        if ctl.up_received is not None and ctl.up_received != state.uplink.sent:
            # the server has not received all this client's updates (a reply was lost): a new stream
            log.info("nnc_mod: the server decoded %d of this client's %d uplink bitstreams; restarting the "
                     "uplink stream", ctl.up_received, state.uplink.sent)
            state.uplink = codec.UpdateSender(**state.sender_options)
        try:
            update = state.downlink.receive(streams, first, manifest_json)
        except codec.CoderStateError as e:
            # the server believes this client holds downlink bitstreams it does not (its state was lost,
            # or a message): say how many it holds instead of training; the server sends the rest next
            log.warning("nnc_mod: %s; asking the server to resend from bitstream %d", e, state.downlink.received)
            _save(context, state_key, state)
            return app.Message(app.RecordDict({arrays_key: codec.coded_record(
                [], 0, ack=state.downlink.received, resync=str(e))}), reply_to=msg)
        g = state.global_model
        state.global_model = update if g is None else {n: g[n] + update[n] for n in update}
        raw_key = arrays_key + codec.RAW_SUFFIX
        raw = dict(msg.content[raw_key].items()) if raw_names else {}
        msg.content[arrays_key] = codec.to_array_record(state.global_model, state.downlink.manifest, raw, raw_names)
        if raw_names:
            del msg.content[raw_key]

        reply = call_next(msg, context)

        out = reply.content.get(arrays_key) if reply.has_content() else None
        if msg.metadata.message_type.split(".")[0] == app.MessageType.TRAIN and isinstance(out, app.ArrayRecord):
            floats, raw = codec.split_arrays(out, state.global_model)
            g = state.global_model
            missing = set(g) ^ set(floats)
            if missing:
                raise codec.CoderStateError(f"the reply's arrays differ from the global model's: {sorted(missing)}")
            data, manifest_json, _ = state.uplink.send({n: np.asarray(floats[n], np.float32) - g[n] for n in g})
            reply.content[arrays_key] = codec.coded_record([data], state.uplink.sent - 1, manifest_json, list(raw),
                                                           stream=state.uplink.stream, ack=state.downlink.received)
            if raw:
                reply.content[raw_key] = app.ArrayRecord(raw)
        _save(context, state_key, state)
        return reply

    return mod


def _save(context, key, state):
    app = codec.require_flwr()
    context.state[key] = app.ConfigRecord({"state": codec.dump_state(state)})


def _load(context, key):
    rec = context.state.get(key)
    return None if rec is None else codec.load_state(rec["state"])
