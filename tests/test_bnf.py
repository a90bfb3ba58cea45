"""Batch-norm folding (HLS §9.5): nnr.encode(..., bnf=True) against the reference's
compress(..., bnf=True) and compress_model(module, bnf=True) (byte-identical), the reference decoding
nnr's streams (reconstruct_bnf, reconstruct_lsa), the block guess for PyTorch models, encode_module /
decode_module with unfolding, and bad input."""
import os

import numpy as np
import pytest

import nnr
from nnr.bnf import (apply_lsa, bn_names_of_module, bn_names_of_state_dict, guess_block_id_and_param_type,
                     unfold_bn)
from nnr.errors import EncoderConfigError
from nnr_core.encoder.bnf import BNF_EPS, fold_bn
from tests.interop.reference import (assert_same_tensors, find_reference, read_result, run_jobs, write_job)

REFERENCE, WHY = find_reference()
needs_reference = pytest.mark.skipif(REFERENCE is None, reason=f"interop: {WHY}")
N_CASES = 16
BN_KEYS = (("weight", "bn.gamma"), ("bias", "bn.beta"), ("running_mean", "bn.mean"), ("running_var", "bn.var"))


def random_bnf_case(seed):
    """Conv / linear layers with batch norms (some with a bias, some with an LS vector), plain tensors
    around them (integer batch counters among them), and the options the reference takes."""
    rng = np.random.default_rng(7000 + seed)
    t, ids, types = {}, {}, {}
    for i in range(int(rng.integers(1, 4))):
        rows = int(rng.integers(2, 24))
        w = f"l{i}.conv.weight"
        shape = (rows, int(rng.integers(1, 5)), 3, 3) if rng.random() < 0.6 else (rows, int(rng.integers(2, 30)))
        layer = {w: ("weight", rng.normal(0, 0.1, shape))}
        if rng.random() < 0.5:
            layer[f"l{i}.conv.bias"] = ("bias", rng.normal(0, 0.05, rows))
        if rng.random() < 0.25:
            layer[w + "_scaling"] = ("weight.ls", rng.normal(1, 0.1, rows))
        if i == 0 or rng.random() < 0.7:
            for key, ptype in BN_KEYS:
                v = rng.normal(1.0 if ptype == "bn.gamma" else 0.0, 0.3, rows)
                layer[f"l{i}.bn.{key}"] = (ptype, np.abs(v) + 0.01 if ptype == "bn.var" else v)
        for n, (ptype, v) in layer.items():
            t[n], ids[n], types[n] = v.astype(np.float32), f"blk{i}", ptype
        if rng.random() < 0.3:
            t[f"l{i}.bn.num_batches_tracked"] = np.array([int(rng.integers(0, 500))], dtype=np.int32)
    t["fc.weight"] = rng.normal(0, 0.1, (10, int(rng.integers(2, 20)))).astype(np.float32)
    t["fc.bias"] = rng.normal(0, 0.1, 10).astype(np.float32)
    opts = dict(qp=int(rng.choice([-26, -32, -38])), qp_density=int(rng.choice([2, 3])),
                nonweight_qp=int(rng.choice([-60, -75])), dq=bool(rng.random() < 0.6),
                row_skipping=bool(rng.random() < 0.5), scan_order=int(rng.integers(0, 3)),
                block_id_and_param_type={"block_identifier": ids, "parameter_type": types})
    return t, opts


def reference_options(o):
    return dict(qp=o["qp"], qp_density=o["qp_density"], nonweight_qp=o["nonweight_qp"], use_dq=o["dq"],
                row_skipping=o["row_skipping"], scan_order=o["scan_order"],
                block_id_and_param_type=o["block_id_and_param_type"], bnf=True)


# -- the folding itself ---------------------------------------------------------------------------

def test_fold_by_hand():
    """One block, values chosen so that the folded vectors are exact in float32:
    g = gamma / sqrt(var + eps) with var + eps = 4 and 0.25; LS = g, BI = (bias - mean)·g + beta."""
    var = np.array([4 - BNF_EPS, 0.25 - BNF_EPS], np.float32)
    t = {"w": np.ones((2, 3), np.float32), "b": np.array([1.0, -1.0], np.float32),
         "g": np.array([2.0, 0.5], np.float32), "be": np.array([0.5, 0.25], np.float32),
         "m": np.array([3.0, 1.0], np.float32), "v": var}
    opt = {"block_identifier": dict.fromkeys(t, "L"),
           "parameter_type": {"w": "weight", "b": "bias", "g": "bn.gamma", "be": "bn.beta", "m": "bn.mean",
                              "v": "bn.var"}}
    g = np.float32(2.0) / np.sqrt(var[0] + np.float32(BNF_EPS)), np.float32(0.5) / np.sqrt(var[1] + np.float32(BNF_EPS))
    assert np.allclose(g, [1.0, 1.0], atol=1e-6)
    out, option, created = fold_bn(t, opt)
    assert list(out) == ["w", "b", "w_scaling"] and created == {"w_scaling": "w"}
    assert np.array_equal(out["w_scaling"], np.array(g, np.float32))
    assert np.allclose(out["b"], [(1 - 3) * 1 + 0.5, (-1 - 1) * 1 + 0.25], atol=1e-6)
    assert option["parameter_type"] == {"w": "weight", "b": "bias", "w_scaling": "weight.ls"}
    assert t["b"][0] == 1.0                     # the input is not modified


