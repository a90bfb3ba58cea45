"""The manifest-driven conformance suite (issue 4): bitstreams/manifest.json validates, every entry
passes with nnr's decoder, the generated streams are what the generator writes (nothing is
rewritten here), the syntax coverage is complete, the reports parse, and the reference decoder
reproduces every entry the manifest says it does."""
import json
import os
import xml.etree.ElementTree as ET

import pytest

from nnr.conformance import coverage, generate
from nnr.conformance.manifest import load_manifest, validate_manifest
from nnr.conformance.plugins import NnrDecodePlugin, NnrPlugin, find_reference
from nnr.conformance.report import FORMATS
from nnr.conformance.runner import FAILURES, PASS, REJECTED, SKIP, classify, run_suite

SUITE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bitstreams")
MANIFEST, ROOT = load_manifest(SUITE)
ENTRIES = MANIFEST["entries"]


def test_manifest_validates_and_is_large_enough():
    assert validate_manifest(MANIFEST, ROOT) == []
    assert len(ENTRIES) >= 150
    assert sum(e["expect"] == "reject" for e in ENTRIES) >= 30
    ids = {e["id"] for e in ENTRIES}
    assert sum(i.startswith("nncodec-2.1.3/") for i in ids) == 52
    assert sum(i.startswith("nncodec-1.x/") for i in ids) == 22


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e["id"])
def test_entry_passes_with_nnr(entry):
    (outcomes,) = NnrPlugin().run_all([entry], ROOT)
    result = classify(entry, outcomes)
    assert result.status == (REJECTED if entry["expect"] == "reject" else PASS), result.detail


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e["expect"] == "reject"], ids=lambda e: e["id"])
def test_reject_errors_name_unit_element_and_bit(entry):
    """A must-reject stream's error says where: the unit, the syntax element and the bit offset."""
    import nnr
    options = {k: (dict((n, tuple(d)) for n, d in v.items()) if k == "out_of_band" else v)
               for k, v in entry.get("decoder_options", {}).items()}
    dec = nnr.Decoder(**options)
    with pytest.raises(nnr.NNRError) as info:
        for step in entry["steps"]:
            with open(os.path.join(ROOT, step["file"]), "rb") as f:
                dec.decode(f.read())
    err = info.value
    assert err.unit_index is not None and err.element and err.bit_offset is not None, repr(str(err))


def test_generated_files_are_what_generate_writes():
    assert generate.check(ROOT) == []


def test_coverage_has_no_missing_element_or_arm():
    cov = coverage.measure(MANIFEST, ROOT)
    assert cov.missing_elements == []
    assert cov.missing_arms == []
    assert cov.missing_values == {}


def test_report_formats_parse():
    report = run_suite(SUITE, "nnr", patterns=["nnr/p1_float", "reject/size_zero", "nncodec-2.1.3/inc_tca_diff"])
    assert report.ok and len(report.results) == 3
    root = ET.fromstring(FORMATS["junit"](report))
    assert root.tag == "testsuite" and root.get("tests") == "3" and root.get("failures") == "0"
    data = json.loads(FORMATS["json"](report))
    assert data["ok"] and {r["status"] for r in data["results"]} == {PASS, REJECTED}
    md = FORMATS["md"](report)
    assert "| `nnr/p1_float` | decode | PASS |" in md


def test_runner_notices_a_wrong_checksum():
    entry = json.loads(json.dumps(next(e for e in ENTRIES if e["id"] == "nnr/p1_float")))
    entry["steps"][0]["sha256"]["w"] = "0" * 64
    (outcomes,) = NnrPlugin().run_all([entry], ROOT)
    assert classify(entry, outcomes).status == "FAIL"


def test_nnr_decode_cli_plugin_on_a_sample():
    wanted = ["nnr/p1_float", "nnr/codebook_nodq", "hls-examples/16.2_profile0_fc", "reject/payload_ends_early",
              "reject/unit_type_7", "nnr/inc_tca"]
    entries = [e for e in ENTRIES if e["id"] in wanted]
    results = [classify(e, o) for e, o in zip(entries, NnrDecodePlugin().run_all(entries, ROOT))]
    by_id = {r.id: r.status for r in results}
    assert by_id["nnr/inc_tca"] == SKIP                  # one file per process: no sequences
    assert all(s in (PASS, REJECTED) for i, s in by_id.items() if i != "nnr/inc_tca"), results


def test_reference_decodes_what_the_manifest_says():
    ref, reason = find_reference()
    if ref is None:
        pytest.skip(reason)
    report = run_suite(SUITE, "nncodec")
    bad = [(r.id, r.status, r.detail) for r in report.results if r.status in FAILURES]
    assert not bad
    ran = {r.id for r in report.results if r.status != SKIP}
    assert ran == {e["id"] for e in ENTRIES if e["reference_decodes"] is True}
