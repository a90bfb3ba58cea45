"""Output-aware rounding (nnr_core/quant/gptq.py, nnr.rd.layer_hessians, nnr.encode(hessians=...)):
hand-derived roundings, the layers' input moments against explicit patch sums, and streams that
decode to the rounded levels, fit budgets and decode alike in the reference."""
import re

import numpy as np
import pytest

import nnr
import nnr.rd
from nnr.errors import EncoderConfigError
from nnr_core.quant import gptq
from nnr_core.quant.gptq import Factor, check_hessian, gptq_levels
from nnr_core.quant.reconstruct import step_size
from tests.interop.reference import assert_same_tensors, find_reference, reference_decodes


def factor(w, h, act_order=True):
    return Factor("w", check_hessian("w", np.shape(w), h), np.shape(w)[0], act_order)


def plain(w, delta):
    return (np.sign(w) * np.floor(np.abs(w) / delta + 0.5)).astype(np.int32).reshape(-1)


def test_a_diagonal_hessian_rounds_plainly():
    # U is diagonal: no error reaches another column
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (6, 5))
    h = np.diag(rng.uniform(0.5, 3.0, 5))
    np.testing.assert_array_equal(gptq_levels(w, -4, 2, factor(w, h)), plain(w, step_size(-4, 2)))


@pytest.mark.parametrize("damp", [0.0, gptq.DAMP])
def test_two_columns_by_hand(monkeypatch, damp):
    # H = [[4, 2], [2, 2]], step 1: column 0 rounds to q0, its error e0 = w0 - q0 moves column 1 to
    # w1 + e0 * H01 / H11 (the least-squares compensation), 0.3 + 0.4 = 0.7 -> 1 where plain rounding
    # gives 0; the damping (0.01 * mean diagonal = 0.03) only scales that by 2 / 2.03
    monkeypatch.setattr(gptq, "DAMP", damp)
    h = np.array([[4.0, 2.0], [2.0, 2.0]])
    w = np.array([[0.4, 0.3], [0.6, -0.2], [-0.4, 0.05]])
    assert step_size(0, 2) == 1.0
    np.testing.assert_array_equal(gptq_levels(w, 0, 2, factor(w, h)).reshape(3, 2), [[0, 1], [1, -1], [0, 0]])
    np.testing.assert_array_equal(plain(w, 1.0).reshape(3, 2), [[0, 0], [1, 0], [0, 0]])


def test_act_order_rounds_the_larger_input_first():
    # H = [[2, 2], [2, 4]]: column 1 has the larger diagonal and is rounded first: 0.4 -> 0, error
    # 0.4 moves column 0 to 0.3 + 0.4 * 2 / 2 = 0.7 -> 1
    h = np.array([[2.0, 2.0], [2.0, 4.0]])
    w = np.array([[0.3, 0.4]])
    np.testing.assert_array_equal(gptq_levels(w, 0, 2, factor(w, h)), [1, 0])


def correlated_inputs(rng, n, d):
    mix = np.eye(d) + 2.0 * rng.normal(0, 1, (d, d)) / np.sqrt(d)
    return (rng.normal(0, 1, (n, d)) @ mix) * np.geomspace(3.0, 0.3, d)


def test_output_error_below_plain_rounding():
    rng = np.random.default_rng(1)
    x = correlated_inputs(rng, 4000, 48)
    w = rng.normal(0, 0.05, (40, 48))
    qp = -22
    lev = gptq_levels(w, qp, 2, factor(w, x.T @ x)).reshape(w.shape)
    delta = step_size(qp, 2)
    err_gptq = np.linalg.norm((w - lev * delta) @ x.T)
    err_plain = np.linalg.norm((w - plain(w, delta).reshape(w.shape) * delta) @ x.T)
    assert err_gptq < 0.7 * err_plain
    assert np.abs(lev).max() <= np.abs(plain(w, delta)).max() + 1


