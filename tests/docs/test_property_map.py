"""SPEC.md §14 maps each security property to its argument and to tests that exist.

A property whose tests were renamed or deleted would still read as proven; these checks keep the
map honest: every row names at least one test, every named test is a function of its file, and
every section it rests on is a section of SPEC.md.
"""

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "SPEC.md"
MAP_HEADING = "## §14 Property map"
ROW = re.compile(r"^\| (P\d+) \| (.+?) \| (.+?) \| (.*) \|$", re.MULTILINE)
NAMED_TEST = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
SECTION_CITED = re.compile(r"(?<![\w.])(§\d+(?:\.\d+)?)")
SECTION_HEADING = re.compile(r"^#{2,3} (§\d+(?:\.\d+)?) ", re.MULTILINE)
LEAST_PROPERTIES = 12


@dataclass(frozen=True)
class Property:
    number: str
    rests_on: str
    tests: tuple[tuple[str, str], ...]


def _map_text() -> str:
    text = SPEC.read_text(encoding="utf-8")
    start = text.index(MAP_HEADING)
    following = text.find("\n## ", start + len(MAP_HEADING))
    return text[start : following if following != -1 else len(text)]


def properties() -> list[Property]:
    return [
        Property(
            number=m.group(1), rests_on=m.group(3), tests=tuple(NAMED_TEST.findall(m.group(4)))
        )
        for m in ROW.finditer(_map_text())
    ]


def _functions_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def test_the_map_holds_at_least_twelve_numbered_properties() -> None:
    numbers = [p.number for p in properties()]
    assert len(numbers) >= LEAST_PROPERTIES, numbers
    assert len(set(numbers)) == len(numbers), f"a property number is used twice: {numbers}"


def test_every_property_names_tests_that_exist() -> None:
    problems = []
    for prop in properties():
        if not prop.tests:
            problems.append(f"{prop.number} names no test")
        for file_name, function in prop.tests:
            path = ROOT / file_name
            if not path.is_file():
                problems.append(f"{prop.number}: {file_name} does not exist")
            elif function not in _functions_in(path):
                problems.append(f"{prop.number}: {file_name} defines no {function}")
    assert not problems, problems


def test_every_property_rests_on_sections_that_exist() -> None:
    sections = set(SECTION_HEADING.findall(SPEC.read_text(encoding="utf-8")))
    problems = []
    for prop in properties():
        cited = SECTION_CITED.findall(prop.rests_on)
        if not cited:
            problems.append(f"{prop.number} rests on no section")
        problems.extend(f"{prop.number}: no {s} in SPEC.md" for s in cited if s not in sections)
    assert not problems, problems
