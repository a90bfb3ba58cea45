"""nnr.flower: the NNC coding of Flower ArrayRecords (per-peer state, error feedback, omitted zero
updates) and a 2-client 2-round Flower simulation on synthetic data."""
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from nnr.flower import codec
from nnr.testenv import fashion_mnist

HAVE_FLWR = importlib.util.find_spec("flwr") is not None
HAVE_RAY = importlib.util.find_spec("ray") is not None
HAVE_TORCH = importlib.util.find_spec("torch") is not None
needs_flwr = pytest.mark.skipif(not HAVE_FLWR, reason='flwr not installed (pip install "nnr[flower]")')

ROOT = Path(__file__).resolve().parents[1]


def model(rng, scale=1.0):
    return {"conv.weight": (scale * rng.normal(0, 0.2, (4, 2, 3, 3))).astype(np.float32),
            "conv.bias": np.zeros(4, np.float32),                     # all zero: omitted in the base
            "fc.weight": (scale * rng.normal(0, 0.1, (10, 36))).astype(np.float32),
            "fc.bias": (scale * rng.normal(0, 0.1, 10)).astype(np.float32)}


# -- codec layer: numpy only -------------------------------------------------------------------
def test_stream_round_trip_with_state_over_rounds():
    rng = np.random.default_rng(0)
    tx = codec.UpdateSender(qp=-24, device_id=3)
    rx = codec.UpdateReceiver()
    held_tx = held_rx = None
    for r in range(4):
        upd = model(rng, 1.0 if r == 0 else 0.05)
        data, manifest, decoded = tx.send(upd)
        assert (manifest is not None) == (r == 0)           # names and shapes go with the first bitstream
        got = rx.receive([data], r, manifest)
        assert list(got) == list(upd)                        # manifest order, omitted tensors included
        for n in upd:
            np.testing.assert_array_equal(got[n], decoded[n])   # the sender knows what the receiver has
            assert got[n].shape == upd[n].shape and got[n].dtype == np.float32
        held_tx = decoded if held_tx is None else {n: held_tx[n] + decoded[n] for n in decoded}
        held_rx = got if held_rx is None else {n: held_rx[n] + got[n] for n in got}
    assert tx.sent == rx.received == 4
    np.testing.assert_array_equal(held_rx["conv.bias"], 0)


def test_error_feedback_accumulates_the_residual():
    rng = np.random.default_rng(1)
    tx = codec.UpdateSender(qp=-16, device_id=1)              # coarse: most of a small update is residual
    rx = codec.UpdateReceiver()
    target = {n: np.zeros_like(a) for n, a in model(rng).items()}
    total = {n: np.zeros_like(a) for n, a in target.items()}
    upd = model(rng, 0.02)
    for r in range(6):
        before = {n: a.copy() for n, a in tx.residual.items()} if tx.residual is not None else None
        data, manifest, decoded = tx.send(upd)
        got = rx.receive([data], r, manifest)
        for n in upd:
            expect = upd[n] + (before[n] if before is not None else 0)
            np.testing.assert_allclose(tx.residual[n], expect - got[n], atol=1e-7)   # e <- u - decode(u)
            target[n] += upd[n]
            total[n] += got[n]
    # what was sent + what is still owed = everything the sender was asked to send
    for n in upd:
        np.testing.assert_allclose(total[n] + tx.residual[n], target[n], atol=1e-5)
    assert any(np.abs(tx.residual[n]).max() > 0 for n in upd)


def test_omitted_zero_updates_come_back_as_zeros():
    import nnr
    rng = np.random.default_rng(2)
    tx = codec.UpdateSender(qp=-24, device_id=2, error_feedback=False)   # no residual of the base
    rx = codec.UpdateReceiver()
    base = model(rng)
    data0, manifest, _ = tx.send(base)
    rx.receive([data0], 0, manifest)
    upd = {n: np.zeros_like(a) for n, a in base.items()}
    upd["fc.weight"] = base["fc.weight"] * 0.1
    data1, _, _ = tx.send(upd)
    got = rx.receive([data1], 1)
    for n in ("conv.weight", "conv.bias", "fc.bias"):
        np.testing.assert_array_equal(got[n], 0)
        assert got[n].shape == base[n].shape
    assert np.abs(got["fc.weight"]).max() > 0
    # the bitstream really leaves the zero updates out (conv.bias: also out of the base)
    dec = nnr.Decoder()
    dec.decode_tensors(data0)
    coded = {t.name: t.omitted for t in dec.decode_tensors(data1)}
    assert coded == {"fc.weight": False, "conv.weight": True, "fc.bias": True}


