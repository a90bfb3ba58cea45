"""nnr.filemeta, the JSON nnr_encode writes into the NNR_TPL unit's topology_data: an HDF5 file's
groups, attributes and links survive .h5 -> .nnr -> .h5 (issue 11 item 6), files with nothing to
record keep the reference's empty topology_data, and a crafted file meta (issue 11 item 8) gives an
NNRError naming topology_data, never another exception or an unbounded allocation."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnr
from nnr import filemeta
from nnr.errors import ConstraintViolationError, NNRError, SyntaxValueError
from nnr.modelio import load_model, save_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(tool, *args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", f"nnr.cli.{tool}", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def _h5py():
    return pytest.importorskip("h5py", reason="h5py is not installed (pip install nnr[h5])")


def _keras_file(path, h5py):
    """A Keras-like layout with every kind of object and attribute nnr carries."""
    rng = np.random.default_rng(5)
    with h5py.File(path, "w") as f:
        f.attrs["backend"] = "tensorflow"
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {"name": "seq"}})
        f.attrs.create("nothing", h5py.Empty("f4"))
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = np.array([b"dense", b"batch_normalization", b"dropout"])
        mw.attrs["backend"] = b"tensorflow"
        for layer, weights in (("dense", {"kernel:0": (16, 8), "bias:0": (8,)}),
                               ("batch_normalization", {"gamma:0": (8,), "moving_mean:0": (8,)}),
                               ("dropout", {})):
            g = mw.create_group(layer)
            g.attrs["name"] = layer
            g.attrs["weight_names"] = np.array([f"{layer}/{w}".encode() for w in weights], dtype="S40")
            inner = g.create_group(layer)           # layer/layer/ even for a layer without weights
            for w, shape in weights.items():
                inner.create_dataset(w, data=rng.standard_normal(shape).astype(np.float32))
        k = mw["dense/dense/kernel:0"]
        k.attrs["trainable"] = True
        k.attrs["scale"] = np.float16(0.5)
        k.attrs["grid"] = np.arange(6, dtype=np.int16).reshape(2, 3)
        k.attrs["labels"] = np.array(["α", "β"], dtype=h5py.string_dtype())
        k.attrs["fixed"] = np.array("héllo".encode(), dtype=h5py.string_dtype("utf-8", 12))
        k.attrs["nan"] = np.array([np.nan, np.inf, -0.0])
        k.attrs["none"] = np.zeros((0, 2), np.uint64)
        f.create_group("empty/nested/deeper")
        ordered = f.create_group("ordered", track_order=True)
        for name in ("z", "a", "m"):
            ordered.create_dataset(name, data=np.arange(3, dtype=np.int32))
        ordered.attrs["z_first"] = 1
        ordered.attrs["a_second"] = 2
        opt = f.create_group("optimizer_weights")
        opt.create_dataset("Adam/iter:0", data=np.int64(42))
        opt.create_dataset("Adam/q", data=np.arange(60, dtype=np.int8).reshape(6, 10), chunks=(2, 5),
                           compression="gzip", compression_opts=4, shuffle=True)
        opt.create_dataset("Adam/null", data=h5py.Empty("i4"))
        opt["latest"] = h5py.SoftLink("/optimizer_weights/Adam")
        opt["elsewhere"] = h5py.ExternalLink("other.h5", "/weights")
        opt["alias"] = opt["Adam/iter:0"]


def _tree(h5py, path):
    """Every object (in iteration order) with its kind, attributes (name, dtype, value in order)
    and, for datasets, dtype, shape and storage options."""
    out = []

    def attrs(obj):
        items = []
        for k in obj.attrs:
            v = obj.attrs[k]
            value = ("empty", v.dtype) if isinstance(v, h5py.Empty) else np.asarray(v).tolist()
            items.append((k, obj.attrs.get_id(k).dtype, repr(value)))
        return items

    with h5py.File(path, "r") as f:
        out.append(("/", "root", attrs(f), f.id.get_create_plist().get_link_creation_order()))
        stack = [("", f, iter(f))]
        seen = {f.id: ""}
        while stack:
            prefix, group, names = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                continue
            p = prefix + name
            link = group.get(name, getlink=True)
            if not isinstance(link, h5py.HardLink):
                out.append((p, type(link).__name__, getattr(link, "filename", None), link.path))
                continue
            obj = group[name]
            if obj.id in seen:
                out.append((p, "hardlink", seen[obj.id]))
                continue
            seen[obj.id] = p
            if isinstance(obj, h5py.Group):
                out.append((p, "group", attrs(obj), obj.id.get_create_plist().get_link_creation_order()))
                stack.append((p + "/", obj, iter(obj)))
            else:
                out.append((p, "dataset", attrs(obj), obj.dtype, obj.shape, obj.chunks, obj.compression,
                            obj.compression_opts, obj.shuffle))
    return out


def _topology_data(path):
    dec = nnr.Decoder()
    dec.decode(path.read_bytes())
    return next(u.fields for u in dec.units if u.nnr_unit_type == 3)["topology_data"]


def test_h5_groups_attributes_and_links_survive_nnr(tmp_path):
    h5py = _h5py()
    src, bs, out = tmp_path / "keras.h5", tmp_path / "keras.nnr", tmp_path / "restored.h5"
    _keras_file(src, h5py)
    r = _run("nnr_encode", src, "-o", bs, "-q")
    assert r.returncode == 0, r.stderr
    r = _run("nnr_decode", bs, "-o", out, "-q")
    assert r.returncode == 0, r.stderr
    before, after = _tree(h5py, src), _tree(h5py, out)
    assert [t[:2] for t in after] == [t[:2] for t in before]
    for a, b in zip(before, after):
        assert a == b
    original, restored = load_model(src), load_model(out)
    assert restored.dtypes == original.dtypes and list(restored.tensors) == list(original.tensors)
    for name, a in original.tensors.items():
        b = restored.tensors[name]
        assert a.shape == b.shape, name
        if a.dtype.kind != "f":
            np.testing.assert_array_equal(a, b, err_msg=name)
        else:
            assert np.abs(a - b).max() < 0.05, name
    assert len(_topology_data(bs)) < 3000      # the record stays small (about 2 KB here)


def test_h5_with_nothing_to_record_keeps_empty_topology_data(tmp_path):
    h5py = _h5py()
    rng = np.random.default_rng(2)
    t = {"a.weight": rng.normal(0, 0.05, (32, 16)).astype(np.float32),
         "g/b.bias": rng.normal(0, 0.05, (32,)).astype(np.float32)}
    src, bs = tmp_path / "plain.h5", tmp_path / "plain.nnr"
    with h5py.File(src, "w") as f:
        for name, a in t.items():
            f.create_dataset(name, data=a)
    assert _run("nnr_encode", src, "-o", bs, "-q").returncode == 0
    assert _topology_data(bs) == ""
    assert bs.read_bytes() == nnr.encode(t)


def test_h5_record_is_ignored_when_writing_another_format(tmp_path):
    h5py = _h5py()
    src, bs, out = tmp_path / "keras.h5", tmp_path / "keras.nnr", tmp_path / "restored.npz"
    _keras_file(src, h5py)
    assert _run("nnr_encode", src, "-o", bs, "-q").returncode == 0
    r = _run("nnr_decode", bs, "-o", out, "-q")
    assert r.returncode == 0, r.stderr
    assert list(load_model(out).tensors) == list(load_model(src).tensors)


# ---------------------------------------------------------------------------- crafted file meta

DECODED = {"w": np.arange(12, dtype=np.float32), "i": np.arange(4, dtype=np.int32)}


def _meta(**info):
    return json.dumps({filemeta.KEY: info})


def _fails(text, cls=SyntaxValueError, fmt="npz", tmp_path=None):
    """parse + to_model (+ save_model) raises `cls` naming topology_data."""
    with pytest.raises(cls) as info:
        model = filemeta.to_model(DECODED, filemeta.parse(text), fmt)
        if tmp_path is not None:
            save_model(tmp_path / f"out.{fmt}", model)
    assert "topology_data" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("text", [
    '{"nnr_file_meta":' + "[" * 100000 + "]" * 100000 + "}",
    '{"nnr_file_meta": {"tensors": {}',
    _meta(tensors=[]), _meta(tensors={"w": []}), _meta(tensors={"w": {"shape": "12"}}),
    _meta(tensors={"w": {"shape": [-12]}}), _meta(tensors={"w": {"shape": [3, -1]}}),
    _meta(tensors={"w": {"shape": [True] * 12}}), _meta(tensors={"w": {"shape": [1] * 100}}),
    _meta(tensors={"w": {"dtype": "float128"}}), _meta(tensors={"w": {"dtype": 7}}),
    _meta(tensors={"w": {"size": 3}}), _meta(surprise=1), _meta(order="w"), _meta(order=["w", 5]),
    _meta(order=["w", "w"]), _meta(extra=[]),
    _meta(extra={"n": {"dtype": "int64", "shape": [], "values": []}}),
    _meta(extra={"n": {"dtype": "int64", "shape": [2 ** 40], "values": [1]}}),
    _meta(extra={"n": {"dtype": "int64", "shape": [2], "values": [1, [2]]}}),
    _meta(extra={"n": {"dtype": "int64", "shape": [2], "values": [1, "2"]}}),
    _meta(extra={"n": {"dtype": "int64", "shape": [], "values": [1], "x": 1}}),
    _meta(extra={"n": {"dtype": "int65", "shape": [], "values": [1]}}),
    _meta(extra={"n": {"dtype": "int64", "shape": [1 << 21], "values": [0] * (1 << 21)}}),
])
def test_malformed_file_meta_is_a_syntax_value_error(text):
    _fails(text)


@pytest.mark.parametrize("info", [
    {"tensors": {"w": {"shape": [5]}}},                 # 5 elements for 12 decoded
    {"tensors": {"w": {"shape": [2 ** 62, 2 ** 62, 12]}}},
    {"tensors": {"gone": {"dtype": "float16"}}},        # a tensor that is not decoded
    {"tensors": {"w": {"dtype": "int8"}}},              # an integer dtype for a float tensor
    {"tensors": {"i": {"dtype": "float16"}}},
    {"extra": {"w": {"dtype": "int64", "shape": [], "values": [1]}}},
    {"order": ["w", "i", "ghost"]},
])
def test_file_meta_contradicting_the_decoded_tensors(info):
    _fails(_meta(**info), ConstraintViolationError)


def test_file_meta_that_is_not_ours_is_ignored():
    for text in ("", "not json", "{broken", '{"other": 1}', "[1, 2]", '{"a":' + "[" * 10000):
        model = filemeta.to_model(DECODED, filemeta.parse(text), "npz")
        assert list(model.tensors) == ["w", "i"] and model.dtypes == {"w": "float32", "i": "int32"}


_H5_BAD = [
    [], {"nodes": {}}, {"surprise": 1}, {"userblock": 100}, {"userblock": 1 << 40}, {"root": "x"},
    {"root": [["a"]]}, {"root": [["a", "<f4", 1.5], ["a", "<f4", 2.5]]}, {"root": [["a", "<f16", 1]]},
    {"root": [["a", "<f4", [1, 2]]]}, {"root": [["a", "<f4", [1, 2], [3]]]},
    {"root": [["a", "<f4", [1, 2], [-2]]]}, {"root": [["a", "<i1", 300]]}, {"root": [["a", "<u1", -1]]},
    {"root": [["a", "<i4", 1.5]]}, {"root": [["a", "|b1", 1]]}, {"root": [["a", "str", 5]]},
    {"root": [["a", "S2", "abc"]]}, {"root": [["a", "S2", "\u0100"]]}, {"root": [["a", "S0", ""]]},
    {"root": [["a", "<f4", [[1]] * 2, [2, 2]]]}, {"root": [["a", "<f4", 1, [1 << 30, 1 << 30]]]},
    {"root": [["a", "str", ["x", ["y"]], [2]]]}, {"root": [[5, "<f4", 1]]},
    {"nodes": [[0, "group", "/abs", {}]]}, {"nodes": [[0, "group", "a//b", {}]]},
    {"nodes": [[0, "group", "a/../b", {}]]}, {"nodes": [[0, "group", "", {}]]},
    {"nodes": [[0, "group", "a\u0000b", {}]]}, {"nodes": [[0, "volcano", "a", {}]]},
    {"nodes": [[0, "group", "a", {}], [0, "group", "b", {}]]},
    {"nodes": [[1, "group", "a", {}], [0, "group", "b", {}]]},
    {"nodes": [[0, "group", "a", {}], [1, "group", "a", {}]]},
    {"nodes": [[-1, "group", "a", {}]]}, {"nodes": [[10 ** 12, "group", "a", {}]]},
    {"nodes": [[0, "group", "a"]]}, {"nodes": [[0, "softlink", "a", {"target": 5}]]},
    {"nodes": [[0, "extlink", "a", {"file": "x.h5"}]]}, {"nodes": [[0, "empty", "a", {"dtype": "x"}]]},
    {"nodes": [[0, "dataset", "w", {"storage": {"compression": 32001}}]]},
    {"nodes": [[0, "dataset", "w", {"storage": {"compression": "gzip", "compression_opts": 99}}]]},
    {"nodes": [[0, "dataset", "w", {"storage": {"compression_opts": 4}}]]},
    {"nodes": [[0, "dataset", "w", {"storage": {"chunks": [1, 1]}}]]},
    {"nodes": [[0, "dataset", "w", {"storage": {"chunks": [0]}}]]},
    {"nodes": [[0, "dataset", "w", {"storage": {"maxshape": [3]}}]]},
    {"nodes": [[0, "dataset", "w", {"storage": {"filters": [1]}}]]},
    {"nodes": [[0, "dataset", "w", {"storage": []}]]},
]


@pytest.mark.parametrize("h5", _H5_BAD, ids=[f"h5_{i}" for i in range(len(_H5_BAD))])
def test_malformed_h5_record(h5, tmp_path):
    _h5py()
    _fails(_meta(order=["w", "i"], h5=h5), (SyntaxValueError, ConstraintViolationError), fmt="h5",
           tmp_path=tmp_path)


def test_h5_record_naming_a_tensor_that_is_not_decoded(tmp_path):
    _h5py()
    _fails(_meta(order=["w", "i"], h5={"nodes": [[0, "dataset", "ghost", {"attrs": []}]]}),
           ConstraintViolationError, fmt="h5")


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats()
                     | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                 max_size=4),
                     max_leaves=20)


def _mutations(value):
    """Every (path, container) place in a JSON value, to replace one of them."""
    if isinstance(value, dict):
        for k in value:
            yield value, k
            yield from _mutations(value[k])
    elif isinstance(value, list):
        for i in range(len(value)):
            yield value, i
            yield from _mutations(value[i])


@settings(max_examples=int(os.environ.get("NNR_FUZZ_EXAMPLES", 300)), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_damage_to_a_real_record_gives_only_nnr_errors(tmp_path_factory, data):
    """A real record (the Keras file's) with one value replaced by random JSON: to_model and
    save_model either succeed or raise an NNRError."""
    h5py = _h5py()
    base = _real_record(tmp_path_factory, h5py)
    info = json.loads(base["text"])
    places = list(_mutations(info))
    container, key = places[data.draw(st.integers(0, len(places) - 1))]
    container[key] = data.draw(_JSON)
    text = json.dumps(info)
    out = tmp_path_factory.mktemp("out") / "out.h5"
    try:
        model = filemeta.to_model(base["decoded"], filemeta.parse(text), "h5")
        save_model(out, model)
    except NNRError:
        pass


_RECORD = {}


def _real_record(tmp_path_factory, h5py):
    if not _RECORD:
        d = tmp_path_factory.mktemp("record")
        _keras_file(d / "k.h5", h5py)
        assert _run("nnr_encode", d / "k.h5", "-o", d / "k.nnr", "-q").returncode == 0
        _RECORD["text"] = _topology_data(d / "k.nnr")
        _RECORD["decoded"] = nnr.decode((d / "k.nnr").read_bytes())
    return _RECORD


def test_nnr_decode_with_crafted_file_meta_exits_cleanly(tmp_path):
    _h5py()
    t = {"w": np.linspace(-1, 1, 12, dtype=np.float32)}
    for i, text in enumerate([_meta(tensors={"w": {"shape": [3, -1]}}),
                              '{"nnr_file_meta":' + "[" * 50000,
                              _meta(order=["w"], h5={"nodes": [[0, "group", "../x", {}]]})]):
        bs = tmp_path / f"crafted{i}.nnr"
        bs.write_bytes(nnr.Encoder(framework="generic").encode(t, incremental=False, topology_data=text))
        for suffix in (".h5", ".npz"):
            r = _run("nnr_decode", bs, "-o", tmp_path / f"out{i}{suffix}", "-q")
            if suffix == ".npz" and "h5" in text:
                assert r.returncode == 0, r.stderr        # the HDF5 tree is not looked at for .npz
                continue
            assert r.returncode == 1, r.stderr
            assert "Traceback" not in r.stderr and "topology_data" in r.stderr
            assert len(r.stderr.strip().splitlines()) == 1
            assert not (tmp_path / f"out{i}{suffix}").exists()
