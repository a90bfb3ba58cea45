"""The encoder's trace (Encoder.encode(trace=...), nnr_encode --trace) is what the encoder wrote, in
the decoder's format: for a valid stream the two agree line by line, header elements and payloads
(each payload tensor at its own bit position), and they part at the first element that differs."""
import numpy as np
import pytest

import nnr
from nnr.cli import nnr_decode, nnr_encode
from nnr_core.bitstream.trace import Trace

RNG = np.random.default_rng(12)


def gauss(*shape, scale=0.05):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


BLOCK = {"block_identifier": {"l.weight": "l", "l.bias": "l", "l.weight_scaling": "l"},
         "parameter_type": {"l.weight": "weight", "l.bias": "bias", "l.weight_scaling": "weight.ls"}}
CASES = {
    "model": ({"conv.weight": gauss(8, 3, 3, 3), "conv.bias": gauss(8), "fc.weight": gauss(10, 72),
               "emb.idx": np.arange(-6, 6, dtype=np.int32).reshape(3, 4)}, {}),
    "scan2_entry_points": ({"w": gauss(136, 6)}, {"scan_order": 2}),
    "scan4_nodq_rowskip": ({"w": gauss(136, 6) * (RNG.random((136, 1)) < 0.5)}, {"scan_order": 4, "dq": False}),
    "block": ({"l.weight": gauss(12, 10), "l.bias": gauss(12), "l.weight_scaling": 1 + gauss(12)},
              {"block_id_and_param_type": BLOCK, "scan_order": 1}),
    "codebook": ({"w": RNG.choice(np.array([-0.3, -0.1, 0, 0.1, 0.2, 0.5], np.float32), (16, 24))},
                 {"codebook": True}),
    "bitdepth": ({"w": gauss(16, 24), "b": gauss(16)}, {"bitdepth": 6}),
    "raw_float": ({"w": gauss(16, 24), "b": gauss(16)}, {"raw_float": ("b",)}),
    "profile0": ({"w": gauss(40, 6), "b": gauss(6)}, {"general_profile_idc": 0, "scan_order": 1}),
}


def encoder_trace(tensors, jobs=1, encoder=None, **options):
    trace = Trace()
    enc = encoder or nnr.Encoder(jobs=jobs, stateful=False, **options)
    data = enc.encode(tensors, incremental=encoder is not None, trace=trace, hdsp=True)
    return data, trace.lines()


def decoder_trace(data, decoder=None):
    trace = Trace()
    (decoder or nnr.Decoder(keep_state=False)).decode(data, trace=trace)
    return trace.lines()


def first_difference(a, b):
    """(line number, encoder line, decoder line) of the first disagreement, None if they agree."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i, x, y
    return None if len(a) == len(b) else (min(len(a), len(b)), a[len(b):][:1], b[len(a):][:1])


def check_agree(enc_lines, dec_lines):
    assert first_difference(enc_lines, dec_lines) is None
    header = [line for line in enc_lines if " nnr_unit" in line]
    payload = [line for line in enc_lines if " nnr_compressed_data_unit_payload" in line]
    assert len(header) > 20 and payload


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("name", sorted(CASES))
def test_encoder_and_decoder_traces_agree(name, jobs):
    tensors, options = CASES[name]
    data, enc_lines = encoder_trace(tensors, jobs, **options)
    check_agree(enc_lines, decoder_trace(data))
    assert data == nnr.encode(tensors, **options)         # tracing changes nothing written


def test_block_members_and_entry_points_carry_their_positions():
    """In a block's payload each tensor's lines carry its own start; entry points are listed."""
    tensors, options = CASES["block"]
    _, lines = encoder_trace(tensors, **options)
    head, tail = "nnr_compressed_data_unit_payload.", ".qp_offset"
    starts = {}
    for line in lines:
        bit, path = line.split()[:2]
        if path.startswith(head) and path.endswith(tail):
            starts[path[len(head):-len(tail)]] = int(bit)
    payload = int(next(line for line in lines if line.split()[1] == "nnr_compressed_data_unit_payload").split()[0])
    # payload order LS, BI, W: the first tensor at the payload's start, the others later, in order
    assert list(starts) == ["l.weight_scaling", "l.bias", "l.weight"]
    assert starts["l.weight_scaling"] == payload < starts["l.bias"] < starts["l.weight"]
    assert any("l.weight.entry_point[0]" in line for line in lines)


def test_incremental_sequence_traces_agree():
    """Updates with parent signalling, TCA and HDSP: every step's traces agree."""
    enc, dec = nnr.Encoder(), nnr.Decoder()
    base = {"w": gauss(40, 8), "v": gauss(20, 5)}
    for step in range(3):
        tensors = base if step == 0 else {"w": gauss(40, 8) * (RNG.random((40, 8)) < 0.3), "v": gauss(20, 5)}
        data, enc_lines = encoder_trace(tensors, encoder=enc)
        check_agree(enc_lines, decoder_trace(data, dec))


