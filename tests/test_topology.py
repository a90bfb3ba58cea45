"""Topology carriage (HLS §6): ONNX graphs (NNR_TPL_ONNX) and PyTorch module skeletons
(NNR_TPL_PYT) in the NNR_TPL unit, their tensors in NDUs; the byte-string form of topology_data.

Optional packages: onnx + onnxruntime (pip install "nnr[onnx]"), the real model from
rapidocr_onnxruntime (pip install --no-deps rapidocr_onnxruntime==1.4.4: it ships PP-OCR .onnx
files), torch (pip install torch==2.13.0). Tests needing one skip and say which."""
import importlib.util
import os
import sys
import zlib

import numpy as np
import pytest

import nnr
from nnr.errors import ConstraintViolationError, NNRError, SyntaxValueError, UnsupportedFeatureError
from nnr.topology import carriage
from nnr_core.syntax.constants import NNR_TPL_ONNX, NNR_TPL_PYT
from nnr_core.syntax.units import SyntaxState, parse_units, split_units, write_unit

# qp -32 at qp_density 2 is a step of 2**-8; dependent quantization's two interleaved quantizers
# (step 2*delta each) and its trellis reach up to about two steps
STEP_REACH = 2 * 2 ** (-32 / 4)
RAPIDOCR_HINT = "pip install --no-deps rapidocr_onnxruntime==1.4.4 (ships the PP-OCR .onnx models)"


def _need_onnx():
    pytest.importorskip("onnx", reason='needs onnx: pip install "nnr[onnx]"')
    return pytest.importorskip("onnxruntime", reason='needs onnxruntime: pip install "nnr[onnx]"')


def _need_torch():
    return pytest.importorskip("torch", reason="needs torch: pip install torch==2.13.0")


# -- syntax: topology_data as NUL-terminated string + byte string ----------------------------------
def test_nncodec_tpl_units_unchanged():
    for fmt in (0, 3, 4):
        unit = write_unit(3, {"topology_storage_format": fmt, "topology_compression_format": 0,
                              "topology_data": ""}, SyntaxState())
        assert unit == bytes([0x00, 0x06, 0x0E, fmt, 0x00, 0x00])
        f = parse_units(unit)[0].fields
        assert f["topology_data"] == "" and "topology_data_byte" not in f


@pytest.mark.parametrize("fmt,comp", [(2, 0), (2, 1), (1, 0), (3, 1), (0, 1)])
def test_binary_topology_roundtrip(fmt, comp):
    payload = bytes(range(256)) * 3 + b"\0\0"          # NULs inside and at the end
    unit = write_unit(3, {"topology_storage_format": fmt, "topology_compression_format": comp,
                          "topology_data": "", "topology_data_byte": list(payload)}, SyntaxState())
    assert unit[5] == 0 and unit[6:] == payload          # the empty string, then the bytes to the end
    (u,) = parse_units(unit)
    assert u.fields["topology_data"] == "" and bytes(u.fields["topology_data_byte"]) == payload
    again = write_unit(3, dict(u.fields), SyntaxState())
    assert again == unit


def test_uncompressed_generic_tpl_with_trailing_bytes_still_rejected():
    unit = bytearray(write_unit(3, {"topology_storage_format": 0, "topology_compression_format": 0,
                                    "topology_data": ""}, SyntaxState())) + b"\x01"
    unit[1] += 1
    with pytest.raises(NNRError):
        parse_units(bytes(unit))


def test_replace_tpl_and_inflate():
    data = nnr.encode({"w": np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)})
    graph = b"\x08\x07\x00graph bytes\x00" * 50
    out = carriage.replace_tpl(data, NNR_TPL_ONNX, graph)
    dec = nnr.Decoder()
    tensors = dec.decode(out)
    np.testing.assert_array_equal(tensors["w"], nnr.decode(data)["w"])
    fmt, got, _ = carriage.read_tpl(dec.units)
    assert (fmt, got) == (NNR_TPL_ONNX, graph)
    # a raw (unwrapped) deflate stream from another writer is accepted too
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    assert carriage.inflate(c.compress(graph) + c.flush()) == graph
    with pytest.raises(SyntaxValueError):
        carriage.inflate(b"\x78\x9c not deflate")


