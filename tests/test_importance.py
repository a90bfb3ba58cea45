"""nnr.importance (nnr/rd/importance.py): Gauss-Newton and empirical-Fisher sensitivity of a torch module,
checked against independent computations (hand-derived, full Jacobians, per-sample backward loops)."""
import logging
import sys

import numpy as np
import pytest

import nnr
from nnr.errors import EncoderConfigError, NNRError, UnsupportedFeatureError
from nnr.progress import Progress

torch = pytest.importorskip("torch", reason="nnr.importance needs torch: pip install torch==2.13.0")
nn = torch.nn


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))


def exact_gauss_newton(module, x):
    """Σ over samples and output units of J², from the full Jacobian of the whole batch."""
    params = dict(module.named_parameters())

    def f(*ps):
        return torch.func.functional_call(module, dict(zip(params, ps)), (x,))
    jac = torch.autograd.functional.jacobian(f, tuple(params.values()))
    return {n: (j.double().reshape(-1, *p.shape) ** 2).sum(0).numpy() for (n, p), j in zip(params.items(), jac)}


def fisher_loop(module, x, y, loss):
    """Σ_s (∂ℓ_s/∂θ)² by one loss.backward() per sample."""
    out = {n: np.zeros(p.shape) for n, p in module.named_parameters()}
    for s in range(len(x)):
        module.zero_grad()
        loss(module(x[s:s + 1]), y[s:s + 1]).backward()
        for n, p in module.named_parameters():
            out[n] += p.grad.double().numpy() ** 2
    module.zero_grad(set_to_none=True)
    return out


def ce(out, target):
    return nn.functional.cross_entropy(out, target)


# -- exactness

def test_linear_model_is_exact_per_sample():
    """y = Wx + b: ∂y_i/∂W_ij = x_j, so diag(JᵀJ) = Σ_s x_sj² (every row) and Σ_s 1 for b; one ±1 probe
    of a one-sample batch gives exactly this (v_i² = 1)."""
    torch.manual_seed(1)
    lin = nn.Linear(5, 3)
    x = torch.randn(7, 5)
    imp = nnr.importance(lin, [x[s:s + 1] for s in range(7)])
    col = np.zeros(5)
    for s in range(7):
        col += x[s].numpy().astype(np.float64) ** 2
    np.testing.assert_array_equal(imp["weight"], np.tile(col, (3, 1)).astype(np.float32))
    np.testing.assert_array_equal(imp["bias"], np.full(3, 7, np.float32))
    assert imp["weight"].dtype == np.float32 and imp.unseen_counts == {}


def test_probe_estimate_converges_to_the_exact_diagonal():
    m = mlp()
    x = torch.randn(5, 4)
    exact = exact_gauss_newton(m, x)
    est = nnr.importance(m, x, probes=2000, seed=3)
    assert set(est) == set(exact)
    for n, e in exact.items():
        assert np.linalg.norm(est[n] - e) / np.linalg.norm(e) < 0.1, n
    one = nnr.importance(m, x, probes=1, seed=3)
    assert max(np.linalg.norm(one[n] - e) / np.linalg.norm(e) for n, e in exact.items()) > 0.1


def test_fisher_equals_per_sample_backward_loop():
    m = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    m.train()
    x, y = torch.randn(9, 4), torch.randint(0, 3, (9,))
    m(x)                                    # running statistics that differ from the batch's
    got = nnr.importance(m, [(x[:4], y[:4]), (x[4:], y[4:])], method="fisher", loss=ce, unseen="zero")
    m.eval()
    ref = fisher_loop(m, x, y, ce)
    assert set(got) == set(ref) | {"1.running_mean"}
    for n in ref:
        np.testing.assert_allclose(got[n], ref[n], rtol=1e-5, atol=1e-12 * ref[n].max(), err_msg=n)
    assert got.method == "fisher" and got.batches == 2


