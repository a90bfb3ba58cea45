"""nnr_info: list the NNR units of a bitstream, or trace every syntax element."""
import sys

from nnr.cli.common import parser, run
from nnr_core.syntax.constants import (NNR_LPS, NNR_MPS, NNR_NDU, NNR_STR, NNR_TPL, PAYLOAD_TYPE_NAMES,
                                       UNIT_TYPE_NAMES)


def describe(unit) -> str:
    """One line for one unit."""
    f = unit.fields
    kind = unit.nnr_unit_type
    head = f"#{unit.index:<3} @{unit.offset:<8} {unit.size:>8} B  {UNIT_TYPE_NAMES.get(kind, kind):<8}"
    if kind == NNR_STR:
        return f"{head} general_profile_idc={f.get('general_profile_idc')}"
    if kind == NNR_MPS:
        return (f"{head} qp_density={f.get('mps_qp_density')} base_qp={f.get('mps_quantization_parameter')} "
                f"parent_signalling={f.get('mps_parent_signalling_enabled_flag', 0)}")
    if kind == NNR_LPS:
        return f"{head} qp_density={f.get('lps_qp_density')} base_qp={f.get('lps_quantization_parameter')}"
    if kind == NNR_TPL:
        return f"{head} storage_format={f.get('topology_storage_format')} compression={f.get('topology_compression_format')}"
    if kind == NNR_NDU:
        names = f.get("topology_elem_id_list") or [f.get("topology_elem_id")]
        parts = [PAYLOAD_TYPE_NAMES.get(f["nnr_compressed_data_unit_payload_type"], "?"), ",".join(map(str, names)),
                 "dims=" + "x".join(map(str, f.get("tensor_dimensions", [])))]
        for key in ("dq_flag", "scan_order", "cabac_unary_length_minus1", "compressed_parameter_types",
                    "put_node_depth", "parent_node_id_present_flag", "temporal_context_modeling_flag"):
            if f.get(key):
                parts.append(f"{key}={f[key]}")
        if f.get("codebook_present_flag"):
            parts.append(f"codebook_size={f['codebook']['codebook_size']}")
        parts.append(f"payload={unit.payload_end - unit.payload_offset} B")
        return f"{head} " + " ".join(parts)
    return head


def main(argv=None):
    p = parser("nnr_info", "Show the NNR units of an NNC bitstream.")
    p.add_argument("input")
    p.add_argument("--trace", action="store_true",
                   help="one line per syntax element: bit position, path, descriptor, value")
    p.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    args = p.parse_args(argv)
    return run("nnr_info", _info, args, subject=args.input)


def _info(args):
    from nnr.cli.files import ndu_count, read_bitstream
    from nnr_core.bitstream.trace import Trace
    from nnr_core.syntax.units import SyntaxState, parse_unit, split_units

    data = read_bitstream(args.input)
    ndu_count(args.input, data)          # refuses what is not an NNC bitstream at all
    state = SyntaxState()
    for span in split_units(data):
        trace = Trace() if args.trace else None
        try:
            unit = parse_unit(data, span, state, trace)
        finally:
            if trace is not None:
                trace.write(sys.stdout)
        if not args.trace:
            print(describe(unit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
