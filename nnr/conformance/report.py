"""Reports of a conformance run: a Markdown table, JUnit XML (CI), JSON."""
import json
import xml.etree.ElementTree as ET

from nnr.conformance.runner import ERROR, FAIL, SKIP, STATUSES


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(report, verbose=True):
    c = report.counts
    lines = [f"# Conformance: {report.suite} with {report.decoder}", "",
             " | ".join(f"{s} {c[s]}" for s in STATUSES) + f" | {len(report.results)} entries, "
             f"{report.seconds:.1f} s", ""]
    rows = report.results if verbose else [r for r in report.results if r.status in (FAIL, ERROR)]
    if rows:
        lines += ["| entry | expect | result | detail |", "|---|---|---|---|"]
        for r in rows:
            detail = r.detail + (f" ({'; '.join(r.notes)})" if r.notes else "")
            lines.append(f"| `{r.id}` | {r.expect} | {r.status} | {_cell(detail)} |")
    return "\n".join(lines) + "\n"


def junit(report):
    c = report.counts
    suite = ET.Element("testsuite", name=f"nnr-conformance:{report.suite}", tests=str(len(report.results)),
                       failures=str(c[FAIL]), errors=str(c[ERROR]), skipped=str(c[SKIP]),
                       time=f"{report.seconds:.3f}")
    ET.SubElement(ET.SubElement(suite, "properties"), "property", name="decoder", value=report.decoder)
    for r in report.results:
        group, _, name = r.id.rpartition("/")
        case = ET.SubElement(suite, "testcase", classname=group or report.suite, name=name or r.id,
                             time=f"{r.seconds:.3f}")
        if r.status == FAIL:
            ET.SubElement(case, "failure", message=r.detail[:200], type="FAIL").text = r.detail
        elif r.status == ERROR:
            ET.SubElement(case, "error", message=r.detail[:200], type="ERROR").text = r.detail
        elif r.status == SKIP:
            ET.SubElement(case, "skipped", message=r.detail[:200])
        elif r.detail or r.notes:
            ET.SubElement(case, "system-out").text = f"{r.status}: {r.detail} {'; '.join(r.notes)}".strip()
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


def as_json(report):
    return json.dumps({"suite": report.suite, "decoder": report.decoder, "seconds": round(report.seconds, 3),
                       "counts": report.counts, "ok": report.ok,
                       "results": [{"id": r.id, "status": r.status, "expect": r.expect, "detail": r.detail,
                                    "notes": r.notes, "steps": r.steps} for r in report.results]},
                      indent=1) + "\n"


FORMATS = {"md": markdown, "junit": junit, "json": as_json}
