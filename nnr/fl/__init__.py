"""nnr.fl: coding model updates for federated training (numpy in, bytes out): sparsification, the
methods compared in benchmarks/federated (float32, DGC-like top-k, SBC, NNC) and error feedback."""
from nnr.fl.feedback import FeedbackSender  # noqa: F401
from nnr.fl.methods import DgcCoder, Float32Coder, NncCoder, SbcCoder, qp_for_step, split_flat  # noqa: F401
from nnr.fl.sparsify import sbc, sbc_dense, topk  # noqa: F401
