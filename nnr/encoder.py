"""The NNC encoder: quantization, entropy coding and NNR units, with the reference's choices
(HLS §14, CABAC §13)."""
import logging
from dataclasses import dataclass, fields as dc_fields
from typing import Optional

import numpy as np

from nnr.errors import EncoderConfigError
from nnr.jobs import resolve_jobs
from nnr_core.bitstream.trace import Trace
from nnr_core.cabac.params import VARIANT_NNCODEC1, VARIANT_NNCODEC2
from nnr_core.encoder.prepare import prepare
from nnr_core.model.incremental import IncrementalState
from nnr_core.quant.weighted import DEFAULT_MIX, DEFAULT_POWER, check_mix, check_power
from nnr_core.syntax.constants import NNR_MPS, NNR_STR, NNR_TPL, NNR_TPL_PYT, NNR_TPL_UNREC
from nnr_core.syntax.units import SyntaxState, write_unit

log = logging.getLogger("nnr")

FRAMEWORKS = {"generic": NNR_TPL_UNREC, "pytorch": NNR_TPL_PYT}
VARIANTS = {"nncodec1": VARIANT_NNCODEC1, "nncodec2": VARIANT_NNCODEC2}
ALLOCATION_QP_DENSITY = 4       # target_bpp's qp_density unless one is given


