"""nnr_encode's modes: the default (the reference's QPs, with every tensor they would leave above the
relative-error bound given the coarsest QP within it), --quality R (per tensor, the coarsest QP whose
decoded relative RMSE is at most R), the reference's absolute --qp beside them, and the warnings that
name every tensor left all-zero or above the bound in every mode. Every QP and every error is checked
on the decoded stream, independently of the search that chose it."""
import re

import numpy as np
import pytest

import nnr
from nnr.cli import common, modes, nnr_decode, nnr_encode
from nnr.rd import relative_rmse
from tests.test_rd_relative import assert_coarsest, decoded_relative

BOUND = modes.DEFAULT_BOUND
R = 0.01                # the --quality of these tests


def vgg_like(rng):
    """Layers at very different scales, as in a VGG; 'classifier.0.weight' (std 0.003) is the issue's
    small-scale layer: relative RMSE about 0.5 at the reference's qp -32, all zeros at qp -20."""
    return {"features.0.weight": rng.normal(0, 0.2, (16, 3, 3, 3)).astype(np.float32),
            "features.0.bias": rng.normal(0, 0.05, (16,)).astype(np.float32),
            "features.3.weight": rng.normal(0, 0.05, (32, 16, 3, 3)).astype(np.float32),
            "features.3.bias": rng.normal(0, 0.02, (32,)).astype(np.float32),
            "classifier.0.weight": rng.normal(0, 0.003, (64, 512)).astype(np.float32),
            "classifier.0.bias": rng.normal(0, 0.01, (64,)).astype(np.float32),
            "classifier.3.weight": rng.normal(0, 0.1, (10, 64)).astype(np.float32)}


VGG = vgg_like(np.random.default_rng(13))
SMALL = "classifier.0.weight"


def save(tmp_path, tensors, name="m.npz"):
    path = tmp_path / name
    np.savez(path, **tensors)
    return path


def encode(capsys, *args):
    """(status, stdout, stderr) of nnr_encode in this process; argparse's usage exit is a status too."""
    try:
        status = nnr_encode.main([str(a) for a in args])
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


def stream_qps(data):
    return {t.name: t.qp for t in nnr.Decoder().decode_tensors(data)}


def warned(err):
    """{tensor: text after its name} of nnr_encode's warning lines; no other line on stderr."""
    found = dict(re.findall(r"^nnr_encode: warning: tensor '([^']+)' (.*)$", err, re.M))
    assert len(found) == len(err.splitlines()), err
    return found


# --- the modes -----------------------------------------------------------------------------------

EXAMPLE = nnr_encode.__file__.replace("cli/nnr_encode.py", "data/example_cnn_input.npz")
EXAMPLE_REFERENCE = EXAMPLE.replace("example_cnn_input.npz", "example_cnn.nnc")   # NNCodec 2.1.3's bytes


def reference_bytes():
    with open(EXAMPLE_REFERENCE, "rb") as f:
        return f.read()


def mode_line(stdout):
    m = re.search(r"^mode +(.*)$", stdout, re.M)
    assert m, stdout
    return m.group(1)


def test_default_mode_refines_only_the_small_scale_layer(tmp_path, capsys):
    src, out = save(tmp_path, VGG), tmp_path / "m.nnr"
    status, stdout, err = encode(capsys, src, "-o", out)
    assert status == 0
    data = out.read_bytes()
    qps = stream_qps(data)
    assert dict(qps, **{SMALL: -32}) == stream_qps(nnr.encode(VGG)) == {n: -32 if a.ndim > 1 else -75
                                                                       for n, a in VGG.items()}
    assert data == nnr.encode(VGG, qp_per_tensor={SMALL: qps[SMALL]})     # the reference's, one QP changed
    assert_coarsest(VGG, {SMALL: qps[SMALL]}, BOUND)
    at_reference = decoded_relative(VGG, nnr.encode(VGG))[SMALL]
    assert err == (f"nnr_encode: note: tensor '{SMALL}' would have relative RMSE {at_reference:.3g} at qp -32 (the "
                   f"reference's QP); coded at qp {qps[SMALL]} instead\n")
    assert mode_line(stdout) == (f"qp -32 within relative RMSE 0.1 per tensor (finer for 1 tensor: {SMALL} at qp "
                                 f"{qps[SMALL]}; 1-D / non-weight tensors at qp -75)")