def exact_kl_fisher(module, x):
    """Σ_s diag(J_sᵀ (diag p_s − p_s p_sᵀ) J_s), p_s the softmax of sample s's output, from full Jacobians."""
    params = dict(module.named_parameters())
    out = {n: np.zeros(p.shape) for n, p in params.items()}
    for s in range(len(x)):
        def f(*ps):
            return torch.func.functional_call(module, dict(zip(params, ps)), (x[s:s + 1],))[0]
        with torch.no_grad():
            p = torch.softmax(module(x[s:s + 1])[0].double(), 0)
        h = torch.diag(p) - torch.outer(p, p)
        for (n, par), j in zip(params.items(), torch.autograd.functional.jacobian(f, tuple(params.values()))):
            j = j.double().reshape(len(p), -1)
            out[n] += torch.einsum("ok,ol,lk->k", j, h, j).reshape(par.shape).numpy()
    return out


def test_kl_probe_estimate_converges_to_the_classifiers_fisher():
    """method='kl': probes e_y − p, y ~ softmax: E[g²] is the Fisher of the model's own predictive
    distribution, which is not the Gauss-Newton diagonal of the logits."""
    m = mlp()
    x = torch.randn(5, 4)
    exact = exact_kl_fisher(m, x)
    est = nnr.importance(m, x, method="kl", probes=4000, seed=3)
    assert set(est) == set(exact) and est.method == "kl" and est.probes == 4000
    for n, e in exact.items():
        assert np.linalg.norm(est[n] - e) / np.linalg.norm(e) < 0.1, n
    gn = exact_gauss_newton(m, x)
    assert all(np.linalg.norm(gn[n] - e) / np.linalg.norm(e) > 0.5 for n, e in exact.items())
    again = nnr.importance(m, x, method="kl", probes=4000, seed=3)
    for n in est:
        np.testing.assert_array_equal(est[n], again[n])


def test_kl_needs_class_logits():
    class Scalar(nn.Linear):
        def forward(self, x):
            return super().forward(x).sum()
    with pytest.raises(EncoderConfigError, match="method='kl' needs an output whose last axis"):
        nnr.importance(Scalar(2, 2), torch.randn(2, 2), method="kl")
    with pytest.raises(EncoderConfigError, match="method='kl' needs an output whose last axis"):
        nnr.importance(nn.Linear(2, 1), torch.randn(2, 2), method="kl")


# -- determinism and the module's state

def test_deterministic_with_a_seed_and_seeds_differ():
    m, x = mlp(), torch.randn(6, 4)
    a, b = nnr.importance(m, x, seed=5), nnr.importance(m, x, seed=5)
    c = nnr.importance(m, x, seed=6)
    for n in a:
        np.testing.assert_array_equal(a[n], b[n])
    assert any(not np.array_equal(a[n], c[n]) for n in a)


def test_module_state_is_restored():
    m = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.Linear(6, 3))
    m.train()
    m[2].eval()
    m[0].bias.requires_grad_(False)
    m[2].weight.grad = torch.ones_like(m[2].weight)
    x = torch.randn(3, 4)
    a = nnr.importance(m, x, seed=1)
    b = nnr.importance(m, x, seed=1)            # eval() during the run: dropout off, so repeatable
    nnr.importance(m, x, names=["2.bias"])      # the others' requires_grad is off during this run
    assert [mod.training for mod in m.modules()] == [True, True, True, False]
    assert [p.requires_grad for p in m.parameters()] == [True, False, True, True]
    assert m[0].weight.grad is None and m[2].bias.grad is None
    np.testing.assert_array_equal(m[2].weight.grad.numpy(), 1.0)
    assert set(a) == {"0.weight", "2.weight", "2.bias"}         # frozen 0.bias has no entry
    np.testing.assert_array_equal(a["0.weight"], b["0.weight"])
    with torch.no_grad():                                       # the caller's no_grad does not matter
        np.testing.assert_array_equal(nnr.importance(m, x, seed=1)["2.bias"], a["2.bias"])


