"""Model files from anywhere (issue 11): garbage, truncated and forged files in every format give one
NNRError subclass with a one-line message, never a package's own exception; a small file declaring
a huge array raises ResourceLimitError before anything is allocated; HDF5 files stay inside
themselves (external storage and virtual datasets refused unless allow_external, links never
followed, hard-link cycles end)."""
import io
import json
import struct
import zipfile

import numpy as np
import pytest

from nnr.errors import EncoderConfigError, NNRError, ResourceLimitError
from nnr.modelio import Model, load_model, save_model
from nnr.modelio.guard import MAX_BYTES

HUGE = 2 ** 40          # elements: 4 TiB of float32


def _need(module):
    return pytest.importorskip(module, reason=f"{module} is not installed (pip install nnr[all])")


def _refused(path, cls=EncoderConfigError, match=None, **kw):
    """load_model(path) raises `cls` (an NNRError) with a one-line message; returns the message."""
    with pytest.raises(cls, match=match) as info:
        load_model(path, **kw)
    assert isinstance(info.value, NNRError)
    text = str(info.value)
    assert "\n" not in text and len(text) < 600, text
    return text


# ------------------------------------------------------------------- garbage in every format

def _torch_zip(tmp_path, torch):
    path = tmp_path / "ok.pt"
    torch.save({"w": torch.ones(1000)}, path)
    return path.read_bytes()