def test_fold_creates_a_bias_and_keeps_the_order():
    t = {"a": np.ones(3, np.float32), "c.weight": np.ones((2, 2), np.float32)}
    for k, ptype in BN_KEYS:
        t["bn." + k] = np.full(2, 0.5, np.float32)
    opt = {"block_identifier": {n: (None if n == "a" else 1) for n in t},
           "parameter_type": {"a": "bias", "c.weight": "weight", **{"bn." + k: p for k, p in BN_KEYS}}}
    out, option, created = fold_bn(t, opt)
    assert list(out) == ["a", "c.weight", "c.weight.bias", "c.weight_scaling"]
    assert created == {"c.weight.bias": "c.weight", "c.weight_scaling": "c.weight"}
    g = np.float32(0.5) / np.sqrt(np.float32(0.5) + np.float32(BNF_EPS))
    assert np.array_equal(out["c.weight_scaling"], np.full(2, g, np.float32))
    assert np.array_equal(out["c.weight.bias"], (np.float32(0) - np.float32(0.5)) * np.full(2, g, np.float32)
                          + np.float32(0.5))


@pytest.mark.parametrize("change, match", [
    (lambda t, o: o["parameter_type"].update({"bn.running_var": "unspecified"}), "has batch-norm members"),
    (lambda t, o: t.update({"bn.running_var": np.full(2, -1.0, np.float32)}), "not finite"),
    (lambda t, o: t.update({"bn.weight": np.ones(3, np.float32)}), "shape"),
    (lambda t, o: t.update({"c.weight_scaling": np.ones(2, np.float32)}), "already a tensor"),
    (lambda t, o: t.update({"bn.weight": np.array([1.0, np.nan], np.float32)}), "NaN"),
])
def test_bad_folds(change, match):
    t = {"c.weight": np.ones((2, 2), np.float32)}
    for k, _ in BN_KEYS:
        t["bn." + k] = np.ones(2, np.float32)
    opt = {"block_identifier": dict.fromkeys(t, 1),
           "parameter_type": {"c.weight": "weight", **{"bn." + k: p for k, p in BN_KEYS}}}
    change(t, opt)
    with pytest.raises(EncoderConfigError, match=match):
        nnr.encode(t, bnf=True, block_id_and_param_type=opt)


def test_bnf_needs_blocks_and_a_model():
    t = {"w": np.ones((2, 2), np.float32)}
    with pytest.raises(EncoderConfigError, match="needs block_id_and_param_type"):
        nnr.encode(t, bnf=True)
    with pytest.raises(EncoderConfigError, match="no block .* carries batch-norm"):
        nnr.encode(t, bnf=True, block_id_and_param_type={"block_identifier": {}, "parameter_type": {}})
    tensors, opts = random_bnf_case(1)
    with pytest.raises(EncoderConfigError, match="incremental"):
        nnr.Encoder(bnf=True, block_id_and_param_type=opts["block_id_and_param_type"]).encode(tensors)


# -- interop with the reference -------------------------------------------------------------------

@pytest.fixture(scope="module")
def interop_run(tmp_path_factory):
    jobs = str(tmp_path_factory.mktemp("nncodec-bnf-jobs"))
    cases = {}
    for seed in range(N_CASES):
        tensors, opts = random_bnf_case(seed)
        data = nnr.encode(tensors, bnf=True, **opts)
        cases[seed] = (tensors, opts, data)
        write_job(jobs, f"{seed:03d}-encode", "encode", tensors=tensors, options=reference_options(opts))
        for bnf in (False, True):
            for lsa in (False, True):
                write_job(jobs, f"{seed:03d}-decode-{int(bnf)}{int(lsa)}", "decode", bitstream=data,
                          options=dict(block_id_and_param_type=opts["block_id_and_param_type"],
                                       reconstruct_bnf=bnf, reconstruct_lsa=lsa))
    run_jobs(REFERENCE, jobs)
    return jobs, cases


@needs_reference
@pytest.mark.parametrize("seed", range(N_CASES))
def test_bnf_streams_match_the_reference(interop_run, seed):
    jobs, cases = interop_run
    _, opts, data = cases[seed]
    kind, ref = read_result(os.path.join(jobs, f"{seed:03d}-encode"))
    assert kind == "bitstream", ref
    assert data == ref, f"BNF stream differs from the reference's ({opts})"