def test_catch_up_replay_and_lost_bitstream():
    rng = np.random.default_rng(3)
    tx = codec.UpdateSender(qp=-24)
    steps, manifest = [], None
    total = None
    for r in range(3):
        data, m, decoded = tx.send(model(rng, 1.0 if r == 0 else 0.1))
        manifest = manifest or m
        steps.append(data)
        total = decoded if total is None else {n: total[n] + decoded[n] for n in decoded}
    late = codec.UpdateReceiver()                              # a client joining late gets every step
    got = late.receive(steps, 0, manifest)
    for n in got:
        np.testing.assert_array_equal(got[n], total[n])
    again = late.receive(steps[1:], 1)                        # replayed steps are skipped
    assert all(not a.any() for a in again.values())
    gap = codec.UpdateReceiver()
    gap.receive(steps[:1], 0, manifest)
    with pytest.raises(codec.CoderStateError, match="lost"):
        gap.receive(steps[2:], 2)
    with pytest.raises(codec.CoderStateError, match="manifest"):
        codec.UpdateReceiver().receive(steps[1:], 0)


def test_topk_keeps_the_rest_in_the_residual():
    rng = np.random.default_rng(4)
    upd = model(rng, 0.1)
    tx = codec.UpdateSender(qp=-40, topk=0.1)
    _, _, decoded = tx.send(upd)
    w = decoded["fc.weight"]
    assert np.count_nonzero(w) <= int(np.ceil(0.1 * w.size)) + 1
    np.testing.assert_allclose(decoded["fc.weight"] + tx.residual["fc.weight"], upd["fc.weight"], atol=1e-6)
    np.testing.assert_allclose(decoded["fc.bias"], upd["fc.bias"], atol=1e-3)   # 1-D tensors kept whole


def test_sparsified_stream_is_one_ternary_element_with_a_dense_base():
    """sparsify="ternary": the base is coded whole on qp's step, every later message is one flat
    element with `fraction` of the entries at +- one magnitude; receiver and sender agree exactly."""
    import nnr
    rng = np.random.default_rng(6)
    tx = codec.UpdateSender(qp=-32, sparsify="ternary", fraction=0.1, tca=False, device_id=4)
    rx = codec.UpdateReceiver()
    base = model(rng)
    data, manifest, decoded = tx.send(base, base=True)
    assert '"flat":"0"' in manifest
    got = rx.receive([data], 0, manifest)
    from nnr_core.quant.reconstruct import step_size
    step = step_size(-32, 2)                                   # 2^-8
    for n in base:
        np.testing.assert_array_equal(got[n], decoded[n])
        assert np.abs(got[n] - base[n]).max() <= step / 2 + 1e-7   # dense: every entry within half a step
    size = sum(a.size for a in base.values())
    streams = [data]
    for r in range(1, 4):
        upd = model(rng, 0.05)
        before = {n: a.copy() for n, a in tx.residual.items()}
        data, manifest, decoded = tx.send(upd)
        assert manifest is None
        streams.append(data)
        got = rx.receive([data], r)
        flat = np.concatenate([got[n].reshape(-1) for n in base])
        kept = flat[flat != 0]
        assert kept.size == int(np.ceil(0.1 * size))            # the whole update's top 10 %
        assert np.unique(np.abs(kept)).size == 1                 # ternary: one magnitude, both signs
        assert (kept > 0).any() and (kept < 0).any()
        for n in base:
            np.testing.assert_array_equal(got[n], decoded[n])
            np.testing.assert_allclose(tx.residual[n], upd[n] + before[n] - got[n], atol=1e-7)
    assert rx.received == 4
    dec = nnr.Decoder()                                          # one element named "0" per message
    assert all([t.name for t in dec.decode_tensors(d)] == ["0"] for d in streams)
    wrong = codec.Manifest([("w", (3,), "<f4")], flat="0")       # a manifest that does not fit the element
    one = nnr.Encoder(qp=-8).encode({"0": np.ones(5, np.float32)}, incremental=True)
    with pytest.raises(codec.CoderStateError, match="has 5 values"):
        codec.UpdateReceiver().receive([one], 0, wrong.to_json())
    other = nnr.Encoder(qp=-8).encode({"w": np.ones(3, np.float32)}, incremental=True)
    with pytest.raises(codec.CoderStateError, match="one element"):
        codec.UpdateReceiver().receive([other], 0, wrong.to_json())