def test_default_mode_writes_the_reference_bytes_where_no_tensor_needs_more(tmp_path, capsys):
    out = tmp_path / "ex.nnr"
    for flags in ([], ["--qp", "-32"]):
        status, stdout, err = encode(capsys, EXAMPLE, "-o", out, *flags)
        assert status == 0 and err == "" and out.read_bytes() == reference_bytes()
    assert mode_line(encode(capsys, EXAMPLE, "-o", out)[1]).endswith("(the reference's QPs on every tensor; "
                                                                      "1-D / non-weight tensors at qp -75)")
    status, stdout, err = encode(capsys, EXAMPLE, "-o", out, "--max-relative-error", "0.05")
    assert status == 0 and out.read_bytes() != reference_bytes()           # fc1.weight: 0.054 at qp -32
    assert re.fullmatch(r"nnr_encode: note: tensor 'fc1\.weight' would have relative RMSE 0\.0539 at qp -32 .*\n", err)
    assert_coarsest(dict(np.load(EXAMPLE)), {"fc1.weight": stream_qps(out.read_bytes())["fc1.weight"]}, 0.05)


def test_qp_mode_writes_the_reference_bytes(tmp_path, capsys):
    out = tmp_path / "m.nnr"
    status, stdout, _ = encode(capsys, save(tmp_path, VGG), "-o", out, "--qp", "-32")
    assert status == 0 and mode_line(stdout) == "qp -32 (absolute; 1-D / non-weight tensors at qp -75)"
    assert out.read_bytes() == nnr.encode(VGG)
    assert encode(capsys, save(tmp_path, VGG), "-o", out, "--qp", "-26", "-q")[0] == 0
    assert out.read_bytes() == nnr.encode(VGG, qp=-26)


@pytest.mark.parametrize("flags, options, line", [
    (["--codebook"], {"codebook": True}, r"qp -32 \(absolute, codebook; "),
    (["--codebook", "--qp", "-28"], {"codebook": True, "qp": -28}, r"qp -28 \(absolute, codebook; "),
    (["--codebook", "always", "--qp", "-28"], {"codebook": "always", "qp": -28},
     r"qp -28 \(absolute, codebook always; "),
    (["--bitdepth", "8"], {"bitdepth": 8}, r"bitdepth 8 \(each tensor's QP from its range\)"),
    (["--lossless"], {"raw_float": tuple(VGG)}, r"lossless \(floats uncoded\)")])
def test_the_reference_modes_keep_their_bytes(tmp_path, capsys, flags, options, line):
    out = tmp_path / "m.nnr"
    status, stdout, _ = encode(capsys, save(tmp_path, VGG), "-o", out, *flags)
    assert status == 0 and re.match(line, mode_line(stdout))
    assert out.read_bytes() == nnr.encode(VGG, **options)


def test_quality_mode(tmp_path, capsys):
    src, out = save(tmp_path, VGG), tmp_path / "m.nnr"
    status, stdout, err = encode(capsys, src, "-o", out, "--quality", "0.01")
    assert status == 0 and err == ""
    data = out.read_bytes()
    qps = stream_qps(data)
    assert data == nnr.encode(VGG, qp_per_tensor=qps)          # an ordinary stream: these QPs, nothing else
    weights = {n: a for n, a in VGG.items() if a.ndim > 1}
    assert {qps[n] for n in VGG if n not in weights} == {-75}
    assert_coarsest(VGG, {n: qps[n] for n in weights}, R)
    span = sorted(qps[n] for n in weights)
    assert mode_line(stdout) == (f"quality 0.01 (relative RMSE per tensor; per-tensor QP {span[0]}..{span[-1]}; "
                                 "1-D tensors at qp -75)")
    assert qps[SMALL] < -32 - 8          # the small layer gets a much finer step than the reference's


