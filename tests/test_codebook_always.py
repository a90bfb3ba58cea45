"""codebook="always" (the reference's codebook_mode 1, CABAC §9.5): every quantized tensor codebook-coded,
byte-identical to NNCodec 2.1.3's compress(codebook_mode=1) on random cases (blocks, DQ requested,
bit depths, integer tensors alongside), and decoded alike by both decoders."""
import numpy as np
import pytest

import nnr
from nnr.errors import EncoderConfigError
from tests.interop.reference import assert_same_tensors, find_reference, read_result, run_interop

REFERENCE, WHY = find_reference()
needs_reference = pytest.mark.skipif(REFERENCE is None, reason=f"interop: {WHY}")
N_CASES = 16


def random_case(seed):
    rng = np.random.default_rng(9100 + seed)
    tensors, ids, types = {}, {}, {}
    for i in range(int(rng.integers(1, 4))):
        rows = int(rng.integers(2, 20))
        shape = (rows, int(rng.integers(1, 4)), 3, 3) if rng.random() < 0.4 else (rows, int(rng.integers(2, 24)))
        if rng.random() < 0.4:           # few distinct values: a codebook would win anyway
            w = rng.choice([-0.3, -0.1, 0.0, 0.05, 0.2], size=shape) + rng.normal(0, 5e-4, shape)
        else:                           # Gaussian: uniform would be cheaper; mode 1 still uses the codebook
            w = rng.normal(0, float(rng.choice([0.02, 0.1, 0.5])), shape)
        tensors[f"l{i}.weight"] = w.astype(np.float32)
        if rng.random() < 0.6:
            tensors[f"l{i}.bias"] = rng.normal(0, 0.05, rows).astype(np.float32)
            if rng.random() < 0.5:
                ids[f"l{i}.weight"] = ids[f"l{i}.bias"] = f"b{i}"
                types[f"l{i}.weight"], types[f"l{i}.bias"] = "weight", "bias"
        if rng.random() < 0.2:
            tensors[f"l{i}.idx"] = rng.integers(-40, 40, size=rows).astype(np.int32)
    opts = dict(qp=int(rng.choice([-26, -32, -38])), qp_density=int(rng.choice([2, 3])),
                nonweight_qp=int(rng.choice([-60, -75])), dq=bool(rng.random() < 0.5), codebook="always",
                scan_order=int(rng.integers(0, 3)), row_skipping=bool(rng.random() < 0.5),
                param_opt=bool(rng.random() < 0.8), cabac_unary_length_minus1=int(rng.choice([3, 10])),
                bitdepth=int(rng.choice([4, 8])) if rng.random() < 0.2 else None)
    if ids:
        opts["block_id_and_param_type"] = {"block_identifier": ids, "parameter_type": types}
    return tensors, opts


def reference_options(o):
    out = dict(qp=o["qp"], qp_density=o["qp_density"], nonweight_qp=o["nonweight_qp"], use_dq=o["dq"],
               codebook_mode=1, scan_order=o["scan_order"], row_skipping=o["row_skipping"],
               param_opt=o["param_opt"], cabac_unary_length_minus1=o["cabac_unary_length_minus1"],
               int_quant_bw=o["bitdepth"])
    if "block_id_and_param_type" in o:
        out["block_id_and_param_type"] = o["block_id_and_param_type"]
    return out


def test_option_values():
    for bad in (1, 2, "cheaper", None):
        with pytest.raises(EncoderConfigError, match="codebook must be False, True"):
            nnr.Encoder(codebook=bad)


def test_always_codes_a_codebook_where_the_cheaper_choice_is_uniform():
    """Gaussian weights: mode 2 keeps uniform (no codebook structure in the NDU), mode 1 writes one."""
    w = {"w": np.random.default_rng(1).normal(0, 0.1, (40, 40)).astype(np.float32)}

    def has_codebook(data):
        dec = nnr.Decoder()
        dec.decode(data)
        return [u.fields.get("codebook_present_flag") for u in dec.units if u.nnr_unit_type == 5]
    assert has_codebook(nnr.encode(w, codebook=True, dq=False)) == [0]
    assert has_codebook(nnr.encode(w, codebook="always", dq=False)) == [1]


@pytest.fixture(scope="module")
def interop_run(tmp_path_factory):
    jobs = tmp_path_factory.mktemp("nncodec-cb1-jobs")
    return jobs, run_interop(jobs, random_case, N_CASES, reference_options)


@needs_reference
@pytest.mark.parametrize("seed", range(N_CASES))
def test_codebook_always_matches_the_reference(interop_run, seed):
    jobs, cases = interop_run
    tensors, opts, data = cases[seed]
    kind, ref = read_result(str(jobs / f"{seed:03d}-ref-encode"))
    assert kind == "bitstream", ref
    assert data == ref, f"codebook_mode 1 stream differs from the reference's ({opts})"
    kind, ref_out = read_result(str(jobs / f"{seed:03d}-ref-decodes-nnr"))
    assert kind == "decoded", ref_out
    assert_same_tensors(nnr.decode(data), ref_out)


def test_edition1_mode2_on_the_codebook1_inputs():
    """NNCodec 1.x's codebook_mode 2 on the inputs of bitstreams/nncodec-1.x-codebook1 (recorded by
    generate.py: stream size and each tensor's choice): nnr's codebook=True makes the same choices and
    the same number of bytes."""
    import json
    import os

    from tests.encoder_cases import encoder_plan
    from tests.vectors import ROOT, load_cases
    cases = load_cases("nncodec-1.x-codebook1")
    assert len(cases) == 8
    for case in cases:
        opts, steps, _ = encoder_plan(case.set_name, case.name)
        with open(os.path.join(ROOT, case.set_name, case.name, "config.json")) as f:
            mode2 = json.load(f)["codebook_mode2_same_settings"]
        (inputs, _, _), = steps
        data = nnr.encode(inputs, **dict(opts, codebook=True))
        assert len(data) == mode2["bitstream_bytes"], case.name
        dec = nnr.Decoder(profile0_variant="nncodec1")
        dec.decode(data)
        chosen = {u.fields["topology_elem_id"]: "codebook" if u.fields.get("codebook_present_flag") else "uniform"
                  for u in dec.units if u.nnr_unit_type == 5 and u.fields["nnr_compressed_data_unit_payload_type"] != 0}
        assert chosen == {k: v for k, v in mode2["approx_method_chosen"].items() if v != "skip"}, case.name
