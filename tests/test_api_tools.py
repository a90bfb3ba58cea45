"""The public API, the error reports and the command-line tools."""
import os
import subprocess
import sys

import numpy as np
import pytest

import nnr
from nnr.checksum import output_sha256
from tests.vectors import load_cases

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASE = next(c for c in load_cases("nncodec-2.1.3") if c.name == "multi_tensor_dict")
DATA = CASE.steps[0].bitstream


def run_tool(name, *args):
    return subprocess.run([sys.executable, "-m", f"nnr.cli.{name}", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_import_is_numpy_only():
    code = ("import sys, nnr; nnr.decode; nnr.Decoder; "
            "bad = [m for m in ('torch', 'h5py', 'safetensors') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_decode_returns_names_in_unit_order():
    out = nnr.decode(DATA)
    assert list(out) == ["enc.conv.weight", "enc.conv.bias", "fc.weight", "fc.bias", "emb.idx"]
    assert out["emb.idx"].dtype == np.int32 and out["fc.weight"].dtype == np.float32


def test_truncation_error_names_unit_and_offset():
    with pytest.raises(nnr.TruncatedBitstreamError) as ei:
        nnr.decode(DATA[:100])
    err = ei.value
    assert err.unit_index == 3 and err.bit_offset is not None
    assert "unit 3" in str(err)


def test_payload_error_names_unit_element_and_bit():
    data = bytearray(DATA)
    data[-1] ^= 0x01          # the last NDU's stop-bit padding
    with pytest.raises(nnr.EntropyDecodingError) as ei:
        nnr.decode(bytes(data))
    err = ei.value
    assert err.unit_index == 7 and err.element and err.bit_offset > 8 * 1363


def test_resource_limit():
    with pytest.raises(nnr.ResourceLimitError, match="enc.conv.weight"):
        nnr.Decoder(max_tensor_elements=1000).decode(DATA)


def test_failed_decode_leaves_state_untouched():
    case = next(c for c in load_cases("nncodec-2.1.3") if c.name == "inc_tca_diff")
    dec = nnr.Decoder()
    dec.decode(case.steps[0].bitstream)
    with pytest.raises(nnr.NNRError):
        dec.decode(case.steps[1].bitstream[:-3])
    got = dec.decode(case.steps[1].bitstream)      # the failed call did not advance the state
    assert np.array_equal(got["0"], case.steps[1].decoded[None])


def _units_with(extra: bytes):
    return DATA[:18] + extra


@pytest.mark.parametrize("unit,error", [
    (bytes.fromhex("00031a"), nnr.UnsupportedFeatureError),           # NNR_AGG
    (bytes.fromhex("000612000000"), nnr.UnsupportedFeatureError),     # NNR_QNT
    (bytes.fromhex("000326"), nnr.SyntaxValueError),                   # reserved unit type 9
])
def test_units_without_public_syntax(unit, error):
    with pytest.raises(error):
        nnr.decode(_units_with(unit))


def test_ndu_before_mps_is_rejected():
    with pytest.raises(nnr.ConstraintViolationError):
        nnr.decode(DATA[:4] + DATA[18:])


def test_second_str_is_rejected():
    with pytest.raises(nnr.ConstraintViolationError):
        nnr.decode(DATA[:18] + DATA[:4])


def test_unknown_payload_type_is_rejected():
    # patch the first NDU's payload type (the byte after its 2-byte size and 1-byte unit header) to 5
    data = bytearray(DATA)
    data[21] = (5 << 3) | (data[21] & 7)
    with pytest.raises(nnr.SyntaxValueError, match="payload_type"):
        nnr.decode(bytes(data))


def test_nnr_decode_writes_npz_and_verifies(tmp_path):
    src = tmp_path / "m.nnc"
    src.write_bytes(DATA)
    digest = output_sha256(nnr.decode(DATA))
    out = tmp_path / "m.npz"
    r = run_tool("nnr_decode", src, "-o", out, "--verify", digest)
    assert r.returncode == 0, r.stderr
    assert f"output sha256 {digest}" in r.stdout
    with np.load(out) as z:
        for name, want in CASE.steps[0].decoded.items():
            assert np.array_equal(z[name], want) and z[name].dtype == want.dtype
    bad = run_tool("nnr_decode", src, "--verify", "0" * 64)
    assert bad.returncode == 1 and "checksum mismatch" in bad.stderr


def test_nnr_decode_reports_bad_input_without_output(tmp_path):
    src = tmp_path / "bad.nnc"
    src.write_bytes(DATA[:-5])
    out = tmp_path / "bad.npz"
    r = run_tool("nnr_decode", src, "-o", out)
    assert r.returncode == 1
    assert "unit 7" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [src]


def test_nnr_decode_trace(tmp_path):
    src = tmp_path / "m.nnc"
    src.write_bytes(DATA)
    trace = tmp_path / "m.trace"
    assert run_tool("nnr_decode", src, "--trace", trace, "-q").returncode == 0
    lines = trace.read_text().splitlines()
    assert any("topology_elem_id st(v) = \"fc.weight\"" in line for line in lines)
    first = lines[0].split()
    assert first[0].isdigit() and first[2].startswith("u(") and first[3] == "="


def test_nnr_info(tmp_path):
    src = tmp_path / "m.nnc"
    src.write_bytes(DATA)
    r = run_tool("nnr_info", src)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 8
    assert "NNR_STR" in lines[0] and "NNR_PT_INT" in lines[-1] and "emb.idx" in lines[-1]
    t = run_tool("nnr_info", src, "--trace")
    assert t.returncode == 0 and len(t.stdout.splitlines()) > 100


def _indexed_variant(stream):
    """Rewrite a stream to name its tensors by index into an NNR_TPL_REFLIST (HLS §6, HLS §8.1)."""
    from nnr_core.syntax.units import SyntaxState, parse_units, write_unit
    units = parse_units(stream)
    names = [u.fields["topology_elem_id"] for u in units if u.nnr_unit_type == 5]
    state = SyntaxState()
    out = b""
    for u in units:
        f = {k: v for k, v in u.fields.items() if not k.startswith("nnr_unit_size")}
        payload = b""
        if u.nnr_unit_type == 1:
            f["mps_topology_indexed_reference_flag"] = 1
        elif u.nnr_unit_type == 3:
            f = {"topology_storage_format": 6, "topology_compression_format": 0,
                 "topology_elem_id_list": names}
        elif u.nnr_unit_type == 5:
            f["topology_elem_id_index"] = names.index(f.pop("topology_elem_id"))
            payload = stream[u.payload_offset:u.payload_end]
        out += write_unit(u.nnr_unit_type, f, state, payload)
    return out


def test_topology_indexed_references():
    with open(os.path.join(REPO, "bitstreams", "hls-examples", "16.1_profile1_fc.nnc"), "rb") as f:
        stream = f.read()
    indexed = _indexed_variant(stream)
    assert indexed != stream
    want = nnr.decode(stream)
    got = nnr.decode(indexed)
    assert list(got) == list(want)
    for name in want:
        assert np.array_equal(got[name], want[name])
    # without the reference list the indices cannot be resolved
    units = indexed[:12] + indexed[12 + int.from_bytes(indexed[12:14], "big"):]
    with pytest.raises(nnr.ConstraintViolationError, match="reference list"):
        nnr.decode(units)
