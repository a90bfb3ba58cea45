"""Syntax coverage of a suite, from nnr's decoder trace.

The set of elements nnr reads comes from the syntax tables (``spec/syntax``, parsed by
``nnr_core.syntax.lang``): every element reachable from ``nnr_unit`` under its trace path (a
structure called from two places, e.g. ``codebook`` / ``codebook2``, counts twice), plus the
payload elements the decoder traces (``nnr_compressed_data_unit_payload.*``). Branches are the
arms of every ``if`` in the tables: an arm is taken when an element inside it was traced, or, for
an arm without elements (``error``, ``infer``), when its condition holds on the traced values of
the unit. Values: the elements whose values select a tool (payload types, scan orders, unit
types, ...) and which of their values the suite exercises. Streams that must be rejected count
too: the trace runs up to the error.
"""
import os
import re
from dataclasses import dataclass, field

from nnr_core.syntax import lang

PAYLOAD = "nnr_compressed_data_unit_payload"
PAYLOAD_ELEMENTS = ["qp_offset", "hist_dep_sig_prob_enabled_flag", "row_skip_enabled_flag", "row_skip_list",
                    "entry_point", "levels"]
_IDX = re.compile(r"\[[^\]]*\]")

# element (path suffix) -> the values the suite must exercise
VALUES = {
    "nnr_unit_type": list(range(7)),
    "general_profile_idc": [0, 1],
    "nnr_unit_size_flag": [0, 1],
    "nnr_compressed_data_unit_payload_type": [0, 1, 2, 3],
    "scan_order": [0, 1, 2, 3, 4],
    "dq_flag": [0, 1],
    "codebook_present_flag": [0, 1],
    "mps_qp_density": list(range(8)),
    "parent_node_id_type": [0, 1, 2],
    "temporal_context_modeling_flag": [0, 1],
    "topology_storage_format": [0, 1, 2, 3, 4, 5, 6],
    "topology_compression_format": [0, 1],
    "mps_topology_indexed_reference_flag": [0, 1],
    "nnr_multiple_topology_elements_present_flag": [0, 1],
    "mps_parent_signalling_enabled_flag": [0, 1],
    "node_id_present_flag": [0, 1],
    "input_parameters_present_flag": [0, 1],
    "tensor_dimensions_flag": [0, 1],
    "cabac_unary_length_flag": [0, 1],
    "count_tensor_dimensions": [1, 2, 3, 4, 5, 6],
    "compressed_parameter_types": [0, 1, 2, 4, 8],
    "hist_dep_sig_prob_enabled_flag": [0, 1],
    "row_skip_enabled_flag": [0, 1],
    "lps_self_contained_flag": [1],
    "independently_decodable_flag": [0, 1],
    "partial_data_counter_present_flag": [0, 1],
}


@dataclass
class Arm:
    where: str               # file:line of the if
    struct_path: str         # trace path of the structure holding it
    label: str               # "if COND" / "elif COND" / "else"
    conds: list              # [(Expr, negate)] that must hold: earlier arms false, this one true
    elements: set = field(default_factory=set)


def _static(cond, params, constants):
    """The value of a condition that depends only on constant structure arguments, else None."""
    if not params:
        return None
    try:
        return bool(eval(cond.code, {"__builtins__": {}}, dict(constants, **params)))
    except Exception:
        return None


