"""Rate-distortion tools around the codec: QP sweeps, QP and budget searches, per-parameter importance
of a torch module, sparsification, importance-weighted quantization and plots (nnr_rd). Encoder
choices beyond the reference; nothing here changes default bytes."""
from nnr.rd.importance import Importance
from nnr.rd.search import search_target_bpp, search_target_metric, search_target_psnr
from nnr.rd.sparsify import sparsify
from nnr.rd.sweep import RDPoint, TensorPoint, load_metric, measure, psnr, snr, table_markdown
from nnr.rd.weighted import quantize_weighted, weighted_sse

# the sweep itself: nnr.rd.sweep.sweep; the importance: nnr.importance = nnr.rd.importance.importance
# (the modules keep their names); nnr.rd.sparsify is the function (the module nnr/rd/sparsify.py is
# reached with `from nnr.rd.sparsify import ...`)
__all__ = ["measure", "psnr", "snr", "load_metric", "table_markdown", "RDPoint", "TensorPoint",
           "search_target_psnr", "search_target_bpp", "search_target_metric", "quantize_weighted", "weighted_sse",
           "Importance", "sparsify"]
