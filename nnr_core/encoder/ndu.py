"""One NDU per tensor: quantize, entropy-code, write the unit (HLS §8, HLS §14; the reference's
choices of CABAC §13)."""
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np

from nnr_core.errors import EncoderConfigError
from nnr_core import cabac
from nnr_core.cabac.params import VARIANT_NNCODEC1, VARIANT_NNCODEC2, TensorCoding, TensorEncoding
from nnr_core.bitstream.trace import trace_payload
from nnr_core.encoder.prepare import InputTensor
from nnr_core.encoder.trace import payload_tensors
from nnr_core.syntax.constants import NNR_NDU, NNR_PT_FLOAT, NNR_PT_INT, NNR_PT_RAW_FLOAT
from nnr_core.syntax.units import write_unit
from nnr_core.syntax.walker import block_rows_minus1


@dataclass
class Planned:
    """A quantized tensor waiting for its unit."""

    tensor: InputTensor
    payload_type: int
    levels: Optional[np.ndarray]        # int32, row-major (None for RAW_FLOAT)
    qp: Optional[int] = None
    dq_flag: int = 0
    codebook: Optional[list] = None     # integer codebook entries
    cb_zero_offset: int = 0
    codebook_egk: int = 0


class UnitParts(NamedTuple):
    """An NDU before it is written: header fields, payload, and the payload's trace records (None
    when not tracing; [] for NNR_PT_RAW_FLOAT)."""

    fields: dict
    payload: bytes
    tensors: Optional[list]


def rows_and_width(shape):
    width = 1
    for d in shape[1:]:
        width *= int(d)
    return int(shape[0]), width