@dataclass
class EncoderConfig:
    """Encoder options; the defaults are the reference's (NNCodec 2.1.3 tensor API)."""

    qp: int = -32
    qp_density: int = 2
    nonweight_qp: Optional[int] = -75
    dq: bool = True
    codebook: object = False         # True: codebook or uniform, the cheaper (the reference's codebook_mode 2);
                                     # "always": codebook quantization for every quantized tensor (mode 1)
    bitdepth: Optional[int] = None
    scan_order: int = 0
    row_skipping: bool = True
    param_opt: bool = True
    cabac_unary_length_minus1: int = 10
    qp_per_tensor: Optional[dict] = None
    lambda_scale: float = 0.0
    general_profile_idc: int = 1
    profile0_variant: str = "nncodec1"
    framework: str = "generic"
    device_id: int = 0
    raw_float: tuple = ()            # names of tensors to carry uncoded as NNR_PT_RAW_FLOAT
    # the reference's {"block_identifier": {name: id or None}, "parameter_type": {name: type}}
    # (nnr_core/encoder/blocks.py): blocks coded as NNR_PT_BLOCK, parameter types choosing the QP
    block_id_and_param_type: Optional[dict] = None
    # batch-norm folding (nnr_core/encoder/bnf.py): each block's bn.* members become its LS and bias
    # before quantization, as the reference's compress(..., bnf=True); needs block_id_and_param_type
    bnf: bool = False
    bnf_eps: float = 1e-5            # the batch norms' epsilon (the reference: 1e-5 for every non-TF model)
    # the reference's pre_signalling: the MPS enables parent signalling with nnr_pre_flag 1 in a
    # stream that is not an update (NDUs without parents; all-zero tensors left out)
    pre_signalling: bool = False
    # {weight name: rank}: those weights coded as low-rank factors G, H (NNR_CPT_DC, nnr_core/encoder/lowrank.py)
    low_rank: Optional[dict] = None
    # float tensors whose values lie on an NNC step grid (a model decoded from NNC, power-of-two-like
    # quantization) coded exactly on it, without DQ (nnr_core/quant/grid.py)
    detect_grid: bool = False
    # {name: per-parameter importance}: importance-weighted RD quantization (nnr_core/quant/weighted.py),
    # distortion weights (1 - importance_mix) + importance_mix * F^importance_power / mean
    importance: Optional[dict] = None
    importance_mix: float = DEFAULT_MIX
    importance_power: float = DEFAULT_POWER
    # a rate budget in bits per floating-point parameter: per-tensor QPs of the weight tensors chosen
    # for the least (importance-weighted) distortion that fits it (nnr_core/encoder/allocate.py)
    target_bpp: Optional[float] = None
    # a fraction of the weight tensors' parameters set to zero before quantization (nnr.rd.sparsify:
    # global F·w² saliency with importance, else w² / mean w² per tensor; whole rows if
    # sparsity_structured); zeros, pruned or not, then decode as exactly 0
    sparsity: Optional[float] = None
    sparsity_structured: bool = False
    # {weight name: H = sum x x^T of the layer's inputs (d, d) or (groups, d, d)}: those tensors'
    # levels rounded output-aware (nnr_core/quant/gptq.py; nnr.rd.layer_hessians computes H), dq_flag 0
    hessians: Optional[dict] = None

    def validate(self):
        """Reject options the syntax cannot carry or the codec does not know."""
        def need(cond, what):
            if not cond:
                raise EncoderConfigError(what)
        for name in ("qp", "qp_density", "scan_order", "cabac_unary_length_minus1", "general_profile_idc",
                     "device_id"):
            v = getattr(self, name)
            need(isinstance(v, (int, np.integer)) and not isinstance(v, bool), f"{name} must be an integer, not {v!r}")
        need(0 <= self.qp_density <= 7, f"qp_density must be 0..7, not {self.qp_density}")
        need(-4096 <= self.qp <= 4095, f"qp {self.qp} is outside what NNC can signal (-4096..4095)")
        if self.nonweight_qp is not None:
            need(isinstance(self.nonweight_qp, (int, np.integer)), "nonweight_qp must be an integer or None")
            need(-4096 <= self.nonweight_qp <= 4095, f"nonweight_qp {self.nonweight_qp} is outside -4096..4095")
        need(0 <= self.scan_order <= 4, f"scan_order must be 0..4, not {self.scan_order}")
        need(0 <= self.cabac_unary_length_minus1 <= 255,
             f"cabac_unary_length_minus1 must be 0..255, not {self.cabac_unary_length_minus1}")
        need(self.general_profile_idc in (0, 1), f"general_profile_idc must be 0 or 1, not {self.general_profile_idc}")
        need(self.profile0_variant in VARIANTS, f"profile0_variant must be one of {sorted(VARIANTS)}")
        need(isinstance(self.codebook, bool) or (isinstance(self.codebook, str) and self.codebook == "always"),
             f"codebook must be False, True (codebook or uniform, the cheaper) or 'always', not {self.codebook!r}")
        need(self.framework in FRAMEWORKS, f"framework must be one of {sorted(FRAMEWORKS)}")
        need(self.device_id >= 0, f"device_id must be >= 0, not {self.device_id}")
        if self.bitdepth is not None:
            need(isinstance(self.bitdepth, (int, np.integer)) and 1 <= self.bitdepth <= 31,
                 f"bitdepth must be 1..31 or None, not {self.bitdepth!r}")
        need(isinstance(self.lambda_scale, (int, float)) and np.isfinite(self.lambda_scale) and self.lambda_scale >= 0,
             f"lambda_scale must be a finite number >= 0, not {self.lambda_scale!r}")
        if self.qp_per_tensor is not None:
            need(isinstance(self.qp_per_tensor, dict), "qp_per_tensor must be a dict {name: qp}")
            for k, v in self.qp_per_tensor.items():
                need(isinstance(v, (int, np.integer)) and -4096 <= v <= 4095,
                     f"qp_per_tensor[{k!r}] = {v!r} must be an integer in -4096..4095")
        if self.block_id_and_param_type is not None:
            from nnr_core.encoder.blocks import check_option
            check_option(self.block_id_and_param_type)
        need(isinstance(self.bnf, bool), f"bnf must be True or False, not {self.bnf!r}")
        need(isinstance(self.bnf_eps, (int, float)) and not isinstance(self.bnf_eps, bool)
             and 0 <= self.bnf_eps < 1, f"bnf_eps must be a number in [0, 1), not {self.bnf_eps!r}")
        if self.low_rank is not None:
            from nnr_core.encoder.lowrank import check_option as check_low_rank
            check_low_rank(self.low_rank)
            need(self.target_bpp is None, "target_bpp allocates one NDU per tensor; it cannot be combined with low_rank")
            need(not self.pre_signalling, "pre_signalling leaves all-zero units out; a decomposed pair needs both")
        need(isinstance(self.detect_grid, bool), f"detect_grid must be True or False, not {self.detect_grid!r}")
        need(not self.detect_grid or (not self.codebook and self.bitdepth is None and self.target_bpp is None),
             "detect_grid codes tensors on their own grid with the uniform quantizer: it needs codebook=False, "
             "no bitdepth and no target_bpp")
        need(isinstance(self.pre_signalling, bool), f"pre_signalling must be True or False, not {self.pre_signalling!r}")
        need(not self.pre_signalling or self.general_profile_idc == 1,
             "pre_signalling writes nnr_pre_flag, which only general_profile_idc 1 (edition 2) has")
        need(not self.bnf or self.block_id_and_param_type is not None,
             "bnf folds the batch norms of blocks: it needs block_id_and_param_type (nnr.bnf."
             "guess_block_id_and_param_type derives it from a PyTorch model)")
        if self.importance is not None:
            need(isinstance(self.importance, dict), "importance must be a dict {name: ndarray}")
            need(not self.codebook or not self.importance, "importance-weighted quantization needs codebook=False")
        check_mix(self.importance_mix)
        check_power(self.importance_power)
        if self.codebook and self.bitdepth is not None:
            pass  # the reference allows both: the codebook is built from the clipped levels
        if self.sparsity is not None:
            from nnr_core.encoder.sparsify import check_fraction
            check_fraction(self.sparsity)
            need(not self.codebook and self.bitdepth is None,
                 "sparsity pins zeros in the uniform / trellis quantizers: it needs codebook=False and no bitdepth")
        need(isinstance(self.sparsity_structured, bool), "sparsity_structured must be True or False")
        if self.hessians is not None:
            need(isinstance(self.hessians, dict), "hessians must be a dict {weight name: ndarray}")
            if self.hessians:
                need(not self.codebook and self.bitdepth is None and self.sparsity is None,
                     "hessians round levels on a QP's uniform step: they need codebook=False, no bitdepth and "
                     "no sparsity")
        if self.target_bpp is not None:
            from nnr_core.encoder.allocate import check_target_bpp
            check_target_bpp(self.target_bpp)
            need(self.bitdepth is None, "target_bpp chooses the QPs; bitdepth derives them: use one")
            need(not self.codebook, "target_bpp allocates uniform / trellis QPs; it needs codebook=False")
            need(self.block_id_and_param_type is None,
                 "target_bpp measures one NDU per tensor; it cannot be combined with block_id_and_param_type")


