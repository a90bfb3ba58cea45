"""nnr.rd.search_target_relative_error: per tensor, the coarsest QP whose decoded relative RMSE
(RMSE / RMS of the tensor) is at most the target; checked on decoded streams, independently of the
search. The command line's modes built on it: tests/test_cli_quality.py."""
import numpy as np
import pytest

import nnr
from nnr.errors import EncoderConfigError
from nnr.rd import relative_rmse, search_target_relative_error
from nnr.rd.search import bisect_largest, bracketed_largest

R = 0.01


def vgg_weights(rng):
    """Weights at very different scales, as in a VGG (std 0.2 .. 0.003)."""
    return {"features.0.weight": rng.normal(0, 0.2, (16, 3, 3, 3)).astype(np.float32),
            "features.3.weight": rng.normal(0, 0.05, (32, 16, 3, 3)).astype(np.float32),
            "classifier.0.weight": rng.normal(0, 0.003, (64, 512)).astype(np.float32),
            "classifier.3.weight": rng.normal(0, 0.1, (10, 64)).astype(np.float32)}


WEIGHTS = vgg_weights(np.random.default_rng(13))


def decoded_relative(tensors, data):
    dec = nnr.decode(data)
    return {n: relative_rmse(a, dec[n]) for n, a in tensors.items()}


def assert_coarsest(tensors, qps, target, **options):
    """On decoded streams: every tensor of `qps` meets `target` at its QP, and misses it at QP + 1."""
    rel = decoded_relative(tensors, nnr.encode(tensors, qp_per_tensor=qps, **options))
    for name, qp in qps.items():
        assert rel[name] <= target, (name, qp, rel[name])
        coarser = decoded_relative(tensors, nnr.encode(tensors, qp_per_tensor=dict(qps, **{name: qp + 1}),
                                                       **options))
        assert coarser[name] > target, (name, qp + 1, coarser[name])


@pytest.mark.parametrize("options", [{}, {"dq": False}, {"qp_density": 3}, {"scan_order": 2},
                                     {"qp_density": 0, "dq": False}])
@pytest.mark.parametrize("target", [0.01, 0.08])
def test_search_picks_the_coarsest_qp_meeting_the_target(options, target):
    weights = WEIGHTS
    qps = search_target_relative_error(weights, target, **options)
    assert set(qps) == set(weights) and len(set(qps.values())) > 1          # one QP per tensor's scale
    assert_coarsest(weights, qps, target, **options)


def test_search_jobs_and_verify_give_the_same_qps():
    weights = WEIGHTS
    one = search_target_relative_error(weights, R, verify=False, jobs=1)
    assert search_target_relative_error(weights, R, verify=False, jobs=2) == one
    assert search_target_relative_error(weights, R) == one            # the stream agrees: nothing lowered


def test_search_edges():
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.1, (8, 8)).astype(np.float32)
    tiny = np.full((4, 4), 1e-12, np.float32)          # below the finest step of the range (2^-32)
    assert search_target_relative_error({"z": np.zeros((4, 4), np.float32)}, R) == {"z": 127}
    with pytest.raises(EncoderConfigError, match=r"tensor 'tiny' does not reach relative error 0.01 even at QP -128"):
        search_target_relative_error({"w": w, "tiny": tiny}, R)
    assert search_target_relative_error({"w": w, "tiny": tiny}, R, strict=False)["tiny"] == -128
    for bad in (0, -0.1, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(EncoderConfigError, match="relative error target"):
            search_target_relative_error({"w": w}, bad)
    for option in ({"codebook": True}, {"bitdepth": 8}):
        with pytest.raises(EncoderConfigError, match="cannot be combined"):
            search_target_relative_error({"w": w}, R, **option)
    calls = []
    search_target_relative_error({"w": w, "v": w}, R, progress=lambda *a: calls.append(a))
    assert calls == [(1, 2, "w"), (2, 2, "v")]


def test_bracketed_largest_is_bisect_largest():
    rng = np.random.default_rng(2)
    for _ in range(300):
        lo, hi = sorted(int(x) for x in rng.integers(-130, 130, 2))
        threshold, guess = int(rng.integers(lo - 3, hi + 3)), int(rng.integers(-200, 200))
        calls = []

        def ok(x):
            calls.append(x)
            return x <= threshold
        assert bracketed_largest(ok, guess, int(rng.integers(1, 9)), lo, hi) == bisect_largest(ok, lo, hi)
        assert all(lo <= x <= hi for x in calls)
    flips = {-40: True, -39: False, -38: True, -37: False}          # not monotone: a local boundary
    x = bracketed_largest(lambda q: flips.get(q, q < -40), -38, 1, -60, 0)
    assert flips.get(x, x < -40) and not flips.get(x + 1, x + 1 < -40)
