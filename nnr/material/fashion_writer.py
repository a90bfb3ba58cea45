"""The Fashion-MNIST material on disk (nnr.material.fashion's run): the base stream, one sequence per
client and the downlink, in the conformance suite's layout (entries built by nnr.conformance.generate
.describe: checksums of what nnr decodes at each step, features from the syntax), the per-round
table, metrics and a README; and the check that the base and the downlink rebuild the recorded
models. Not part of the codec."""
import hashlib
import os

import numpy as np

from nnr.material.writer import SUITE, VERSION, _json, _write

BASE_FILE = "base/model.nnr"
ARCHITECTURE = ("CNN of nnr.fl.simulation.make_net: conv 5x5 1->8, ReLU, max-pool 2, conv 5x5 8->16, ReLU, "
                "max-pool 2, linear 256->64, ReLU, linear 64->10 (torch)")


def up_file(k, r):
    return f"client{k}/round{r}.nnr"


def down_file(r):
    return f"downlink/round{r}.nnr"


def benchmark_command(cfg):
    """The benchmarks.federated command whose --save-streams DIR/nnr/ holds the same uplink and downlink
    bytes (None where its options cannot say this configuration)."""
    from nnr.material.fashion import FashionConfig
    d = FashionConfig()
    quick = (cfg.rounds, cfg.local_steps, cfg.train_samples, cfg.test_samples) == (3, 2, 3000, 1000)
    if not quick and (cfg.train_samples or cfg.test_samples):
        return None
    parts = ["python -m benchmarks.federated", "--methods nnr"]
    if quick:
        parts.append("--quick")
    else:
        parts += [f"--rounds {cfg.rounds}", f"--local-steps {cfg.local_steps}"]
    for flag, name in (("--clients", "clients"), ("--alpha", "alpha"), ("--fraction", "fraction"), ("--seed", "seed")):
        if getattr(cfg, name) != getattr(d, name):
            parts.append(f"{flag} {getattr(cfg, name)!r}")
    return " ".join(parts + ["--save-streams DIR"])


def _seeds(cfg):
    from nnr.fl.simulation import SEEDS
    return {"seed": cfg.seed,
            "rule": "numpy.random.default_rng([seed, purpose] + extra); extra = [round, client] for order (each "
                    "client's minibatch draw), none otherwise; the initial model: torch.manual_seed(default_rng("
                    "[seed, init]).integers(2**31)) before building the CNN",
            "purposes": dict(SEEDS)}


def _entries(result, command, version):
    from nnr.conformance.generate import describe
    from nnr.fl.catalog import DOWN_DEVICE_ID, describe_nnc, up_device_id
    cfg, o = result.config, result.method.options
    encode = {"incremental": True, "tca": o.get("tca", True), "hdsp": o.get("hdsp", False)}
    common = {"coder": dict(o), "seeds": _seeds(cfg), "command": command}
    entries = []
    entry, _ = describe("base", "stream", [result.base], "decode", None,
                        "the initial global model G_0 (every tensor NNR_PT_RAW_FLOAT, bit-exact): the model the "
                        "federated run starts from, which the benchmark builds from the seed on every node",
                        {"encoder": f"nnr {version}", "config": {"encode": {"incremental": False, "raw_float": "all"},
                                                                 "seeds": common["seeds"], "command": command}},
                        tags=("base-model",), files=[BASE_FILE])
    entries.append(entry)
    rounds = range(cfg.rounds)
    for k, datas in enumerate(result.up):
        entry, _ = describe(
            f"client{k}", "sequence", datas, "decode", None,
            f"FedAvg uplink of client {k} (device_id {up_device_id(k)}): {cfg.rounds} model updates (trained CNN - "
            f"global model + error-feedback residual): {describe_nnc(o)}; Fashion-MNIST",
            {"encoder": f"nnr {version}", "config": {**common, "device_id": up_device_id(k), "encode": encode}},
            tags=("uplink",), files=[up_file(k, r) for r in rounds])
        entries.append(entry)
    entry, _ = describe(
        "downlink", "sequence", result.down, "decode", None,
        f"FedAvg downlink (device_id {DOWN_DEVICE_ID}): {cfg.rounds} averaged decoded client updates + the "
        f"server's error-feedback residual, coded as the uplinks; the global model after round r is the base "
        f"plus the decoded steps 0..r",
        {"encoder": f"nnr {version}", "config": {**common, "device_id": DOWN_DEVICE_ID, "encode": encode}},
        tags=("downlink",), files=[down_file(r) for r in rounds])
    entries.append(entry)
    return entries