def test_grouped_hessians_round_each_group_with_its_own():
    rng = np.random.default_rng(2)
    hs = []
    for g in range(3):
        x = correlated_inputs(rng, 500, 9)
        hs.append(x.T @ x)
    hs = np.stack(hs)
    w = rng.normal(0, 0.1, (6, 1, 3, 3))          # a depthwise-like layer, 2 rows per group
    w[::2, 0, 1, 1] = 0.6                         # the same largest |w| in every group: the same level bound
    got = gptq_levels(w, -16, 2, factor(w, hs)).reshape(6, 9)
    for g in range(3):
        rows = w[2 * g:2 * g + 2].reshape(2, 9)
        f = factor(rows, hs[g], act_order=False)          # a grouped layer keeps its column order
        np.testing.assert_array_equal(got[2 * g:2 * g + 2].reshape(-1), gptq_levels(rows, -16, 2, f))


def test_bad_hessians_are_refused():
    w = np.zeros((4, 3), np.float32)
    for h, what in [(np.eye(4), "needs (3, 3)"), (np.ones((3, 3, 3)), "groups dividing 4"),
                    (np.full((3, 3), np.nan), "NaN"), (np.array([[1, 2, 0], [0, 1, 0], [0, 0, 1.0]]), "symmetric"),
                    (-np.eye(3), "non-negative"), (np.array([["a"] * 3] * 3), "numeric")]:
        with pytest.raises(EncoderConfigError, match=re.escape(what)):
            check_hessian("w", w.shape, h)
    with pytest.raises(EncoderConfigError, match="no rows"):
        check_hessian("b", (4,), np.eye(1))
    with pytest.raises(EncoderConfigError, match="positive semi-definite"):
        factor(w, np.array([[1.0, 5.0, 0], [5.0, 1.0, 0], [0, 0, 1.0]]))


# -- the encoder ------------------------------------------------------------------------------------

def model(seed=3):
    rng = np.random.default_rng(seed)
    x = correlated_inputs(rng, 3000, 96)
    tensors = {"a.weight": rng.normal(0, 0.08, (64, 96)).astype(np.float32),
               "a.bias": rng.normal(0, 0.1, 64).astype(np.float32),
               "b.weight": rng.normal(0, 0.08, (48, 64)).astype(np.float32)}
    return tensors, {"a.weight": x.T @ x}


def test_encode_codes_the_rounded_levels_and_leaves_the_rest():
    tensors, hessians = model()
    data = nnr.encode(tensors, qp=-30, hessians=hessians)
    dec = nnr.Decoder()
    out = dec.decode(data)
    f = factor(tensors["a.weight"], hessians["a.weight"])
    want = gptq_levels(tensors["a.weight"], -30, 2, f).reshape(64, 96) * np.float32(step_size(-30, 2))
    np.testing.assert_array_equal(out["a.weight"], want.astype(np.float32))
    plain_out = nnr.decode(nnr.encode(tensors, qp=-30))
    for k in ("a.bias", "b.weight"):
        np.testing.assert_array_equal(out[k], plain_out[k])
    dq = {u.fields.get("topology_elem_id"): u.fields.get("dq_flag") for u in dec.units if "dq_flag" in u.fields}
    assert dq == {"a.weight": 0, "a.bias": 1, "b.weight": 1}
    assert nnr.encode(tensors, qp=-30, hessians=hessians, streaming=False, jobs=2) == data


def test_target_bpp_with_hessians_fits_and_lowers_the_output_error():
    tensors, hessians = model(4)
    params = sum(v.size for v in tensors.values())
    x = np.linalg.cholesky(hessians["a.weight"])          # any X with X X^T = H gives the same error
    errs = {}
    for name, extra in (("plain", {}), ("gptq", {"hessians": hessians})):
        data = nnr.encode(tensors, target_bpp=3.0, **extra)
        assert 0.98 * 3.0 <= len(data) * 8 / params <= 3.0      # one QP step of 6144 weights is 1.4 % here
        out = nnr.decode(data)
        errs[name] = np.linalg.norm((tensors["a.weight"] - out["a.weight"]) @ x)
    assert errs["gptq"] < 0.9 * errs["plain"]


def test_encoder_refuses_what_it_cannot_round():
    tensors, hessians = model()
    with pytest.raises(EncoderConfigError, match="codebook=False"):
        nnr.encode(tensors, hessians=hessians, codebook=True)
    with pytest.raises(EncoderConfigError, match="dict"):
        nnr.encode(tensors, hessians=[hessians["a.weight"]])
    with pytest.raises(EncoderConfigError, match="not quantized"):
        nnr.encode({**tensors, "i": np.arange(4, dtype=np.int32).reshape(2, 2)}, hessians={"i": np.eye(2)})
    with pytest.raises(EncoderConfigError, match=re.escape("needs (96, 96)")):
        nnr.encode(tensors, hessians={"a.weight": np.eye(64)})