_MISFIT = object()         # a streamed tensor's QP does not fit the qp offset: code the planned way


def _raised(named_qp) -> bool:
    """Whether the overflow guard raised a tensor's QP: (name, QP, configured QP or None)."""
    return named_qp[2] is not None and named_qp[1] > named_qp[2]


def _qp_range(qp_density):
    half = 1 << (5 + qp_density)
    return -half, half - 1


@dataclass
class _Call:
    """What one Encoder.encode call codes with, besides the configuration."""

    parent: int                 # parent_node_id_present_flag: an incremental update
    tca: bool
    hdsp: bool
    tpl: dict                   # the NNR_TPL unit's fields
    progress: Optional[object]
    pool: Optional[object]      # ThreadPoolExecutor, or None
    trace: Optional[Trace]      # receives what is written; a fresh one for each way of coding
    cfg: Optional[EncoderConfig] = None     # the configuration of this call (QPs allocated for target_bpp)
    preplanned: Optional[dict] = None       # {name: Planned} the allocation quantized at the QP it chose
    factors: Optional[dict] = None          # {name: nnr_core.quant.gptq.Factor} of cfg.hessians
    dc: Optional[dict] = None               # {G or H name: (W shape, rank, is H)}: the low-rank members (lowrank.split)


def _check_option_names(options):
    unknown = set(options) - {f.name for f in dc_fields(EncoderConfig)}
    if unknown:
        raise EncoderConfigError(f"unknown encoder option(s): {', '.join(sorted(unknown))}")