def test_sparsified_stream_decodes_alike_in_the_reference(tmp_path):
    """A downlink as NNCStrategy(sparsify="ternary") writes it (the model whole, then ternary updates)
    is a conforming incremental stream: the reference decodes every bitstream to nnr's values."""
    import json

    import nnr
    from tests.interop.reference import find_reference, run_jobs
    reference, why = find_reference()
    if reference is None:
        pytest.skip(f"interop: {why}")
    rng = np.random.default_rng(7)
    tx = codec.UpdateSender(qp=-30, sparsify="ternary", fraction=0.2, tca=False)
    steps = [tx.send(model(rng), base=True)[0]] + [tx.send(model(rng, 0.05))[0] for _ in range(3)]
    job = tmp_path / "flower"
    job.mkdir()
    (job / "job.json").write_text(json.dumps({"op": "decode_steps", "steps": len(steps), "hdsp": True}))
    for k, data in enumerate(steps):
        (job / f"step{k}_bitstream.nnc").write_bytes(data)
    run_jobs(reference, str(tmp_path))
    assert not (job / "error.txt").exists(), (job / "error.txt").read_text()
    ours = nnr.Decoder()
    for k, data in enumerate(steps):
        mine = ours.decode(data)
        with np.load(job / f"step{k}_decoded.npz") as z:
            theirs = {n: z[n] for n in z.files}
        assert set(theirs) == set(mine) == {"0"}, f"step {k}"
        assert np.array_equal(np.asarray(mine["0"]), theirs["0"]), f"step {k}"


@pytest.mark.parametrize("options, message", [
    (dict(sparsify="ternary"), "fraction"), (dict(sparsify="median", fraction=0.1), "sparsify"),
    (dict(fraction=0.1), "sparsify too"), (dict(sparsify="sbc", fraction=0.1, topk=0.5), "topk"),
    (dict(sparsify="topk", fraction=1.5), "fraction")])
def test_sparsify_options_are_checked(options, message):
    import nnr
    with pytest.raises(nnr.EncoderConfigError, match=message):
        codec.UpdateSender(**options)


# -- ArrayRecord wire format --------------------------------------------------------------------
@needs_flwr
@pytest.mark.parametrize("options", [dict(qp=-28), dict(qp=-28, sparsify="ternary", fraction=0.3, tca=False)],
                         ids=["qp", "ternary"])
