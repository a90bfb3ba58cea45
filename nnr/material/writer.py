"""The test material on disk, in the conformance suite's layout: one directory per sequence of
bitstreams, `manifest.json` (entries with per-tensor SHA-256 of what nnr decodes at each step,
and the per-round table under "material"), `metrics.json` / `metrics.md` and a `README.md`.
Also the check that the files decode back to the stored checksums. Not part of the codec."""
import hashlib
import json
import os

from nnr.fileio import atomic_output
from nnr.material.fl import VARIANT_FLAGS, config_dict, seeds_description

SUITE = "nnr-test-material"
VERSION = 1
TOP_FILES = ("manifest.json", "metrics.json", "metrics.md", "README.md")


class OutputExistsError(Exception):
    """The output directory holds files and --force was not given."""


# -- output directory -------------------------------------------------------------------------
def prepare_output_dir(path, force=False):
    """Create `path` fresh. A non-empty directory is refused unless force; with force, the files of
    earlier material listed in its manifest are removed first (nothing else is touched)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputExistsError(f"{path} exists and is not a directory")
    if os.path.isdir(path) and os.listdir(path):
        if not force:
            raise OutputExistsError(f"{path} is not empty (use --force to replace earlier material there)")
        _remove_previous(path)
    os.makedirs(path, exist_ok=True)


def _remove_previous(path):
    try:
        with open(os.path.join(path, "manifest.json")) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return
    if not isinstance(manifest, dict) or manifest.get("suite") != SUITE:
        return
    dirs = set()
    for entry in manifest.get("entries", []):
        for step in entry.get("steps", []):
            rel = os.path.normpath(str(step.get("file", "")))
            if rel.startswith("..") or os.path.isabs(rel):
                continue          # never outside the directory
            full = os.path.join(path, rel)
            if os.path.isfile(full):
                os.unlink(full)
            dirs.add(os.path.dirname(full))
    for name in TOP_FILES:
        if os.path.isfile(os.path.join(path, name)):
            os.unlink(os.path.join(path, name))
    for d in sorted(dirs, key=len, reverse=True):
        try:
            os.rmdir(d)
        except OSError:
            pass


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_output(path) as f:
        f.write(data)


def _json(obj) -> str:
    return json.dumps(obj, indent=1) + "\n"


# -- manifest ---------------------------------------------------------------------------------
def _features(stream, cfg):
    flags = VARIANT_FLAGS[stream.variant]
    feats = ["profile:1", "incremental", "put"]
    feats += ["tca"] if flags["tca"] else []
    feats += ["hdsp"] if flags["hdsp"] else []
    feats += ["dq"] if cfg.dq else []
    feats += ["row-skipping", "param-opt"]
    if any(s.omitted for s in stream.steps):
        feats.append("omitted-update")
    if stream.role == "downlink":
        feats.append("base-as-first-step")
    return feats


def _description(stream, cfg):
    flags = VARIANT_FLAGS[stream.variant]
    tools = f"TCA {'on' if flags['tca'] else 'off'}, HDSP {'on' if flags['hdsp'] else 'off'}"
    if stream.role == "uplink":
        return (f"FedAvg uplink of client {stream.client} (device_id {stream.device_id}): {cfg.rounds} model "
                f"updates (client model - global model{' + error-feedback residual' if cfg.error_feedback else ''}) "
                f"from training an MLP on scikit-learn digits; {tools}")
    return (f"FedAvg downlink (device_id {stream.device_id}): step 0 is the initial global model, steps 1..{cfg.rounds} "
            f"the averaged decoded client updates{' + error-feedback residual' if cfg.error_feedback else ''}; {tools}")


def build_manifest(result, command, version) -> dict:
    cfg = result.config
    entries = []
    for s in result.streams:
        entries.append({
            "id": s.id, "kind": "sequence",
            "steps": [{"file": st.file, "sha256": st.sha256} for st in s.steps],
            "expect": "decode", "description": _description(s, cfg), "features": _features(s, cfg),
            "profile": 1,
            "provenance": {"encoder": f"nnr {version}", "config": {
                "encoder_options": cfg.encoder_options(s.device_id),
                "encode": {"incremental": True, **VARIANT_FLAGS[s.variant]},
                "variant": s.variant, "role": s.role, "client": s.client,
                "seeds": seeds_description(cfg), "command": command}},
            "reference_decodes": None})
    return {"suite": SUITE, "version": VERSION, "entries": entries, "material": material_section(result, command, version)}


def _rounded(row):
    out = dict(row)
    if "accuracy" in out:
        out["accuracy"] = {k: round(v, 6) for k, v in row["accuracy"].items()}
    for key in ("ratio_vs_float32", "bits_per_parameter"):
        if key in out:
            out[key] = {v: {k: round(x, 4) for k, x in d.items()} for v, d in row[key].items()}
    return out


def totals(result) -> dict:
    cfg, n = result.config, result.num_parameters
    out = {}
    for v in cfg.variants:
        up = sum(r["bytes"][v]["up_total"] for r in result.rounds)
        down = sum(r["bytes"][v]["down"] for r in result.rounds)
        base = result.base["bytes"][v]
        f32 = 4 * n * cfg.rounds * (cfg.clients + 1)
        out[v] = {"base": base, "up": up, "down": down, "updates_total": up + down, "all_total": base + up + down,
                  "ratio_vs_float32_updates": round(f32 / (up + down), 4),
                  "bits_per_parameter_updates": round(8 * (up + down) / (n * cfg.rounds * (cfg.clients + 1)), 4)}
    return out


def material_section(result, command, version) -> dict:
    cfg = result.config
    files = {st.file: {"bytes": len(st.data), "sha256": hashlib.sha256(st.data).hexdigest()}
             for s in result.streams for st in s.steps}
    arch = "-".join(str(x) for x in [result.data_info["features"], *cfg.hidden, result.data_info["classes"]])
    return {
        "description": "Incremental NNC test material from a simulated federated training run (FedAvg)",
        "generator": f"nnr_make_test_material (nnr {version})",
        "command": command,
        "config": config_dict(cfg),
        "seeds": seeds_description(cfg),
        "model": {"architecture": f"MLP {arch}, ReLU, softmax cross-entropy, numpy", "tensors": result.tensors,
                  "parameters": result.num_parameters},
        "data": result.data_info,
        "protocol": {
            "aggregation": "FedAvg weighted by client sample count, over the decoded client updates",
            "base": "the initial model is the downlink's first step, coded with incremental=True; the global "
                    "model after round r is the float32 sum of the decoded base and downlink updates 0..r",
            "error_feedback": cfg.error_feedback,
            "primary_variant": cfg.variants[0],
            "variants": "the primary variant drives training; the others code the same input tensors",
            "uplink_device_id": "client index", "downlink_device_id": cfg.clients},
        "variants": {v: VARIANT_FLAGS[v] for v in cfg.variants},
        "base": _rounded(result.base),
        "rounds": [_rounded(r) for r in result.rounds],
        "totals": totals(result),
        "files": files,
    }


# -- metrics and README -----------------------------------------------------------------------
def metrics_markdown(material) -> str:
    cfg = material["config"]
    vs = cfg["variants"]
    p = vs[0]
    lines = [f"# Test material metrics", "",
             f"`{material['command']}` — {material['model']['architecture']}, "
             f"{material['model']['parameters']} parameters, {cfg['clients']} clients, {cfg['rounds']} rounds, "
             f"error feedback {'on' if cfg['error_feedback'] else 'off'}, qp {cfg['qp']}.", "",
             f"## Per round (variant `{p}`; accuracy of the global model on {material['data']['test']} test images)", "",
             "| round | acc. coded | acc. uncompressed | up bytes per client | up total | down | total | ratio vs f32 | bits/param |",
             "|---|---|---|---|---|---|---|---|---|"]
    b = material["base"]
    lines.append(f"| base | {b['accuracy'][p]:.4f} | {b['accuracy']['uncompressed']:.4f} | | | {b['bytes'][p]} | "
                 f"{b['bytes'][p]} | | |")
    for r in material["rounds"]:
        by = r["bytes"][p]
        lines.append(f"| {r['round']} | {r['accuracy'][p]:.4f} | {r['accuracy']['uncompressed']:.4f} | "
                     f"{' '.join(str(x) for x in by['up_per_client'])} | {by['up_total']} | {by['down']} | "
                     f"{by['total']} | {r['ratio_vs_float32'][p]['total']:.2f} | "
                     f"{r['bits_per_parameter'][p]['total']:.3f} |")
    lines += ["", "## Bytes per round by variant (up + down)", "",
              "| round | " + " | ".join(f"{v} ({'TCA' if VARIANT_FLAGS[v]['tca'] else 'no TCA'}"
                                        f"{', HDSP' if VARIANT_FLAGS[v]['hdsp'] else ''})" for v in vs) + " |",
              "|---|" + "---|" * len(vs)]
    lines.append("| base | " + " | ".join(str(b["bytes"][v]) for v in vs) + " |")
    for r in material["rounds"]:
        lines.append(f"| {r['round']} | " + " | ".join(str(r["bytes"][v]["total"]) for v in vs) + " |")
    t = material["totals"]
    lines.append("| updates total | " + " | ".join(f"{t[v]['updates_total']} ({t[v]['ratio_vs_float32_updates']:.2f}x, "
                                                   f"{t[v]['bits_per_parameter_updates']:.3f} bit/param)" for v in vs) + " |")
    if len(vs) > 1:
        same = all(len({r["accuracy"][v] for v in vs}) == 1 for r in material["rounds"])
        lines += ["", "All variants decode to models of the same accuracy." if same else
                  "Accuracy by variant: see metrics.json (`rounds[].accuracy`)."]
    return "\n".join(lines) + "\n"


README = """# NNC incremental test material

