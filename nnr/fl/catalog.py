"""The methods of the federated benchmark (benchmarks.federated): name -> how its uplink and
downlink messages are coded; also what nnr_make_test_material --dataset fashion-mnist codes with.

Each entry gives a label, the options it was run with and two factories for nnr.fl coders over the
model's layout: up(layout, client) and down(layout). All of them run inside the same harness
(nnr.fl.simulation: same model, data, split, seeds, local steps and rounds); what they send passes
through error feedback (nnr.fl.feedback) except for float32, which loses nothing."""
import inspect
from dataclasses import dataclass, field

import nnr.fl as fl
from nnr.errors import EncoderConfigError


@dataclass
class Method:
    key: str
    label: str
    options: dict = field(default_factory=dict)

    def up(self, layout, client):
        return _coder(self, layout, self.options.get("fraction"), device_id=up_device_id(client))

    def down(self, layout):
        return _coder(self, layout, self.options.get("down_fraction", self.options.get("fraction")),
                      device_id=DOWN_DEVICE_ID)


DOWN_DEVICE_ID = 0


def up_device_id(client) -> int:
    """The device_id of client `client`'s uplink stream (the downlink's is DOWN_DEVICE_ID)."""
    return client + 1


# the nnr.fl.NncCoder options a Method may set, with NncCoder's own defaults (what runs, and what
# describe_nnc describes, when a Method leaves one out)
NNC_DEFAULTS = {k: p.default for k, p in inspect.signature(fl.NncCoder).parameters.items()
                if k in ("sparsify", "selection", "element_names", "packing", "schedule", "tca", "hdsp")}


def nnc_options(options) -> dict:
    """A Method's options with NncCoder's defaults filled in."""
    return {**NNC_DEFAULTS, **options}


def _coder(m, layout, fraction, device_id):
    kind = m.options.get("coder", m.key)
    if kind == "float32":
        return fl.Float32Coder(layout)
    if kind == "dgc":
        return fl.DgcCoder(layout, fraction)
    if kind == "sbc":
        return fl.SbcCoder(layout, fraction)
    if kind == "nnc":
        o = nnc_options(m.options)
        return fl.NncCoder(layout, fraction, **{k: o[k] for k in NNC_DEFAULTS}, device_id=device_id)
    raise EncoderConfigError(f"unknown coder {kind!r}")


def describe_nnc(options) -> str:
    """One sentence saying what an NNC message of a Method with these options carries."""
    o = nnc_options(options)
    sched = o["schedule"] or [(0, 1.0)]
    ends = [m for m, _ in sched[1:]] + [None]
    pct = ", ".join(f"{100 * o['fraction'] * f:.3g} %" + ("" if len(sched) == 1 else
                    f" in messages {m}-{e - 1}" if e is not None else f" from message {m} on")
                    for (m, f), e in zip(sched, ends))
    flat = o["packing"] == "flat"
    keep = (f"the largest magnitudes of the whole update ({pct})" if flat or o["selection"] == "global"
            else f"the largest magnitudes of each tensor ({pct})")
    values = {"sbc": "of each tensor's kept entries the larger sign set, at its mean (levels +-1)",
              "ternary": "every kept entry at +- the mean kept magnitude (levels +-1)",
              "topk": "the kept values rounded on a step equal to the smallest kept magnitude"}[o["sparsify"]]
    units = ("the update as one 1-D topology element (the layout's tensors concatenated in order), so one NNR_NDU "
             "per message" if flat else "one NNR_NDU per tensor, a tensor with nothing kept omitted (HLS §13.5)")
    names = "elements named by layout index" if o["element_names"] == "index" else "elements named by tensor"
    tools = ", ".join(["parent signalling"] + [t.upper() for t in ("tca", "hdsp") if o[t]])
    return (f"{keep} kept, {values} on the QP whose step is nearest (qp_density 7, no DQ); {units}; {names}; "
            f"{tools}")


def methods(fraction, nnr_options=None) -> dict:
    """The benchmark's methods at a kept fraction per message; `nnr` is nnr's best configuration
    (nnr_options override it)."""
    nnr_opts = {"coder": "nnc", "fraction": fraction, "sparsify": "ternary", "packing": "flat",
                "element_names": "index", "tca": False, "hdsp": False}
    nnr_opts.update(nnr_options or {})
    return {
        "float32": Method("float32", "float32 FedAvg"),
        "dgc": Method("dgc", f"top-k {fraction:g} + error feedback + zlib (DGC-like)", {"fraction": fraction}),
        "sbc": Method("sbc", f"SBC {fraction:g} (binarised, Golomb positions)", {"fraction": fraction}),
        "nnr": Method("nnr", f"nnr: NNC incremental stream, one element, ternary {nnr_opts['fraction']:g}", nnr_opts),
    }