class Encoder:
    """Encodes models and model updates; keeps the incremental-coding state between calls
    (parameter update tree depths, TCA references, HDSP history), as a decoder would.

    jobs: worker threads (None or 0: all cores); the bytes are those of jobs=1.
    stateful: keep that state (default). False: every call codes a model on its own and nothing is
    kept (what `nnr.encode` does).
    streaming: code tensor after tensor where the options allow (default: not with blocks, bit
    depths or codebooks, which need every tensor first), holding only the tensors in flight;
    False: quantize every tensor first. The bytes are the same (the tests compare the two ways).
    The other keywords are EncoderConfig's options.
    """

    def __init__(self, *, jobs=None, stateful=True, streaming=True, **options):
        self.jobs = resolve_jobs(jobs)
        _check_option_names(options)
        if options.get("target_bpp") is not None and "qp_density" not in options:
            # finer QP steps for the allocation (2^(1/16) instead of 2^(1/4)); nonweight_qp scaled
            # with it keeps the same step (qp << 2 at qp_density + 2 is the same Delta, CABAC §9.1)
            options["qp_density"] = ALLOCATION_QP_DENSITY
            shift = ALLOCATION_QP_DENSITY - EncoderConfig.qp_density
            options["qp"] = int(options.get("qp", EncoderConfig.qp)) << shift      # the tensors it does not allocate
            if options.get("nonweight_qp", EncoderConfig.nonweight_qp) is not None:
                options["nonweight_qp"] = options.get("nonweight_qp", EncoderConfig.nonweight_qp) << shift
            if options.get("qp_per_tensor"):
                options["qp_per_tensor"] = {k: int(v) << shift for k, v in options["qp_per_tensor"].items()}
        self.config = EncoderConfig(**options)
        self.config.validate()
        self.state = IncrementalState()
        self.stateful = bool(stateful)
        self.streaming = bool(streaming)

    def reconfigure(self, **options):
        """Change options (qp, qp_per_tensor, dq, ...) for the bitstreams that follow; the incremental
        state (parent signalling, TCA, HDSP) is kept. Values are taken as given (no qp_density scaling)."""
        from dataclasses import replace
        _check_option_names(options)
        config = replace(self.config, **options)
        config.validate()
        self.config = config

    def encode(self, tensors, *, incremental=True, tca=True, hdsp=False, progress=None,
               topology_data="", topology=None, trace=None) -> bytes:
        """Encode one bitstream. With incremental=True the tensors are an update (differences
        against the previous state): parent signalling, TCA (if `tca`) and HDSP (if `hdsp`).
        progress(done, total, name, bytes_so_far) is called after each tensor; topology_data is
        carried in the NNR_TPL unit (empty, as the reference writes it, by default); `topology`
        replaces that unit's fields (nnr.topology.carriage.tpl_fields: a graph or module skeleton
        as binary topology). `trace` (nnr_core.bitstream.trace.Trace) receives what is written:
        every unit's syntax elements and every NDU payload, in the decoder's trace format."""
        from nnr_core.encoder.blocks import resolve_blocks

        cfg = self.config
        gpi = cfg.general_profile_idc
        if incremental and gpi != 1:
            raise EncoderConfigError("incremental coding needs general_profile_idc 1")
        blocks_opt, indices = cfg.block_id_and_param_type, None
        if cfg.bnf:
            tensors, blocks_opt, indices, cfg = self._folded(tensors, incremental)
        inputs = prepare(tensors, cfg.framework, blocks_opt["parameter_type"] if blocks_opt else None, indices)
        if cfg.sparsity:
            inputs = self._sparsified(inputs)
        blocks = resolve_blocks(blocks_opt, inputs, cfg.raw_float)
        parent = 1 if (incremental and gpi == 1) else 0
        dc = {}
        if cfg.low_rank:
            from nnr_core.encoder.lowrank import split
            if parent:
                raise EncoderConfigError("low_rank decomposes a model's weights; it does not apply to an incremental "
                                         "update (encode with incremental=False)")
            in_block = {n for b in blocks.values() for n in b.members.values()}
            inputs, dc = split(inputs, cfg.low_rank, cfg.raw_float, in_block)
        tpl = topology if topology is not None else {
            "topology_storage_format": FRAMEWORKS[cfg.framework], "topology_compression_format": 0,
            "topology_data": topology_data}
        call = _Call(parent, tca and parent == 1, hdsp, tpl, progress, None, None, cfg, factors=self._factors(inputs),
                     dc=dc)
        if self.jobs > 1 and len(inputs) > 1:
            from concurrent.futures import ThreadPoolExecutor
            call.pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="nnr-encode")
        try:
            if cfg.target_bpp is not None:
                call.cfg = self._allocated(inputs, call)
            out = None
            if self.streaming and not blocks and not dc and cfg.bitdepth is None and not cfg.codebook:
                call.trace = Trace() if trace is not None else None
                out = self._encode_streaming(inputs, call)
            if out is None:
                call.trace = Trace() if trace is not None else None
                out = self._encode_planned(inputs, blocks, call)
        finally:
            if call.pool is not None:
                call.pool.shutdown(wait=True, cancel_futures=True)
        data, ndu, coded = out
        if cfg.target_bpp is not None:
            self._check_budget(len(data), inputs)
        if trace is not None:
            for record in call.trace:
                trace.emit(*record)
        if self.stateful:
            for name in coded:
                if name in ndu.coded_levels:
                    self.state.record(name, ndu.coded_levels[name], ndu.last_fields[name], parent == 1)
        return data

    def _folded(self, tensors, incremental):
        """(tensors, block option, parameter indices, configuration) after batch-norm folding. As in the
        reference, the tensors keep their indices in the unfolded model (parameter_id) and the vectors
        folding creates take their weight's index and the non-weight QP (qp_per_tensor may name them;
        the reference ignores it for them)."""
        from dataclasses import replace
        from nnr_core.encoder.bnf import fold_bn
        from nnr_core.encoder.prepare import as_tensor_dict
        if incremental:
            raise EncoderConfigError("bnf folds a model's batch norms; it does not apply to an incremental "
                                     "update (encode with incremental=False)")
        cfg = self.config
        tensors = as_tensor_dict(tensors)
        indices = {name: i for i, name in enumerate(tensors)}
        tensors, option, created = fold_bn(tensors, cfg.block_id_and_param_type, float(cfg.bnf_eps))
        for name, weight in created.items():
            indices[name] = indices[weight]
        return tensors, option, indices, replace(cfg, block_id_and_param_type=option)

    def _sparsified(self, inputs):
        """The inputs with cfg.sparsity of the weight tensors' parameters set to 0 (nnr.rd.sparsify's
        choice over the float tensors of two or more dimensions that are not carried raw)."""
        from dataclasses import replace
        from nnr.rd.sparsify import sparsify
        cfg = self.config
        chosen = {t.name for t in inputs if not t.is_int and t.data.ndim >= 2 and t.name not in cfg.raw_float}
        if not chosen:
            return inputs
        data = {t.name: t.data for t in inputs if t.name in chosen}
        imp = {n: v for n, v in (cfg.importance or {}).items() if n in data} or None
        if imp is not None and set(imp) != set(data):     # sparsify ranks by F·w² only with F for all
            imp = None
            log.warning("sparsity: importance is missing for some weight tensors; pruning by magnitude")
        sparse, _ = sparsify(data, cfg.sparsity, structured=cfg.sparsity_structured, importance=imp,
                             names=chosen, importance_mix=cfg.importance_mix)
        out = []
        for t in inputs:
            if t.name in sparse:
                d = np.ascontiguousarray(sparse[t.name], dtype=np.float32)
                t = replace(t, data=d, value_range=(float(d.min()), float(d.max())) if d.size else None)
            out.append(t)
        return out

    def _factors(self, inputs) -> dict:
        """What output-aware rounding needs for each tensor of cfg.hessians (names that are not among
        the tensors are ignored, as importance's are)."""
        from nnr_core.quant.gptq import Factor, check_hessian
        hessians = self.config.hessians or {}
        out = {}
        for t in inputs:
            if t.name not in hessians:
                continue
            if t.is_int or t.name in self.config.raw_float:
                raise EncoderConfigError(f"hessians[{t.name!r}]: tensor {t.name!r} is not quantized "
                                         "(an integer or raw_float tensor)")
            out[t.name] = Factor(t.name, check_hessian(t.name, t.data.shape, hessians[t.name]), t.data.shape[0])
        return out

    def _check_budget(self, size, inputs):
        from nnr_core.encoder.allocate import FILL, budget_bytes
        budget = budget_bytes(inputs, self.config.target_bpp)
        if size > budget:       # the allocation measures every unit exactly: this is a bug, not an input
            raise EncoderConfigError(f"target_bpp: the stream takes {size} bytes, over the {budget}-byte budget")
        if size < (1.0 - FILL) * budget:
            log.warning("target_bpp %s: the stream takes %d bytes, %.2f %% under the %d-byte budget (no single "
                        "QP step of a tensor fits the rest)", self.config.target_bpp, size,
                        100.0 * (budget - size) / budget, budget)

    def _allocated(self, inputs, call) -> EncoderConfig:
        """The call's configuration with the tensors' QPs chosen for cfg.target_bpp: the least
        (importance-weighted) distortion whose stream fits the budget. Allocated: the weight tensors
        (without importance) or the tensors with an importance entry (with it, non-weights too);
        the others and those with a qp_per_tensor entry keep their configured QP; their units count
        inside the budget."""
        from dataclasses import replace
        from nnr_core.encoder.allocate import Allocator, budget_bytes
        from nnr_core.quant.weighted import importance_array
        from nnr_core.encoder.ndu import NduEncoder
        cfg = self.config
        budget = budget_bytes(inputs, cfg.target_bpp)
        ndu, head = self._start(call, 0)
        user, imp = cfg.qp_per_tensor or {}, cfg.importance or {}
        # without importance only weights (plain squared error says nothing of a bias's or a batch-norm
        # statistic's effect); with importance every tensor that has an entry
        free = [t for t in inputs if not t.is_int and t.name not in cfg.raw_float and t.name not in user
                and (t.name in imp if imp else t.is_weight)]
        names = {t.name for t in free}
        unweighted = [t.name for t in inputs if t.is_weight and not t.is_int and imp and t.name not in imp]
        if unweighted:
            log.warning("target_bpp: %d weight tensor(s) without importance keep QP %d: %s", len(unweighted),
                        cfg.qp, ", ".join(unweighted[:5]) + (" ..." if len(unweighted) > 5 else ""))

        def unit_bits(t):
            parts = ndu.unit_parts(ndu.plan(t), 0)
            return 0 if parts is None else 8 * len(ndu.write(parts, 0))
        fixed = [t for t in inputs if t.name not in names]
        fixed_bits = 8 * len(head) + sum(call.pool.map(unit_bits, fixed) if call.pool else map(unit_bits, fixed))
        if fixed_bits > 8 * budget:
            raise EncoderConfigError(
                f"target_bpp {cfg.target_bpp}: the tensors whose QP is not allocated (headers, integer, "
                f"non-weight, raw tensors) already take {fixed_bits / 8:.0f} bytes of the {budget}-byte budget")
        sens = {t.name: importance_array(t.name, t.data, imp[t.name]) if imp else None for t in free}
        sample_ndu = NduEncoder(cfg, None, ndu.syntax, call.parent, False, False, factors=call.factors)
        alloc = Allocator(ndu, sample_ndu, cfg.qp_density, _qp_range(cfg.qp_density), pool=call.pool)
        qps = alloc.allocate(free, sens, fixed_bits, 8 * budget, float(cfg.target_bpp)) if free else {}
        call.preplanned = alloc.chosen
        return replace(cfg, qp_per_tensor={**user, **qps})

    def _start(self, call, base_qp, trace=None):
        """The NDU encoder and the NNR_STR, NNR_MPS and NNR_TPL units."""
        from nnr_core.encoder.ndu import NduEncoder
        cfg = self.config
        syntax = SyntaxState()
        ndu = NduEncoder(call.cfg, self.state if self.stateful else None, syntax, call.parent, call.tca,
                         call.hdsp, trace=trace is not None, factors=call.factors)
        if call.preplanned:
            ndu.preplanned = call.preplanned
        out = bytearray()
        for kind, fields in ((NNR_STR, {"general_profile_idc": cfg.general_profile_idc}),
                             (NNR_MPS, self._mps_fields(call.parent, base_qp)), (NNR_TPL, call.tpl)):
            out += write_unit(kind, fields, syntax, trace=trace, stream_offset=len(out))
        return ndu, out

    def _encode_streaming(self, inputs, call):
        """Quantize, code and write one tensor after another (workers code up to `jobs` tensors
        ahead; units are written in order), so only the tensors in flight are held. The MPS's
        base QP is taken from the QPs the tensors will get (the configured ones, raised by the
        overflow guard where a tensor's value range needs it), as the planned way takes it from
        the quantized tensors. Returns None if a quantized tensor's QP does not fit the qp offset
        after all (then the caller codes the model the planned way, which rebases the QPs), else
        (bytes, NduEncoder, coded names)."""
        from nnr_core.encoder.ndu import NduEncoder
        probe = NduEncoder(call.cfg, None, SyntaxState(), call.parent, False, False, factors=call.factors)
        try:
            base_qp = self._base_qp_of([(t.name, probe.expected_qp(t), probe.tensor_qp(t)) for t in inputs])
        except EncoderConfigError:
            return None         # the planned way raises it, after any error of an earlier tensor
        lo, hi = _qp_range(self.config.qp_density)
        ndu, out = self._start(call, base_qp, call.trace)
        qps, coded = [], []

        def work(t):
            p = ndu.plan(t)
            if p.qp is not None and not lo <= p.qp - base_qp <= hi:
                return p, _MISFIT
            return p, ndu.unit_parts(p, base_qp)

        def write(p, parts):
            if parts is _MISFIT:
                return False
            name = p.tensor.name
            qps.append((name, p.qp, None))
            if parts is not None:
                out.extend(ndu.write(parts, len(out), call.trace))
                coded.append(name)
            if call.progress is not None:
                call.progress(len(qps), len(inputs), name, len(out))
            return True

        if call.pool is None:
            for t in inputs:
                if not write(*work(t)):
                    return None
        else:
            from collections import deque
            window = deque()
            for t in inputs:
                window.append(call.pool.submit(work, t))
                if len(window) > self.jobs and not write(*window.popleft().result()):
                    return None
            while window:
                if not write(*window.popleft().result()):
                    return None
        if self._base_qp_of(qps) != base_qp:
            return None
        return bytes(out), ndu, coded

    def _encode_planned(self, inputs, blocks, call):
        """Quantize every tensor first (blocks, bit depths and codebooks need all of them, and
        the MPS's base QP all QPs), then code and write the units in order."""
        from nnr_core.encoder.blocks import block_units
        from nnr_core.encoder.lowrank import dc_fields
        in_block = {n for b in blocks.values() for n in b.members.values()}
        probe_ndu, _ = self._start(call, 0)
        pool = call.pool
        planned = list(pool.map(probe_ndu.plan, inputs)) if pool is not None else [probe_ndu.plan(t) for t in inputs]
        by_name = {p.tensor.name: p for p in planned}
        base_qp = self._base_qp(planned, probe_ndu)
        ndu, out = self._start(call, base_qp, call.trace)
        coded = []
        done = 0
        for p in planned:
            name = p.tensor.name
            if name in blocks:          # a block is written at the position of its weight (HLS §14 item 6)
                units = block_units(ndu, blocks[name], by_name, base_qp, oob_dims=call.parent == 1)
            elif name in in_block:
                continue
            else:
                units = [(ndu.unit_parts(p, base_qp), [p])]
                if name in call.dc:
                    w_shape, rank, is_h = call.dc[name]
                    dc_fields(units[0][0].fields, w_shape, rank)
                    # the H unit's entry points count decomposition_rank rows (HLS §8.5), as a decoder reads it
                    ndu.syntax.dc_pending_h = is_h
            for parts, members in units:
                if parts is not None:
                    out += ndu.write(parts, len(out), call.trace)
                    ndu.syntax.dc_pending_h = False
                    coded.extend(m.tensor.name for m in members)
                for m in members:
                    done += 1
                    if call.progress is not None:
                        call.progress(done, len(planned), m.tensor.name, len(out))
        return bytes(out), ndu, coded

    def _base_qp(self, planned, probe) -> int:
        bitdepth = self.config.bitdepth is not None        # its QPs follow the values, none is configured
        return self._base_qp_of([(p.tensor.name, p.qp, None if bitdepth else probe.tensor_qp(p.tensor))
                                 for p in planned])

    def _base_qp_of(self, named_qps) -> int:
        """mps_quantization_parameter: 0 as the reference writes it, unless a tensor's QP does not fit
        the (6 + qp_density)-bit qp offset; then rebased so that all fit (never wrapped, HLS §17 item 4).
        named_qps: [(tensor name, QP or None, configured QP or None)]."""
        named = [(n, qp, c) for n, qp, c in named_qps if qp is not None]
        lo, hi = _qp_range(self.config.qp_density)
        if not named or (min(qp for _, qp, _ in named) >= lo and max(qp for _, qp, _ in named) <= hi):
            return 0
        low = min(named, key=lambda e: e[1])
        high = max(named, key=lambda e: e[1])
        if high[1] - low[1] > hi - lo:
            raise EncoderConfigError(self._span_message(low, high, hi - lo))
        base = min(low[1] - lo, 4095)           # the lowest QP at the bottom of the offset's range
        if base < -4096 or high[1] - base > hi:
            worst = low if base < -4096 else high
            raised = f" (the overflow guard raised it from the configured {worst[2]})" if _raised(worst) else ""
            raise EncoderConfigError(
                f"tensor {worst[0]!r} has QP {worst[1]}{raised}; with qp_density {self.config.qp_density} NNC "
                f"signals QPs {-4096 + lo}..{4095 + hi} (mps_quantization_parameter -4096..4095 plus a "
                f"{6 + self.config.qp_density}-bit qp offset): lower qp_density or carry {worst[0]!r} uncoded "
                "(raw_float)")
        return base

    def _span_message(self, low, high, span):
        """Why one qp offset cannot carry the QPs of tensors `low` and `high` (name, QP, configured QP)."""
        density = self.config.qp_density
        head = (f"the QPs of this model span {low[1]} (tensor {low[0]!r}) .. {high[1]} (tensor {high[0]!r}), "
                f"more than one {6 + density}-bit qp offset (qp_density {density}) carries ({span} apart)")
        if _raised(high):
            # the overflow guard raised it: a finer qp_density scales the QPs with the offset's range
            return (f"{head}; {high[0]!r} needs QP {high[1]} for its levels to fit int32 (the overflow guard "
                    f"raised it from the configured {high[2]}): give the other tensors QPs >= {high[1] - span} "
                    f"(qp, nonweight_qp, qp_per_tensor) or carry {high[0]!r} uncoded (raw_float)")
        return f"{head}; raise qp_density or narrow the QPs"

    def _mps_fields(self, parent, base_qp):
        cfg = self.config
        f = {"topology_carriage_flag": 1, "mps_sparsification_flag": 0, "mps_pruning_flag": 0,
             "mps_unification_flag": 0, "mps_decomposition_performance_map_flag": 0,
             "mps_quantization_method_flags": 1, "mps_topology_indexed_reference_flag": 0,
             "mps_qp_density": cfg.qp_density, "mps_quantization_parameter": base_qp}
        if cfg.general_profile_idc == 1:
            f.update(base_model_id_present_flag=0, validation_set_performance_present_flag=0,
                     metric_type_performance_map_valid_flag=0,
                     mps_parent_signalling_enabled_flag=1 if parent or cfg.pre_signalling else 0)
            if parent or cfg.pre_signalling:
                f["nnr_pre_flag"] = 1 if cfg.pre_signalling else 0
        return f