def _walk(tables, body, path, elements, arms, conds_stack, stack, params=None):
    """Enumerate element paths and if-arms reachable from ``body`` at trace path ``path``
    (``params``: structure arguments that are literals, used to prune arms they rule out)."""
    found = set()
    params = params or {}
    for node in body:
        if isinstance(node, lang.Elem):
            p = f"{path}.{node.name}" if path else node.name
            elements.add(p)
            found.add(p)
        elif isinstance(node, lang.Align):
            pass
        elif isinstance(node, lang.Call):
            sub = node.as_field or node.struct
            if node.struct in stack:
                continue
            p = f"{path}.{sub}" if path else sub
            st = tables.structs[node.struct]
            lits = {}
            for name, a in zip(st.params, node.args):
                try:
                    lits[name] = eval(a.code, {"__builtins__": {}}, {})
                except Exception:
                    pass
            found |= _walk(tables, st.body, p, elements, arms, conds_stack, stack + (node.struct,), lits)
        elif isinstance(node, lang.For):
            found |= _walk(tables, node.body, path, elements, arms, conds_stack, stack, params)
        elif isinstance(node, lang.If):
            previous = []
            branches = [(c, b, ("if " if n == 0 else "elif ") + c.text) for n, (c, b) in enumerate(node.branches)]
            if node.orelse:
                branches.append((None, node.orelse, "else"))
            else:
                branches.append((None, [], "else (implicit)"))
            constants = tables.constants
            for cond, blk, label in branches:
                if any(_static(c, params, constants) is True for c in previous) or \
                        (cond is not None and _static(cond, params, constants) is False):
                    continue            # ruled out by a literal argument (e.g. topology_elements_ids_list(0))
                conds = conds_stack + [(c, True) for c in previous] + ([(cond, False)] if cond is not None else [])
                arm = Arm("", path, label, conds)
                arm.elements = _walk(tables, blk, path, elements, arms, conds, stack, params)
                arms.append(arm)
                found |= arm.elements
                if cond is not None:
                    previous.append(cond)
    return found


def syntax_model():
    """(element paths, arms) nnr reads, from the syntax tables."""
    tables = lang.load_tables()
    elements, arms = set(), []
    _walk(tables, tables.structs["nnr_unit"].body, "", elements, arms, [], ("nnr_unit",))
    # implicit else arms with no elements are not branches of the syntax
    arms = [a for a in arms if not (a.label == "else (implicit)" and not a.elements)]
    for e in PAYLOAD_ELEMENTS:
        elements.add(f"{PAYLOAD}.{e}")
    return elements, arms, tables.constants


def normalise(path):
    """Trace path -> element path: indices dropped, tensor names removed from payload paths."""
    path = _IDX.sub("", path)
    if path.startswith(PAYLOAD + "."):
        for e in PAYLOAD_ELEMENTS:
            if path.endswith("." + e):
                return f"{PAYLOAD}.{e}"
    return path


@dataclass
class Coverage:
    elements: dict = field(default_factory=dict)         # path -> number of entries exercising it
    arms: list = field(default_factory=list)             # [(Arm, count)]
    values: dict = field(default_factory=dict)           # name -> {value: count}
    entries: int = 0

    @property
    def missing_elements(self):
        return sorted(p for p, n in self.elements.items() if n == 0)

    @property
    def missing_arms(self):
        return [a for a, n in self.arms if n == 0]

    @property
    def missing_values(self):
        return {k: [v for v in want if not self.values.get(k, {}).get(v)] for k, want in VALUES.items()
                if any(not self.values.get(k, {}).get(v) for v in want)}


def trace_entry(entry, root):
    """Decode an entry's steps with a trace; returns [(records, error or None)] per step."""
    import numpy as np

    import nnr
    from nnr_core.bitstream.trace import Trace
    opts = dict(entry.get("decoder_options", {}))
    if "out_of_band" in opts:
        opts["out_of_band"] = {k: tuple(v) for k, v in opts["out_of_band"].items()}
    if "codebook_dtype" in opts:
        opts["codebook_dtype"] = np.dtype(opts["codebook_dtype"])
    dec = nnr.Decoder(**opts)
    out = []
    for step in entry["steps"]:
        with open(os.path.join(root, step["file"]), "rb") as f:
            data = f.read()
        tr = Trace()
        try:
            dec.decode(data, trace=tr)
            out.append((tr.records, None))
        except nnr.NNRError as err:
            out.append((tr.records, err))
            break
    return out


def _units(records):
    """Split a stream's trace records into units (each starts at nnr_unit_size_flag)."""
    units, cur = [], None
    for r in records:
        if r.path == "nnr_unit_size.nnr_unit_size_flag":
            cur = []
            units.append(cur)
        if cur is not None:
            cur.append(r)
    return units


