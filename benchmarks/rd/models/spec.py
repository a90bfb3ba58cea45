"""What the harness needs of a benchmark model, and evaluating a module with decoded tensors."""
import contextlib
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np


@dataclass
class ModelSpec:
    """One benchmark model: the tensors coded, the task metric on decoded tensors, calibration data."""

    name: str
    title: str
    module: object                      # torch.nn.Module in eval mode, holding the float weights
    tensors: dict                       # {state_dict name: float32 ndarray}: what is coded
    metric: Callable[[dict], float]     # metric(decoded {name: ndarray}) -> float
    calibration: list                   # input batches (torch tensors) for importance, disjoint from evaluation
    higher_is_better: bool
    metric_name: str
    data_note: str                      # which data are calibration and which evaluation, and how they differ
    notes: list = field(default_factory=list)
    loss: Optional[Callable] = None     # loss(output, batch index) for a Fisher importance, if the model has one
    classifier: bool = False            # the output is class logits: the "kl" importance modes apply
    setup_s: float = 0.0                # seconds spent loading / training
    # the QP sweep (None: benchmarks/rd/run.py's default), where the model's metric moves; the budgets
    # of the "bpp" modes are the reference's sizes at budget_qps, and at few_budget_qps for the costly modes
    qps: Optional[list] = None
    budget_qps: Optional[tuple] = None
    few_budget_qps: Optional[tuple] = None


def float_tensors(state_dict) -> dict:
    """{name: float32 ndarray} of a torch state_dict's floating-point tensors (integer buffers such as
    batch-norm counters are not coded: they do not move along a QP axis)."""
    return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in state_dict.items()
            if v.is_floating_point() and v.numel() > 0}


@contextlib.contextmanager
def loaded(module, decoded):
    """The module with the decoded tensors in place of its own, restored afterwards."""
    import torch
    orig = {k: v.clone() for k, v in module.state_dict().items()}
    try:
        sd = {k: (torch.from_numpy(np.asarray(decoded[k], dtype=np.float32)).reshape(v.shape).to(v.dtype)
                  if k in decoded else v) for k, v in orig.items()}
        module.load_state_dict(sd)
        yield module
    finally:
        module.load_state_dict(orig)


def batched(module, x, batch):
    """module(x) in batches, without gradients (concatenated)."""
    import torch
    with torch.no_grad():
        return torch.cat([module(x[i:i + batch]) for i in range(0, len(x), batch)])