@pytest.mark.parametrize("flags, options", [(["--no-dq"], {"dq": False}), (["--qp-density", "3"], {"qp_density": 3}),
                                            (["--scan-order", "2"], {"scan_order": 2}),
                                            (["--no-dq", "--qp-density", "1", "--scan-order", "1"],
                                             {"dq": False, "qp_density": 1, "scan_order": 1})])
@pytest.mark.parametrize("mode", ["default", "quality"])
def test_the_searching_modes_work_with_the_quantizer_options(tmp_path, capsys, flags, options, mode):
    out = tmp_path / "m.nnr"
    target = ["--quality", "0.02"] if mode == "quality" else []
    assert encode(capsys, save(tmp_path, VGG), "-o", out, "-q", *target, *flags)[0] == 0
    qps = stream_qps(out.read_bytes())
    if mode == "quality":
        assert out.read_bytes() == nnr.encode(VGG, qp_per_tensor=qps, **options)
        assert_coarsest(VGG, {n: qps[n] for n, a in VGG.items() if a.ndim > 1}, 0.02, **options)
        return
    reference = stream_qps(nnr.encode(VGG, **options))
    refined = {n: q for n, q in qps.items() if q != reference[n]}
    assert out.read_bytes() == nnr.encode(VGG, qp_per_tensor=refined, **options)
    over = {n for n, r in decoded_relative(VGG, nnr.encode(VGG, **options)).items() if r > BOUND}
    assert set(refined) == over and (SMALL in over) == (options.get("qp_density", 2) >= 2)   # qp -32 at density 1:
    assert_coarsest(VGG, refined, BOUND, **options)                                       # step 2^-16


@pytest.mark.parametrize("flags, message", [
    (["--quality", "0.01", "--qp", "-32"], "--quality cannot be combined with --qp: both set the weights' QPs"),
    (["--quality", "0.01", "--bitdepth", "8"], "--quality cannot be combined with --bitdepth"),
    (["--quality", "0.01", "--codebook"], "--quality cannot be combined with --codebook"),
    (["--quality", "0.01", "--lossless"], "--quality cannot be combined with --lossless"),
    (["--quality", "0"], "--quality: must be a number > 0, not 0"),
    (["--quality", "1"], "--quality: must be below 1"),
    (["--quality", "nan"], "--quality: must be a number > 0, not nan"),
    (["--quality", "x"], "--quality: not a number: 'x'"),
    (["--max-relative-error", "-1"], "--max-relative-error: must be a number > 0, not -1"),
    (["--max-relative-error", "1"], "--max-relative-error: must be below 1")])
def test_meaningless_combinations_are_usage_errors(tmp_path, capsys, flags, message):
    out = tmp_path / "m.nnr"
    status, stdout, err = encode(capsys, save(tmp_path, VGG), "-o", out, *flags)
    last = err.splitlines()[-1]             # argparse's errors come after its usage lines
    assert status == common.EXIT_USAGE and last.startswith("nnr_encode: ") and message in last
    assert "Traceback" not in err and stdout == "" and not out.exists()


@pytest.mark.parametrize("flags", [[], ["--quality", "0.01"]])
def test_the_stream_check_lowers_a_tensor_that_misses(tmp_path, capsys, monkeypatch, flags):
    """Should the search's QPs miss the target on the written stream (here: made 3 steps too coarse),
    nnr_encode lowers them until the decoded stream meets it, and its --trace is that of the stream
    it wrote."""
    import nnr.rd
    search = nnr.rd.search_target_relative_error
    monkeypatch.setattr(nnr.rd, "search_target_relative_error",
                        lambda *a, **k: {n: q + 3 for n, q in search(*a, **k).items()})
    out, trace = tmp_path / "m.nnr", tmp_path / "enc.trace"
    assert encode(capsys, save(tmp_path, VGG), "-o", out, "--trace", trace, "-q", *flags)[0] == 0
    qps = stream_qps(out.read_bytes())
    if flags:
        assert_coarsest(VGG, {n: qps[n] for n, a in VGG.items() if a.ndim > 1}, R)
    else:
        assert_coarsest(VGG, {SMALL: qps[SMALL]}, BOUND)
    assert nnr_decode.main([str(out), "-q", "--trace", str(tmp_path / "dec.trace")]) == 0
    assert trace.read_text() == (tmp_path / "dec.trace").read_text()


