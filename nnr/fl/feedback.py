"""Error feedback (error accumulation) around an update coder: what a message does not carry is
added to the next update, so it is sent later instead of lost (Seide et al. 2014; Stich et al. 2018;
as DGC and SBC use it)."""
import numpy as np


class FeedbackSender:
    """Codes updates with `coder` (nnr.fl.methods); keeps e <- (update + e) - sent."""

    def __init__(self, coder, error_feedback=True):
        self.coder = coder
        self.error_feedback = bool(error_feedback)
        self.residual = None

    def send(self, update):
        """(message bytes, what the receiver reconstructs) for one update {name: float array}."""
        update = {n: np.asarray(a, dtype=np.float32) for n, a in update.items()}
        if self.error_feedback and self.residual is not None:
            update = {n: a + self.residual[n] for n, a in update.items()}
        data, sent = self.coder.encode(update)
        if self.error_feedback:
            self.residual = {n: update[n] - sent[n] for n in sent}
        return data, sent