def encode(tensors, **options) -> bytes:
    """Encode a dict of tensors (or one array, named "0") into one self-contained NNC bitstream.

    Options (defaults are the reference's): qp=-32, qp_density=2, nonweight_qp=-75, dq=True,
    codebook=False, bitdepth=None, scan_order=0, row_skipping=True, param_opt=True,
    cabac_unary_length_minus1=10, qp_per_tensor=None, lambda_scale=0.0, general_profile_idc=1,
    framework="generic" ("pytorch": the reference's PyTorch rules), raw_float=(),
    block_id_and_param_type=None (the reference's {"block_identifier": {name: id or None},
    "parameter_type": {name: "weight" | "weight.ls" | "bias" | "bn.beta" | "bn.gamma" | "bn.mean" |
    "bn.var" | "unspecified"}}: blocks coded as NNR_PT_BLOCK; see nnr_core/encoder/blocks.py),
    importance=None ({name: per-parameter importance}: importance-weighted RD quantization beyond the
    reference, uniform or trellis (dq); importance_mix=0.9 and importance_power=1.0 shape the
    distortion weights; see nnr_core/quant/weighted.py), target_bpp=None (a budget in bits per
    floating-point parameter: the weight tensors' QPs chosen for the least distortion, weighted by
    `importance` when given, that fits it; qp_density 4 unless given; see
    nnr_core/encoder/allocate.py), sparsity=None (a fraction of the weight tensors' parameters
    zeroed first, as nnr.rd.sparsify chooses them; sparsity_structured=True: whole rows; every zero
    then decodes as exactly 0), hessians=None ({weight name: the layer's input second moments sum
    x x^T, (d, d) or (groups, d, d)}: those tensors' levels rounded to keep the layer's output error
    small, GPTQ, without dependent quantization; nnr.rd.layer_hessians computes them; see
    nnr_core/quant/gptq.py); jobs and streaming as nnr.Encoder's.
    """
    if "stateful" in options:
        raise EncoderConfigError("nnr.encode writes one self-contained bitstream and keeps nothing; "
                                 "stateful is an option of nnr.Encoder")
    return Encoder(stateful=False, **options).encode(tensors, incremental=False)
