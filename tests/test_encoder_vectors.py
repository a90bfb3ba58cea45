"""nnr.encode reproduces the reference's bitstreams byte for byte (issue: a conforming encoder)."""
import pytest

import nnr
from tests.encoder_cases import encoder_plan
from tests.vectors import SETS, load_cases

CASES = [c for s in SETS for c in load_cases(s)]


def _materialise(inputs):
    if isinstance(inputs, tuple) and inputs[0] == "torch":
        torch = pytest.importorskip("torch", reason="the nn_model_module vector's input is a torch state_dict")
        sd = torch.load(inputs[1], map_location="cpu", weights_only=True)
        return {k: v.numpy() for k, v in sd.items()}
    return inputs


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_encoder_reproduces_reference_bitstream(case):
    opts, steps, mode = encoder_plan(case.set_name, case.name)
    if opts is None:
        pytest.skip(mode)
    if mode == "stateful":
        enc = nnr.Encoder(**opts)
        for k, (inputs, kwargs, want) in enumerate(steps):
            got = enc.encode(inputs, **kwargs)
            assert got == want, f"step {k}: {len(got)} bytes vs {len(want)}; first difference at byte " \
                                f"{next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))}"
        return
    (inputs, _, want), = steps
    got = nnr.encode(_materialise(inputs), **opts)
    assert got == want, f"{len(got)} bytes vs {len(want)}; first difference at byte " \
                        f"{next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))}"
