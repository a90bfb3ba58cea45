"""pre_signalling (the reference's option of that name, HLS §13.1): the MPS enables parent signalling
with nnr_pre_flag 1 in a stream that is not an update; byte-identical to NNCodec 2.1.3's
compress(pre_signalling=True), all-zero tensors left out as it leaves them out, both decoders alike."""
import numpy as np
import pytest

import nnr
from nnr.errors import EncoderConfigError
from tests.interop.reference import assert_same_tensors, find_reference, read_result, run_interop

REFERENCE, WHY = find_reference()
needs_reference = pytest.mark.skipif(REFERENCE is None, reason=f"interop: {WHY}")
N_CASES = 12


def random_case(seed):
    rng = np.random.default_rng(9300 + seed)
    tensors = {}
    for i in range(int(rng.integers(1, 5))):
        # rows >= 2: the reference's writer crashes on a 2-D tensor of one row with scan_order > 0
        shape = (int(rng.integers(2, 20)), int(rng.integers(1, 30)))
        kind = rng.random()
        if kind < 0.25:
            tensors[f"t{i}"] = np.zeros(shape, np.float32)                   # omitted
        elif kind < 0.35:
            tensors[f"t{i}"] = rng.normal(0, 1e-6, shape).astype(np.float32)  # quantizes to zero: omitted
        elif kind < 0.45:
            tensors[f"t{i}"] = rng.integers(-9, 9, shape).astype(np.int32)
        else:
            tensors[f"t{i}"] = rng.normal(0, 0.1, shape).astype(np.float32)
        if rng.random() < 0.4:
            tensors[f"b{i}"] = rng.normal(0, 0.1, shape[0]).astype(np.float32)
    opts = dict(qp=int(rng.choice([-28, -34])), dq=bool(rng.random() < 0.5), pre_signalling=True,
                row_skipping=bool(rng.random() < 0.5), scan_order=int(rng.integers(0, 2)))
    return tensors, opts


def reference_options(o):
    return dict(qp=o["qp"], use_dq=o["dq"], pre_signalling=True, row_skipping=o["row_skipping"],
                scan_order=o["scan_order"])


def test_fields_and_omission():
    t = {"w": np.ones((4, 4), np.float32), "z": np.zeros((3, 3), np.float32)}
    dec = nnr.Decoder()
    out = dec.decode(nnr.encode(t, pre_signalling=True))
    mps = dec.units[1].fields
    assert mps["mps_parent_signalling_enabled_flag"] == 1 and mps["nnr_pre_flag"] == 1
    ndus = [u.fields for u in dec.units if u.nnr_unit_type == 5]
    assert [f["topology_elem_id"] for f in ndus] == ["w"] and ndus[0]["parent_node_id_present_flag"] == 0
    assert list(out) == ["w"]
    plain = nnr.Decoder()
    assert list(plain.decode(nnr.encode(t))) == ["w", "z"]
    assert plain.units[1].fields["mps_parent_signalling_enabled_flag"] == 0
    with pytest.raises(EncoderConfigError, match="only general_profile_idc 1"):
        nnr.encode(t, pre_signalling=True, general_profile_idc=0)


@pytest.fixture(scope="module")
def interop_run(tmp_path_factory):
    jobs = tmp_path_factory.mktemp("nncodec-pre-jobs")
    return jobs, run_interop(jobs, random_case, N_CASES, reference_options)


@needs_reference
@pytest.mark.parametrize("seed", range(N_CASES))
def test_pre_signalling_matches_the_reference(interop_run, seed):
    jobs, cases = interop_run
    tensors, opts, data = cases[seed]
    kind, ref = read_result(str(jobs / f"{seed:03d}-ref-encode"))
    assert kind == "bitstream", ref
    assert data == ref, f"pre-signalled stream differs from the reference's ({opts})"
    kind, ref_out = read_result(str(jobs / f"{seed:03d}-ref-decodes-nnr"))
    assert kind == "decoded", ref_out
    assert_same_tensors(nnr.decode(data), ref_out)