# --- warnings ------------------------------------------------------------------------------------

def fix_qp(text, flag):
    m = re.search(rf"{flag} (-?\d+) or lower keeps it within relative RMSE {BOUND:g}", text)
    assert m, text
    return int(m.group(1))


@pytest.mark.parametrize("qp", [-32, -20])
def test_qp_mode_warns_of_the_small_scale_layer(tmp_path, capsys, qp):
    out = tmp_path / "m.nnr"
    status, _, err = encode(capsys, save(tmp_path, VGG), "-o", out, "--qp", qp)
    assert status == 0
    rel = decoded_relative(VGG, out.read_bytes())
    assert rel[SMALL] > 0.45 if qp == -32 else not np.any(nnr.decode(out.read_bytes())[SMALL])   # the case
    lines = warned(err)
    assert set(lines) == {n for n, r in rel.items() if r > BOUND}
    text = lines[SMALL]
    if qp == -32:
        assert text.startswith(f"has relative RMSE {rel[SMALL]:.3g} > {BOUND:g} at qp -32; ")
    else:
        rms = np.sqrt(np.mean(VGG[SMALL].astype(np.float64) ** 2))
        assert text.startswith(f"decodes to all zeros at qp -20 (its RMS is {rms:.3g}); ")
    assert text.endswith("(nnr_encode's default mode gives just this tensor a finer QP)")
    fixed = fix_qp(text, "--qp")
    assert_coarsest({SMALL: VGG[SMALL]}, {SMALL: fixed}, BOUND)          # the advice is right
    looser = warned(encode(capsys, save(tmp_path, VGG), "-o", out, "--qp", qp, "--max-relative-error", "0.9")[2])
    assert set(looser) == (set() if qp == -32 else {SMALL})            # a tensor of zeros is always named


DEAD = {"dead.weight": np.full((4, 4), 1e-12, np.float32),         # below the finest step of the QP range
        "dead.bias": np.random.default_rng(3).normal(0, 1e-7, (16,)).astype(np.float32)}   # zeroed at qp -75


def test_default_mode_names_what_it_cannot_fix(tmp_path, capsys):
    out = tmp_path / "m.nnr"
    status, _, err = encode(capsys, save(tmp_path, dict(VGG, **DEAD)), "-o", out)
    assert status == 0
    dec = nnr.decode(out.read_bytes())
    qps = stream_qps(out.read_bytes())
    assert not np.any(dec["dead.weight"]) and qps["dead.weight"] == -128
    assert_coarsest(DEAD, {"dead.bias": qps["dead.bias"]}, BOUND)       # a 1-D tensor is held within B too
    notes = [line for line in err.splitlines() if ": note: " in line]
    assert [re.search(r"tensor '([^']+)'", line).group(1) for line in notes] == [SMALL, "dead.weight", "dead.bias"]
    lines = warned("".join(line + "\n" for line in err.splitlines() if line not in notes))
    assert set(lines) == {"dead.weight"}
    assert lines["dead.weight"] == ("decodes to all zeros at qp -128 (its RMS is 1e-12); no QP down to -128 meets "
                                    "relative RMSE 0.1; --lossless carries it exactly")


def test_quality_mode_names_what_it_leaves(tmp_path, capsys):
    out = tmp_path / "m.nnr"
    status, _, err = encode(capsys, save(tmp_path, dict(VGG, **DEAD)), "-o", out, "--quality", "0.01")
    assert status == 0
    lines = warned(err)
    assert set(lines) == {"dead.weight", "dead.bias"}
    assert lines["dead.weight"].endswith("no QP down to -128 meets --quality 0.01; --lossless carries it exactly")
    assert lines["dead.bias"].startswith("decodes to all zeros at qp -75 ")
    fixed = fix_qp(lines["dead.bias"], "--nonweight-qp")
    assert_coarsest({"dead.bias": DEAD["dead.bias"]}, {"dead.bias": fixed}, BOUND)
    status, _, err = encode(capsys, save(tmp_path, VGG), "-o", out, "--quality", "0.3")
    rel = decoded_relative(VGG, out.read_bytes())
    lines = warned(err)
    assert set(lines) == {n for n, r in rel.items() if r > BOUND} != set()
    assert all(t.endswith(f"; use --quality {BOUND:g} or lower") for t in lines.values())