class NduEncoder:
    """Encodes the NDUs of one bitstream with one configuration and (optionally) incremental state."""

    def __init__(self, cfg, state, syntax, parent, tca, hdsp, trace=False, factors=None):
        self.cfg = cfg
        self.state = state                  # IncrementalState, or None for a stateless encode
        self.syntax = syntax
        self.parent = parent
        # all-zero tensors are left out wherever the MPS enables parent signalling (HLS §13.5): in an
        # update, and with pre_signalling (REF-QUIRK: the reference omits them there too)
        self.omit_zeros = bool(parent or cfg.pre_signalling)
        self.tca = tca
        self.hdsp = hdsp
        self.trace = trace                  # keep each payload's trace records (UnitParts.tensors)
        self.gpi = cfg.general_profile_idc
        self.variant = VARIANT_NNCODEC2 if self.gpi == 1 else (
            VARIANT_NNCODEC1 if cfg.profile0_variant == "nncodec1" else VARIANT_NNCODEC2)
        self.last_fields = {}
        self.coded_levels = {}              # what a decoder will hold for each coded tensor
        self.preplanned = {}                # name -> Planned at the configured QP, quantized already (allocation)
        self.factors = factors or {}        # name -> nnr_core.quant.gptq.Factor: output-aware rounding
        self._grids = {}                    # detect_grid: name -> the QP of its exact grid, or None

    # -- quantization ---------------------------------------------------------------------------
    def tensor_qp(self, t: InputTensor) -> int:
        """The reference's QP rule: qp for weights, nonweight_qp for the rest, qp_per_tensor wins."""
        cfg = self.cfg
        other = cfg.nonweight_qp if cfg.nonweight_qp else cfg.qp - (2 << cfg.qp_density)
        qp = cfg.qp if t.is_weight else other
        if cfg.qp_per_tensor and t.name in cfg.qp_per_tensor:
            return int(cfg.qp_per_tensor[t.name])
        grid = self.grid(t)
        return int(qp if grid is None else grid)

    def grid(self, t: InputTensor) -> Optional[int]:
        """detect_grid: the QP on whose grid the tensor's values lie exactly (nnr_core/quant/grid.py),
        or None (not asked for, no grid, or a QP the user chose)."""
        cfg = self.cfg
        if not cfg.detect_grid or t.is_int or t.name in cfg.raw_float \
                or (cfg.qp_per_tensor and t.name in cfg.qp_per_tensor):
            return None
        if t.name not in self._grids:
            from nnr_core.quant.grid import grid_qp
            self._grids[t.name] = grid_qp(t.data, cfg.qp_density)
        return self._grids[t.name]

    def expected_qp(self, t: InputTensor) -> Optional[int]:
        """The QP plan(t) will give t (None for integer and raw tensors), from its value range alone:
        the configured QP, raised by the overflow guard where the values need it (CABAC §9.3). Errors are
        left to plan(), so they are raised in tensor order."""
        if t.is_int or t.name in self.cfg.raw_float:
            return None
        qp = self.tensor_qp(t)
        if t.value_range is None or self.cfg.bitdepth is not None or self.cfg.codebook \
                or self.grid(t) is not None:
            return qp
        from nnr_core.quant.quantize import guarded_qp
        try:
            return guarded_qp(t.value_range, qp, self.cfg.qp_density, self._dq(t), self.cfg.lambda_scale)
        except EncoderConfigError:
            return qp

    def plan(self, t: InputTensor, qp: Optional[int] = None, importance=None) -> Planned:
        """Quantize one tensor as the reference would (the rate allocation's trials: at QP `qp`
        instead of the configured one, and with `importance` instead of the configured one when
        given: a sample of the tensor's rows)."""
        cfg = self.cfg
        if qp is None and importance is None and t.name in self.preplanned:
            return self.preplanned.pop(t.name)
        if t.name in cfg.raw_float:
            if t.is_int:
                raise EncoderConfigError(f"tensor {t.name!r} is an integer tensor; NNR_PT_RAW_FLOAT carries floats")
            return Planned(t, NNR_PT_RAW_FLOAT, None)
        if t.is_int:
            return Planned(t, NNR_PT_INT, t.data.reshape(-1))
        try:
            return self._quantized(t, qp, importance)
        except EncoderConfigError as err:
            if repr(t.name) in str(err):
                raise
            raise EncoderConfigError(f"tensor {t.name!r}: {err}") from None

    def _quantized(self, t: InputTensor, qp_trial: Optional[int] = None, imp_trial=None) -> Planned:
        from nnr_core.quant import quantize as q
        cfg = self.cfg
        w = t.data.reshape(-1)
        rows, width = rows_and_width(t.data.shape)
        scan = cfg.scan_order if t.data.ndim > 1 else 0
        if qp_trial is None and imp_trial is None and self.grid(t) is not None:
            from nnr_core.quant.grid import grid_levels
            qp = self.grid(t)                # exact: the values' own grid, without dependent quantization
            return Planned(t, NNR_PT_FLOAT, grid_levels(w, qp, cfg.qp_density), qp, 0)
        if cfg.bitdepth is not None:
            qp, clip = q.bitdepth_qp(w, cfg.bitdepth, cfg.qp_density, t.is_weight)
        else:
            qp, clip = (self.tensor_qp(t) if qp_trial is None else qp_trial), None
        if cfg.codebook:
            cb = q.codebook_quantize(w, qp, cfg.qp_density, cfg.dq, self._trial_encoder(t),
                                     mode2_encode=None if cfg.codebook == "always" else self._mode2_encoder(t, scan),
                                     clip=clip,
                                     rows=rows, row_width=width, scan_order=scan,
                                     lambda_scale=cfg.lambda_scale,
                                     cabac_unary_length_minus1=cfg.cabac_unary_length_minus1)
            if cb["approx_method"] == "codebook":
                return Planned(t, NNR_PT_FLOAT, cb["symbols"], cb["qp"], 0, cb["codebook"],
                               cb["cb_zero_offset"], cb["codebook_egk"])
            return Planned(t, NNR_PT_FLOAT, cb["levels"], int(cb["qp"]), cb["dq_flag"])
        if t.name in self.factors:
            return self._rounded(t, qp)
        imp = imp_trial if imp_trial is not None else (cfg.importance or {}).get(t.name)
        if imp is not None or cfg.sparsity is not None:      # off by default: nnr_core/quant/weighted.py
            from nnr_core.quant.weighted import quantize_weighted
            levels, qp = quantize_weighted(w, imp, qp, cfg.qp_density, dq=cfg.dq,
                                           lambda_scale=cfg.lambda_scale, name=t.name, rows=rows, row_width=width,
                                           scan_order=scan, cabac_unary_length_minus1=cfg.cabac_unary_length_minus1,
                                           mix=cfg.importance_mix, power=cfg.importance_power,
                                           pin_zeros=cfg.sparsity is not None)
        elif cfg.dq:
            levels, qp = q.quantize_tcq(w, qp, cfg.qp_density, rows, width, scan, lambda_scale=cfg.lambda_scale,
                                        cabac_unary_length_minus1=cfg.cabac_unary_length_minus1)
        else:
            levels, qp = q.quantize_uniform(w, qp, cfg.qp_density, lambda_scale=cfg.lambda_scale,
                                            rows=rows, row_width=width, scan_order=scan,
                                            cabac_unary_length_minus1=cfg.cabac_unary_length_minus1)
        if clip is not None:
            levels = np.clip(levels, clip[0], clip[1]).astype(np.int32)
        return Planned(t, NNR_PT_FLOAT, levels, int(qp), 1 if cfg.dq else 0)

    def _dq(self, t) -> bool:
        return bool(self.cfg.dq) and t.name not in self.factors

    def _rounded(self, t: InputTensor, qp) -> Planned:
        """Output-aware rounding (nnr_core/quant/gptq.py), without dependent quantization; plain rounding
        for a sample of the rows the tensor's H cannot take (a cut row; some rows of a grouped layer)."""
        from nnr_core.quant import quantize as q
        from nnr_core.quant.gptq import gptq_levels
        cfg = self.cfg
        f = self.factors[t.name]
        qp = q.guarded_qp(t.value_range, qp, cfg.qp_density, False) if t.value_range is not None else qp
        if f.fits(t.data.shape):
            return Planned(t, NNR_PT_FLOAT, gptq_levels(t.data, qp, cfg.qp_density, f), int(qp), 0)
        rows, width = rows_and_width(t.data.shape)
        levels, qp = q.quantize_uniform(t.data.reshape(-1), qp, cfg.qp_density, rows=rows, row_width=width,
                                        scan_order=cfg.scan_order if t.data.ndim > 1 else 0,
                                        cabac_unary_length_minus1=cfg.cabac_unary_length_minus1)
        return Planned(t, NNR_PT_FLOAT, levels, int(qp), 0)

    def _trial_coding(self, t, scan, dq_flag, gpi, parent):
        # REF-QUIRK: NNCodec 2.x's trial encoders get cabac_unary_length_minus1 where its coder gets
        # minus1 + 1, so they count one greater-than flag less (CABAC §15 item 4); NNCodec 1.x's
        # binding adds the 1 itself, so its trials count as its coder does
        rows, width = rows_and_width(t.data.shape)
        minus1 = self.cfg.cabac_unary_length_minus1
        if self.variant != VARIANT_NNCODEC1:
            minus1 = max(minus1 - 1, 0)
        return TensorCoding(rows=rows, row_width=width, ndim=t.data.ndim, has_qp_offset=False, qp_density=0,
                            dq_flag=dq_flag, cabac_unary_length_minus1=minus1,
                            scan_order=scan, general_profile_idc=gpi, parent_node_id_present_flag=parent)

    def _trial_encoder(self, t):
        """Payload size of a codebook zero-offset candidate, as the reference's trial measures it
        (gpi-0 rules, matrix scan, no DQ, param-opt on; CABAC §9.5)."""
        coding = self._trial_coding(t, 0, 0, 0, 0)

        def trial(symbols, codebook_size, cb_zero_offset):
            enc = TensorEncoding(coding, np.asarray(symbols, dtype=np.int32), None, param_opt=True)
            return len(cabac.encode_payload([enc], self.variant)[0])   # the engine of the profile's generation
        return trial

    def _mode2_encoder(self, t, scan):
        """Payload size with the real settings (no row skipping), for the codebook-or-uniform choice."""
        def size(values, dq_flag):
            coding = self._trial_coding(t, scan, dq_flag, self.gpi, self.parent)
            enc = TensorEncoding(coding, np.asarray(values, dtype=np.int32).reshape(-1), None, 0, 0,
                                 self.cfg.param_opt)
            return len(cabac.encode_payload([enc], self.variant)[0])
        return size

    # -- units ----------------------------------------------------------------------------------
    def unit_parts(self, p: Planned, base_qp: int, cpt: int = 0, oob_dims: bool = False) -> Optional[UnitParts]:
        """The NDU of a planned tensor, or None when an update of all zeros is omitted (HLS §13.5);
        reads but never changes the shared state, so tensors can be coded by worker threads (the
        units are then written in order by `write`). cpt: compressed_parameter_types (a block's,
        for a block member coded on its own); oob_dims: leave tensor_dimensions out
        (tensor_dimensions_flag 0, HLS §11)."""
        t = p.tensor
        if self.omit_zeros and p.levels is not None and not np.any(p.levels):
            return None
        if self.omit_zeros and p.payload_type == NNR_PT_RAW_FLOAT and not np.any(t.data):
            return None
        fields = self.header_fields(p, cpt, oob_dims)
        if p.payload_type == NNR_PT_RAW_FLOAT:
            self.last_fields[t.name] = fields
            return UnitParts(fields, np.ascontiguousarray(t.data, dtype="<f4").tobytes(), [] if self.trace else None)
        return self.coded_unit([p], fields, base_qp)

    def coded_unit(self, members, fields, base_qp) -> UnitParts:
        """Entropy-code the members (in payload order) into one payload and put the entry points
        into the header fields."""
        payload, eps, traced = self._payload(members, base_qp, fields)
        if eps:
            fields["BitOffsetDelta"] = [e[0] for e in eps]
            fields["ep_arith_value"] = [e[1] for e in eps]
            if fields.get("dq_flag"):
                fields["ep_dq_state"] = [e[2] for e in eps]
        for p in members:
            self.last_fields[p.tensor.name] = fields
        return UnitParts(fields, payload, traced)

    def write(self, parts: UnitParts, offset: int, trace=None) -> bytes:
        """The unit's bytes, written at byte `offset` of the bitstream (in unit order: the syntax
        state advances); `trace` receives its header elements and its payload."""
        unit = write_unit(NNR_NDU, parts.fields, self.syntax, parts.payload, trace, stream_offset=offset)
        if trace is not None and parts.tensors is not None:
            raw = parts.fields["nnr_compressed_data_unit_payload_type"] == NNR_PT_RAW_FLOAT
            trace_payload(trace, 8 * (offset + len(unit) - len(parts.payload)), len(parts.payload), parts.tensors,
                          "flt(32)" if raw else "ae(v)")
        return unit

    def _coding(self, p: Planned, fields) -> TensorCoding:
        t = p.tensor
        rows, width = rows_and_width(t.data.shape)
        cb = p.codebook if self.gpi == 1 else None
        tca_ref = None
        if fields.get("temporal_context_modeling_flag"):
            tca_ref = self.state.tca_reference(t.name, t.data.shape, fields, None)
        hdsp = None
        if self.parent and self.hdsp and self.state is not None:
            hdsp = self.state.hdsp_history(t.name, t.data.size)
        return TensorCoding(rows=rows, row_width=width, ndim=t.data.ndim,
                            has_qp_offset=p.payload_type != NNR_PT_INT, qp_density=self.cfg.qp_density,
                            dq_flag=p.dq_flag, cabac_unary_length_minus1=self.cfg.cabac_unary_length_minus1,
                            scan_order=fields.get("scan_order", 0), general_profile_idc=self.gpi,
                            parent_node_id_present_flag=self.parent, tca_reference=tca_ref, hdsp_history=hdsp,
                            codebook_size=len(cb) if cb else 0, cb_zero_offset=p.cb_zero_offset if cb else 0)

    def _payload(self, members, base_qp, fields):
        """One arithmetic codeword for the members (payload order); the entry points of all of
        them; the payload's trace records when tracing (else None)."""
        codings = [self._coding(p, fields) for p in members]
        row_skip = 1 if (self.cfg.row_skipping and self.gpi == 1) else 0

        def run(hist_flag):
            encs = [TensorEncoding(c, p.levels, None if p.payload_type == NNR_PT_INT else p.qp - base_qp,
                                   row_skip, hist_flag, self.cfg.param_opt) for c, p in zip(codings, members)]
            stats = {}
            return cabac.encode_payload(encs, self.variant, stats=stats) + (stats, encs)

        best = run(0)
        # the reference tries both HDSP modes only when every tensor of the unit has a history
        if all(c.hdsp_history is not None for c in codings):
            with_hist = run(1)
            if len(with_hist[0]) < len(best[0]):      # the reference keeps flag 0 on ties
                best = with_hist
        payload, eps, stats, encs = best
        traced = None
        if self.state is not None or self.trace:
            held = self._held_levels(members, codings, payload, stats)
            if self.state is not None:
                self.coded_levels.update((p.tensor.name, levels) for p, levels in zip(members, held))
            if self.trace:
                traced = payload_tensors([p.tensor.name for p in members], encs, eps, held, self.variant)
        return payload, [e for per_tensor in eps for e in per_tensor], traced

    def _held_levels(self, members, codings, payload, stats) -> list:
        """The levels a decoder returns for each member: the coded ones, unless DQ indices of the
        wrong parity were rounded (REF-QUIRK, CABAC §8.2; the engines count them: without any, the
        decoder returns the levels as given), then those the payload decodes to."""
        decoded = None
        held = []
        for i, p in enumerate(members):
            levels = p.levels
            if p.dq_flag and stats.get("rounded", 1):
                if decoded is None:
                    decoded = cabac.decode_payload(payload, codings, self.variant)
                levels = decoded[i].levels
            held.append(levels)
        return held

    def header_fields(self, p: Planned, cpt: int = 0, oob_dims: bool = False) -> dict:
        """The NDU header fields of a planned tensor (a block's start from its weight's)."""
        cfg, t = self.cfg, p.tensor
        shape = [int(d) for d in t.data.shape]
        f = {"nnr_compressed_data_unit_payload_type": p.payload_type,
             "nnr_multiple_topology_elements_present_flag": 0,
             "nnr_decompressed_data_format_present_flag": 0,
             "input_parameters_present_flag": 1,
             "topology_elem_id": t.name}
        if self.gpi == 1:
            f["node_id_present_flag"] = 1
            f["device_id"] = cfg.device_id
            f["parameter_id"] = t.parameter_id
            f["put_node_depth"] = self._put_node_depth(t.name)
            if self.syntax.mps.get("mps_parent_signalling_enabled_flag"):
                f["parent_node_id_present_flag"] = self.parent
                if self.parent:
                    has_ref = self.has_reference(t.name, t.parameter_id)
                    f.update(parent_node_id_type=0, parent_device_id=0,
                             temporal_context_modeling_flag=1 if (self.tca and has_ref) else 0)
        if p.payload_type in (NNR_PT_FLOAT,):
            f["codebook_present_flag"] = 1 if p.codebook is not None else 0
            if p.codebook is not None:
                f["codebook"] = {"Codebook": list(map(int, p.codebook)), "CbZeroOffset": int(p.cb_zero_offset),
                                 "codebook_egk": int(p.codebook_egk)}
        if p.payload_type != NNR_PT_RAW_FLOAT:
            f["dq_flag"] = p.dq_flag
        f.update(tensor_dimensions_flag=0 if oob_dims else 1,
                 cabac_unary_length_flag=1 if p.payload_type != NNR_PT_RAW_FLOAT else 0,
                 compressed_parameter_types=cpt, count_tensor_dimensions=len(shape), tensor_dimensions=shape)
        if p.payload_type != NNR_PT_RAW_FLOAT:
            f["cabac_unary_length_minus1"] = cfg.cabac_unary_length_minus1
        if len(shape) > 1:
            if self.gpi == 1:
                f["first_tensor_dimension_shift"] = 0
            rows, width = rows_and_width(shape)
            scan = cfg.scan_order
            # REF-QUIRK avoided: the reference crashes on RowWidth 1 with more rows than one block
            # row (HLS §17 item 21); such a tensor is coded row-major and says so.
            if scan and width == 1 and block_rows_minus1(rows, scan) > 0:
                scan = 0
            f["scan_order"] = scan
        return f

    def has_reference(self, name, parameter_id) -> bool:
        """A TCA reference for the tensor that a decoder accepts: the parent's parameter_id must be this
        unit's (HLS §13.3). REF-QUIRK avoided: NNCodec asserts (crashes) when a block member
        is coded in its own unit after having been coded in its block (or the other way round) --
        the unit's parameter_id changes; nnr codes such a unit without TCA."""
        if self.state is None or name not in self.state.tensors:
            return False
        stored = self.state.tensors[name].parameter_id
        return stored is None or stored == parameter_id

    def _put_node_depth(self, name):
        if self.state is None:
            return 0
        hist = self.state.tensors.get(name)
        return 1 if hist is None else hist.depth + 1