@needs_reference
@pytest.mark.parametrize("seed", range(N_CASES))
def test_reference_reconstructs_nnr_bnf_streams_as_nnr(interop_run, seed):
    jobs, cases = interop_run
    _, _, data = cases[seed]
    dec = nnr.Decoder(keep_state=False)
    decoded = dec.decode_tensors(data)
    plain = {t.name: t.values for t in decoded}
    with_lsa = apply_lsa(decoded)
    for bnf in (0, 1):
        kind, ref = read_result(os.path.join(jobs, f"{seed:03d}-decode-{bnf}0"))
        assert kind == "decoded", ref
        assert_same_tensors(plain, ref)          # REF-QUIRK: reconstruct_bnf changes nothing
        kind, ref = read_result(os.path.join(jobs, f"{seed:03d}-decode-{bnf}1"))
        assert kind == "decoded", ref
        assert_same_tensors(with_lsa, ref)


def _bn_model(torch, seed, eps=1e-5):
    torch.manual_seed(seed)
    nn = torch.nn
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8, eps=eps), nn.ReLU(),
                      nn.Conv2d(8, 6, 3, bias=False), nn.BatchNorm2d(6, eps=eps), nn.ReLU(),
                      nn.Conv2d(6, 5, 1), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4 * 4, 10))
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.normal_(1, 0.2)
            mod.bias.data.normal_(0, 0.2)
    return m.eval()


def test_guess_for_a_pytorch_model():
    torch = pytest.importorskip("torch")
    m = _bn_model(torch, 0)
    sd = m.state_dict()
    assert bn_names_of_module(m) == bn_names_of_state_dict(sd) == {
        f"{i}.{k}" for i in (1, 4) for k in ("weight", "bias", "running_mean", "running_var")}
    opt = guess_block_id_and_param_type(sd, bn_names_of_module(m))
    ids, types = opt["block_identifier"], opt["parameter_type"]
    assert ids["1.weight"] == ids["1.running_var"] == ids["0.weight"] == ids["0.bias"]
    assert ids["4.bias"] == ids["3.weight"] != ids["0.weight"]
    assert ids["6.weight"] == ids["6.bias"] != ids["3.weight"]
    assert types["1.weight"] == "bn.gamma" and types["4.running_mean"] == "bn.mean" and types["0.bias"] == "bias"
    assert "1.num_batches_tracked" not in ids


@needs_reference
def test_compress_model_bytes(tmp_path):
    """nnr.encode of the state_dict with the guessed blocks = the reference's compress_model(module,
    bnf=True) (its defaults: row_skipping off, the PyTorch framework)."""
    torch = pytest.importorskip("torch")
    jobs, cases = str(tmp_path), {}
    for seed, qp in ((0, -32), (1, -38), (2, -28)):
        m = _bn_model(torch, seed)
        d = os.path.join(jobs, f"{seed}")
        write_job(jobs, f"{seed}", "encode_model", options=dict(bnf=True, qp=qp))
        torch.save(m, os.path.join(d, "model.pt"))
        sd = m.state_dict()
        opt = guess_block_id_and_param_type(sd, bn_names_of_module(m))
        cases[seed] = nnr.encode(sd, framework="pytorch", block_id_and_param_type=opt, bnf=True, qp=qp,
                                 row_skipping=False)
    run_jobs(REFERENCE, jobs)
    for seed, data in cases.items():
        kind, ref = read_result(os.path.join(jobs, f"{seed}"))
        assert kind == "bitstream", ref
        assert data == ref


# -- decoding: unfolding ---------------------------------------------------------------------------

def test_unfold_bn_rebuilds_the_model_names():
    tensors, opts = random_bnf_case(4)
    option = opts["block_id_and_param_type"]
    decoded = nnr.decode(nnr.encode(tensors, bnf=True, **opts))
    out = unfold_bn(decoded, option)
    assert set(out) == set(tensors)
    for name, ptype in option["parameter_type"].items():
        if ptype == "bn.mean":
            assert not np.any(out[name])
        if ptype == "bn.var":
            assert np.all(out[name] == np.float32(1.0 - BNF_EPS))
    with pytest.raises(EncoderConfigError, match="not encoded with bnf=True"):
        unfold_bn(nnr.decode(nnr.encode(tensors, **opts)), option)


