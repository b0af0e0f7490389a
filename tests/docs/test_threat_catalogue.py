"""docs/threats.md has an entry for every threat id the project cites, and each entry is backed.

Ids are read only in the forms the project cites them in, so that ordinary text (RFC 8037
appendix A.4 in a test name, ASVS levels, "C1 controls") is never taken for a citation:

- after the catalogue's file name: "threats.md B6", "threats.md B1-B3, B9";
- as a whole item of a parenthesised list or of a table cell: "(A1, A2)", "(RFC 9449 §7.2; B1)",
  "| F2; RFC 9700 §4.13 |";
- at the head of a comment, a docstring or a parenthesis: "# B4: ...", "(E1: host poisoning)",
  or "G3: ..." just after a docstring's opening quotes;
- at the head of a pytest id: id="B4-typ-JWT";
- as the leading or trailing words of a test name: test_b8_..., ..._i1_i4.
"""

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / "docs" / "threats.md"
CITING = ["SPEC.md", "README.md", "docs", "server", "protocol", "clients", "tests", "bench"]
TEXT_SUFFIXES = {".py", ".md", ".json", ".html", ".txt", ".mako", ".lua", ".toml"}

ID = r"[A-K](?:1[0-9]|[1-9])(?!\d)"
RANGE = rf"{ID}(?:\s*[-\u2013]\s*{ID})?"  # a hyphen or an en dash
RANGE_LIST = rf"{RANGE}(?:\s*,\s*{RANGE})*"
# Anchored at the start of a path, so that long runs such as base64 text are scanned once.
AFTER_FILE_NAME = re.compile(rf"(?<![\w./-])([\w./-]*\.md)\s+({RANGE}(?:\s*(?:,|and)\s*{RANGE})*)")
INNERMOST_PARENTHESES = re.compile(r"\(([^()]*)\)")
COMMENT_HEAD = re.compile(rf'(?:#|"""|\()\s*({RANGE_LIST})\s*:')
PYTEST_ID = re.compile(rf'\bid=f?"({ID})-')
TEST_NAME_HEAD = re.compile(r"\bdef test_((?:[a-k](?:1[0-9]|[1-9])_)+)")
# A letter before the trailing ids, so that "rfc8037_a4" (an RFC appendix) is not one.
TEST_NAME_TAIL = re.compile(r"\bdef test_\w*?[a-z]((?:_[a-k](?:1[0-9]|[1-9]))+)\(")
LIST_SEPARATOR = re.compile(r"[,;]")
CATALOGUE_NAMES = {"threats.md", "docs/threats.md"}

