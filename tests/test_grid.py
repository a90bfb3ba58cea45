"""detect_grid (nnr_core/quant/grid.py): float tensors that lie on an NNC step grid are coded exactly on
it, so a decoded model is coded again without a further loss; other tensors keep the reference's bytes."""
import numpy as np
import pytest

import nnr
from nnr.errors import EncoderConfigError
from nnr_core.quant.grid import grid_qp
from nnr_core.quant.reconstruct import step_size
from tests.interop.reference import assert_same_tensors, find_reference, reference_decodes

REFERENCE, WHY = find_reference()


def test_grid_by_hand():
    # qp -20 at qp_density 2 is the step 1/32; odd multiples of it lie on no coarser grid
    assert step_size(-20, 2) == 1 / 32
    w = np.array([3, -5, 0, 7, 1, -1], np.float32) / 32
    assert grid_qp(w, 2) == -20
    assert grid_qp(w * 2, 2) == -16                       # even multiples: the step 1/16
    assert grid_qp(np.zeros(5, np.float32), 2) is None
    assert grid_qp(np.array([0.1, 0.3], np.float32), 2) is None    # 0.1 is no dyadic multiple of a step


def _model(seed):
    rng = np.random.default_rng(seed)
    return {"conv.weight": rng.normal(0, 0.1, (16, 3, 3, 3)).astype(np.float32),
            "conv.bias": rng.normal(0, 0.02, 16).astype(np.float32),
            "fc.weight": rng.laplace(0, 0.05, (10, 64)).astype(np.float32),
            "idx": rng.integers(-5, 5, 7).astype(np.int32)}


@pytest.mark.parametrize("opts", [dict(qp=-30), dict(qp=-30, dq=False), dict(qp=-36, qp_density=3),
                                  dict(qp=-24, qp_density=1, nonweight_qp=-60), dict(qp=-28, codebook=True, dq=False)])
def test_decoded_models_code_again_exactly(opts):
    t = _model(1)
    decoded = {k: np.asarray(v, np.float32) if v.dtype.kind == "f" else v
               for k, v in nnr.decode(nnr.encode(t, **opts)).items()}
    again = nnr.decode(nnr.encode(decoded, detect_grid=True, qp_density=opts.get("qp_density", 2)))
    for k in decoded:
        assert np.array_equal(again[k], decoded[k]), k


def test_tensors_off_the_grid_keep_the_reference_bytes():
    t = _model(2)
    assert nnr.encode(t, detect_grid=True) == nnr.encode(t)
    with pytest.raises(EncoderConfigError, match="detect_grid"):
        nnr.encode(t, detect_grid=True, codebook=True)


def test_a_chosen_qp_wins():
    t = _model(3)
    decoded = {k: v for k, v in nnr.decode(nnr.encode(t, qp=-30, dq=False)).items()}
    dec = nnr.Decoder()
    dec.decode(nnr.encode(decoded, detect_grid=True, qp_per_tensor={"fc.weight": -20}))
    assert {x.name: x.qp for x in dec.tensors}["fc.weight"] == -20
    assert {x.name: x.qp for x in dec.tensors}["conv.weight"] == -30


@pytest.mark.skipif(REFERENCE is None, reason=f"interop: {WHY}")
def test_reference_decodes_grid_streams_alike(tmp_path):
    t = _model(4)
    decoded = nnr.decode(nnr.encode(t, qp=-34))
    data = nnr.encode(decoded, detect_grid=True)
    kind, out = reference_decodes({"grid": data}, tmp_path)["grid"]
    assert kind == "decoded", out
    assert_same_tensors(nnr.decode(data), out)


def test_uniform_step_by_hand():
    from nnr_core.quant.grid import uniform_step
    rng = np.random.default_rng(5)
    for s in (0.0123, 0.5, 3.3e-5, 1 / 3):
        s = np.float32(s)
        w = rng.integers(-100, 100, (30, 30)).astype(np.float32) * s
        assert uniform_step(w) == s
    assert uniform_step(rng.normal(0, 1, 10).astype(np.float32)) is None
    assert uniform_step(np.full(4, 0.25, np.float32)) is None          # one value: no step to tell


def test_cli_fake_quantized_tensors_round_trip(tmp_path):
    """--detect-grid: a tensor on a 0.0123 grid (no NNC step) travels as its integer levels plus the
    step in the file meta and comes back exactly; one on an NNC grid stays a float tensor, exact too."""
    import subprocess
    import sys

    from nnr import filemeta
    from nnr.errors import SyntaxValueError
    repo = __import__("os").path.dirname(__import__("os").path.dirname(__import__("os").path.abspath(__file__)))
    rng = np.random.default_rng(6)
    t = {"fq": rng.integers(-100, 100, (40, 30)).astype(np.float32) * np.float32(0.0123),
         "nnc": rng.integers(-50, 50, (20, 10)).astype(np.float32) / 32, "g": rng.normal(0, 1, (8, 8)).astype(np.float32)}
    np.savez(tmp_path / "m.npz", **t)

    def run(tool, *args):
        r = subprocess.run([sys.executable, "-m", f"nnr.cli.{tool}", *map(str, args)], cwd=repo, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    run("nnr_encode", tmp_path / "m.npz", "-o", tmp_path / "m.nnr", "--detect-grid", "-q")
    run("nnr_decode", tmp_path / "m.nnr", "-o", tmp_path / "out.npz", "-q")
    dec = nnr.Decoder()
    dec.decode(tmp_path.joinpath("m.nnr").read_bytes())
    assert {x.name: x.values.dtype.kind for x in dec.tensors} == {"fq": "i", "nnc": "f", "g": "f"}
    with np.load(tmp_path / "out.npz") as z:
        assert np.array_equal(z["fq"], t["fq"]) and z["fq"].dtype == np.float32
        assert np.array_equal(z["nnc"], t["nnc"])
    with pytest.raises(SyntaxValueError, match="positive finite steps"):
        filemeta.parse('{"nnr_file_meta": {"scaled": {"fq": -1.0}}}')