@pytest.mark.parametrize("eps", [1e-5, 1e-3])
def test_encode_module_bnf_round_trip(eps):
    """decode_module gives batch norms that compute the folded layers, with the module's own eps."""
    torch = pytest.importorskip("torch")
    m = _bn_model(torch, 3, eps)
    x = torch.randn(4, 3, 8, 8)
    data = nnr.encode_module(m, bnf=True, qp=-80, nonweight_qp=-110)
    names = set(nnr.decode(data))
    assert "1.running_mean" not in names and "0.weight_scaling" in names and "3.weight.bias" in names
    d = nnr.decode_module(data, allow_pickle=True).eval()
    assert set(d.state_dict()) == set(m.state_dict())
    assert not torch.any(d[3].bias if d[3].bias is not None else torch.zeros(1))
    with torch.no_grad():
        ref, got = m(x), d(x)
    # the folded layer at a step of 2^-20 (weights) and 2^-27.5 (vectors): float32 rounding, not exact;
    # an eps of 1e-5 in place of the module's 1e-3 would move the outputs by ~1e-4 of their range
    assert torch.max(torch.abs(ref - got)).item() < 2e-5 * torch.max(torch.abs(ref)).item()
    plain = nnr.encode_module(m, qp=-32)
    assert len(nnr.encode_module(m, bnf=True, qp=-32)) < len(plain)


# -- nnr_encode --bnf / nnr_decode ----------------------------------------------------------------

def _run(tool, *args):
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, "-m", f"nnr.cli.{tool}", *map(str, args)], cwd=repo,
                          capture_output=True, text=True, timeout=300)


def test_cli_bnf_round_trip(tmp_path):
    """A state_dict file: --bnf writes the folded model (the reference's blocks), nnr_decode writes the
    model's tensors again, and the module loads them and computes what it computed."""
    torch = pytest.importorskip("torch")
    m = _bn_model(torch, 5)
    torch.save(m.state_dict(), tmp_path / "sd.pt")
    r = _run("nnr_encode", tmp_path / "sd.pt", "-o", tmp_path / "sd.nnr", "--bnf", "--qp", "-48")
    assert r.returncode == 0, r.stderr
    assert "after batch-norm folding" in r.stdout
    names = set(nnr.decode((tmp_path / "sd.nnr").read_bytes()))
    assert "0.weight_scaling" in names and "3.weight.bias" in names and "1.running_var" not in names
    r = _run("nnr_decode", tmp_path / "sd.nnr", "-o", tmp_path / "out.pt", "-q")
    assert r.returncode == 0, r.stderr
    sd = torch.load(tmp_path / "out.pt")
    assert list(sd) == list(m.state_dict())
    assert sd["1.num_batches_tracked"].dtype == torch.int64
    d = _bn_model(torch, 6)
    d.load_state_dict(sd)
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        ref, got = m(x), d.eval()(x)
    assert torch.max(torch.abs(ref - got)).item() < 1e-2 * torch.max(torch.abs(ref)).item()


def test_cli_bnf_refusals(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save(_bn_model(torch, 0).state_dict(), tmp_path / "sd.pt")
    for flag in (["--bpp", "4"], ["--lossless"]):
        r = _run("nnr_encode", tmp_path / "sd.pt", "-o", tmp_path / "x.nnr", "--bnf", *flag)
        assert r.returncode == 2 and "--bnf cannot be combined with" in r.stderr
    np.savez(tmp_path / "plain.npz", w=np.ones((3, 3), np.float32), b=np.ones(3, np.float32))
    r = _run("nnr_encode", tmp_path / "plain.npz", "-o", tmp_path / "x.nnr", "--bnf")
    assert r.returncode == 1 and "has no batch norm" in r.stderr
    assert not (tmp_path / "x.nnr").exists()


def test_file_meta_bnf_is_checked():
    import json

    from nnr import filemeta
    from nnr.errors import ConstraintViolationError, SyntaxValueError
    bad = json.dumps({"nnr_file_meta": {"bnf": {"block_identifier": {"a": 3}, "parameter_type": {}}}})
    with pytest.raises(SyntaxValueError, match="bnf.block_identifier is not an object of strings"):
        filemeta.parse(bad)
    meta = filemeta.parse(json.dumps({"nnr_file_meta": {"bnf": {
        "block_identifier": {"w": "L", "g": "L", "b": "L", "m": "L", "v": "L"},
        "parameter_type": {"w": "weight", "g": "bn.gamma", "b": "bn.beta", "m": "bn.mean", "v": "bn.var"}}}}))
    with pytest.raises(ConstraintViolationError, match="bnf: unfold_bn: the decoded tensors have no 'w_scaling'"):
        filemeta.restore({"w": np.ones((2, 2), np.float32)}, meta)
    out, _ = filemeta.restore({"w": np.ones((2, 2), np.float32), "w_scaling": np.full(2, 3, np.float32),
                               "w.bias": np.full(2, 0.5, np.float32)}, meta)
    assert sorted(out) == ["b", "g", "m", "v", "w"]
    assert np.array_equal(out["g"], [3, 3]) and np.array_equal(out["b"], [0.5, 0.5])