def _env_of(records, base, constants):
    env = dict(constants)
    env.update(base)
    for r in records:
        name = _IDX.sub("", r.path.rsplit(".", 1)[-1])
        env[name] = r.value
    return env


def _holds(arm, env):
    try:
        for cond, negate in arm.conds:
            v = bool(eval(cond.code, {"__builtins__": {}}, dict(env, len=len, min=min, max=max)))
            if v == negate:
                return False
        return True
    except Exception:
        return False


def entry_observations(traces, constants, arms):
    """(element paths, arm indices, {name: set(values)}) observed in one entry's traces."""
    paths, taken, values = set(), set(), {}
    for records, _ in traces:
        stream_env, pending_h = {}, False
        for unit in _units(records):
            seen = {normalise(r.path) for r in unit}
            paths |= seen
            env = _env_of(unit, dict(stream_env, dc_pending_h=pending_h), constants)
            if env.get("nnr_unit_type") == 5:       # the decoder's G-then-H state (HLS §9.4)
                single_dc = env.get("compressed_parameter_types", 0) & 1 and \
                    env.get("nnr_compressed_data_unit_payload_type") != 3
                pending_h = bool(single_dc and not pending_h)
            if env.get("nnr_unit_type") in (0, 1):          # STR / MPS fields are visible later
                stream_env.update({k: v for k, v in env.items() if k not in constants})
            for n, arm in enumerate(arms):
                if arm.elements & seen or (not arm.elements and _holds(arm, env)):
                    taken.add(n)
            for r in unit:
                name = _IDX.sub("", r.path.rsplit(".", 1)[-1])
                if name in VALUES and isinstance(r.value, int):
                    values.setdefault(name, set()).add(r.value)
    return paths, taken, values


def measure(manifest, root):
    elements, arms, constants = syntax_model()
    cov = Coverage(elements={p: 0 for p in sorted(elements)}, arms=[[a, 0] for a in arms])
    for entry in manifest["entries"]:
        paths, taken, values = entry_observations(trace_entry(entry, root), constants, arms)
        cov.entries += 1
        for p in paths:
            if p in cov.elements:
                cov.elements[p] += 1
        for n in taken:
            cov.arms[n][1] += 1
        for name, vals in values.items():
            for v in vals:
                cov.values.setdefault(name, {}).setdefault(v, 0)
                cov.values[name][v] += 1
    cov.arms = [tuple(x) for x in cov.arms]
    return cov


_UNIT_NAMES = {0: "STR", 1: "MPS", 2: "LPS", 3: "TPL", 4: "QNT", 5: "NDU", 6: "AGG"}
_PAYLOAD_NAMES = {0: "INT", 1: "FLOAT", 2: "RAW_FLOAT", 3: "BLOCK"}
# element -> tag naming its value
_VALUE_TAGS = {
    "nnr_unit_type": lambda v: f"unit:{_UNIT_NAMES.get(v, v)}",
    "general_profile_idc": "profile:{}".format,
    "nnr_compressed_data_unit_payload_type": lambda v: f"payload:{_PAYLOAD_NAMES.get(v, v)}",
    "scan_order": "scan_order:{}".format,
    "mps_qp_density": "qp_density:{}".format,
    "cabac_unary_length_minus1": "cabac_unary_length_minus1:{}".format,
    "count_tensor_dimensions": "dims:{}".format,
    "parent_node_id_type": "parent_node_id_type:{}".format,
    "topology_storage_format": "tpl_format:{}".format,
}
# element -> (value, tag): the tag when the element has that value
_FLAG_TAGS = {
    "nnr_unit_size_flag": (1, "unit_size:long"),
    "dq_flag": (1, "dq"),
    "codebook_present_flag": (1, "codebook"),
    "mps_parent_signalling_enabled_flag": (1, "parent_signalling"),
    "temporal_context_modeling_flag": (1, "tca"),
    "hist_dep_sig_prob_enabled_flag": (1, "hdsp"),
    "row_skip_enabled_flag": (1, "row_skip"),
    "mps_topology_indexed_reference_flag": (1, "indexed_topology"),
    "input_parameters_present_flag": (0, "input_parameters:absent"),
    "tensor_dimensions_flag": (0, "dims:out_of_band"),
    "node_id_present_flag": (0, "node_id:absent"),
}
# element -> tag when the element is present at all
_PRESENCE_TAGS = {
    "ep_arith_value": "entry_points",
    **{leaf: "performance_map:" + leaf.split("_")[0]
       for leaf in ("spm_count_thresholds", "ppm_count_pruning_ratios", "upm_count_thresholds",
                    "dpm_count_thresholds")},
    **{leaf: leaf for leaf in ("base_model_id", "validation_set_performance", "performance_metric_type",
                               "nnr_decompressed_data_format", "partial_data_counter")},
}
_BLOCK_MEMBERS = ((1, "DC"), (2, "LS"), (4, "BN"), (8, "BI"))


