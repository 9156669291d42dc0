"""The documentation holds together: README length, relative links, and the DESIGN sections the code cites."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DESIGN = ROOT / "docs" / "DESIGN.md"
DOC_FILES = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
# Where the code and its docstrings may cite the design notes.
CITING = ("irwarp", "tests", "experiments", "configs", "notebooks")

# `DESIGN.md section 2`, `docs/DESIGN.md sections 1-3`, `DESIGN 4.1`, `DESIGN section 4, item 6`,
# `DESIGN.md 4.4`; line breaks (and a comment's `#`) may fall between the words.
_GAP = r"[\s#]+"
_CITATION = re.compile(
    rf"(?:docs/)?DESIGN(?:\.md)?{_GAP}(?:sections?{_GAP})?(\d+)(?:\.(\d+)|\s*-\s*(\d+))?"
    rf"(?:,{_GAP}(?:items?|points?){_GAP}(\d+)(?:\s*-\s*(\d+))?)?"
)
# Markdown links and images: [text](target) with a relative target.
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _design_sections() -> dict[int, str]:
    """Body of each numbered top-level section ``## N. Title`` of docs/DESIGN.md."""
    text = DESIGN.read_text()
    parts = re.split(r"^## (\d+)\. .*$", text, flags=re.M)
    return {int(num): body for num, body in zip(parts[1::2], parts[2::2], strict=True)}


def _has_item(body: str, section: int, item: int) -> bool:
    """Item ``item`` of a section: a numbered list entry ``M.`` or a sub-heading ``### N.M``."""
    return bool(
        re.search(rf"^{item}\. ", body, re.M) or re.search(rf"^### {section}\.{item}\b", body, re.M)
    )


def _cited(m: re.Match) -> list[tuple[int, int | None]]:
    """``(section, item)`` pairs of one citation (``item`` None for a whole section)."""
    first = int(m.group(1))
    last = int(m.group(3)) if m.group(3) else first
    out = [(section, None) for section in range(first, last + 1)]
    if m.group(2):
        out.append((first, int(m.group(2))))
    if m.group(4):
        hi = int(m.group(5)) if m.group(5) else int(m.group(4))
        out.extend((first, item) for item in range(int(m.group(4)), hi + 1))
    return out


def _citations() -> list[tuple[str, int, int | None]]:
    """``(where, section, item)`` for every citation of the design notes in code and tests."""
    found = []
    for folder in CITING:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in (".py", ".ipynb") or not path.is_file():
                continue
            text = path.read_text()
            for m in _CITATION.finditer(text):
                where = f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}"
                found.extend((where, section, item) for section, item in _cited(m))
    return found


def test_readme_is_a_short_guide():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; at most 250 (details go to docs/)"


def test_readme_test_command_is_what_ci_runs():
    """The README's test command is the line .ci/run runs, verbatim."""
    text = README.read_text()
    command = re.search(r"^# Tests:.*\n(.*)$", text, re.M).group(1).strip()
    assert command.startswith("pip install -e"), command
    ci = (ROOT / ".ci" / "run").read_text()
    # .ci/run runs it quietly in a fresh virtualenv: the same command with `-q` for pip.
    assert command.replace("pip install -e", "pip install -q -e", 1) in ci.splitlines()