def test_quiet_is_silent_and_still_holds_the_bound(tmp_path, capsys):
    out = tmp_path / "m.nnr"
    assert encode(capsys, save(tmp_path, dict(VGG, **DEAD)), "-o", out, "-q") == (0, "", "")
    assert_coarsest(VGG, {SMALL: stream_qps(out.read_bytes())[SMALL]}, BOUND)


def test_pytorch_checkpoint(tmp_path, capsys):
    """A .pt with batch norm: the default refines the small-scale convolution alone; --quality codes
    every 1-D tensor (a batch-norm scale too, which the reference codes with qp) at --nonweight-qp."""
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.BatchNorm2d(16), torch.nn.Conv2d(16, 8, 3))
    with torch.no_grad():
        net[2].weight.mul_(0.05)                     # a small-scale layer
    state = net.state_dict()
    src, out = tmp_path / "m.pt", tmp_path / "m.nnr"
    torch.save(state, src)
    arrays = {k: v.numpy() for k, v in state.items() if v.dtype.is_floating_point}
    status, _, err = encode(capsys, src, "-o", out)
    qps = stream_qps(out.read_bytes())
    assert status == 0 and err.startswith("nnr_encode: note: tensor '2.weight' ") and len(err.splitlines()) == 1
    assert qps["0.weight"] == qps["1.weight"] == -32 and qps["0.bias"] == -75
    assert_coarsest(arrays, {"2.weight": qps["2.weight"]}, BOUND, framework="pytorch")
    status, _, err = encode(capsys, src, "-o", out, "--quality", "0.01")
    qps = stream_qps(out.read_bytes())
    assert status == 0 and err == "" and {qps[k] for k, a in arrays.items() if a.ndim == 1} == {-75}
    assert_coarsest(arrays, {k: qps[k] for k, a in arrays.items() if a.ndim > 1}, R, framework="pytorch")
    status, _, err = encode(capsys, src, "-o", out, "--qp", "-32")
    assert set(warned(err)) == {"2.weight"}


def test_onnx_modes(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(6)
    arrays = {"big": rng.normal(0, 0.1, (16, 16)).astype(np.float32),
              "tiny": rng.normal(0, 0.001, (16, 16)).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "big"], ["h"]), helper.make_node("MatMul", ["h", "tiny"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
                              [numpy_helper.from_array(a, n) for n, a in arrays.items()])
    src, out = tmp_path / "m.onnx", tmp_path / "m.nnr"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), src)
    status, stdout, err = encode(capsys, src, "-o", out)
    qps = stream_qps(out.read_bytes())
    assert status == 0 and qps["big"] == -32 and err.startswith("nnr_encode: note: tensor 'tiny' would have ")
    assert_coarsest(arrays, {"tiny": qps["tiny"]}, BOUND)
    assert mode_line(stdout).startswith(f"qp -32 within relative RMSE 0.1 per tensor (finer for 1 tensor: tiny at "
                                        f"qp {qps['tiny']};")
    status, stdout, err = encode(capsys, src, "-o", out, "--quality", "0.01")
    assert status == 0 and err == "" and mode_line(stdout).startswith("quality 0.01 ")
    assert_coarsest(arrays, stream_qps(out.read_bytes()), R)
    dec = nnr.decode(out.read_bytes())
    assert all(relative_rmse(a, dec[n]) <= R for n, a in arrays.items())
    status, _, err = encode(capsys, src, "-o", out, "--qp", "-32")
    assert set(warned(err)) == {"tiny"}