def test_buffers_names_restrict_and_tied_weights_share():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 4 * 4, 2 * 4 * 4))
    x = torch.randn(2, 1, 6, 6)
    imp = nnr.importance(m, x, batch_norm=False)
    assert set(imp) == {"0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"}
    assert set(nnr.importance(m, x)) == set(imp) | {"1.running_mean"}
    sub = nnr.importance(m, x, names=["3.bias", "0.weight"])
    assert set(sub) == {"3.bias", "0.weight"}
    np.testing.assert_array_equal(sub["3.bias"], imp["3.bias"])     # same probes, same gradients
    with pytest.raises(EncoderConfigError, match="1.running_mean.*a buffer"):
        nnr.importance(m, x, names=["1.running_mean"])
    with pytest.raises(EncoderConfigError, match="'nope': not in the module's state_dict"):
        nnr.importance(m, x, names=["nope"])
    m[0].bias.requires_grad_(False)
    with pytest.raises(EncoderConfigError, match="'0.bias': a frozen or non-floating parameter"):
        nnr.importance(m, x, names=["0.bias"])

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(5, 3)
            self.head = nn.Linear(3, 5, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, ids):
            return self.head(self.emb(ids))
    t = Tied()
    imp = nnr.importance(t, torch.tensor([[0, 1, 2, 3, 4]]))
    assert set(imp) == {"emb.weight", "head.weight"} == set(t.state_dict())
    np.testing.assert_array_equal(imp["emb.weight"], imp["head.weight"])


# -- parameters the calibration data never touches

class Bag(nn.Module):
    def __init__(self, vocab=10, dim=4):
        super().__init__()
        torch.manual_seed(2)
        self.emb = nn.Embedding(vocab, dim)
        self.fc = nn.Linear(dim, 3)

    def forward(self, ids):
        return self.fc(self.emb(ids).mean(1))


class ExplicitBatchNorm(nn.Module):
    """Eval-mode batch norm written out, its running statistics as parameters (the oracle's autograd)."""

    def __init__(self, bn):
        super().__init__()
        self.eps, shape = bn.eps, (1, -1) + (1,) * (2 if isinstance(bn, nn.BatchNorm2d) else 0)
        self.shape = shape
        self.weight, self.bias = nn.Parameter(bn.weight.detach().clone()), nn.Parameter(bn.bias.detach().clone())
        self.running_mean = nn.Parameter(bn.running_mean.detach().clone())
        self.running_var = nn.Parameter(bn.running_var.detach().clone())

    def forward(self, x):
        r = lambda t: t.reshape(self.shape)
        return r(self.weight) * (x - r(self.running_mean)) / torch.sqrt(r(self.running_var) + self.eps) + r(self.bias)


@pytest.mark.parametrize("method", ["gauss-newton", "fisher"])
def test_batch_norm_running_means_equal_autograd_of_an_explicit_batch_norm(method):
    torch.manual_seed(3)
    real = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5),
                         nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 2), nn.BatchNorm1d(2, affine=False))
    with torch.no_grad():
        for bn in (real[1], real[5]):
            bn.running_mean.normal_(0.0, 0.5)
            bn.running_var.uniform_(0.3, 3.0)
            bn.weight.normal_(1.0, 0.5)
    explicit = nn.Sequential(*[ExplicitBatchNorm(m) if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) and m.affine
                               else m for m in real])
    x = [torch.randn(4, 2, 6, 6) for _ in range(3)]
    kw = {"probes": 2, "seed": 5}
    if method == "fisher":
        x = [(b, torch.randint(0, 2, (4,))) for b in x]
        kw = {"loss": lambda out, y: nn.functional.cross_entropy(out, y)}
    got = nnr.importance(real, x, method=method, **kw)
    want = nnr.importance(explicit, x, method=method, **kw)        # the statistics are parameters there
    assert "8.running_mean" not in got                      # not affine: no derivative to take
    assert not {"1.running_var", "5.running_var"} & set(got)      # nonlinear: no quadratic model
    for name in ("1.running_mean", "5.running_mean"):
        assert got[name].dtype == np.float32 and got[name].shape == want[name].shape
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4)
        assert np.all(want[name] > 0)
    assert "1.running_mean" not in nnr.importance(real, x, method=method, batch_norm=False, **kw)