def _rounded(row):
    out = {k: v for k, v in row.items() if k != "seconds"}
    if out.get("accuracy") is not None:
        out["accuracy"] = round(out["accuracy"], 6)
    for key in ("ratio_vs_float32", "bits_per_parameter"):
        if key in out:
            out[key] = {k: round(x, 4) for k, x in out[key].items()}
    return out


def totals(result) -> dict:
    n, cfg = result.num_parameters, result.config
    up = sum(r["bytes"]["up_total"] for r in result.rounds)
    down = sum(r["bytes"]["down"] for r in result.rounds)
    messages = cfg.rounds * (cfg.clients + 1)
    return {"base": len(result.base), "up": up, "down": down, "updates_total": up + down,
            "all_total": len(result.base) + up + down,
            "ratio_vs_float32_updates": round(4 * n * messages / (up + down), 4),
            "bits_per_parameter_updates": round(8 * (up + down) / (n * messages), 4),
            "benchmark_bytes_down": down * cfg.clients,
            "final_accuracy": round(result.rounds[-1]["accuracy"], 6)}


def material_section(result, command, version) -> dict:
    from nnr.fl.catalog import DOWN_DEVICE_ID
    from nnr.material.fashion import element_layout
    cfg = result.config
    config = {k: v for k, v in vars(cfg).items() if k != "workers"}
    return {
        "description": "Incremental NNC test material from the federated benchmark's Fashion-MNIST run "
                       "(benchmarks.federated, method nnr)",
        "generator": f"nnr_make_test_material (nnr {version})",
        "command": command,
        "benchmark_command": benchmark_command(cfg),
        "dataset": "fashion-mnist",
        "config": config,
        "training": result.training,
        "seeds": _seeds(cfg),
        "model": {"architecture": ARCHITECTURE, "parameters": result.num_parameters,
                  "layout": element_layout(result.method, result.layout)},
        "data": result.data_info,
        "coder": {"method": result.method.key, "label": result.method.label, "options": dict(result.method.options),
                  "uplink_device_id": "client index + 1", "downlink_device_id": DOWN_DEVICE_ID},
        "protocol": {
            "round": "each client trains local_steps SGD minibatches from the global model and sends its update "
                     "(plus its error-feedback residual); the server averages the decoded updates weighted by "
                     "shard size and sends the average (plus its residual); every node adds the decoded downlink "
                     "step to its model (float32)",
            "base": "the initial model, as the base stream; the benchmark builds it from the seed instead of "
                    "sending it, so its bytes are not in the benchmark's counts",
            "element_names": "model.layout says where each model tensor is in the update streams: its element "
                             "(and, when the whole update is one element, its offset into that element's values); "
                             "the base names tensors by their model names",
            "omitted": "a tensor an update leaves out is a zero update (HLS 13.5); nnr outputs it as zeros once "
                       "its shape is known, the reference leaves it out",
            "accuracy": "test accuracy of the global model after each round, measured by the run",
            "model_sha256": "nnr.checksum.tensor_sha256 of each tensor of the global model (base + decoded "
                            "downlink steps 0..r, float32) by model name"},
        "base": {"file": BASE_FILE, **_rounded(result.base_row)},
        "rounds": [_rounded(r) for r in result.rounds],
        "totals": totals(result),
        "files": {f: {"bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()} for f, d in _files(result).items()},
    }


def _files(result) -> dict:
    """{path relative to the material: bitstream}."""
    files = {BASE_FILE: result.base}
    files.update({up_file(k, r): d for k, seq in enumerate(result.up) for r, d in enumerate(seq)})
    files.update({down_file(r): d for r, d in enumerate(result.down)})
    return files


def build_manifest(result, command, version) -> dict:
    return {"suite": SUITE, "version": VERSION, "entries": _entries(result, command, version),
            "material": material_section(result, command, version)}


def metrics_markdown(m) -> str:
    cfg, t = m["config"], m["totals"]
    lines = ["# Test material metrics", "",
             f"`{m['command']}`: the CNN ({m['model']['parameters']:,} parameters) on Fashion-MNIST "
             f"({m['data']['train']:,} training / {m['data']['test']:,} test images), {cfg['clients']} clients "
             f"(Dirichlet alpha {cfg['alpha']}), {cfg['rounds']} rounds x {cfg['local_steps']} local steps, "
             f"{100 * cfg['fraction']:g} % kept per message.", "",
             f"Base (initial model, uncoded float32 in NNC): {m['base']['bytes']:,} bytes, accuracy "
             f"{m['base']['accuracy']:.4f}.", "",
             "| round | accuracy | up bytes per client | up total | down | total | ratio vs f32 | bits/param |",
             "|---|---|---|---|---|---|---|---|"]
    for r in m["rounds"]:
        b = r["bytes"]
        lines.append(f"| {r['round']} | {r['accuracy']:.4f} | {' '.join(str(x) for x in b['up_per_client'])} | "
                     f"{b['up_total']} | {b['down']} | {b['total']} | {r['ratio_vs_float32']['total']:.1f} | "
                     f"{r['bits_per_parameter']['total']:.3f} |")
    lines += ["", f"Updates: {t['up']:,} bytes up, {t['down']:,} down (one downlink message per round; the benchmark "
                  f"counts it once per client: {t['benchmark_bytes_down']:,}), {t['ratio_vs_float32_updates']:.1f}x "
                  f"smaller than float32, {t['bits_per_parameter_updates']:.3f} bits per parameter; final accuracy "
                  f"{t['final_accuracy']:.4f}."]
    return "\n".join(lines) + "\n"


README = """# NNC incremental test material: federated learning on Fashion-MNIST

Bitstreams of ISO/IEC 15938-17 (NNR / NNC) incremental coding from the federated benchmark of nnr
(`benchmarks.federated`, method `nnr`): FedAvg with {clients} non-IID clients (Dirichlet(alpha={alpha})
label split) and {rounds} rounds of {local_steps} local SGD steps, training a CNN of {params:,}
parameters on Fashion-MNIST. Made by `{command}` with nnr {version}.{bench}

## What is here

| path | what |
|---|---|
| `base/model.nnr` | the initial global model G_0, one NNC stream, every tensor NNR_PT_RAW_FLOAT (bit-exact) |
| `client<k>/round<r>.nnr` | client k's update in round r (uplink; device_id k + 1) |
| `downlink/round<r>.nnr` | the averaged decoded client updates of round r (device_id 0) |
| `manifest.json` | entries `base` (a stream) and `client<k>`, `downlink` (sequences): per step the file and the SHA-256 (`nnr.checksum.tensor_sha256`) of every tensor nnr decodes, features read from the syntax; `material` holds the configuration (training, split, seeds, coder options), the layout (where each model tensor is in the streams' elements), and per round the accuracy, the bytes and the checksums of the rebuilt global model |
| `metrics.json`, `metrics.md` | the per-round table |

Coder (`nnr.fl.NncCoder`, options in `material.coder`): {coder}; error feedback on both ends. Each
sequence must be decoded in order by one decoder.

The reference decoder NNCodec 2.1.3 decodes the update sequences but not `base/model.nnr`: its bit
reader counts an NNR_PT_RAW_FLOAT payload's bytes as numpy.uint64, which numpy 1.x adds to the int
byte position as a float64, so the next unit's slice `bitstream[bytes_read[0]:]` raises TypeError
(a raw-float tensor decodes there only as the last unit of a stream).{reference}

## Checking it

    nnr_conformance run DIR                  # the conformance runner
    nnr_make_test_material --verify DIR      # decode everything, compare the checksums and rebuild the models

## Results

{table}
"""


def readme(m, version) -> str:
    from nnr.fl.catalog import describe_nnc
    cfg = m["config"]
    bench = (f"\n`{m['benchmark_command']}` writes the same uplink and downlink bytes under `DIR/nnr/` "
             "(it does not send the base)." if m["benchmark_command"] else "")
    ref = m.get("reference")
    reference = "" if ref is None else (
        f" Measured with {ref['decoder']}: it decodes {ref['decoded']} of {ref['entries']} entries"
        + ("" if not ref["not_decoded"] else " (not: " + ", ".join(f"`{e}`" for e in ref["not_decoded"]) + ")")
        + "; `reference_decodes` in the manifest says which.")
    return README.format(reference=reference, clients=cfg["clients"], alpha=cfg["alpha"], rounds=cfg["rounds"],
                         local_steps=cfg["local_steps"], params=m["model"]["parameters"], command=m["command"],
                         version=version, bench=bench, coder=describe_nnc(m["coder"]["options"]),
                         table=metrics_markdown(m).split("\n", 2)[2].strip())


def write_material(path, result, command, version, reference=None) -> list:
    """Write every file (the manifest last); reference(manifest, path) may fill in the reference's
    results before the manifest is written. Returns the paths."""
    written = []
    manifest = build_manifest(result, command, version)
    for rel, data in _files(result).items():
        _write(os.path.join(path, rel), data)
        written.append(os.path.join(path, rel))
    if reference is not None:
        reference(manifest, path)
    m = manifest["material"]
    metrics = {k: m[k] for k in ("command", "config", "training", "seeds", "model", "coder", "base", "rounds", "totals")}
    for name, text in (("metrics.json", _json(metrics)), ("metrics.md", metrics_markdown(m)),
                       ("README.md", readme(m, version)), ("manifest.json", _json(manifest))):
        _write(os.path.join(path, name), text)
        written.append(os.path.join(path, name))
    return written


# -- verification ------------------------------------------------------------------------------
def model_problems(path, manifest) -> list:
    """Rebuild the global model after each round from the base and the downlink steps (nnr.Decoder,
    the layout's element names) and compare it with the recorded checksums."""
    import nnr
    from nnr.checksum import tensor_sha256
    m = manifest.get("material") or {}
    layout = (m.get("model") or {}).get("layout")
    entry = next((e for e in manifest.get("entries", []) if e.get("id") == "downlink"), None)
    if not layout or entry is None or "file" not in (m.get("base") or {}):
        return ["material: no model layout, base or downlink entry to rebuild the models from"]
    try:
        with open(os.path.join(path, m["base"]["file"]), "rb") as f:
            base = nnr.Decoder().decode(f.read())
        model = {t["name"]: np.asarray(base[t["name"]], np.float32) for t in layout}
    except (OSError, KeyError, nnr.NNRError) as err:
        return [f"material.base: cannot rebuild the initial model: {type(err).__name__}: {err}"]
    problems = _compare("base", model, m["base"].get("model_sha256"), tensor_sha256)
    decoder = nnr.Decoder()
    for r, (step, row) in enumerate(zip(entry["steps"], m.get("rounds", []))):
        try:
            with open(os.path.join(path, step["file"]), "rb") as f:
                out = decoder.decode(f.read())
        except (OSError, nnr.NNRError) as err:
            return problems + [f"material round {r}: cannot rebuild the model: {type(err).__name__}: {err}"]
        for t in layout:
            if t["element"] in out:
                v = np.asarray(out[t["element"]], np.float32)
                if "offset" in t:            # the whole update as one element: this tensor's slice of it
                    v = v.reshape(-1)[t["offset"]:t["offset"] + int(np.prod(t["shape"]))]
                model[t["name"]] = model[t["name"]] + v.reshape(t["shape"])
        problems += _compare(f"round {r}", model, row.get("model_sha256"), tensor_sha256)
    return problems


def _compare(where, model, want, sha):
    if not isinstance(want, dict) or list(want) != list(model):
        return [f"material {where}: model_sha256 names {list(want or {})} differ from the layout's {list(model)}"]
    return [f"material {where}: global model tensor {n!r}: SHA-256 {sha(a)} != recorded {want[n]}"
            for n, a in model.items() if sha(a) != want[n]]