ENTRY_HEADING = re.compile(rf"^### ({ID}) \S", re.MULTILINE)
ANY_HEADING = re.compile(r"^#{1,3} ", re.MULTILINE)
# The list may wrap onto following lines; a blank line ends it.
TESTS_LINE = re.compile(r"^\*\*Tests:\*\*(.*?)(?:\n\s*\n|\Z)", re.MULTILINE | re.DOTALL)
NOT_APPLICABLE_LINE = re.compile(r"^\*\*Not applicable:\*\*\s*\S", re.MULTILINE)
NAMED_TEST = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+)(?:\[([^\]]+)\])?)?`")
SPEC_SECTION_CITED = re.compile(r"SPEC\.md\s+(§\d+(?:\.\d+)?)")
SPEC_SECTION_HEADING = re.compile(r"^#{2,3} (§\d+(?:\.\d+)?) ", re.MULTILINE)


@dataclass(frozen=True)
class Citation:
    threat_id: str
    path: str
    line: int


def _expand(text: str) -> list[str]:
    """'B1-B3' is B1, B2, B3; a range across sections or running backwards is one id per end."""
    ends = re.findall(ID, text)
    if len(ends) == 2 and ends[0][0] == ends[1][0] and int(ends[0][1:]) < int(ends[1][1:]):
        section = ends[0][0]
        return [f"{section}{n}" for n in range(int(ends[0][1:]), int(ends[1][1:]) + 1)]
    return ends


def _list_items(text: str) -> list[str]:
    ids = []
    for item in LIST_SEPARATOR.split(text):
        if re.fullmatch(RANGE, item.strip()):
            ids.extend(_expand(item.strip()))
    return ids


def _citations_in(text: str) -> list[tuple[str, int]]:
    """Each cited id with the offset where it is cited."""
    found: list[tuple[str, int]] = []
    for match in AFTER_FILE_NAME.finditer(text):
        for item in re.split(r",|\band\b", match.group(2)):
            found.extend((threat_id, match.start()) for threat_id in _expand(item))
    for match in INNERMOST_PARENTHESES.finditer(text):
        found.extend((threat_id, match.start()) for threat_id in _list_items(match.group(1)))
    offset = 0
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("|"):
            for cell in line.split("|"):
                found.extend((threat_id, offset) for threat_id in _list_items(cell))
        offset += len(line)
    for match in COMMENT_HEAD.finditer(text):
        for item in match.group(1).split(","):
            found.extend((threat_id, match.start()) for threat_id in _expand(item))
    for match in PYTEST_ID.finditer(text):
        found.append((match.group(1), match.start()))
    for pattern in (TEST_NAME_HEAD, TEST_NAME_TAIL):
        for match in pattern.finditer(text):
            for word in match.group(1).strip("_").split("_"):
                found.append((word.upper(), match.start()))
    return found


# Installed packages and build output are not the project's text.
_NOT_OURS = frozenset({".venv", "node_modules", "dist"})


def _citing_files() -> list[Path]:
    files = []
    for name in CITING:
        path = ROOT / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.is_file() and p.suffix in TEXT_SUFFIXES and not _NOT_OURS & set(p.parts)
            )
    return files


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def citations() -> list[Citation]:
    cited = []
    for path in _citing_files():
        text = path.read_text(encoding="utf-8")
        for threat_id, offset in _citations_in(text):
            line = text.count("\n", 0, offset) + 1
            cited.append(Citation(threat_id=threat_id, path=_relative(path), line=line))
    return cited


def catalogue_entries() -> dict[str, str]:
    """Each entry's id and its text, up to the next heading."""
    text = CATALOGUE.read_text(encoding="utf-8")
    entries: dict[str, str] = {}
    for match in ENTRY_HEADING.finditer(text):
        following = ANY_HEADING.search(text, match.end())
        end = following.start() if following else len(text)
        threat_id = match.group(1)
        if threat_id in entries:
            pytest.fail(f"docs/threats.md has two entries for {threat_id}")
        entries[threat_id] = text[match.start() : end]
    return entries


def _functions_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def _vector_case_ids() -> set[str]:
    ids: set[str] = set()
    for path in (ROOT / "tests" / "vectors").glob("*.json"):
        ids.update(case["id"] for case in json.loads(path.read_text(encoding="utf-8"))["cases"])
    return ids


def _problems_with_named_test(file_name: str, function: str, parameter: str) -> list[str]:
    path = ROOT / file_name
    if not path.is_file():
        return [f"{file_name} does not exist"]
    if not function:
        return []
    if function not in _functions_in(path):
        return [f"{file_name} defines no {function}"]
    quoted = f'"{parameter}"'
    if (
        parameter
        and quoted not in path.read_text(encoding="utf-8")
        and parameter not in _vector_case_ids()
    ):
        return [f"{file_name}::{function} has no parameter {parameter}"]
    return []


def test_every_cited_threat_id_has_an_entry_in_the_catalogue() -> None:
    entries = catalogue_entries()
    missing = sorted(
        {f"{c.threat_id} ({c.path}:{c.line})" for c in citations() if c.threat_id not in entries}
    )
    assert not missing, f"cited but not in docs/threats.md: {missing}"


def test_the_catalogue_is_cited_by_its_own_name() -> None:
    """An id cited after the name of another file points at a file that does not hold it."""
    wrong = []
    for path in _citing_files():
        text = path.read_text(encoding="utf-8")
        for match in AFTER_FILE_NAME.finditer(text):
            if match.group(1).split("/")[-1] not in {n.split("/")[-1] for n in CATALOGUE_NAMES}:
                line = text.count("\n", 0, match.start()) + 1
                wrong.append(f"{_relative(path)}:{line}: {match.group(0)}")
    assert not wrong, f"threat ids cited from another file than docs/threats.md: {wrong}"


def test_every_entry_names_existing_tests_or_says_why_none_apply() -> None:
    problems = []
    for threat_id, entry in catalogue_entries().items():
        tests_line = TESTS_LINE.search(entry)
        if tests_line is None:
            if NOT_APPLICABLE_LINE.search(entry) is None:
                problems.append(f"{threat_id}: neither **Tests:** nor **Not applicable:**")
            continue
        named = NAMED_TEST.findall(tests_line.group(1))
        if not named:
            problems.append(f"{threat_id}: **Tests:** names no test")
        for file_name, function, parameter in named:
            problems.extend(
                f"{threat_id}: {p}"
                for p in _problems_with_named_test(file_name, function, parameter)
            )
    assert not problems, problems


def test_every_entry_cites_a_section_of_the_spec_that_exists() -> None:
    sections = set(SPEC_SECTION_HEADING.findall((ROOT / "SPEC.md").read_text(encoding="utf-8")))
    problems = []
    for threat_id, entry in catalogue_entries().items():
        cited = SPEC_SECTION_CITED.findall(entry)
        if not cited:
            problems.append(f"{threat_id}: cites no SPEC.md section")
        problems.extend(f"{threat_id}: no {s} in SPEC.md" for s in cited if s not in sections)
    assert not problems, problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("see threats.md B6.", ["B6"], id="after-the-file-name"),
        pytest.param("(threats.md B1-B3, B9)", ["B1", "B2", "B3", "B9"], id="range-and-list"),
        pytest.param("refused (A1, A2).", ["A1", "A2"], id="parenthesised-list"),
        pytest.param("(RFC 9449 §7.2; B1)", ["B1"], id="beside-other-references"),
        pytest.param("(D1,\n   D5)", ["D1", "D5"], id="list-across-lines"),
        pytest.param("| 60 s | F2; RFC 9700 §4.13 |", ["F2"], id="table-cell"),
        pytest.param('    """G3: the grace window."""', ["G3"], id="docstring-head"),
        pytest.param("# B4: typ first", ["B4"], id="comment-head"),
        pytest.param("links (E1: host poisoning)", ["E1"], id="parenthesis-head"),
        pytest.param("(threats.md A10, B11)", ["A10", "B11"], id="two-digit-ids"),
        pytest.param('pytest.param({}, id="B4-typ-JWT")', ["B4"], id="pytest-id"),
        pytest.param("def test_b10_g4_refresh(", ["B10", "G4"], id="test-name-head"),
        pytest.param("def test_outage_is_survived_i1_i4(", ["I1", "I4"], id="test-name-tail"),
        pytest.param("def test_eddsa_signatures_rfc8037_a4(", [], id="rfc-appendix-in-a-name"),
        pytest.param("C0 and C1 controls (CR, LF)", [], id="control-character-sets"),
        pytest.param("A4 paper and cell B2 (see A1 above)", [], id="ordinary-text"),
        pytest.param("ASVS (L1, V6) and 0xE1 (0xB4)", [], id="levels-and-hex"),
        pytest.param("## H2 heading", [], id="markdown-heading"),
    ],
)
def test_ids_are_read_only_in_citation_forms(text: str, expected: list[str]) -> None:
    assert sorted({threat_id for threat_id, _ in _citations_in(text)}) == sorted(expected)