def test_array_record_round_trip_through_strategy_and_mod(monkeypatch, options):
    """The server wrapper codes the downlink, the client mod decodes it and codes the reply, the
    server decodes the reply: over three rounds, with the coder state of both sides carried along;
    the clients train from exactly the model the server aggregated."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.serverapp.strategy import FedAvg
    from nnr.flower import NNCStrategy, nnc_mod

    from flwr.supercore.task_identity import TaskIdentity
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)           # what a running ServerApp/ClientApp sets
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    rng = np.random.default_rng(5)

    class Grid:                                                # the two calls FedAvg makes
        def get_node_ids(self):
            return [11, 22]

    strategy = NNCStrategy(FedAvg(min_train_nodes=2, min_available_nodes=2), **options)
    mod = nnc_mod(**options)
    contexts = {n: Context(run_id=1, node_id=n, node_config={"partition-id": i}, state=RecordDict(), run_config={})
                for i, n in enumerate((11, 22))}
    arrays = ArrayRecord({n: Array(a) for n, a in (model(rng) | {"steps": np.array([7], np.int64)}).items()})
    seen, held = {}, None
    for rnd in (1, 2, 3):
        msgs = list(strategy.configure_train(rnd, arrays, ConfigRecord(), Grid()))
        assert len(msgs) == 2 and all(codec.is_coded(m.content["arrays"]) for m in msgs)
        replies = []
        for m in msgs:
            node = m.metadata.dst_node_id
            def train(msg, ctx, node=node):
                got = msg.content["arrays"]
                assert isinstance(got, ArrayRecord) and got["steps"].numpy()[0] == 7
                seen[node, rnd] = {k: v.numpy() for k, v in got.items()}
                new = {k: (v + 0.01 * (node // 11) if v.dtype == np.float32 else v) for k, v in seen[node, rnd].items()}
                return Message(RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in new.items()}), "metrics": MetricRecord({"num-examples": 10})}),
                               reply_to=msg)

            incoming = Message(RecordDict(dict(m.content.items())), dst_node_id=node, message_type="train")
            reply = mod(incoming, contexts[node], train)
            if held is not None:                               # what the server returned last round
                for k in held:
                    np.testing.assert_array_equal(seen[node, rnd][k], held[k])
            assert codec.is_coded(reply.content["arrays"])
            assert reply.metadata.src_node_id == node          # a reply comes from the node it went to
            replies.append(reply)
        arrays, _ = strategy.aggregate_train(rnd, replies)
        held = {k: v.numpy() for k, v in arrays.items()}
        # both clients decoded the same model the server holds (before this round's update)
        for node in (11, 22):
            for k in held:
                assert seen[node, rnd][k].shape == held[k].shape
        assert held["steps"][0] == 7
    t = strategy.traffic
    assert set(t) == {1, 2, 3} and all(t[r]["up_messages"] == 2 and t[r]["down_messages"] == 2 for r in t)
    assert all(t[r]["up_bytes"] < t[r]["up_float32_bytes"] for r in t)
    # the global model moved by the average update (0.01 and 0.02 -> 0.015 per round), up to quantization
    # (the ternary stream sends 30 % of it per message and owes the rest in its residuals)
    start = model(np.random.default_rng(5))
    moved = held["fc.bias"] - start["fc.bias"]
    if "sparsify" in options:
        assert 0 < moved.mean() < 3 * 0.015
        assert all(t[r]["up_bytes"] < t[r]["up_float32_bytes"] / 6 for r in (2, 3))   # 30 %: ~1.7 B per kept entry
    else:
        np.testing.assert_allclose(moved, 3 * 0.015, atol=2e-3)


def test_missing_flwr_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "flwr", None)
    monkeypatch.setitem(sys.modules, "flwr.app", None)
    import nnr
    with pytest.raises(nnr.UnsupportedFeatureError, match=r"pip install \"nnr\[flower\]\""):
        codec.require_flwr()


def example():
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import flower_fashion_mnist as ex
    finally:
        sys.path.pop(0)
    return ex


@pytest.mark.skipif(fashion_mnist.find() is None,
                    reason="Fashion-MNIST not found (python -m nnr.testenv.fashion_mnist fetches it)")
def test_example_reads_fashion_mnist():
    xtr, ytr, xte, yte = example().load_fashion_mnist()
    assert xtr.shape == (60000, 1, 28, 28) and xte.shape == (10000, 1, 28, 28)
    assert xtr.dtype == np.float32 and 0 <= xtr.min() and xtr.max() <= 1
    assert sorted(np.bincount(ytr)) == [6000] * 10 and sorted(np.bincount(yte)) == [1000] * 10


# -- simulation ---------------------------------------------------------------------------------
@pytest.mark.skipif(not (HAVE_FLWR and HAVE_RAY and HAVE_TORCH),
                    reason="needs flwr, ray (Flower's simulation backend) and torch")
def test_two_client_two_round_simulation(monkeypatch):
    ex = example()
    # Ray's workers import the example module by name
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT / "examples"), str(ROOT),
                                                                   os.environ.get("PYTHONPATH")])))
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    cfg = ex.parse_args(["--clients", "2", "--rounds", "2", "--synthetic", "--train-samples", "400",
                         "--test-samples", "200", "--alpha", "5", "--local-epochs", "2", "--markdown", ""])
    out = ex.run(cfg, compress=True)          # only the NNC run: one Ray start-up keeps it short
    t = out["strategy"].traffic
    assert sorted(t) == [1, 2] and all(t[r]["up_messages"] == 2 and t[r]["down_messages"] == 2 for r in t)
    coded = sum(t[r]["up_bytes"] + t[r]["down_bytes"] for r in t)
    f32 = sum(t[r]["up_float32_bytes"] + t[r]["down_float32_bytes"] for r in t)
    assert f32 == 8 * 4 * out["parameters"] and coded * 5 < f32
    assert out["accuracy"][2] > 0.5           # 10 well-separated synthetic classes: training works