# -- ONNX ------------------------------------------------------------------------------------------
def _tiny_onnx():
    """MatMul + Add + Gather + Constant, with float32 / float16 / int64 / huge-int64 / string tensors."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(1)
    w = rng.standard_normal((16, 24)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    idx = rng.integers(0, 24, 40).astype(np.int64)                  # int64 values that fit int32
    scale = rng.standard_normal(40).astype(np.float16)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
             numpy_helper.from_array(idx, "idx"), numpy_helper.from_array(scale, "scale"),
             numpy_helper.from_array(np.array([2**40 + i for i in range(20)], np.int64), "huge"),
             numpy_helper.from_array(np.array([3], np.int64), "small"),
             helper.make_tensor("labels", TensorProto.STRING, [2], [b"a", b"b"])]
    shift = helper.make_tensor("shift", TensorProto.FLOAT, [40], rng.standard_normal(40).astype(np.float32))
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Add", ["h", "b"], ["hb"]),
             helper.make_node("Gather", ["hb", "idx"], ["g"], axis=1),
             helper.make_node("Cast", ["scale"], ["scale32"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["g", "scale32"], ["gs"]),
             helper.make_node("Constant", [], ["shift_c"], value=shift),
             helper.make_node("Add", ["gs", "shift_c"], ["y"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 40])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _tensors(model):
    from onnx import numpy_helper
    from nnr.topology.onnx_tpl import tensor_slots
    return {name: numpy_helper.to_array(t) for name, t in tensor_slots(model.graph)}


def _run(model, x):
    import onnxruntime as ort
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_tiny_onnx_roundtrip_lossy():
    _need_onnx()
    from nnr.topology import decode_onnx, encode_onnx
    model = _tiny_onnx()
    data = encode_onnx(model)
    dec = nnr.Decoder()
    ndus = dec.decode(data)
    assert set(ndus) == {"w", "b", "idx", "scale", "shift_c"}          # huge / small / labels stay in the graph
    assert ndus["idx"].dtype == np.int32
    assert carriage.read_tpl(dec.units)[0] == NNR_TPL_ONNX
    back = decode_onnx(data)
    orig, got = _tensors(model), _tensors(back)
    assert orig.keys() == got.keys()
    for name in orig:
        assert got[name].dtype == orig[name].dtype and got[name].shape == orig[name].shape, name
    for name in ("idx", "huge", "small", "labels"):
        np.testing.assert_array_equal(got[name], orig[name])
    np.testing.assert_allclose(got["w"], orig["w"], atol=STEP_REACH)
    x = np.random.default_rng(2).standard_normal((3, 16)).astype(np.float32)
    np.testing.assert_allclose(_run(back, x), _run(model, x), atol=0.5)


def test_tiny_onnx_roundtrip_lossless_bit_identical():
    _need_onnx()
    from nnr.topology import decode_onnx, encode_onnx
    model = _tiny_onnx()
    back = decode_onnx(encode_onnx(model, lossless=True))
    orig, got = _tensors(model), _tensors(back)
    for name in orig:
        assert got[name].dtype == orig[name].dtype
        assert got[name].tobytes() == orig[name].tobytes(), name
    x = np.random.default_rng(3).standard_normal((5, 16)).astype(np.float32)
    assert _run(back, x).tobytes() == _run(model, x).tobytes()


def test_onnx_cli_roundtrip(tmp_path):
    _need_onnx()
    import onnx
    from nnr.cli import nnr_decode, nnr_encode
    src = tmp_path / "tiny.onnx"
    onnx.save(_tiny_onnx(), src)
    for extra in ([], ["--lossless"]):
        assert nnr_encode.main([str(src), "-o", str(tmp_path / "t.nnr"), "-q", *extra]) == 0
        assert nnr_decode.main([str(tmp_path / "t.nnr"), "-o", str(tmp_path / "t.onnx"), "-q"]) == 0
        back = onnx.load(tmp_path / "t.onnx")
        onnx.checker.check_model(back)
        x = np.ones((2, 16), np.float32)
        if extra:
            assert _run(back, x).tobytes() == _run(onnx.load(src), x).tobytes()
        else:
            np.testing.assert_allclose(_run(back, x), _run(onnx.load(src), x), atol=0.5)


def test_nnr_decode_onnx_output_needs_onnx_topology(tmp_path, capsys):
    _need_onnx()
    from nnr.cli import nnr_decode
    path = tmp_path / "plain.nnr"
    path.write_bytes(nnr.encode({"w": np.ones((4, 4), np.float32)}))
    assert nnr_decode.main([str(path), "-o", str(tmp_path / "x.onnx"), "-q"]) == 1
    assert "no ONNX graph" in capsys.readouterr().err
    from nnr.topology import decode_onnx
    with pytest.raises(ConstraintViolationError):
        decode_onnx(path.read_bytes())


def _tpl_payload_span(data):
    span = next(s for s in split_units(data) if data[s.offset + s.size_field_bytes] >> 2 == 3)
    # size (2 or 4 bytes) + unit header + 2 header bytes + the empty string's NUL
    return span.offset + span.size_field_bytes + 4, span.offset + span.size


def test_corrupted_onnx_topology_raises_nnrerror():
    _need_onnx()
    from nnr.topology import decode_onnx, encode_onnx
    data = bytearray(encode_onnx(_tiny_onnx()))
    lo, hi = _tpl_payload_span(bytes(data))
    for pos in (lo + 2, (lo + hi) // 2, hi - 1):
        bad = bytearray(data)
        bad[pos] ^= 0x5A
        with pytest.raises(NNRError):
            decode_onnx(bytes(bad))
    # a valid deflate stream of something that is not a ModelProto
    plain = nnr.encode({"w": np.ones((4, 4), np.float32)})
    with pytest.raises(SyntaxValueError):
        decode_onnx(carriage.replace_tpl(plain, NNR_TPL_ONNX, b"\xff\xff\xff\xff"))
    # a graph that refers to a tensor no NDU carries
    from nnr.topology import split_model
    graph, _, _ = split_model(_tiny_onnx())
    with pytest.raises(ConstraintViolationError):
        decode_onnx(carriage.replace_tpl(plain, NNR_TPL_ONNX, graph))


def _crafted_graph(data, graph, edit):
    """The bitstream `data` with its ONNX graph replaced by `graph` after `edit(ModelProto)`."""
    import onnx
    model = onnx.ModelProto()
    model.ParseFromString(graph)
    edit(model)
    return carriage.replace_tpl(data, NNR_TPL_ONNX, model.SerializeToString())


def _set(name, dims=None, data_type=None, tensor_name=None):
    def edit(model):
        t = next(t for t in model.graph.initializer if t.name == name)
        if dims is not None:
            del t.dims[:]
            t.dims.extend(dims)
        if data_type is not None:
            t.data_type = data_type
        if tensor_name is not None:
            t.name = tensor_name
            for e in t.external_data:
                if e.key == "nnr_tensor":
                    e.value = tensor_name
    return edit


def test_crafted_onnx_graph_tensor_descriptions():
    """What the graph says about an NDU-carried tensor (dims, data_type, name) is checked against
    the decoded tensor: each crafted case is one BitstreamError naming the tensor, never a numpy /
    onnx exception or a silently truncated or wrapped tensor."""
    _need_onnx()
    from onnx import TensorProto

    from nnr.topology import decode_onnx, encode_onnx, split_model
    model = _tiny_onnx()
    data, (graph, _, _) = encode_onnx(model), split_model(model)
    cases = [
        (_set("w", dims=[-16, -24]), SyntaxValueError, "dims"),                  # product 384, as decoded
        (_set("w", dims=[2 ** 62 + 96, 4]), ConstraintViolationError, "384 decoded elements"),  # wraps to 384
        (_set("w", dims=[1] * 65 + [384]), SyntaxValueError, "dims"),
        (_set("w", data_type=TensorProto.STRING), SyntaxValueError, "data_type 8"),
        (_set("w", data_type=TensorProto.BOOL), SyntaxValueError, "data_type 9"),
        (_set("w", data_type=TensorProto.BFLOAT16), SyntaxValueError, "data_type 16"),
        (_set("w", data_type=TensorProto.COMPLEX64), SyntaxValueError, "data_type 14"),
        (_set("w", data_type=TensorProto.FLOAT8E4M3FN), SyntaxValueError, "data_type 17"),
        (_set("w", data_type=12345), SyntaxValueError, "data_type 12345"),
        (_set("w", data_type=TensorProto.INT8), ConstraintViolationError, "says int8 but the NDU decodes to float"),
        (_set("idx", data_type=TensorProto.FLOAT), ConstraintViolationError, "says float32 but the NDU decodes to int"),
        (_set("idx", data_type=TensorProto.UINT8), None, None),         # values 0..23 fit: valid
        (_set("w", tensor_name=""), ConstraintViolationError, "which no NDU carries"),
    ]
    for edit, cls, message in cases:
        bad = _crafted_graph(data, graph, edit)
        if cls is None:
            decode_onnx(bad)
            continue
        with pytest.raises(cls, match=message) as info:
            decode_onnx(bad)
        assert "topology" in str(info.value)
    # values outside the graph's integer type are refused, not wrapped
    wide = _with_initializer(model, "idx", _tensors(model)["idx"] * 10)       # up to 230: not int8
    data, (graph, _, _) = encode_onnx(wide), split_model(wide)
    with pytest.raises(ConstraintViolationError, match="do not fit the graph's int8"):
        decode_onnx(_crafted_graph(data, graph, _set("idx", data_type=TensorProto.INT8)))


def _with_initializer(model, name, value):
    import onnx
    from onnx import numpy_helper
    out = onnx.ModelProto()
    out.CopyFrom(model)
    t = next(t for t in out.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(value, name))
    return out


def test_missing_onnx_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)       # makes `import onnx` raise ImportError
    from nnr.topology import encode_onnx
    with pytest.raises(UnsupportedFeatureError, match=r'pip install "nnr\[onnx\]"'):
        encode_onnx("model.onnx")


def _rapidocr_model(name):
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"needs the PP-OCR models: {RAPIDOCR_HINT}")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", name)
    if not os.path.exists(path):
        pytest.skip(f"{name} is not in the installed rapidocr_onnxruntime: {RAPIDOCR_HINT}")
    return path


def _text_page(h=160, w=320, seed=0):
    """A synthetic page: rows of dark glyph-like strokes on white, normalised as PP-OCR's detector
    expects (ImageNet mean/std, NCHW)."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 245, np.uint8)
    for row in range(20, h - 30, 40):
        x = 16
        while x < w - 30:
            for _ in range(3):
                if rng.random() < 0.5:
                    y0 = row + rng.integers(0, 16)
                    img[y0:y0 + 3, x:x + 14] = 20
                else:
                    x0 = x + rng.integers(0, 12)
                    img[row:row + 20, x0:x0 + 3] = 20
            x += 18 + (8 if rng.random() < 0.15 else 0)
    x = (img.astype(np.float32) / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    return x.transpose(2, 0, 1)[None].astype(np.float32)


@pytest.fixture(scope="module")
def ppocr_det():
    _need_onnx()
    import onnx
    path = _rapidocr_model("ch_PP-OCRv4_det_infer.onnx")
    return path, onnx.load(path)


def test_ppocr_detector_within_quantization_error(ppocr_det):
    from nnr.topology import decode_onnx, encode_onnx
    path, model = ppocr_det
    data = encode_onnx(model)
    assert len(data) < os.path.getsize(path) / 4                       # 0.94 MB vs 4.75 MB
    back = decode_onnx(data)
    x = _text_page()
    ref, out = _run(model, x), _run(back, x)
    assert ref.shape == out.shape == (1, 1, 160, 320)
    assert (ref > 0.3).mean() > 0.05                                     # the page has text regions
    err = np.abs(out - ref)
    assert err.mean() < 0.005
    assert ((out > 0.3) == (ref > 0.3)).mean() > 0.99                    # the text mask PP-OCR thresholds
    # and the weights themselves: each within the quantizer's reach of the original
    orig, got = _tensors(model), _tensors(back)
    assert orig.keys() == got.keys()
    for n in orig:
        if orig[n].dtype.kind == "f":         # float32 rounding matters only for huge values (BN variances ~1e8)
            o = orig[n].astype(np.float64)
            assert np.all(np.abs(got[n] - o) <= STEP_REACH + 2**-22 * np.abs(o)), n


def test_ppocr_detector_lossless_bit_identical(ppocr_det):
    from nnr.topology import decode_onnx, encode_onnx
    path, model = ppocr_det
    data = encode_onnx(model, lossless=True)
    assert len(data) < os.path.getsize(path)
    back = decode_onnx(data)
    orig, got = _tensors(model), _tensors(back)
    assert all(got[n].tobytes() == orig[n].tobytes() and got[n].dtype == orig[n].dtype for n in orig)
    x = _text_page(seed=1)
    assert _run(back, x).tobytes() == _run(model, x).tobytes()


# -- PyTorch module --------------------------------------------------------------------------------
def _net(torch):
    global Net

    class Net(torch.nn.Module):       # module level (via global): torch.save pickles it by name
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3)
            self.bn = torch.nn.BatchNorm2d(8)
            self.fc = torch.nn.Linear(8, 16)
            self.emb = torch.nn.Embedding(16, 8)
            self.out = torch.nn.Linear(8, 16, bias=False)
            self.out.weight = self.emb.weight                       # tied
            self.register_buffer("perm", torch.arange(16).flip(0))  # int64 that fits int32
            self.register_buffer("huge", torch.tensor([2**40, 3]))  # stays in the skeleton

        def forward(self, x):
            h = self.bn(self.conv(x)).mean((2, 3))
            return self.out(self.emb(self.fc(h).argmax(1)) + h)[:, self.perm]

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    net.bn.num_batches_tracked += 5
    return net.eval()


