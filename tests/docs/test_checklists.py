"""docs/checklists.md names tests for the requirements it calls met; those tests must exist."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKLISTS = ROOT / "docs" / "checklists.md"
NAMED_TEST = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _functions_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def test_every_test_the_checklists_name_exists() -> None:
    named = NAMED_TEST.findall(CHECKLISTS.read_text(encoding="utf-8"))
    assert named, "docs/checklists.md names no test"
    problems = []
    for file_name, function in named:
        path = ROOT / file_name
        if not path.is_file():
            problems.append(f"{file_name} does not exist")
        elif function not in _functions_in(path):
            problems.append(f"{file_name} defines no {function}")
    assert not problems, problems


def test_every_row_that_says_met_names_a_test_or_a_section() -> None:
    problems = []
    for line in CHECKLISTS.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not any(cell.startswith("met") for cell in cells):
            continue
        if not NAMED_TEST.search(line) and "§" not in cells[-1]:
            problems.append(line[:80])
    assert not problems, problems