REFERENCE, WHY = find_reference()


@pytest.mark.skipif(REFERENCE is None, reason=f"interop: {WHY}")
def test_the_reference_decodes_rounded_streams(tmp_path):
    tensors, hessians = model(5)
    streams = {"qp": nnr.encode(tensors, qp=-28, hessians=hessians),
               "budget": nnr.encode(tensors, target_bpp=2.5, hessians=hessians)}
    for name, (kind, out) in reference_decodes(streams, tmp_path).items():
        assert kind == "decoded", out
        assert_same_tensors(nnr.decode(streams[name]), out)


# -- the layers' input moments (torch) --------------------------------------------------------------

def test_layer_hessians_are_the_sums_of_patch_products():
    torch = pytest.importorskip("torch", reason="nnr.rd.layer_hessians needs torch: pip install torch==2.13.0")
    nn = torch.nn
    class Squash(nn.Module):
        def forward(self, x):
            return x.flatten(2)

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=False), nn.ReLU(), Squash(),
                      nn.Conv1d(6, 5, 2), nn.Flatten(), nn.Linear(40, 3))
    m.train()
    xs = [torch.randn(2, 4, 5, 5), torch.randn(3, 4, 5, 5)]
    got = nnr.rd.layer_hessians(m, xs)
    assert m.training
    assert set(got) == {"0.weight", "3.weight", "5.weight"}
    # conv2d: explicit zero-padded 3x3 patches at stride 2, channels of each group (c, ky, kx) order
    want = np.zeros((2, 18, 18))
    ins1, ins3, ins5 = [], [], []
    for x in xs:
        x = x.double().numpy()
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        for n in range(len(x)):
            for oy in range(3):
                for ox in range(3):
                    patch = xp[n, :, 2 * oy:2 * oy + 3, 2 * ox:2 * ox + 3]
                    for g in range(2):
                        p = patch[2 * g:2 * g + 2].reshape(-1)
                        want[g] += np.outer(p, p)
        with torch.no_grad():
            h1 = m[2](m[1](m[0](torch.from_numpy(x).float()))).double().numpy()     # (n, 6, 9)
            h3 = m[4](m[3](torch.from_numpy(h1).float())).double().numpy()
        ins1.append(h1)
        ins3.append(h3)
    # off-diagonal entries shrunk by n / (n + d): 45 patches of 18 inputs per group
    np.testing.assert_allclose(got["0.weight"], by_hand_shrunk(want, 45), rtol=1e-9)
    w3 = np.zeros((12, 12))
    for h1 in ins1:
        for n in range(len(h1)):
            for t in range(8):
                p = h1[n, :, t:t + 2].reshape(-1)
                w3 += np.outer(p, p)
    np.testing.assert_allclose(got["3.weight"], by_hand_shrunk(w3, 40), rtol=1e-5)       # 5 x 8 patches of 12
    x5 = np.concatenate(ins3)
    np.testing.assert_allclose(got["5.weight"], by_hand_shrunk(x5.T @ x5, 5), rtol=1e-5)  # 5 vectors of 40


def by_hand_shrunk(h, n):
    d = h.shape[-1]
    off = ~np.eye(d, dtype=bool)
    out = h.copy()
    out[..., off] *= n / (n + d)
    return out


def test_layer_hessians_errors():
    torch = pytest.importorskip("torch", reason="nnr.rd.layer_hessians needs torch: pip install torch==2.13.0")
    with pytest.raises(EncoderConfigError, match="torch.nn.Module"):
        nnr.rd.layer_hessians(object(), torch.zeros(1))
    with pytest.raises(EncoderConfigError, match="no batch"):
        nnr.rd.layer_hessians(torch.nn.Linear(2, 2), [])
    with pytest.raises(EncoderConfigError, match="NaN or inf"):
        nnr.rd.layer_hessians(torch.nn.Linear(2, 2), torch.tensor([[1.0, float("nan")]]))