def test_traces_part_at_the_first_differing_element():
    """The encoder trace of one stream against the decoder trace of a stream that differs in one
    header element (device_id 0 or 1, codes of the same length): the comparison stops there."""
    tensors = {"w": gauss(16, 24), "b": gauss(16)}
    _, enc_lines = encoder_trace(tensors, device_id=0)
    dec_lines = decoder_trace(nnr.encode(tensors, device_id=1))
    index, enc_line, dec_line = first_difference(enc_lines, dec_lines)
    assert enc_line.split()[1].endswith(".device_id") and enc_line.endswith("= 0") and dec_line.endswith("= 1")
    assert enc_lines[:index] == dec_lines[:index] and len(enc_lines) == len(dec_lines)


def test_a_corrupted_trace_source_is_caught(monkeypatch):
    """Were the encoder's trace positions taken from anything but what it writes (here: the units
    traced one byte off), the traces would not agree."""
    from nnr_core.encoder import ndu
    write_unit = ndu.write_unit

    def shifted(*args, stream_offset=0, **kwargs):
        return write_unit(*args, stream_offset=stream_offset + 1, **kwargs)

    monkeypatch.setattr(ndu, "write_unit", shifted)
    tensors, options = CASES["model"]
    data, enc_lines = encoder_trace(tensors, **options)
    index, enc_line, dec_line = first_difference(enc_lines, decoder_trace(data))
    assert " nnr_unit_size" in enc_line and int(enc_line.split()[0]) == int(dec_line.split()[0]) + 8


def test_nnr_encode_trace_is_nnr_decode_trace(tmp_path):
    """The command-line tools: the file nnr_encode --trace writes equals nnr_decode --trace's."""
    tensors, _ = CASES["model"]
    np.savez(tmp_path / "m.npz", **tensors)
    assert nnr_encode.main([str(tmp_path / "m.npz"), "-o", str(tmp_path / "m.nnr"), "-q", "--scan-order", "1",
                            "--trace", str(tmp_path / "enc.trace")]) == 0
    assert nnr_decode.main([str(tmp_path / "m.nnr"), "-q", "--trace", str(tmp_path / "dec.trace")]) == 0
    enc_text, dec_text = (tmp_path / "enc.trace").read_text(), (tmp_path / "dec.trace").read_text()
    assert enc_text == dec_text and "topology_data st(v)" in enc_text and "emb.idx.levels" in enc_text


def test_onnx_encoder_trace_includes_the_graph_unit(tmp_path):
    """nnr_encode model.onnx --trace: the graph is written in the NNR_TPL unit as the encoder writes
    it (not replaced afterwards), so its trace agrees with nnr_decode's too."""
    pytest.importorskip("onnx", reason='needs onnx: pip install "nnr[onnx]"')
    import onnx

    from tests.test_topology import _tiny_onnx
    onnx.save(_tiny_onnx(), tmp_path / "m.onnx")
    assert nnr_encode.main([str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.nnr"), "-q",
                            "--trace", str(tmp_path / "enc.trace")]) == 0
    assert nnr_decode.main([str(tmp_path / "m.nnr"), "-q", "--trace", str(tmp_path / "dec.trace")]) == 0
    enc_text = (tmp_path / "enc.trace").read_text()
    assert enc_text == (tmp_path / "dec.trace").read_text() and "topology_data_byte[0.." in enc_text
