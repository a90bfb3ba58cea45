"""Citations of the spec notes (issue 12): every one names its document and an existing section.

Code and documents cite spec/HLS.md as `HLS §n` and spec/CABAC.md as `CABAC §n` (a range as
`HLS §13.2–13.4` or `HLS §2–§8`, a pair as `CABAC §5.1/5.2`). The scan reads every tracked text
file and reports a bare section sign, a citation of a section the document does not have, and a
mention of the file names of the notes the project was given outside the sentences that explain
where the notes come from. Inside spec/HLS.md and spec/CABAC.md a bare section number cites the
file itself and must exist there too.
"""
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIGN = "\u00a7"
DOCS = {"HLS": "spec/HLS.md", "CABAC": "spec/CABAC.md"}
SELF = {path: doc for doc, path in DOCS.items()}          # bare numbers there cite the file itself
# Copied unchanged from the project's shared conformance set (bitstreams/PROVENANCE.md): not ours to
# edit, so not scanned.
VERBATIM = {"bitstreams/nncodec-1.x/MANIFEST.md"}
# The original notes' file names may appear only in these provenance sentences: file -> the start
# of the one line that may name them.
NOTE_NAMES = re.compile(r"NNC-(?:HLS|CABAC-QUANT)\b")
NOTE_NAMES_ALLOWED = {"spec/HLS.md": "**Sources.**", "spec/CABAC.md": "**Sources.**"}
TEXT_EXT = (".py", ".pyx", ".pxd", ".h", ".c", ".md", ".syntax", ".toml", ".cfg", ".json", ".txt",
            ".sh", ".yml", ".yaml")

NUM = r"\d+[a-z]?(?:\.\d+)*"
CITATION = re.compile(rf"(?P<doc>HLS|CABAC) {SIGN}(?P<a>{NUM})(?:(?P<sep>[–/-]){SIGN}?(?P<b>{NUM}))?")
BARE = re.compile(rf"{SIGN}(?P<a>{NUM})(?:(?P<sep>[–/-]){SIGN}?(?P<b>{NUM}))?")
ITEMS = re.compile(r" items? (\d+(?:(?:, | and |, and )\d+)*)")
HEADING = re.compile(r"^(#{2,4}) (?:Appendix )?(\d+[a-z]?(?:\.\d+)*|[A-Z](?:\.\d+)?)\.? ")


def sections(path):
    """{number: body text} of the numbered headings of one notes file (code fences skipped)."""
    lines = open(os.path.join(ROOT, path), encoding="utf-8").read().split("\n")
    heads, fenced = [], False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        m = None if fenced else HEADING.match(line)
        if m:
            heads.append((i, len(m.group(1)), m.group(2)))
    out = {}
    for k, (i, level, number) in enumerate(heads):
        end = next((j for j, lv, _ in heads[k + 1:] if lv <= level), len(lines))
        out[number] = "\n".join(lines[i + 1:end])
    return out


NOTES = {doc: sections(path) for doc, path in DOCS.items()}


def has_item(body, section, item):
    """Whether a section's text has a numbered step or item `item` ("3. ..." or "- **14.3** ...")."""
    pattern = rf"^\s*(?:[-*]\s+)?(?:\*\*)?(?:{re.escape(section)}\.)?{item}(?:\.|\*\*|\))\s"
    return re.search(pattern, body, re.M) is not None


def section_problem(doc, number):
    """None if `doc` has section `number`, or a numbered step/item of it (CABAC §13.5 = step 5 of
    CABAC §13, which has no subsections); else what is wrong."""
    notes = NOTES[doc]
    if number in notes:
        return None
    parent, _, last = number.rpartition(".")
    if parent in notes and last.isdigit():
        if any(n.startswith(parent + ".") for n in notes):
            return f"{doc} {SIGN}{parent} has subsections, but no {number}"
        if has_item(notes[parent], parent, last):
            return None
        return f"{doc} {SIGN}{parent} has no step or item {last}"
    return f"{DOCS[doc]} has no section {number}"