def features_from_traces(traces, decoded=None):
    """Feature tags of an entry from its traces (used by the generator for every entry)."""
    feats = set()
    for records, _ in traces:
        ep_with_dq = False
        for r in records:
            leaf = _IDX.sub("", r.path.rsplit(".", 1)[-1])
            v = r.value
            if leaf in _VALUE_TAGS:
                feats.add(_VALUE_TAGS[leaf](v))
            elif leaf in _FLAG_TAGS:
                if v == _FLAG_TAGS[leaf][0]:
                    feats.add(_FLAG_TAGS[leaf][1])
            elif leaf in _PRESENCE_TAGS:
                feats.add(_PRESENCE_TAGS[leaf])
            elif leaf == "ep_dq_state":
                ep_with_dq = True
            elif leaf == "compressed_parameter_types" and v:
                feats.update(f"block_member:{n}" for bit, n in _BLOCK_MEMBERS if v & bit)
        if ep_with_dq:
            feats.add("entry_points:dq_state")
    return sorted(feats)


def markdown(cov):
    """The coverage table (README of conformance/)."""
    n_el = len(cov.elements)
    hit_el = n_el - len(cov.missing_elements)
    n_arm = len(cov.arms)
    hit_arm = n_arm - len(cov.missing_arms)
    lines = [f"Syntax coverage over {cov.entries} entries: **{hit_el}/{n_el} syntax elements**, "
             f"**{hit_arm}/{n_arm} branch arms**, "
             f"**{sum(len(v) for v in VALUES.values()) - sum(len(v) for v in cov.missing_values.values())}"
             f"/{sum(len(v) for v in VALUES.values())} selector values**.", ""]
    lines += ["| element | values exercised (entries) | missing |", "|---|---|---|"]
    for name, want in VALUES.items():
        got = cov.values.get(name, {})
        shown = ", ".join(f"{v} ({got[v]})" for v in sorted(got))
        miss = ", ".join(str(v) for v in want if not got.get(v)) or "-"
        lines.append(f"| `{name}` | {shown} | {miss} |")
    lines += ["", "| syntax element (trace path) | entries |", "|---|---|"]
    for p, n in cov.elements.items():
        lines.append(f"| `{p}` | {n if n else '**MISSING**'} |")
    lines += ["", "| structure | branch arm | entries |", "|---|---|---|"]
    for a, n in cov.arms:
        lines.append(f"| `{a.struct_path or 'nnr_unit'}` | `{a.label}` | {n if n else '**MISSING**'} |")
    return "\n".join(lines) + "\n"


def text_summary(cov):
    lines = [f"{len(cov.elements) - len(cov.missing_elements)}/{len(cov.elements)} syntax elements, "
             f"{len(cov.arms) - len(cov.missing_arms)}/{len(cov.arms)} branch arms exercised over {cov.entries} entries"]
    for p in cov.missing_elements:
        lines.append(f"missing element: {p}")
    for a in cov.missing_arms:
        lines.append(f"missing arm: {a.struct_path or 'nnr_unit'}: {a.label}")
    for k, v in cov.missing_values.items():
        lines.append(f"missing values of {k}: {v}")
    return "\n".join(lines) + "\n"