def test_unseen_rows_are_floored_zeroed_or_scaled(caplog):
    m, ids = Bag(), torch.tensor([[0, 1, 2], [3, 4, 4]])       # rows 5..9 never appear
    with caplog.at_level(logging.INFO, logger="nnr"):
        floor = nnr.importance(m, ids)
    assert "20 of" in caplog.text and "unseen" in caplog.text
    zero = nnr.importance(m, ids, unseen="zero")
    half = nnr.importance(m, ids, unseen=0.5)
    for imp in (floor, zero, half):
        assert imp.unseen_counts == {"emb.weight": 20}
    seen = zero["emb.weight"][:5].astype(np.float64)
    assert np.all(seen > 0)
    np.testing.assert_array_equal(zero["emb.weight"][5:], 0)
    np.testing.assert_allclose(floor["emb.weight"][5:], 0.1 * seen.mean(), rtol=1e-6)
    np.testing.assert_allclose(half["emb.weight"][5:], 0.5 * seen.mean(), rtol=1e-6)
    for imp in (floor, half):
        np.testing.assert_array_equal(imp["emb.weight"][:5], zero["emb.weight"][:5])
        np.testing.assert_array_equal(imp["fc.weight"], zero["fc.weight"])


def test_the_floor_keeps_unseen_rows_when_weights_are_importance_alone():
    """importance_mix=1: distortion weighted by importance alone. Kept at 0, unseen rows cost nothing to
    zero and the weighted quantizer erases them; floored, they stay close."""
    m = Bag(vocab=64, dim=16)
    with torch.no_grad():
        m.emb.weight.mul_(0.3)
    ids = torch.from_numpy(np.random.default_rng(0).integers(0, 32, size=(16, 8)))    # rows 32.. unseen
    w = {k: v.numpy() for k, v in m.state_dict().items()}
    errors = {}
    for unseen in ("zero", "floor"):
        imp = nnr.importance(m, ids, probes=4, unseen=unseen)
        dec = nnr.decode(nnr.encode(w, qp=-26, lambda_scale=1.0, importance=imp, importance_mix=1.0))
        rows = np.asarray(dec["emb.weight"]).reshape(64, 16)[32:]
        errors[unseen] = np.linalg.norm(rows - w["emb.weight"][32:]) / np.linalg.norm(w["emb.weight"][32:])
    assert errors["zero"] == 1.0 and errors["floor"] < 0.1, errors


def test_a_tensor_no_input_reaches_gets_the_models_floor():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)
            self.spare = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x)
    imp = nnr.importance(Unused(), torch.randn(4, 3), unseen=0.5)
    seen = np.concatenate([imp["fc.weight"].ravel(), imp["fc.bias"]]).astype(np.float64)
    np.testing.assert_allclose(imp["spare.weight"], 0.5 * seen.mean(), rtol=1e-6)
    assert imp.unseen_counts == {"spare.weight": 6, "spare.bias": 2}


# -- inputs and outputs

def test_batches_add_up():
    lin = nn.Linear(3, 2)
    x = torch.randn(5, 3)
    whole = nnr.importance(lin, (x[s:s + 1] for s in range(5)))          # a generator of batches
    parts = [nnr.importance(lin, x[s:s + 1]) for s in range(5)]
    for n in whole:
        total = np.zeros(whole[n].shape)
        for p in parts:
            total += p[n]
        np.testing.assert_array_equal(whole[n], total.astype(np.float32))
    m, y = mlp(), torch.randint(0, 3, (6,))
    x = torch.randn(6, 4)
    both = nnr.importance(m, [(x[:2], y[:2]), (x[2:], y[2:])], method="fisher", loss=ce)
    one = nnr.importance(m, (x[:2], y[:2]), method="fisher", loss=ce)
    two = nnr.importance(m, (x[2:], y[2:]), method="fisher", loss=ce)
    for n in both:
        np.testing.assert_allclose(both[n], one[n].astype(np.float64) + two[n], rtol=1e-6)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.a, self.b = nn.Linear(3, 2), nn.Linear(2, 2)

    def forward(self, x, z=None, scale=1.0):
        return (self.a(x) + self.b(z)) * scale