def check_text(text, self_doc=None):
    """Problems in one file's text: [(line number, message)]."""
    problems = []
    for ln, line in enumerate(text.split("\n"), 1):
        covered = set()
        for m in CITATION.finditer(line):
            covered.update(i for i in range(m.start(), m.end()) if line[i] == SIGN)
            numbers = [m.group("a")] + ([m.group("b")] if m.group("b") else [])
            for number in numbers:
                p = section_problem(m.group("doc"), number)
                if p:
                    problems.append((ln, f"{m.group(0)!r}: {p}"))
            items = ITEMS.match(line, m.end())
            if items and not m.group("b"):
                for item in re.findall(r"\d+", items.group(1)):
                    if m.group("a") in NOTES[m.group("doc")] and \
                            not has_item(NOTES[m.group("doc")][m.group("a")], m.group("a"), item):
                        problems.append((ln, f"{m.group(0)}{items.group(0)!r}: no item {item}"))
        for i, ch in enumerate(line):
            if ch != SIGN or i in covered or line[:i].endswith(("HLS ", "CABAC ")):
                continue
            m = BARE.match(line, i)
            if self_doc is None or m is None:
                problems.append((ln, f"bare section sign: {line.strip()[:100]!r}"))
                continue
            covered.update(j for j in range(m.start(), m.end()) if line[j] == SIGN)
            for number in [m.group("a")] + ([m.group("b")] if m.group("b") else []):
                p = section_problem(self_doc, number)
                if p:
                    problems.append((ln, f"{m.group(0)!r} (in {DOCS[self_doc]} itself): {p}"))
    return problems


def tracked_files():
    """The repository's tracked text files (git ls-files; without git, a walk that skips build
    products and Cython's generated .c files)."""
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
        names = out.stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        names = []
        for folder, dirs, files in os.walk(ROOT):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("build", "__pycache__")
                       and not d.endswith(".egg-info")]
            for f in files:
                rel = os.path.relpath(os.path.join(folder, f), ROOT).replace(os.sep, "/")
                if rel.endswith(".c") and "/include/" not in rel:
                    continue
                names.append(rel)
    return sorted(n for n in names if n.endswith(TEXT_EXT) and n not in VERBATIM)


def read_text(rel):
    try:
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            return f.read()
    except (UnicodeDecodeError, FileNotFoundError):
        return None


def test_the_notes_have_their_sections():
    """The parser sees the notes' headings (a check that the scans below have something to match)."""
    assert {"0", "2.2", "7a", "8.5", "13.5", "16.11", "19"} <= set(NOTES["HLS"])
    assert {"3.9", "6.5", "13", "14.4", "15", "A.1", "B"} <= set(NOTES["CABAC"])
    assert "13.5" not in NOTES["CABAC"] and "3.9" not in NOTES["HLS"]


@pytest.mark.parametrize("text, bad", [
    ("(CABAC @6.2)", False), ("(HLS @13.5)", False), ("(CABAC @13.5)", False),
    ("CABAC @6.5.3 and CABAC @15.2", False), ("HLS @14.8", False), ("HLS @17 item 13", False),
    ("HLS @14 items 6 and 9", False), ("HLS @2–@8", False), ("CABAC @3.1–3.6", False),
    ("CABAC @5.1/5.2", False), ("HLS @7a", False), ("CABAC @A.1", False), ("`CABAC @n`", False),
    ("(@6.2)", True), ("CABAC @6.2, @6.3", True), ("NNC-" "HLS.md @8.5", True), ("the @n", True),
    ("CABAC @6.9", True), ("CABAC @17", True), ("HLS @99.1", True), ("CABAC @6.5.7", True),
    ("HLS @17 item 99", True), ("CABAC @3.1–3.12", True), ("HLS @13.5.1", True),
])
def test_the_checker(text, bad):
    """The rules on hand-made lines (@ stands for the section sign), both ways, so the scans below
    can fail."""
    text = text.replace("@", SIGN)
    assert bool(check_text(text)) == bad, check_text(text)


def test_bare_numbers_in_the_notes_cite_the_notes_themselves():
    assert check_text(f"see {SIGN}13.5", self_doc="HLS") == []
    assert check_text(f"see {SIGN}13.5", self_doc="CABAC") == []     # step 5 of CABAC @13
    assert check_text(f"see {SIGN}3.9", self_doc="HLS") != []


def test_every_citation_names_its_document_and_an_existing_section():
    files = tracked_files()
    assert "nnr_core/cabac/pytwin.py" in files and "spec/README.md" in files
    problems = []
    for rel in files:
        text = read_text(rel)
        if text is None or SIGN not in text:
            continue
        problems += [f"{rel}:{ln}: {msg}" for ln, msg in check_text(text, SELF.get(rel))]
    assert not problems, "\n".join(problems)


def test_the_original_note_files_are_named_only_where_the_notes_say_where_they_come_from():
    problems = []
    for rel in tracked_files():
        text = read_text(rel)
        if text is None:
            continue
        for ln, line in enumerate(text.split("\n"), 1):
            if NOTE_NAMES.search(line) and not line.startswith(NOTE_NAMES_ALLOWED.get(rel, "\0")):
                problems.append(f"{rel}:{ln}: {line.strip()[:100]}")
    assert not problems, "\n".join(problems)
