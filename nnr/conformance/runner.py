"""Runs a suite's entries through a decoder plugin and classifies each one.

PASS                  every step decoded and every tensor's SHA-256 matches the manifest
REJECTED-AS-EXPECTED  a reject entry: the last step raised the named error class (or a subclass);
                      decoders whose errors are not nnr's (the reference, commands) only need to fail
FAIL                  a checksum or tensor-name mismatch, a reject entry that decoded, or the wrong
                      error class
ERROR                 a step the manifest expects to decode raised, or the plugin broke
SKIP                  the plugin cannot run the entry (e.g. a sequence through a one-file command),
                      or, for the reference, the manifest records that it does not decode it
"""
import fnmatch
import time
from dataclasses import dataclass, field

from nnr.conformance.manifest import error_class, load_manifest
from nnr.conformance.plugins import Skip, get_plugin

PASS, FAIL, ERROR, REJECTED, SKIP = "PASS", "FAIL", "ERROR", "REJECTED-AS-EXPECTED", "SKIP"
STATUSES = (PASS, REJECTED, FAIL, ERROR, SKIP)
FAILURES = (FAIL, ERROR)


@dataclass
class Result:
    id: str
    status: str
    detail: str = ""
    steps: int = 0
    seconds: float = 0.0
    expect: str = "decode"
    notes: list = field(default_factory=list)


@dataclass
class RunReport:
    suite: str
    decoder: str
    results: list
    seconds: float

    @property
    def counts(self):
        c = {s: 0 for s in STATUSES}
        for r in self.results:
            c[r.status] += 1
        return c

    @property
    def ok(self):
        return not any(r.status in FAILURES for r in self.results)


def _sha_matches(name, got, step):
    if step.get("sha256", {}).get(name) == got:
        return True
    # a decoder that outputs codebook tensors as float32 (nnr_decode files, other decoders)
    return step.get("sha256_float32", {}).get(name) == got


def classify(entry, outcomes, strict_classes=True):
    """Result for one entry from the plugin's step outcomes (or a Skip)."""
    eid, expect = entry["id"], entry["expect"]
    if isinstance(outcomes, Skip):
        return Result(eid, SKIP, str(outcomes), expect=expect)
    steps = entry["steps"]
    notes = [n for o in outcomes for n in o.notes]
    for k, (step, o) in enumerate(zip(steps, outcomes)):
        last = k == len(steps) - 1
        where = f"step {k}: " if len(steps) > 1 else ""
        if o.sha256 is None:
            if last and expect == "reject":
                want = entry["error_class"]
                want_cls = error_class(want)
                got_cls = error_class(o.error_class or "")
                if want in o.error_mro or (got_cls is not None and issubclass(got_cls, want_cls)):
                    return Result(eid, REJECTED, f"{o.error_class}", k + 1, expect=expect, notes=notes)
                if got_cls is None and not strict_classes:
                    return Result(eid, REJECTED, f"failed with {o.error_class} (class not compared)",
                                  k + 1, expect=expect, notes=notes)
                return Result(eid, FAIL, f"{where}raised {o.error_class}, expected {want}: {o.message[:300]}",
                              k + 1, expect=expect, notes=notes)
            return Result(eid, ERROR, f"{where}{o.error_class}: {o.message[:300]}", k + 1, expect=expect,
                          notes=notes)
        if last and expect == "reject":
            return Result(eid, FAIL, f"{where}decoded, expected {entry['error_class']}", k + 1, expect=expect,
                          notes=notes)
        want = step.get("sha256", {})
        if sorted(o.sha256) != sorted(want):
            return Result(eid, FAIL, f"{where}tensors {sorted(o.sha256)} != expected {sorted(want)}", k + 1,
                          expect=expect, notes=notes)
        bad = [n for n in want if not _sha_matches(n, o.sha256[n], step)]
        if bad:
            return Result(eid, FAIL, f"{where}checksum mismatch: {', '.join(bad[:5])}", k + 1, expect=expect,
                          notes=notes)
    if len(outcomes) < len(steps):
        return Result(eid, ERROR, f"the decoder stopped after step {len(outcomes) - 1}", len(outcomes),
                      expect=expect, notes=notes)
    return Result(eid, PASS, "", len(steps), expect=expect, notes=notes)


def select(entries, patterns=None, features=None):
    out = entries
    if patterns:
        out = [e for e in out if any(fnmatch.fnmatch(e["id"], p) for p in patterns)]
    if features:
        out = [e for e in out if all(f in e["features"] for f in features)]
    return out


def run_suite(suite_path, decoder="nnr", patterns=None, features=None, all_entries=False, plugin=None):
    """Run every (selected) entry of the suite at ``suite_path`` through ``decoder``."""
    manifest, root = load_manifest(suite_path)
    plugin = plugin or get_plugin(decoder)
    entries = select(manifest["entries"], patterns, features)
    t0 = time.perf_counter()
    results = [None] * len(entries)
    todo = []
    for n, e in enumerate(entries):
        if plugin.name == "nncodec" and not all_entries and e.get("reference_decodes") is not True:
            results[n] = Result(e["id"], SKIP, "the manifest records that the reference does not reproduce "
                                "this entry (reference_decodes %s); --all runs it anyway"
                                % str(e.get("reference_decodes")).lower(), expect=e["expect"])
        else:
            todo.append(n)
    strict = plugin.name in ("nnr", "nnr_decode")
    if todo:
        t1 = time.perf_counter()
        try:
            outcomes = plugin.run_all([entries[n] for n in todo], root)
        except Exception as err:         # the plugin itself broke: every entry is an ERROR
            outcomes = [err] * len(todo)
        per = (time.perf_counter() - t1) / len(todo)
        for n, o in zip(todo, outcomes):
            if isinstance(o, Exception) and not isinstance(o, Skip):
                results[n] = Result(entries[n]["id"], ERROR, f"plugin failure: {o}", expect=entries[n]["expect"])
            else:
                results[n] = classify(entries[n], o, strict_classes=strict)
            results[n].seconds = per
    return RunReport(manifest.get("suite", ""), getattr(plugin, "description", plugin.name), results,
                     time.perf_counter() - t0)