def _garbage_cases(tmp_path):
    """(suffix, bytes, what the message says) for text, empty and truncated files of each format."""
    import h5py
    import safetensors.numpy
    import torch
    cases = []
    for suffix, kind in ((".pt", "a PyTorch file"), (".pth", "a PyTorch file"), (".npz", "a .npz file"),
                         (".h5", "an HDF5 file"), (".safetensors", "a safetensors file")):
        cases.append((suffix, b"", f"not {kind}: empty file"))
        cases.append((suffix, b"hello world, this is text\n" * 4, f"not {kind}: expected .*, got text 'hello"))
    zipped = _torch_zip(tmp_path, torch)
    cases.append((".pt", zipped[:len(zipped) // 2], "a zip archive without its central directory"))
    legacy = io.BytesIO()
    torch.save({"w": torch.ones(1000)}, legacy, _use_new_zipfile_serialization=False)
    cases.append((".pt", legacy.getvalue()[:len(legacy.getvalue()) // 2], "cannot read .* as a PyTorch file"))
    npz = io.BytesIO()
    np.savez(npz, w=np.ones(1000, np.float32))
    cases.append((".npz", npz.getvalue()[:len(npz.getvalue()) // 2], "a zip archive without its central directory"))
    with h5py.File(tmp_path / "ok.h5", "w") as f:
        f.create_dataset("w", data=np.ones(10000, np.float32))
    h5 = (tmp_path / "ok.h5").read_bytes()
    cases.append((".h5", h5[:len(h5) // 2], "cannot read .* as HDF5: OSError: .*truncated file"))
    st = safetensors.numpy.save({"w": np.ones(1000, np.float32)})
    cases.append((".safetensors", st[:len(st) // 2], "runs past the end of the file"))
    cases.append((".safetensors", st[:6], "not a safetensors file: expected"))
    return cases


def test_garbage_text_empty_and_truncated_files_in_every_format(tmp_path):
    for module in ("torch", "h5py", "safetensors"):
        _need(module)
    for i, (suffix, data, message) in enumerate(_garbage_cases(tmp_path)):
        path = tmp_path / f"case{i}{suffix}"
        path.write_bytes(data)
        _refused(path, match=message)


def test_text_named_pt_says_what_was_expected(tmp_path):
    _need("torch")
    path = tmp_path / "text.pt"
    path.write_text("hello world\n")     # torch.load raised a bare KeyError for this
    text = _refused(path)
    assert text == (f"{path}: not a PyTorch file: expected a zip archive (torch.save) or a legacy pickle, "
                    f"got text 'hello world\\n'")


def test_forged_legacy_pickle_is_an_encoder_config_error(tmp_path):
    _need("torch")
    path = tmp_path / "bad.pt"
    path.write_bytes(b"\x80\x02h\x07.")     # a pickle that reads an unset memo slot: KeyError inside torch
    _refused(path, match="cannot read .* PyTorch")


# ------------------------------------------------------------------------- huge declarations

def _npy_header(shape, descr="<f4"):
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(b, {"descr": descr, "fortran_order": False, "shape": shape})
    return b.getvalue()


def test_npz_declaring_a_huge_array_is_a_resource_limit_error(tmp_path):
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("w.npy", _npy_header((HUGE,)) + b"\0" * 64)
    _refused(path, ResourceLimitError, match=r"'w' of shape \(1099511627776,\).*limit of 8589934592")


def test_npz_declaring_more_than_its_member_holds(tmp_path):
    path = tmp_path / "short.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("w.npy", _npy_header((1 << 20,)) + b"\0" * 64)
    _refused(path, match=r"declares shape \(1048576,\).*holds 64 bytes")


def test_npz_deflate_bomb_stops_at_the_budget(tmp_path):
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, w=np.zeros(1 << 22, np.float32))         # 16 MiB of zeros, ~16 KiB on disk
    assert path.stat().st_size < 1 << 16
    _refused(path, ResourceLimitError, max_bytes=1 << 20)
    assert load_model(path, max_bytes=None).tensors["w"].shape == (1 << 22,)


def test_h5_declaring_a_huge_array_is_a_resource_limit_error(tmp_path):
    h5py = _need("h5py")
    for chunks in (None, (1 << 20,)):
        path = tmp_path / f"huge{chunks is None}.h5"
        with h5py.File(path, "w") as f:            # HDF5 allocates late: nothing is written
            f.create_dataset("w", shape=(HUGE,), dtype="f4", chunks=chunks)
        assert path.stat().st_size < 1 << 16
        _refused(path, ResourceLimitError, match=r"'w' of shape \(1099511627776,\)")


def test_h5_never_written_dataset_is_refused(tmp_path):
    # within the budget, but the file stores none of it (it was a 4 GiB allocation of fill values)
    h5py = _need("h5py")
    path = tmp_path / "unwritten.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("w", shape=(1 << 20,), dtype="f4")
    _refused(path, match="stores none of its data")


def test_safetensors_declaring_a_huge_array(tmp_path):
    _need("safetensors")
    path = tmp_path / "huge.safetensors"
    raw = json.dumps({"w": {"dtype": "F32", "shape": [HUGE], "data_offsets": [0, 4 * HUGE]}}).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 64)
    _refused(path, ResourceLimitError, match=r"'w' of shape \(1099511627776,\)")
    # memory-mapped tensors do not count against the budget, but the file's size bounds them
    _refused(path, match="runs past the end of the file", mmap=True)


def test_pt_storage_declared_larger_than_its_record(tmp_path):
    torch = _need("torch")
    import collections
    import pickle

    class Storage:
        pass

    class Tensor:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, (Storage(), 0, (HUGE,), (1,), False, collections.OrderedDict()))

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", HUGE) if isinstance(obj, Storage) else None

    src = tmp_path / "ok.pt"
    torch.save({"w": torch.ones(4)}, src)
    data = io.BytesIO()
    Pickler(data, protocol=2).dump({"w": Tensor()})
    path = tmp_path / "huge.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(path, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, data.getvalue() if info.filename.endswith("data.pkl") else zin.read(info))
    _refused(path, match="record size")


def test_pt_deflated_records_count_against_the_budget(tmp_path):
    torch = _need("torch")
    src = tmp_path / "zeros.pt"
    torch.save({"w": torch.zeros(1 << 22)}, src)
    path = tmp_path / "deflated.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
    assert path.stat().st_size < 1 << 17
    _refused(path, ResourceLimitError, match="zip member .*data/0", max_bytes=1 << 20)


def test_pt_views_of_one_storage_count_once_each(tmp_path):
    torch = _need("torch")
    base = torch.zeros(1 << 16)
    path = tmp_path / "views.pt"
    torch.save({f"v{i}": base.view(-1) for i in range(64)}, path)      # 256 KiB on disk, 16 MiB as tensors
    _refused(path, ResourceLimitError, match="'v.*' of shape", max_bytes=4 << 20)
    assert len(load_model(path).tensors) == 64


def test_max_bytes_option(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, a=np.zeros(1000, np.float16), b=np.zeros(1000, np.int8))
    load_model(path, max_bytes=5000)                         # float16 counts as float32: 4000 + 1000
    _refused(path, ResourceLimitError, match=r"5001|limit of 4999", max_bytes=4999)
    assert MAX_BYTES == 8 << 30
    with pytest.raises(EncoderConfigError, match="max_bytes"):
        load_model(path, max_bytes=-1)


# ------------------------------------------------------------------------ crafted containers

def test_npz_pickled_object_member_is_never_unpickled(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.npz"
    with zipfile.ZipFile(path, "w") as zf:
        with zf.open("w.npy", "w") as m:
            np.lib.format.write_array(m, np.array([Evil()], dtype=object), allow_pickle=True)
    _refused(path, match="object array .* never unpickles")
    assert not marker.exists()


@pytest.mark.parametrize("members, message", ids=["text", "npy3", "garbage", "badheader"], argvalues=[
    ({"notes.txt": b"x" * 100}, "'notes.txt' .* is not a .npy array"),
    ({"w.npy": b"\x93NUMPY\x03\x00" + b"\0" * 20}, "format 3.0"),
    ({"w.npy": b"garbage"}, "'w' of .* is not a .npy array"),
    ({"w.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': 1, }   \n"}, "cannot read .* ValueError"),
])
def test_npz_crafted_members(tmp_path, members, message):
    path = tmp_path / "c.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    _refused(path, match=message)


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_npz_member_twice(tmp_path):
    path = tmp_path / "twice.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for _ in range(2):
            with zf.open("w.npy", "w") as m:
                np.lib.format.write_array(m, np.ones(2, np.float32))
    _refused(path, match="twice")


def _safetensors(path, header, data=b""):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


_HEADERS = [
    ([1, 2], b"", "its header is a JSON list, not an object"),
    (b"[" * 100000 + b"]" * 100000, b"", "not a safetensors file: its header is not JSON"),
    (b"{not json", b"", "its header is not JSON"),
    ({"w": 5}, b"", "header entry is a JSON int"),
    ({"w": {"dtype": "X9", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "dtype X9 which NNR cannot code"),
    ({"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8, "dtype C64"),
    ({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8, "shape"),
    ({"w": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, b"\0" * 4, "shape"),
    ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "takes 12 bytes but data_offsets span 8"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 8, "data_offsets"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "runs past the end of the file"),
    ({"w": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, "data_offsets"),
    ({"__metadata__": {"a": 1}, "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8,
     "__metadata__ is not an object of strings"),
]


@pytest.mark.parametrize("header, data, message", _HEADERS, ids=[f"header{i}" for i in range(len(_HEADERS))])
def test_safetensors_crafted_headers(tmp_path, header, data, message):
    _need("safetensors")
    path = tmp_path / "c.safetensors"
    _safetensors(path, header, data)
    for mmap in (False, True):
        _refused(path, match=message, mmap=mmap)


def test_safetensors_header_length_past_the_file(tmp_path):
    _need("safetensors")
    path = tmp_path / "c.safetensors"
    path.write_bytes(struct.pack("<Q", 1000) + b"{}")
    _refused(path, match="not a safetensors file: expected an 8-byte")


def test_pt_tensor_under_a_non_string_key(tmp_path):
    torch = _need("torch")
    path = tmp_path / "keys.pt"
    torch.save({"w": torch.ones(2), 5: torch.ones(3)}, path)
    _refused(path, match="under the key 5")


# ------------------------------------------------------------------- HDF5 stays inside itself

def test_h5_external_storage_is_refused_unless_allowed(tmp_path):
    h5py = _need("h5py")
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"TOP SECRET DATA!")
    path = tmp_path / "ext.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("w", shape=(16,), dtype="u1", external=[(str(secret), 0, 16)])
    _refused(path, match=r"'w' is external raw storage in .*secret.bin.*allow_external=True")
    model = load_model(path, allow_external=True)
    assert model.tensors["w"].tobytes() == b"TOP SECRET DATA!"
    out = tmp_path / "inline.h5"
    save_model(out, model)            # written back as an ordinary dataset, inside the file
    secret.unlink()
    with h5py.File(out, "r") as f:
        assert f["w"].id.get_create_plist().get_external_count() == 0
        assert f["w"][()].tobytes() == b"TOP SECRET DATA!"


def test_h5_virtual_dataset_is_refused_unless_allowed(tmp_path):
    h5py = _need("h5py")
    source = tmp_path / "source.h5"
    with h5py.File(source, "w") as f:
        f.create_dataset("d", data=np.arange(10, dtype=np.float32))
    layout = h5py.VirtualLayout(shape=(10,), dtype=np.float32)
    layout[:] = h5py.VirtualSource(str(source), "d", shape=(10,))
    path = tmp_path / "vds.h5"
    with h5py.File(path, "w") as f:
        f.create_virtual_dataset("v", layout)
        assert f["v"].is_virtual
    _refused(path, match=r"'v' is a virtual dataset mapping .*source.h5")
    model = load_model(path, allow_external=True)
    np.testing.assert_array_equal(model.tensors["v"], np.arange(10, dtype=np.float32))
    save_model(tmp_path / "plain.h5", model)
    with h5py.File(tmp_path / "plain.h5", "r") as f:
        assert not f["v"].is_virtual


def test_h5_external_link_is_kept_but_never_followed(tmp_path, monkeypatch):
    h5py = _need("h5py")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("big", data=np.ones(100, np.float32))
    path = tmp_path / "link.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("w", data=np.ones(3, np.float32))
        f["far"] = h5py.ExternalLink(str(other), "/big")
    other.unlink()                    # a followed link would now fail
    model = load_model(path)
    assert list(model.tensors) == ["w"]
    save_model(tmp_path / "out.h5", model)
    with h5py.File(tmp_path / "out.h5", "r") as f:
        link = f.get("far", getlink=True)
        assert isinstance(link, h5py.ExternalLink) and link.path == "/big"


def test_h5_hard_link_cycle_and_shared_datasets(tmp_path):
    h5py = _need("h5py")
    path = tmp_path / "cycle.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("g")
        g.create_dataset("w", data=np.arange(4, dtype=np.float32))
        g["up"] = f["/"]               # a cycle: /g/up is the root
        f["alias"] = g["w"]            # a second name for /g/w
    model = load_model(path)           # used to recurse until RecursionError
    assert list(model.tensors) == ["alias"]                  # the first name in iteration order
    assert [(n["kind"], n["path"]) for n in model.extras["nodes"]] == [
        ("dataset", "alias"), ("group", "g"), ("hardlink", "g/up"), ("hardlink", "g/w")]
    out = tmp_path / "out.h5"
    save_model(out, model)
    with h5py.File(out, "r") as f:
        assert f["g/up"] == f["/"] and f["alias"] == f["g/w"]


def test_h5_deep_nesting(tmp_path):
    h5py = _need("h5py")
    path = tmp_path / "deep.h5"
    name = "/".join(["g"] * 1200)
    with h5py.File(path, "w") as f:
        f.create_dataset(name + "/w", data=np.ones(2, np.float32))
    model = load_model(path)
    assert list(model.tensors) == [name + "/w"]


# ------------------------------------------------------------------------------------ saving

@pytest.mark.parametrize("name", ["a\0b", "x" * 70000, "\udcff", 5], ids=["nul", "long", "surrogate", "int"])
@pytest.mark.parametrize("fmt", ["npz", "safetensors", "pt", "h5"])
def test_save_refuses_names_no_format_can_store(tmp_path, fmt, name):
    out = tmp_path / f"out.{fmt}"
    with pytest.raises(EncoderConfigError, match="tensor name"):
        save_model(out, Model({name: np.ones(2, np.float32)}, {name: "float32"}, fmt))
    assert not out.exists()


@pytest.mark.parametrize("names", [["a", "a/b"], [""], ["."]], ids=["clash", "empty", "dot"])
def test_h5_save_of_names_hdf5_cannot_hold(tmp_path, names):
    _need("h5py")
    out = tmp_path / "out.h5"
    with pytest.raises(EncoderConfigError, match="cannot write .* as HDF5"):
        save_model(out, Model({n: np.ones(2, np.float32) for n in names}, {n: "float32" for n in names}, "h5"))
    assert not out.exists() and not list(tmp_path.iterdir())
