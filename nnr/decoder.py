"""The NNC decoder: walks NNR units, decodes NDUs, keeps cross-bitstream state (HLS §12, HLS §13)."""
import logging
from collections import deque
from dataclasses import dataclass
from typing import Optional

import numpy as np

from nnr.errors import (ConstraintViolationError, EntropyDecodingError, NNRError, ResourceLimitError,
                        UnitSizeMismatchError, UnsupportedFeatureError)
from nnr.jobs import resolve_jobs
from nnr.topology.carriage import MAX_TOPOLOGY_BYTES
from nnr_core import cabac
from nnr_core.bitstream.trace import PayloadTensor, trace_payload
from nnr_core.cabac.params import VARIANT_NNCODEC1, VARIANT_NNCODEC2, TensorCoding
from nnr_core.model.incremental import IncrementalState
from nnr_core.model.layout import Component, ndu_components
from nnr_core.quant.reconstruct import reconstruct_codebook, reconstruct_uniform
from nnr_core.syntax.constants import (NNR_AGG, NNR_LPS, NNR_MPS, NNR_NDU, NNR_PT_BLOCK, NNR_PT_FLOAT,
                                       NNR_PT_INT, NNR_PT_RAW_FLOAT, NNR_QNT, NNR_STR, NNR_TPL, NNR_TPL_PRUN,
                                       NNR_TPL_REFLIST)
from nnr_core.syntax.units import SyntaxState, parse_unit, split_units, unit_type_of

log = logging.getLogger("nnr")

VARIANTS = {"nncodec1": VARIANT_NNCODEC1, "nncodec2": VARIANT_NNCODEC2}

# A regular bin costs at least log2(351/349) > 1/128 bit (rLPS 2 at R = 351), so one payload bit
# carries at most 128 bins: this bounds how many elements a payload can describe.
_BINS_PER_BIT = 128
# NDUs of fewer elements are decoded by the parsing thread (in unit order) even with jobs > 1:
# handing a tiny tensor to a worker costs more than decoding it (100,000 one-element tensors took
# twice as long with two jobs as with one).
THREAD_MIN_ELEMENTS = 1 << 12
# Default limit (Decoder docstring): 2^30 elements are 4 GiB of float32 output (up to 13 GiB while
# a stateful Decoder holds levels, values and the incremental state), far above the models NNC is
# used for and well below a workstation's memory. MAX_TOPOLOGY_BYTES (256 MiB) is 100x a large
# ONNX graph without its weights.
MAX_TOTAL_ELEMENTS = 1 << 30


@dataclass
class DecodedTensor:
    """One decoded tensor with the side information nnr_info and tests look at."""

    name: str
    values: np.ndarray
    levels: Optional[np.ndarray]      # entropy-decoder output (None for NNR_PT_RAW_FLOAT)
    unit_index: int
    payload_type: int
    role: str
    qp: Optional[int] = None
    omitted: bool = False             # an all-zero update the bitstream left out (HLS §13.5)
    full_shape: Optional[tuple] = None  # a decomposed member (role G or H): W's tensor_dimensions
    dq_flag: int = 0
    qp_density: Optional[int] = None
    codebook: bool = False

    def integer(self):
        """(levels, step) with values == levels * step exactly, the levels as the narrowest of int8,
        int16 and int32 that holds them: for integer tensors (step 1) and uniform ones without DQ or
        codebook (step = fl32(Δ), CABAC §9.2), e.g. for integer accelerators."""
        from nnr.errors import UnsupportedFeatureError
        if self.payload_type == NNR_PT_RAW_FLOAT or self.codebook or self.dq_flag:
            kind = "uncoded (raw float)" if self.payload_type == NNR_PT_RAW_FLOAT else \
                "codebook-quantized" if self.codebook else "coded with dependent quantization"
            raise UnsupportedFeatureError(f"tensor {self.name!r} is {kind}: its values are not levels x one step")
        if self.levels is None:
            raise UnsupportedFeatureError(f"tensor {self.name!r}: the levels were not kept; decode with "
                                          "nnr.Decoder() (keep_state=True)")
        levels = np.asarray(self.levels)
        lo, hi = (int(levels.min()), int(levels.max())) if levels.size else (0, 0)
        dtype = next(d for d in (np.int8, np.int16, np.int32) if np.iinfo(d).min <= lo and hi <= np.iinfo(d).max)
        if self.payload_type == NNR_PT_INT:
            return levels.astype(dtype), 1.0
        from nnr_core.quant.reconstruct import step_size_f32
        return levels.astype(dtype), float(step_size_f32(self.qp, self.qp_density))


