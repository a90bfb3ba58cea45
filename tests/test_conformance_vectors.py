"""Every reference vector decodes to exactly what the reference decoded (issue: bit-exact decoder)."""
import numpy as np
import pytest

import nnr
from tests.vectors import SETS, expected_by_name, load_cases

CASES = [c for s in SETS for c in load_cases(s)]

# NNCodec 2.1.3 decodes these edition-1 streams identically (MANIFEST.md of nncodec-1.x): the extra
# remainder flag of edition 1 happens not to renormalise before a range reset or the end.
SAME_IN_BOTH_VARIANTS = {"po_param_opt_off_nodq", "so_scan_order2_dq", "so_scan_order3_dq", "so_scan_order4_dq"}


def test_vectors_are_bundled():
    names = {c.id for c in CASES}
    assert len([n for n in names if n.startswith("nncodec-2.1.3/")]) == 52
    assert len([n for n in names if n.startswith("nncodec-1.x/")]) == 22


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_decodes_exactly(case):
    dec = nnr.Decoder()
    for k, step in enumerate(case.steps):
        got = dec.decode(step.bitstream)
        want = expected_by_name(step, got)
        assert list(got) == list(want), f"step {k}: tensor names"
        for name, ref in want.items():
            assert got[name].dtype == ref.dtype, f"step {k} {name}: dtype {got[name].dtype} != {ref.dtype}"
            assert got[name].shape == ref.shape, f"step {k} {name}: shape"
            assert np.array_equal(got[name], ref), f"step {k} {name}: values differ"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_levels_match_reference(case):
    dec = nnr.Decoder()
    for k, step in enumerate(case.steps):
        tensors = dec.decode_tensors(step.bitstream)
        if not step.levels:
            continue
        ours = {t.name: t.levels for t in tensors}
        if len(step.levels) == 1 and len(ours) == 1:
            ours = {next(iter(step.levels)): next(iter(ours.values()))}
        for name, ref in step.levels.items():
            got = ours[name]
            assert got.shape == ref.shape
            assert np.array_equal(got.astype(np.int64), ref.astype(np.int64)), f"step {k} {name}: levels differ"


@pytest.mark.parametrize("case", load_cases("nncodec-1.x"), ids=lambda c: c.id)
def test_edition1_wrong_variant_is_noticed(case):
    """Decoding NNCodec 1.x streams as NNCodec 2.x does must fail or differ, never pass silently,
    except where the reference itself decodes identically."""
    step = case.steps[0]
    try:
        got = nnr.Decoder(profile0_variant="nncodec2").decode(step.bitstream)
    except nnr.NNRError:
        assert case.name not in SAME_IN_BOTH_VARIANTS
        return
    want = expected_by_name(step, got)
    same = all(np.array_equal(got[n], want[n]) for n in want)
    assert same == (case.name in SAME_IN_BOTH_VARIANTS)