Bitstreams of ISO/IEC 15938-17 (NNR / NNC) incremental coding from a real, if small, training run:
FedAvg with {clients} non-IID clients and {rounds} rounds, training {arch} on scikit-learn's digits
(shipped with scikit-learn; fixed seeded train/test split, Dirichlet(alpha={alpha}) label split).
Made by `{command}` with nnr {version}.

## What is here

| path | what |
|---|---|
| `client<k>_<variant>/round<r>.nnr` | client k's update in round r (uplink; device_id k) |
| `downlink_<variant>/base.nnr` | the initial global model, the first step of the downlink sequence |
| `downlink_<variant>/round<r>.nnr` | the averaged decoded client updates of round r (device_id {clients}) |
| `manifest.json` | one `sequence` entry per stream: per step the file and the SHA-256 (`nnr.checksum.tensor_sha256`) of every tensor nnr decodes, in decoder output order, omitted all-zero updates included as zero tensors; `material` holds the configuration, seeds and the per-round table |
| `metrics.json`, `metrics.md` | per round: test accuracy of the global model (coded, and an uncompressed FedAvg run with the same seeds), bytes up / down, ratio vs float32, bits per parameter |

Variants: {variants}. The first drives the training; the others code exactly the same input tensors
with other tools, so their bytes compare like for like. Every bitstream is coded with
`nnr.Encoder(qp={qp}, nonweight_qp={nonweight_qp}, dq={dq}, device_id=...).encode(update,
incremental=True, tca=..., hdsp=...)`: parent signalling (parameter update tree), TCA and HDSP as the
variant says, all-zero updates omitted. Each stream has its own encoder and decoder state, so a
sequence must be decoded in order with one decoder from its first step. Error feedback (the
quantization residual added to the next round's update) is {ef}.

## Checking it

    nnr_conformance run DIR                  # the conformance runner
    nnr_make_test_material --verify DIR      # decode every sequence, compare the checksums (exit 1 on a mismatch)

Re-running the command above reproduces these files byte for byte on the same platform (seed {seed};
see `material.seeds`); training is float64 numpy, so another BLAS may round differently and change
the bitstreams, never whether they decode to their own checksums.

## Results (variant {primary})

{table}
"""


def readme(material, version) -> str:
    cfg = material["config"]
    md = metrics_markdown(material).split("\n", 2)[2]
    return README.format(clients=cfg["clients"], rounds=cfg["rounds"], arch=material["model"]["architecture"],
                         alpha=cfg["alpha"], command=material["command"], version=version,
                         variants=", ".join(f"`{v}` (TCA {'on' if f['tca'] else 'off'}, HDSP {'on' if f['hdsp'] else 'off'})"
                                            for v, f in material["variants"].items()),
                         qp=cfg["qp"], nonweight_qp=cfg["nonweight_qp"], dq=cfg["dq"],
                         ef="on" if cfg["error_feedback"] else "off", seed=cfg["seed"], primary=cfg["variants"][0],
                         table=md.strip().replace("\n## ", "\n### "))


def write_material(path, result, command, version, reference=None) -> list:
    """Write every file (the manifest last, so an interrupted run leaves none); reference(manifest,
    path) may fill in the reference's results before the manifest is written. Returns the paths."""
    written = []
    for s in result.streams:
        for st in s.steps:
            full = os.path.join(path, st.file)
            _write(full, st.data)
            written.append(full)
    manifest = build_manifest(result, command, version)
    if reference is not None:
        reference(manifest, path)
    m = manifest["material"]
    metrics = {k: m[k] for k in ("command", "config", "seeds", "model", "variants", "base", "rounds", "totals")}
    for name, text in (("metrics.json", _json(metrics)), ("metrics.md", metrics_markdown(m)),
                       ("README.md", readme(m, version)), ("manifest.json", _json(manifest))):
        _write(os.path.join(path, name), text)
        written.append(os.path.join(path, name))
    return written


# -- verification -----------------------------------------------------------------------------
def verify(path):
    """Decode every sequence of the manifest in `path` and compare the checksums.
    Returns (steps checked, [problem, ...]); no problems means the material is intact."""
    import nnr
    from nnr.checksum import tensor_sha256
    try:
        with open(os.path.join(path, "manifest.json")) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as err:
        return 0, [f"manifest.json: cannot read: {err}"]
    if not isinstance(manifest, dict) or not isinstance(manifest.get("entries"), list):
        return 0, ["manifest.json: no entries list"]
    files = (manifest.get("material") or {}).get("files") or {}
    checked, problems = 0, []
    for entry in manifest["entries"]:
        eid = entry.get("id", "?")
        if entry.get("kind") not in ("sequence", "stream") or entry.get("expect") != "decode":
            problems.append(f"{eid}: not a stream or sequence to decode (kind {entry.get('kind')!r}, "
                            f"expect {entry.get('expect')!r})")
            continue
        decoder = nnr.Decoder()
        for k, step in enumerate(entry.get("steps", [])):
            where = f"{eid} step {k} ({step.get('file')})"
            try:
                with open(os.path.join(path, step["file"]), "rb") as f:
                    data = f.read()
            except (OSError, KeyError, TypeError) as err:
                problems.append(f"{where}: cannot read: {err}")
                break
            want_file = files.get(step["file"], {}).get("sha256")
            if want_file is not None and hashlib.sha256(data).hexdigest() != want_file:
                problems.append(f"{where}: bitstream SHA-256 differs from material.files")
            try:
                decoded = decoder.decode(data)
            except nnr.NNRError as err:
                problems.append(f"{where}: {type(err).__name__}: {err}")
                break           # the decoder state is no longer meaningful for the later steps
            got = {name: tensor_sha256(a) for name, a in decoded.items()}
            want = step.get("sha256") or {}
            checked += 1
            if list(got) != list(want):
                problems.append(f"{where}: decoded tensors {list(got)} differ from the manifest's {list(want)}")
                continue
            for name in want:
                if got[name] != want[name]:
                    problems.append(f"{where}: tensor {name!r}: SHA-256 {got[name]} != manifest {want[name]}")
    if (manifest.get("material") or {}).get("dataset") == "fashion-mnist":
        from nnr.material.fashion_writer import model_problems
        problems += model_problems(path, manifest)
    return checked, problems


# -- the reference decoder --------------------------------------------------------------------
def record_reference(manifest, path, reference):
    """Run the reference decoder (reference: find_reference()'s answer) over the manifest's entries,
    whose files are in `path`; set each entry's reference_decodes and list under
    material.reference what it does not decode, and why."""
    from nnr.conformance.plugins import NncodecPlugin
    from nnr.conformance.runner import PASS, classify
    plugin = NncodecPlugin(reference)
    outcomes = plugin.run_all(manifest["entries"], path)
    failed = {}
    for entry, outcome in zip(manifest["entries"], outcomes):
        result = classify(entry, outcome, strict_classes=False)
        entry["reference_decodes"] = result.status == PASS
        if result.status != PASS:
            failed[entry["id"]] = f"{result.status}: {result.detail.splitlines()[0] if result.detail else ''}"
    manifest.setdefault("material", {})["reference"] = {
        "decoder": plugin.description, "entries": len(outcomes), "decoded": len(outcomes) - len(failed),
        "not_decoded": failed}
    return failed