class Decoder:
    """Decodes NNC bitstreams one after another, keeping the incremental-coding state between them.

    profile0_variant: how to read edition-1 (general_profile_idc 0) payloads: "nncodec1" (default;
    what NNCodec 1.x writes) or "nncodec2" (NNCodec 2.x with the profile forced to 0).
    codebook_dtype: dtype of codebook-quantized tensors; float64 (default, exact, as the reference)
    or float32 (the exact product rounded once).
    jobs: worker threads (None or 0: all cores): NDUs are decoded concurrently, and one tensor
    with block-row entry points (scan_order > 0) is split between threads; the output and the
    errors are those of jobs=1.
    out_of_band: tensor name -> dimensions, for units that leave tensor_dimensions out (HLS §11).
    max_total_elements: most elements one bitstream may decode to, summed over its tensors (the
    zero tensors of omitted updates included), checked before anything is allocated; default 2^30
    (4 GiB of float32); None: no limit. Every bitstream of an incremental sequence has its own.
    max_tensor_elements: most elements of any one tensor (default 2^31 - 1).
    max_topology_bytes: most bytes of an NNR_TPL unit, and of its topology once inflated
    (`nnr.topology.carriage.read_tpl(decoder.units)`); default 256 MiB; None: no limit.
    Exceeding a limit raises ResourceLimitError naming the unit and the element.
    keep_state: keep the incremental state (TCA references, HDSP history, tree depths) for the
    next bitstream (default). False: each bitstream is decoded on its own (what `nnr.decode`
    does); the levels are not kept, so memory holds one copy of the decoded model.
    """

    def __init__(self, *, profile0_variant="nncodec1", codebook_dtype=np.float64,
                 max_tensor_elements=2**31 - 1, max_total_elements=MAX_TOTAL_ELEMENTS,
                 max_topology_bytes=MAX_TOPOLOGY_BYTES, out_of_band=None, verify_entry_points=True,
                 jobs=None, keep_state=True):
        self.jobs = resolve_jobs(jobs)
        if profile0_variant not in VARIANTS:
            raise ValueError(f"profile0_variant must be one of {sorted(VARIANTS)}, not {profile0_variant!r}")
        if np.dtype(codebook_dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError("codebook_dtype must be float32 or float64")
        self.profile0_variant = VARIANTS[profile0_variant]
        self.codebook_dtype = np.dtype(codebook_dtype)
        self.max_tensor_elements = _limit(max_tensor_elements, "max_tensor_elements")
        self.max_total_elements = _limit(max_total_elements, "max_total_elements")
        self.max_topology_bytes = _limit(max_topology_bytes, "max_topology_bytes")
        self.out_of_band = dict(out_of_band or {})
        self.verify_entry_points = verify_entry_points
        self.keep_state = bool(keep_state)
        self.state = IncrementalState()
        self.units = []          # ParsedUnit list of the last bitstream
        self._data = None        # the bitstream being decoded (error locations)
        self.tensors = []        # DecodedTensor list of the last bitstream

    def decode(self, data, *, trace=None, progress=None, recompose=True, lsa=False) -> dict:
        """Decode one bitstream; returns {topology_elem_id: ndarray} in unit order. `recompose`: each
        low-rank pair G, H as its W = G·H (HLS §9.4; decode_tensors keeps the members); `lsa`: each
        local-scaling vector multiplied into its weight's rows and dropped (nnr/recompose.py)."""
        from nnr.recompose import tensor_dict
        decoded = self.decode_tensors(data, trace=trace, progress=progress)
        return tensor_dict(decoded, recompose=recompose, lsa=lsa)

    def decode_tensors(self, data, *, trace=None, progress=None) -> list:
        """Decode one bitstream into DecodedTensor records; the state advances only on success.
        progress(unit, tensors), if given, is called in unit order as each NDU is done.

        With jobs > 1 the NDU payloads are entropy-decoded and reconstructed by worker threads
        (the Cython engine runs without the GIL) while the units are parsed in order; results and
        errors are taken in unit order, so the outcome, the first error included, is the
        sequential one. A trace forces the sequential path (its lines are in bitstream order)."""
        data = self._data = bytes(data)
        jobs = 1 if trace is not None else self.jobs
        pool = None
        if jobs > 1:
            from concurrent.futures import ThreadPoolExecutor
            pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="nnr-decode")
        pending = deque()        # (unit, future or list of DecodedTensor), in unit order
        tensors, seen = [], set()

        def collect():
            # results in unit order; the first failure is raised as the sequential path would
            # each unit leaves `pending` as it is taken: collect() runs again after an error or an
            # interrupt (KeyboardInterrupt from the progress callback) and must not take it twice
            while pending:
                unit, work = pending[0]
                done = work if isinstance(work, list) else work.result()
                pending.popleft()
                for t in done:
                    if t.name in seen:
                        raise ConstraintViolationError(f"tensor {t.name!r} appears twice in the bitstream",
                                                       unit_index=unit.index, element="topology_elem_id",
                                                       bit_offset=self._name_bit(unit))
                    seen.add(t.name)
                    tensors.append(t)
                if progress is not None:
                    progress(unit, done)

        try:
            try:
                units, syntax = self._walk_units(data, trace, jobs, pool, pending, collect)
            except BaseException:
                collect()        # an earlier NDU's error comes first, as in the sequential order
                raise
            collect()
        finally:
            if pool is not None:
                for _, work in pending:
                    if not isinstance(work, list):
                        work.cancel()
                pool.shutdown(wait=True)
            self._data = None
        parent_signalling = bool(syntax.mps and syntax.mps.get("mps_parent_signalling_enabled_flag"))
        if parent_signalling:
            self._add_omitted(tensors, seen, sum(t.values.size for t in tensors))
        if self.keep_state:
            for t in tensors:
                if t.levels is not None:
                    self.state.record(t.name, t.levels, units[t.unit_index].fields, parent_signalling,
                                      shape=t.values.shape, dtype=t.values.dtype)
        self.units, self.tensors = units, tensors
        return tensors

    def _add_omitted(self, tensors, seen, used):
        """The all-zero updates a bitstream with parent signalling leaves out (HLS §13.5): tensors of
        earlier bitstreams that it does not carry; their incremental state stays at the last
        transmitted update."""
        for name, hist in self.state.tensors.items():
            if name not in seen and hist.shape is not None:
                n = int(np.prod(hist.shape, dtype=object))
                used = self._count_elements(used, n, None, f"omitted update of tensor {name!r}", None)
                tensors.append(DecodedTensor(name, np.zeros(hist.shape, hist.dtype), None, -1, -1, "T",
                                             omitted=True))

    def _walk_units(self, data, trace, jobs, pool, pending, collect):
        """Parse the units in order and hand each NDU's payload work to `pending` (a future with a
        pool, else done at once); returns (units, syntax state)."""
        syntax = SyntaxState()
        syntax.resolve_out_of_band = self._resolve_out_of_band
        units = []
        kinds = set()               # unit types seen so far (ordering constraints)
        used = 0                    # elements the bitstream's tensors decode to so far
        pending_g = None            # the G unit of a decomposed pair waiting for its H (HLS §9.4)
        tpl_reflist = None
        for span in split_units(data):
            syntax.dc_pending_h = pending_g is not None
            self._check_unit_size(data, span)
            unit = parse_unit(data, span, syntax, trace)
            units.append(unit)
            kind = unit.nnr_unit_type
            self._check_order(unit, kinds)
            kinds.add(kind)
            if kind == NNR_TPL:
                unit.max_topology_bytes = self.max_topology_bytes or 0     # read_tpl inflates against it
                fmt = unit.fields.get("topology_storage_format")
                if fmt == NNR_TPL_PRUN:
                    raise UnsupportedFeatureError(
                        "NNR_TPL_PRUN (pruning topology container) has no public syntax", unit_index=unit.index,
                        element="topology_storage_format", bit_offset=self._bit(unit, "topology_storage_format"),
                        value=fmt)
                if fmt == NNR_TPL_REFLIST:
                    tpl_reflist = list(unit.fields.get("topology_elem_id_list", []))
            elif kind in (NNR_QNT, NNR_AGG):
                what = ("NNR_QNT (quantization unit) has no public semantics" if kind == NNR_QNT
                        else "NNR_AGG has no public syntax")
                raise UnsupportedFeatureError(what, unit_index=unit.index, element="nnr_unit_type",
                                              bit_offset=self._bit(unit, "nnr_unit_type"), value=kind)
            elif kind == NNR_NDU:
                self._resolve_indexed_names(unit, syntax, tpl_reflist)
                cpt = unit.fields.get("compressed_parameter_types", 0)
                is_h = pending_g is not None
                if is_h and not (cpt & 1):
                    raise ConstraintViolationError("a decomposed G unit must be followed by its H unit",
                                                   unit_index=unit.index, element="compressed_parameter_types",
                                                   bit_offset=self._bit(unit, "compressed_parameter_types"),
                                                   value=cpt)
                before = used
                work, used = self._prepare_ndu(data, unit, syntax, is_h, used, trace, jobs)
                threaded = pool is not None and used - before >= THREAD_MIN_ELEMENTS
                pending.append((unit, pool.submit(work) if threaded else work()))
                if pool is None:
                    collect()
                is_dc_single = (cpt & 1) and unit.fields["nnr_compressed_data_unit_payload_type"] != NNR_PT_BLOCK
                pending_g = None if is_h or not is_dc_single else unit
            if pending_g is not None and kind != NNR_NDU:
                raise ConstraintViolationError("a decomposed G unit must be followed by its H unit",
                                               unit_index=unit.index, element="nnr_unit_type",
                                               bit_offset=self._bit(unit, "nnr_unit_type"), value=kind)
        if not units or units[0].nnr_unit_type != NNR_STR:
            raise ConstraintViolationError("a bitstream starts with an NNR_STR unit", unit_index=0,
                                           element="nnr_unit_type", bit_offset=0)
        if pending_g is not None:
            raise ConstraintViolationError("the bitstream ends after a decomposed G unit without its H unit",
                                           unit_index=pending_g.index, element="compressed_parameter_types",
                                           bit_offset=8 * len(data))
        return units, syntax

    def _bit(self, unit, element):
        """Bit offset of an element of a unit of the bitstream being decoded (for error locations)."""
        return unit.bit_of(element, self._data)

    def _name_bit(self, unit):
        """Bit offset of the element that names the unit's tensor(s), however it is coded."""
        for element in ("topology_elem_id", "topology_elem_id_index", "topology_elem_id_list",
                        "topology_elem_id_index_list"):
            bit = self._bit(unit, element)
            if bit != 8 * unit.offset:
                return bit
        return 8 * unit.offset

    def _locate(self, err, unit):
        """The error with the unit filled in, and the bit offset of the element it names (else the unit's)."""
        bit = err.bit_offset if err.bit_offset is not None else self._bit(unit, err.element)
        return err.located(unit_index=unit.index, bit_offset=bit)

    def _check_unit_size(self, data, span):
        """An NNR_TPL unit larger than max_topology_bytes is refused before it is parsed."""
        limit = self.max_topology_bytes
        if limit is not None and span.size > limit and unit_type_of(data, span) == NNR_TPL:
            raise ResourceLimitError(f"NNR_TPL unit of {span.size} bytes is larger than max_topology_bytes "
                                     f"(Decoder(max_topology_bytes=...) raises the limit)", unit_index=span.index,
                                     element="nnr_unit_size", bit_offset=8 * span.offset, value=span.size,
                                     allowed=f"..{limit}")

    def _check_order(self, unit, kinds):
        """Ordering constraints of HLS §12.2; `kinds`: the unit types before this one."""
        kind, index = unit.nnr_unit_type, unit.index
        where = {"unit_index": index, "element": "nnr_unit_type", "bit_offset": self._bit(unit, "nnr_unit_type")}
        if index == 0 and kind != NNR_STR:
            raise ConstraintViolationError("the first unit must be NNR_STR", value=kind, allowed=NNR_STR, **where)
        if index > 0 and kind == NNR_STR:
            raise ConstraintViolationError("a second NNR_STR unit", **where)
        if kind == NNR_MPS and NNR_MPS in kinds:
            raise ConstraintViolationError("a second NNR_MPS unit", **where)
        if kind == NNR_MPS and NNR_NDU in kinds:
            raise ConstraintViolationError("NNR_MPS after an NNR_NDU", **where)
        if kind in (NNR_LPS, NNR_TPL, NNR_NDU, NNR_QNT) and NNR_MPS not in kinds:
            raise ConstraintViolationError("unit before the NNR_MPS it depends on", value=kind, **where)

    def _resolve_out_of_band(self, fields):
        """Supply tensor dimensions a unit leaves out (HLS §11) from `out_of_band`."""
        if "tensor_dimensions" in fields:
            return
        name = fields.get("topology_elem_id")
        if name is None and fields.get("topology_elem_id_list"):
            name = fields["topology_elem_id_list"][0]
        dims = self.out_of_band.get(name)
        if dims is None:
            raise UnsupportedFeatureError(
                f"tensor {name!r}: tensor_dimensions are not in the unit and were not supplied out of band "
                "(Decoder(out_of_band={name: shape}))")
        fields["count_tensor_dimensions"] = len(dims)
        fields["tensor_dimensions"] = [int(d) for d in dims]

    def _resolve_indexed_names(self, unit, syntax, reflist):
        f = unit.fields
        if "topology_elem_id_index" in f or "topology_elem_id_index_list" in f:
            element = "topology_elem_id_index" if "topology_elem_id_index" in f else "topology_elem_id_index_list"
            if reflist is None:
                raise ConstraintViolationError("indexed topology reference without an NNR_TPL reference list",
                                               unit_index=unit.index, element=element,
                                               bit_offset=self._bit(unit, element))
            try:
                if "topology_elem_id_index" in f:
                    f["topology_elem_id"] = reflist[f["topology_elem_id_index"]]
                else:
                    f["topology_elem_id_list"] = [reflist[i] for i in f["topology_elem_id_index_list"]]
            except IndexError:
                raise ConstraintViolationError("topology element index outside the reference list",
                                               unit_index=unit.index, element=element,
                                               bit_offset=self._bit(unit, element),
                                               allowed=f"0..{len(reflist) - 1}") from None

    def _quantization_base(self, syntax, unit):
        """(QpDensity, BaseQP) from the latest LPS, else the MPS (HLS §10)."""
        for ps, prefix in ((syntax.lps, "lps"), (syntax.mps, "mps")):
            if ps and (ps.get(f"{prefix}_quantization_method_flags", 0) & 3):
                return ps[f"{prefix}_qp_density"], ps[f"{prefix}_quantization_parameter"]
        raise ConstraintViolationError("quantized NDU but no parameter set carries qp_density and a base QP",
                                       unit_index=unit.index, element="mps_quantization_method_flags",
                                       bit_offset=self._bit(unit, "nnr_compressed_data_unit_payload_type"), value=0)

    def _count_elements(self, used, n, unit, what, element):
        """used + n, unless that exceeds max_total_elements (checked before anything is allocated)."""
        total = used + n
        limit = self.max_total_elements
        if limit is not None and total > limit:
            where = {} if unit is None else {"unit_index": unit.index, "bit_offset": self._bit(unit, element)}
            raise ResourceLimitError(f"{what} of {n} elements takes the bitstream's tensors to {total} elements, "
                                     f"more than max_total_elements (Decoder(max_total_elements=...) raises "
                                     f"the limit)", element=element, value=total, allowed=f"..{limit}", **where)
        return total

    def _check_size(self, comp: Component, payload_len, gpi, unit):
        n = comp.num_elements
        if self.max_tensor_elements is not None and n > self.max_tensor_elements:
            raise ResourceLimitError(f"tensor {comp.name!r} has {n} elements, more than max_tensor_elements",
                                     unit_index=unit.index, element="tensor_dimensions",
                                     bit_offset=self._bit(unit, "tensor_dimensions"), value=n,
                                     allowed=f"..{self.max_tensor_elements}")
        capacity = (payload_len + 8) * 8 * _BINS_PER_BIT
        cb = comp.codebook if gpi == 1 else None
        if cb is not None and cb.get("codebook_size") == 1:
            return          # a one-entry codebook codes no bins at all
        row_skip_possible = gpi == 1 and comp.rows > 1 and comp.row_width > 1
        coded = comp.rows if row_skip_possible else n
        if coded > capacity:
            raise EntropyDecodingError(f"tensor {comp.name!r} of {n} elements cannot fit in a "
                                       f"{payload_len}-byte payload", unit_index=unit.index,
                                       element="tensor_dimensions", bit_offset=self._bit(unit, "tensor_dimensions"),
                                       value=list(comp.shape))

    def _prepare_ndu(self, data, unit, syntax, is_h, used, trace=None, jobs=1):
        """Everything of an NDU that depends on the units before it (checks, limits, quantization
        base, TCA / HDSP state); returns the payload work, a function () -> [DecodedTensor] that
        reads nothing shared but this decoder's (read-only during a bitstream) state, and the
        elements decoded so far (`used` before this unit)."""
        f = unit.fields
        pt = f["nnr_compressed_data_unit_payload_type"]
        gpi = syntax.general_profile_idc
        try:
            comps = ndu_components(f, unit.index, is_h)
        except NNRError as err:
            raise self._locate(err, unit) from None
        for comp in comps:
            used = self._count_elements(used, comp.num_elements, unit, f"tensor {comp.name!r}",
                                        "tensor_dimensions")
        payload = memoryview(data)[unit.payload_offset:unit.payload_end]

        if pt == NNR_PT_RAW_FLOAT:
            comp = comps[0]
            if len(payload) != 4 * comp.num_elements:
                raise UnitSizeMismatchError("raw float payload length differs from 4 x NumElements",
                                            unit_index=unit.index, element="raw_float32_parameter",
                                            bit_offset=unit.payload_offset * 8, value=len(payload),
                                            allowed=4 * comp.num_elements)
            values = np.frombuffer(payload, dtype="<f4").astype(np.float32).reshape(comp.shape)
            if trace is not None:
                trace_payload(trace, unit.payload_offset * 8, len(payload), [], "flt(32)")
            return (lambda: [DecodedTensor(comp.name, values, None, unit.index, pt, comp.role)]), used

        quantized = pt in (NNR_PT_FLOAT, NNR_PT_BLOCK)
        qp_density, base_qp = self._quantization_base(syntax, unit) if quantized else (0, 0)
        dq = 0 if pt == NNR_PT_INT else f.get("dq_flag", 0)
        tca = gpi == 1 and f.get("temporal_context_modeling_flag", 0) == 1
        parent = f.get("parent_node_id_present_flag", 0) if gpi == 1 else 0
        codings = []
        for comp in comps:
            self._check_size(comp, len(payload), gpi, unit)
            cb = comp.codebook if gpi == 1 else None
            try:
                reference = self.state.tca_reference(comp.name, comp.shape, f, unit.index) if tca else None
            except NNRError as err:
                raise self._locate(err, unit) from None
            codings.append(TensorCoding(
                rows=comp.rows, row_width=comp.row_width, ndim=len(comp.shape),
                has_qp_offset=quantized, qp_density=qp_density, dq_flag=dq,
                cabac_unary_length_minus1=f["cabac_unary_length_minus1"],
                scan_order=f.get("scan_order", 0), general_profile_idc=gpi,
                parent_node_id_present_flag=parent,
                tca_reference=reference,
                hdsp_history=self.state.hdsp_history(comp.name, comp.num_elements) if parent else None,
                codebook_size=cb["codebook_size"] if cb else 0,
                cb_zero_offset=cb["CbZeroOffset"] if cb else 0))
        variant = VARIANT_NNCODEC2 if gpi == 1 else self.profile0_variant
        return (lambda: self._finish_ndu(unit, comps, codings, payload, variant, pt, base_qp, qp_density,
                                         trace, jobs)), used

    def _finish_ndu(self, unit, comps, codings, payload, variant, pt, base_qp, qp_density, trace, jobs):
        """Entropy-decode one NDU payload and reconstruct its tensors; any error names the unit."""
        try:
            return self._decode_ndu(unit, comps, codings, payload, variant, pt, base_qp, qp_density, trace, jobs)
        except NNRError as err:
            raise self._locate(err, unit) from None
        except MemoryError:
            raise ResourceLimitError("out of memory decoding the unit's tensors", unit_index=unit.index,
                                     element="tensor_dimensions",
                                     bit_offset=self._bit(unit, "tensor_dimensions")) from None

    def _decode_ndu(self, unit, comps, codings, payload, variant, pt, base_qp, qp_density, trace, jobs):
        options = {}
        if jobs > 1 and len(comps) == 1 and unit.fields.get("BitOffsetDelta"):
            # block-row entry points let the engine split one tensor's rows between threads (it
            # does so for tensors of at least its PARALLEL_MIN_ELEMENTS)
            options = {"jobs": jobs, "entry_points": self._header_entry_points(unit)}
        try:
            if trace is None:
                results = cabac.decode_payload(payload, codings, variant, **options)
            else:
                results, positions = _decode_positions(payload, codings, variant)
        except NNRError as err:
            # payload bit offsets are relative to the payload; element names are the payload's
            raise err.in_unit(unit.index, unit.payload_offset * 8) from None
        if self.verify_entry_points:
            self._verify_entry_points(unit, comps, results)
        if trace is not None:
            trace_payload(trace, unit.payload_offset * 8, len(payload),
                          [PayloadTensor(c.name, p, r.qp_offset, r.hist_dep_sig_prob_enabled_flag,
                                         r.row_skip_enabled_flag, r.row_skip_list, r.entry_points, r.levels)
                           for c, p, r in zip(comps, positions, results)])

        out = []
        for comp, coding, res in zip(comps, codings, results):
            levels = res.levels.reshape(comp.shape)
            if pt == NNR_PT_INT:
                values = levels.astype(np.int32) if self.keep_state else levels
                out.append(DecodedTensor(comp.name, values, levels, unit.index, pt, comp.role))
                continue
            qp = res.qp_offset + base_qp
            try:
                if comp.codebook is not None:
                    values = reconstruct_codebook(levels, comp.codebook["Codebook"], comp.codebook["CbZeroOffset"],
                                                  qp, qp_density, self.codebook_dtype)
                else:
                    values = reconstruct_uniform(levels, qp, qp_density, inplace=not self.keep_state)
            except NNRError as err:
                # QP and levels come from the payload: located at its start unless the error says
                raise err.located(unit_index=unit.index, bit_offset=(
                    self._bit(unit, "codebook_egk") if err.element == "codebook" else unit.payload_offset * 8)) from None
            # without incremental state the levels are not kept: one copy of the model in memory
            full = unit.fields.get("tensor_dimensions") if comp.role in ("G", "H") else None
            full = tuple(full) if full is not None else None
            out.append(DecodedTensor(comp.name, values, levels if self.keep_state else None, unit.index, pt,
                                     comp.role, qp, full_shape=full, dq_flag=coding.dq_flag, qp_density=qp_density,
                                     codebook=comp.codebook is not None))
            del levels
        return out

    @staticmethod
    def _header_entry_points(unit):
        f = unit.fields
        dq = f.get("ep_dq_state") or [0] * len(f["BitOffsetDelta"])
        return list(zip(f["BitOffsetDelta"], f.get("ep_arith_value", []), dq))

    def _verify_entry_points(self, unit, comps, results):
        """The header's entry points must describe the payload as decoded (HLS §8.5)."""
        f = unit.fields
        header = list(zip(f.get("BitOffsetDelta", []), f.get("ep_arith_value", []), f.get("ep_dq_state", [])))
        if not header:
            return
        measured = []
        for comp, res in zip(comps, results):
            if comp.carries_entry_points:
                measured.extend(tuple(int(v) for v in ep) for ep in res.entry_points)
        if not measured:
            return   # effective scan is row-major (RowWidth 1): the entries cannot be checked
        if len(measured) != len(header):
            raise EntropyDecodingError("number of entry points differs from the payload's block rows",
                                       unit_index=unit.index, element="cabac_entry_point_list",
                                       bit_offset=self._bit(unit, "ep_arith_value"), value=len(header),
                                       allowed=len(measured))
        for j, (want, got) in enumerate(zip(measured, header)):
            if want != tuple(got):
                raise EntropyDecodingError("entry point disagrees with the decoded payload "
                                           "(BitOffsetDelta, ep_arith_value, ep_dq_state)",
                                           unit_index=unit.index, element=f"cabac_entry_point_list[{j}]",
                                           bit_offset=self._bit(unit, f"ep_arith_value[{j}]"),
                                           value=tuple(got), allowed=want)


def _decode_positions(payload, codings, variant):
    """decode_payload on one thread, also returning the coder's bit position P (HLS §8.5) before each
    tensor (the trace's positions)."""
    d = cabac.CabacDecoder(payload)
    results, positions = [], []
    for coding in codings:
        positions.append(d.state()["P"])
        results.append(d.decode_tensor(coding, variant))
    d.finish()
    return results, positions


def _limit(value, name):
    """A resource limit: a positive integer, or None for no limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, not {value!r}")
    return int(value)


def decode(data, *, recompose=True, lsa=False, **options) -> dict:
    """Decode one self-contained NNC bitstream into {name: ndarray} (float32, float64 for codebook
    tensors, int32 for NNR_PT_INT); low-rank pairs as W = G·H unless recompose=False, local scaling
    multiplied into the weights with lsa=True (Decoder.decode)."""
    return Decoder(keep_state=False, **options).decode(data, recompose=recompose, lsa=lsa)
