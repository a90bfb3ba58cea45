"""Rate-distortion tools around the codec: QP sweeps, QP and budget searches, per-parameter importance
of a torch module, its layers' input second moments (output-aware rounding), sparsification, bias
correction, local scaling adaptation, importance-weighted quantization and plots (nnr_rd). Encoder choices beyond the
reference; nothing here changes default bytes."""
from nnr.rd.bias_correction import correct_bias, encode_corrected
from nnr.rd.hessians import layer_hessians
from nnr.rd.importance import Importance
from nnr.rd.lowrank import choose_ranks, encode_low_rank
from nnr.rd.lsa import encode_lsa, train_lsa
from nnr.rd.search import search_target_bpp, search_target_metric, search_target_psnr, search_target_relative_error
from nnr.rd.sparsify import sparsify
from nnr.rd.sweep import RDPoint, TensorPoint, load_metric, measure, psnr, relative_rmse, snr, table_markdown
from nnr.rd.weighted import quantize_weighted, weighted_sse

# the sweep itself: nnr.rd.sweep.sweep; the importance: nnr.importance = nnr.rd.importance.importance
# (the modules keep their names); nnr.rd.sparsify is the function (the module nnr/rd/sparsify.py is
# reached with `from nnr.rd.sparsify import ...`)
__all__ = ["measure", "psnr", "snr", "relative_rmse", "load_metric", "table_markdown", "RDPoint", "TensorPoint",
           "search_target_psnr", "search_target_relative_error", "search_target_bpp", "search_target_metric",
           "quantize_weighted", "weighted_sse", "Importance", "sparsify", "correct_bias", "encode_corrected",
           "layer_hessians", "train_lsa", "encode_lsa", "choose_ranks", "encode_low_rank"]