def test_module_roundtrip():
    torch = _need_torch()
    from nnr.topology import decode_module, encode_module
    net = _net(torch)
    data = encode_module(net)
    dec = nnr.Decoder()
    dec.decode(data)
    assert carriage.read_tpl(dec.units)[0] == NNR_TPL_PYT
    back = decode_module(data, allow_pickle=True)
    assert type(back).__name__ == "Net" and back.out.weight is back.emb.weight
    assert int(back.bn.num_batches_tracked) == 5 and back.huge.tolist() == [2**40, 3]
    assert torch.equal(back.perm, net.perm) and back.perm.dtype == torch.int64
    for (name, a), b in zip(net.state_dict().items(), back.state_dict().values()):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert float((a.double() - b.double()).abs().max()) < STEP_REACH, name
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert float((net(x) - back(x)).abs().max()) < 0.2
    lossless = decode_module(encode_module(net, lossless=True), allow_pickle=True)
    with torch.no_grad():
        assert torch.equal(net(x), lossless(x))
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), lossless.state_dict().values()))


def test_module_needs_explicit_permission_to_unpickle():
    torch = _need_torch()
    from nnr.topology import decode_module, encode_module
    seq = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    data = encode_module(seq, lossless=True)
    with pytest.raises(UnsupportedFeatureError, match="allow_pickle=True"):
        decode_module(data)
    # torch's weights_only unpickler with the module classes allowed: no arbitrary code
    back = decode_module(data, safe_globals=[torch.nn.Sequential, torch.nn.Linear, torch.nn.ReLU])
    x = torch.randn(3, 4)
    with torch.no_grad():
        assert torch.equal(seq(x), back(x))


def test_corrupted_module_topology_raises_nnrerror():
    torch = _need_torch()
    from nnr.topology import decode_module, encode_module
    data = encode_module(torch.nn.Linear(4, 8))
    lo, hi = _tpl_payload_span(data)
    bad = bytearray(data)
    bad[(lo + hi) // 2] ^= 0xFF
    with pytest.raises(NNRError):
        decode_module(bytes(bad), allow_pickle=True)
    plain = nnr.encode({"w": np.ones((4, 4), np.float32)})
    with pytest.raises(SyntaxValueError):
        decode_module(carriage.replace_tpl(plain, NNR_TPL_PYT, b"not a zip"), allow_pickle=True)
    with pytest.raises(ConstraintViolationError):
        decode_module(plain, allow_pickle=True)


def test_missing_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    from nnr.topology import decode_module
    with pytest.raises(UnsupportedFeatureError, match="torch==2.13.0"):
        decode_module(b"")