def test_dict_tuple_and_ndarray_batches():
    m = TwoInputs()
    x, z = torch.randn(4, 3), torch.randn(4, 2)
    by_kw = nnr.importance(m, {"x": x, "z": z, "scale": 2.0})
    by_pos = nnr.importance(m, (x, z, 2.0))
    by_np = nnr.importance(m, [{"x": x.numpy().astype(np.float64), "z": z.numpy(), "scale": 2.0}])
    for n in by_kw:
        np.testing.assert_array_equal(by_kw[n], by_pos[n])
        np.testing.assert_array_equal(by_kw[n], by_np[n])
    lin = nn.Linear(3, 2)
    np.testing.assert_array_equal(nnr.importance(lin, x.numpy())["weight"], nnr.importance(lin, x)["weight"])


def test_tuple_and_dict_outputs_probe_the_first_tensor_or_logits():
    class Out(nn.Module):
        def __init__(self, kind):
            super().__init__()
            self.kind = kind
            torch.manual_seed(3)
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            y = self.fc(x)
            if self.kind == "tuple":
                return y, torch.cat([y, y], 1) * 5
            if self.kind == "dict":
                return {"hidden": y * 7, "logits": y}
            return y
    x = torch.randn(4, 3)
    plain = nnr.importance(Out("tensor"), x)
    for kind in ("tuple", "dict"):
        got = nnr.importance(Out(kind), x)
        np.testing.assert_array_equal(got["fc.weight"], plain["fc.weight"])


def test_progress_is_called_per_batch():
    calls = []
    nnr.importance(nn.Linear(2, 2), [torch.randn(1, 2)] * 3, progress=calls.append)
    assert calls == [1, 2, 3]
    bar = Progress(3, quiet=True)
    nnr.importance(nn.Linear(2, 2), [torch.randn(1, 2)] * 3, progress=bar)
    assert bar.count == 3


# -- errors

@pytest.mark.parametrize("kwargs, inputs, match", [
    (dict(method="fisher"), None, "needs loss"),
    (dict(method="fisher", loss="ce"), None, "needs loss"),
    (dict(loss=ce), None, "'fisher' only"),
    (dict(method="kl", loss=ce), None, "'fisher' only"),
    (dict(method="hessian"), None, "method must be"),
    (dict(probes=0), None, "probes"),
    (dict(probes=1.5), None, "probes"),
    (dict(seed=-1), None, "seed"),
    (dict(unseen="drop"), None, "unseen"),
    (dict(unseen=float("nan")), None, "unseen"),
    (dict(progress=3), None, "progress"),
    (dict(names="0.weight"), None, "names"),
    (dict(batch_norm="yes"), None, "batch_norm must be True or False"),
    ({}, [], "no batch"),
    ({}, iter(()), "no batch"),
    ({}, 5, "inputs must be"),
    ({}, "text", "inputs must be"),
    ({}, [torch.randn(2, 4), {1, 2}], "batch 1 is a set"),
    (dict(unseen=np.ones(2)), None, "unseen"),
    ({}, [torch.randn(2, 4), torch.randn(2, 5)], "batch 1: the module raised RuntimeError: mat1 and mat2"),
    ({}, np.array([None, 1]), "batch 0: an ndarray of dtype object"),
    (dict(method="fisher", loss=lambda o, t: o.foo), (torch.randn(2, 4), None), "batch 0: loss raised AttributeError"),
    (dict(method="fisher", loss=ce), [torch.randn(2, 4)], "batch 0: .*pairs"),
    (dict(method="fisher", loss=ce), (torch.randn(2, 4), torch.zeros(3, dtype=torch.long)), "first .*sizes \\[2, 3\\]"),
    (dict(method="fisher", loss=lambda o, t: o.sum(1) * 0 + o), (torch.randn(2, 4), torch.zeros(2)), "one element"),
])
def test_bad_arguments(kwargs, inputs, match):
    with pytest.raises(EncoderConfigError, match=match):
        nnr.importance(mlp(), torch.randn(2, 4) if inputs is None else inputs, **kwargs)


def test_bad_module_and_outputs():
    with pytest.raises(EncoderConfigError, match="torch.nn.Module"):
        nnr.importance(lambda x: x, torch.randn(2, 2))
    with pytest.raises(EncoderConfigError, match="no floating parameter"):
        nnr.importance(nn.ReLU(), torch.randn(2, 2))

    class Argmax(nn.Linear):
        def forward(self, x):
            return super().forward(x).argmax(1)
    with pytest.raises(EncoderConfigError, match="batch 0: .*int64"):
        nnr.importance(Argmax(2, 2), torch.randn(2, 2))