def _anchors(path: pathlib.Path) -> set[str]:
    """GitHub's anchors of a markdown file's headings: lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    return {
        re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        for title in re.findall(r"^#{1,6} (.*)$", text, re.M)
    }


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    missing = []
    for target in _LINK.findall(doc.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # an absolute URL (https:, mailto:)
        name, _, anchor = target.partition("#")
        path = (doc.parent / name).resolve() if name else doc
        if not path.exists():
            missing.append(target)
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            missing.append(target)
    assert not missing, f"{doc.name}: links to missing files or headings {missing}"


def test_design_has_every_cited_section():
    assert DESIGN.is_file(), "docs/DESIGN.md is missing"
    sections = _design_sections()
    assert set(range(1, 6)) <= set(sections), f"sections 1-5 are cited; found {sorted(sections)}"
    citations = _citations()
    assert len(citations) > 20, "the citation pattern found almost nothing: is it out of date?"
    missing = []
    for where, section, item in citations:
        if section not in sections:
            missing.append(f"{where}: section {section}")
        elif item is not None and not _has_item(sections[section], section, item):
            missing.append(f"{where}: section {section}, item {item}")
    assert not missing, "docs/DESIGN.md lacks cited sections:\n" + "\n".join(missing)


def test_design_references_stay_last_and_architecture_is_marked():
    text = DESIGN.read_text()
    headings = re.findall(r"^## (\d+)\. (.*)$", text, re.M)
    assert headings[-1] == ("5", "References")
    assert "### 11.1 Method registry" in text and "### 11.2 Noise stream" in text


def test_citation_pattern_reads_every_spelling():
    samples = {
        "DESIGN.md section 2": [(2, None)],
        "docs/DESIGN.md sections 1-3": [(1, None), (2, None), (3, None)],
        "DESIGN 4.1": [(4, None), (4, 1)],
        "DESIGN.md 4.4": [(4, None), (4, 4)],
        "DESIGN.md\n    # section 4, items 2-4": [(4, None), (4, 2), (4, 3), (4, 4)],
        "DESIGN section 4, point 6": [(4, None), (4, 6)],
    }
    for text, want in samples.items():
        assert _cited(_CITATION.search(text)) == want, text


def test_readme_parts_come_in_order():
    """Set-up commands, quick start and its measured speed, methods, ..., citation (docs/ has the rest)."""
    text = README.read_text()
    assert re.search(r"## Quick start\n\n```python\n.*?```\n\nMeasured speed: \S", text, re.S), (
        "the quick start must be followed by one line 'Measured speed: ...'"
    )
    order = [
        "# Main job:",
        "# Tests:",
        "## Quick start",
        "## Methods",
        "## The main job and its outputs",
        "## Results",
        "## Benchmark",
        "## Layout",
        "## Extending",
        "## Optional dependencies",
        "## Citation and licence",
    ]
    where = [text.find(part) for part in order]
    assert -1 not in where, [p for p, w in zip(order, where, strict=True) if w < 0]
    assert where == sorted(where), "README parts out of order"
    for link in ("docs/results.md", "docs/performance.md", "docs/DESIGN.md"):
        assert f"]({link}" in text, f"README must link {link}"


def test_readme_names_every_optional_dependency_with_its_extras():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    extras: dict[str, set[str]] = {}
    for extra, packages in cfg["options.extras_require"].items():
        for line in packages.split("\n"):
            name = re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0]
            if name:
                extras.setdefault(name, set()).add(extra)
    section = README.read_text().split("## Optional dependencies", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for row in re.findall(r"^\| (.+?) \| (.+?) \| (.+?) \|$", section, re.M):
        for name in row[0].split(", "):
            rows[name] = (set(re.findall(r"`(\w+)`", row[1])), row[2])
    assert extras, "no extras found in setup.cfg"
    for name, want in extras.items():
        assert name in rows, f"README's Optional dependencies does not name {name}"
        assert rows[name][0] == want, (
            f"{name}: README says extras {rows[name][0]}, setup.cfg {want}"
        )
        assert len(rows[name][1]) > 10, f"{name}: no reason given"


def test_changelog_keeps_a_changelog_with_stream_changes_first():
    text = (ROOT / "CHANGELOG.md").read_text()
    versions = re.findall(r"^## \[([^\]]+)\]", text, re.M)
    assert versions[0] == "Unreleased", versions
    init = (ROOT / "irwarp" / "__init__.py").read_text()
    version = re.search(r'__version__ = "([^"]+)"', init).group(1)
    assert version in versions, f"__version__ {version} has no CHANGELOG section"
    for block in re.split(r"^## ", text, flags=re.M)[1:]:
        heads = re.findall(r"^### (.*)$", block, re.M)
        assert set(heads) <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
        changed = block.split("### Changed", 1)
        if len(changed) == 2:
            bullets = re.findall(r"^- (.*)$", changed[1].split("\n### ", 1)[0], re.M)
            stream = [b.startswith("Random stream") for b in bullets]
            # Changes of the random stream for the same key come first.
            assert stream == sorted(stream, reverse=True), "random-stream changes must come first"
