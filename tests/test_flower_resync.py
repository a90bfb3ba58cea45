"""nnr.flower out of step: lost replies, lost client state and replayed messages resynchronise, at
the level of NNCStrategy and nnc_mod (the deployment test runs two of these on real processes)."""
import importlib.util

import numpy as np
import pytest

from nnr.flower import codec

HAVE_FLWR = importlib.util.find_spec("flwr") is not None
pytestmark = pytest.mark.skipif(not HAVE_FLWR, reason='flwr not installed (pip install "nnr[flower]")')

NODES = (11, 22)


def model(rng, scale=1.0):
    return {"conv.weight": (scale * rng.normal(0, 0.2, (4, 2, 3, 3))).astype(np.float32),
            "fc.weight": (scale * rng.normal(0, 0.1, (10, 36))).astype(np.float32),
            "fc.bias": (scale * rng.normal(0, 0.1, 10)).astype(np.float32)}


class Federation:
    """NNCStrategy around FedAvg and one nnc_mod client per node, messages passed by hand, so that a
    test can lose, delay or replay any of them. Clients add 0.01 * (node // 11) to every weight."""

    def __init__(self, monkeypatch):
        from flwr.app import Array, ArrayRecord, Context, RecordDict
        from flwr.serverapp.strategy import FedAvg
        from flwr.supercore.task_identity import TaskIdentity

        from nnr.flower import NNCStrategy, nnc_mod
        for attr in ("_run_id", "_node_id", "_task_id"):     # what a running ServerApp/ClientApp sets
            monkeypatch.setattr(TaskIdentity, attr, 1)
        self.strategy = NNCStrategy(FedAvg(min_train_nodes=1, min_available_nodes=1), qp=-28)
        self.mod = nnc_mod(qp=-28)
        self.contexts = {n: Context(run_id=1, node_id=n, node_config={"partition-id": i}, state=RecordDict(),
                                    run_config={}) for i, n in enumerate(NODES)}
        self.arrays = ArrayRecord({n: Array(a) for n, a in model(np.random.default_rng(5)).items()})
        self.held = {}                   # node -> the model it trained from in its last round

    def send(self, rnd, nodes=NODES):
        """The server's train messages of round `rnd`, {node: message}."""
        from flwr.app import ConfigRecord

        class Grid:
            def get_node_ids(self):
                return list(nodes)
        return {m.metadata.dst_node_id: m for m in self.strategy.configure_train(rnd, self.arrays, ConfigRecord(),
                                                                                 Grid())}

    def client(self, node, msg):
        """Node `node` handles `msg` (a copy, as delivered); returns its reply."""
        from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

        def train(m, ctx):
            got = {k: v.numpy() for k, v in m.content["arrays"].items()}
            self.held[node] = got
            new = {k: Array(v + np.float32(0.01 * (node // 11))) for k, v in got.items()}
            return Message(RecordDict({"arrays": ArrayRecord(new), "metrics": MetricRecord({"num-examples": 10})}),
                           reply_to=m)
        incoming = Message(RecordDict(dict(msg.content.items())), dst_node_id=node, message_type="train")
        return self.mod(incoming, self.contexts[node], train)

    def aggregate(self, rnd, replies):
        arrays, _ = self.strategy.aggregate_train(rnd, list(replies))
        if arrays is not None:
            self.arrays = arrays

    def round(self, rnd, lose=(), nodes=NODES):
        """One round; the replies of the nodes in `lose` never reach the server. Returns the messages
        and the replies' coded records as they were sent ({node: dict})."""
        msgs = self.send(rnd, nodes)
        replies = {n: self.client(n, m) for n, m in msgs.items()}
        sent = {n: dict(r.content["arrays"].items()) for n, r in replies.items()}
        self.aggregate(rnd, [r for n, r in replies.items() if n not in lose])
        return msgs, sent

    def server_model(self):
        return {k: v.numpy() for k, v in self.strategy.global_record().items()}

    def events(self):
        return [(r, n, e) for r, n, e, _ in self.strategy.resyncs]


def held_model_is_servers(fed, node, before):
    """The model `node` trained from equals the server's global model of that round."""
    return all(np.array_equal(fed.held[node][k], before[k]) for k in before)


def test_lost_reply_restarts_the_uplink_stream(monkeypatch):
    """A reply lost (e.g. after a round's timeout): the server's decoder misses an uplink bitstream.
    The next message says how many it decoded; the client starts a new stream, the server decodes it."""
    fed = Federation(monkeypatch)
    fed.round(1)
    fed.round(2, lose={22})
    assert fed.strategy.acked == {11: 2, 22: 1}               # 22's reply did not acknowledge bitstream 1
    before = fed.server_model()
    msgs, replies = fed.round(3)
    first, streams = msgs[22].content["arrays"]["nnr.first"], msgs[22].content["arrays"]["nnr.streams"]
    assert first == 1 and len(streams) == 2                  # bitstream 1 again (replayed, skipped) and 2
    assert msgs[22].content["arrays"]["nnr.up_received"] == 1
    assert replies[22]["nnr.first"] == 0                      # a new uplink stream, with its manifest
    assert "nnr.manifest" in replies[22]
    assert fed.events() == [(3, 22, "uplink-restart")]
    assert held_model_is_servers(fed, 11, before) and held_model_is_servers(fed, 22, before)
    assert fed.strategy.acked == {11: 3, 22: 3}
    before = fed.server_model()
    fed.round(4)                                              # and the streams go on in step
    assert held_model_is_servers(fed, 22, before) and fed.events() == [(3, 22, "uplink-restart")]


def test_without_the_restart_a_lost_reply_is_left_out_not_fatal(monkeypatch):
    """A coded reply that does not continue the node's uplink stream (here: the server never told the
    client, as an old server would not) is left out of the aggregation instead of failing the round."""
    fed = Federation(monkeypatch)
    fed.round(1)
    fed.round(2, lose={22})
    msgs = fed.send(3)
    del msgs[22].content["arrays"]["nnr.up_received"]         # no restart request reaches the client
    replies = {n: fed.client(n, m) for n, m in msgs.items()}
    assert replies[22].content["arrays"]["nnr.first"] == 2
    fed.aggregate(3, replies.values())
    assert fed.events() == [(3, 22, "uplink-out-of-step")]
    assert fed.strategy.traffic[3]["up_messages"] == 2        # it travelled, but only 11's update counts
    before = fed.server_model()
    fed.round(4)                                              # told now: 22 restarts and takes part again
    assert fed.events()[-1] == (4, 22, "uplink-restart") and held_model_is_servers(fed, 22, before)


def test_client_state_lost_asks_for_a_resync(monkeypatch):
    """A client that lost its Context.state but kept its node id (the server thinks it holds the
    downlink bitstreams it acknowledged) answers with a resync request and gets all bitstreams next."""
    fed = Federation(monkeypatch)
    fed.round(1)
    fed.round(2)
    fed.contexts[22].state.clear()
    fed.held.pop(22)
    msgs, replies = fed.round(3)
    assert 22 not in fed.held                                 # the app was not called
    rec = replies[22]
    assert rec["nnr.ack"] == 0 and "manifest" in rec["nnr.resync"] and rec["nnr.streams"] == []
    assert fed.events() == [(3, 22, "downlink-resync")]
    assert fed.strategy.acked[22] == 0
    before = fed.server_model()
    msgs, replies = fed.round(4)
    assert msgs[22].content["arrays"]["nnr.first"] == 0 and len(msgs[22].content["arrays"]["nnr.streams"]) == 4
    assert held_model_is_servers(fed, 22, before)             # every bitstream from the base on
    assert fed.events()[-1] == (4, 22, "uplink-restart")      # its uplink stream started over too


def test_replayed_messages_are_applied_once(monkeypatch):
    """A downlink message delivered twice changes nothing the second time; a reply delivered again in
    a later round is out of step and left out."""
    import copy
    fed = Federation(monkeypatch)
    fed.round(1)
    msgs = fed.send(2)
    replies = {n: fed.client(n, m) for n, m in msgs.items()}
    first = fed.held[11]
    stale = copy.deepcopy(replies[22])
    fed.client(11, msgs[11])                                  # the same message once more
    assert all(np.array_equal(fed.held[11][k], first[k]) for k in first)
    fed.aggregate(2, replies.values())
    assert fed.events() == []
    before = fed.server_model()
    msgs = fed.send(3)
    replies = {n: fed.client(n, m) for n, m in msgs.items()}
    assert replies[11].content["arrays"]["nnr.first"] == 0   # 11 sent one reply too many: a new stream
    fed.aggregate(3, list(replies.values()) + [stale])       # 22's round-2 reply once more
    assert fed.events() == [(3, 11, "uplink-restart"), (3, 22, "uplink-out-of-step")]
    assert held_model_is_servers(fed, 11, before) and held_model_is_servers(fed, 22, before)


def test_replayed_first_reply_is_out_of_step_not_a_restart(monkeypatch):
    """Bitstream 0 of a stream the server decodes already (same stream id) is a replay, not a restart."""
    import copy
    fed = Federation(monkeypatch)
    msgs = fed.send(1)
    replies = {n: fed.client(n, m) for n, m in msgs.items()}
    stale = copy.deepcopy(replies[11])
    fed.aggregate(1, replies.values())
    msgs = fed.send(2)
    replies = {n: fed.client(n, m) for n, m in msgs.items()}
    fed.aggregate(2, [stale] + list(replies.values()))
    assert fed.events() == [(2, 11, "uplink-out-of-step")]
    assert fed.strategy.uplinks[11].received == 2             # the stream went on with the real reply


def test_a_new_server_stream_starts_the_client_over(monkeypatch):
    """A client holding another downlink stream's state (a new server, or a new run that finds the
    node's Context.state of an earlier one) starts over instead of skipping bitstreams 0, 1, ..."""
    from flwr.serverapp.strategy import FedAvg

    from nnr.flower import NNCStrategy
    fed = Federation(monkeypatch)
    start = fed.arrays
    fed.round(1)
    fed.round(2)
    fed.strategy = NNCStrategy(FedAvg(min_train_nodes=1, min_available_nodes=1), qp=-28)
    fed.arrays = start
    msgs = fed.send(1)
    before = {k: v.numpy() for k, v in fed.strategy.global_record().items()}
    replies = {n: fed.client(n, m) for n, m in msgs.items()}
    assert held_model_is_servers(fed, 11, before) and held_model_is_servers(fed, 22, before)
    assert all(r.content["arrays"]["nnr.first"] == 0 for r in replies.values())
    fed.aggregate(1, replies.values())
    assert fed.events() == []


def test_read_control_of_old_and_new_records():
    rec = codec.coded_record([b"x"], 3, None, [], stream=7, ack=4, up_received=2)
    assert codec.read_control(rec) == codec.Control(stream=7, ack=4, up_received=2, resync=None)
    assert codec.read_control(codec.coded_record([], 0)) == (None, None, None, None)