def test_non_finite_output_loss_or_gradient_names_the_batch():
    class Log(nn.Linear):
        def forward(self, x):
            return torch.log(super().forward(x))

    class Sqrt(nn.Linear):          # sqrt(0 * x): output 0, gradient 0 * inf = NaN
        def forward(self, x):
            return torch.sqrt(super().forward(x) * 0)
    torch.manual_seed(0)
    m, good, bad = Log(2, 1), torch.ones(1, 2), -torch.ones(1, 2)
    with torch.no_grad():
        m.weight.fill_(1.0)
        m.bias.fill_(0.0)
    with pytest.raises(EncoderConfigError, match="batch 1: the module's output has NaN"):
        nnr.importance(m, [good, bad])
    with pytest.raises(EncoderConfigError, match="batch 0, sample 1: the loss is nan"):
        nnr.importance(m, (torch.cat([good, bad]), None), method="fisher", loss=lambda o, t: o.sum())
    with pytest.raises(EncoderConfigError, match="'weight' is not finite after batch 0"):
        nnr.importance(Sqrt(2, 1), good)
    assert m.weight.grad is None and m.training


def test_without_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(UnsupportedFeatureError, match="needs torch") as e:
        nnr.importance(object(), [])
    assert isinstance(e.value, NNRError)


# -- the point of it: the importance carries information

def test_gauss_newton_weighting_lowers_the_output_error_at_equal_size():
    """A regression model (random tanh features, ridge-fitted head; inputs whose scales span 2 decades):
    GN importance from 300 calibration samples, output MSE on 500 disjoint evaluation samples, trellis
    at lambda_scale 1, against the unweighted trellis interpolated to the same size and against the
    same importance shuffled within each tensor (seeds 0-3 measured 0.52-0.60 and 1.5-2.2)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1800, 64, generator=g) * torch.logspace(-1.5, 0.5, 64)
    y = torch.tanh(x @ (torch.randn(64, 10, generator=g) / 8))
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 256), nn.Tanh(), nn.Linear(256, 10)).eval()
    with torch.no_grad():
        m[0].weight.mul_(0.5)
        h = torch.cat([m[1](m[0](x[:1000])), torch.ones(1000, 1)], 1)
        head = torch.linalg.solve(h.T @ h + torch.eye(257), h.T @ y[:1000])
        m[2].weight.copy_(head[:-1].T)
        m[2].bias.copy_(head[-1])
        ref = m(x[1300:])
    w = {k: v.numpy().copy() for k, v in m.state_dict().items()}
    imp = nnr.importance(m, [x[1000 + i:1050 + i] for i in range(0, 300, 50)], probes=4)
    rng = np.random.default_rng(0)
    shuffled = {k: rng.permutation(v.ravel()).reshape(v.shape) for k, v in imp.items()}

    def output_mse(stream):
        dec = nnr.decode(stream)
        m2 = nn.Sequential(nn.Linear(64, 256), nn.Tanh(), nn.Linear(256, 10))
        m2.load_state_dict({k: torch.from_numpy(np.asarray(dec[k]).reshape(w[k].shape)) for k in w})
        with torch.no_grad():
            return float(((m2(x[1300:]) - ref) ** 2).mean())

    def curve(**options):
        return np.array([(len(s), output_mse(s)) for s in
                         (nnr.encode(w, qp=qp, lambda_scale=1.0, **options) for qp in range(-32, -19, 2))])
    base = curve()[::-1]

    def ratio(points):   # geometric mean of error / unweighted error at the same size
        inside = [(n, e) for n, e in points if base[0, 0] <= n <= base[-1, 0]]
        assert len(inside) >= 4
        return float(np.exp(np.mean([np.log(e) - np.interp(n, base[:, 0], np.log(base[:, 1])) for n, e in inside])))
    weighted, control = ratio(curve(importance=imp)), ratio(curve(importance=shuffled))
    assert weighted < 0.8 and control > 1.5 * weighted, (weighted, control)
