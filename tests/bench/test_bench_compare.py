"""`python -m bench.compare`: the report it makes from given rounds, the order of the trees'
turns, and servers that run the code of the tree they were started for. No time is asserted."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench import compare, comparison, deploy, logins, procs, protected
from bench.orders import rounds_of_turns

ROOT = Path(__file__).resolve().parents[2]


def _figure(
    old: tuple[float, ...], new: tuple[float, ...], *, higher_is_better: bool = True
) -> comparison.Figure:
    return comparison.Figure(
        section="logins, sqlite",
        name="completed logins/s" if higher_is_better else "start p99, ms",
        unit="logins/s" if higher_is_better else "ms",
        higher_is_better=higher_is_better,
        old=old,
        new=new,
    )


OLD_ROUNDS = (100.0, 90.0, 110.0, 105.0, 95.0, 100.0)


def test_a_figure_reports_both_medians_their_ratio_and_the_old_trees_spread() -> None:
    result = comparison.compare(_figure(OLD_ROUNDS, (99.0, 102.0, 101.0, 100.0, 98.0, 103.0)))
    assert (result.old_median, result.new_median) == (100.0, 100.5)
    assert result.ratio == pytest.approx(1.005)
    # The old tree's rounds run from 90 to 110 around their median of 100.
    assert (result.noise_low_pct, result.noise_high_pct) == pytest.approx((-10.0, 10.0))
    assert result.noise_pct == pytest.approx(20.0)
    assert result.verdict == "within noise"
    data = result.to_json()
    assert data["old_rounds"] == list(OLD_ROUNDS) and data["ratio"] == 1.005
    assert (data["noise_pct"], data["verdict"]) == (20.0, "within noise")
    json.dumps(data)


@pytest.mark.parametrize(
    ("new", "higher_is_better", "verdict"),
    [
        ((80.0,) * 6, True, "slower by 20.0 %"),
        ((120.0,) * 6, True, "faster by 20.0 %"),
        ((120.0,) * 6, False, "slower by 20.0 %"),
        ((80.0,) * 6, False, "faster by 20.0 %"),
        ((110.0,) * 6, True, "within noise"),
        ((90.0,) * 6, False, "within noise"),
    ],
)
def test_a_new_median_outside_the_old_trees_rounds_is_slower_or_faster_by_its_distance(
    new: tuple[float, ...], higher_is_better: bool, verdict: str
) -> None:
    # A rate that drops is slower; a latency that grows is slower. On the edge of the old
    # tree's rounds is still within them.
    result = comparison.compare(_figure(OLD_ROUNDS, new, higher_is_better=higher_is_better))
    assert result.verdict == verdict


def test_a_figure_without_rounds_to_compare_gets_no_verdict() -> None:
    assert comparison.compare(_figure((100.0,), (50.0,))).verdict.startswith("undecided")
    with pytest.raises(ValueError, match="no rounds"):
        comparison.compare(_figure((), (100.0,)))
    with pytest.raises(ValueError, match="old median"):
        comparison.compare(_figure((0.0, 0.0), (100.0, 100.0)))


def _login_result(rates: list[float], p50: list[float], p99: list[float]) -> dict[str, Any]:
    turns = [{"count": 200, "p50": a, "p99": b} for a, b in zip(p50, p99, strict=True)]
    return {
        "workers": 2,
        "concurrency": 64,
        "turns_logins_per_second": rates,
        "turns_latency_ms": {"start": turns, "complete": [*turns, {"count": 0}]},
    }


def test_the_figures_are_each_rounds_values_of_both_trees() -> None:
    measured = {
        "workers": 1,
        "connections": 32,
        "backend": "sqlite",
        protected.target_name("EdDSA", "old"): {"rounds_rate": [1000.0, 1100.0]},
        protected.target_name("EdDSA", "new"): {"rounds_rate": [900.0, 950.0]},
        protected.target_name("ES256", "old"): {"rounds_rate": [800.0, 820.0]},
        protected.target_name("ES256", "new"): {"rounds_rate": [810.0, 805.0]},
    }
    figures = comparison.protected_figures(measured, old="old", new="new")
    assert [(f.name, f.old, f.new) for f in figures] == [
        ("EdDSA, requests/s", (1000.0, 1100.0), (900.0, 950.0)),
        ("ES256, requests/s", (800.0, 820.0), (810.0, 805.0)),
    ]
    assert all(f.higher_is_better for f in figures)

    results = {
        "sqlite-old": _login_result([400.0, 420.0], [10.0, 12.0], [40.0, 44.0]),
        "sqlite-new": _login_result([380.0, 390.0], [11.0, 13.0], [50.0, 52.0]),
    }
    figures = comparison.login_figures(results, "sqlite", old="old", new="new")
    by_name = {figure.name: figure for figure in figures}
    assert list(by_name) == [
        "completed logins/s",
        "start p50, ms",
        "start p99, ms",
        "completion p50, ms",
        "completion p99, ms",
    ]
    assert by_name["completed logins/s"].old == (400.0, 420.0)
    assert by_name["start p99, ms"].new == (50.0, 52.0)
    # A turn without an answer has no percentile to take.
    assert by_name["completion p50, ms"].old == (10.0, 12.0)
    assert not by_name["start p50, ms"].higher_is_better
    assert {figure.section for figure in figures} == {"logins, 2 workers, 64 connections, sqlite"}

    page = comparison.table([comparison.compare(figure) for figure in figures])
    assert "| **logins, 2 workers, 64 connections, sqlite** |" in page
    assert "| start p99, ms | 42.00 | 51.00 | 1.214 | -4.8 .. +4.8 % | slower by 21.4 % |" in page


@pytest.mark.parametrize("rounds", [2, 4, compare.ROUNDS, 8, 12])
def test_each_tree_goes_first_in_as_many_rounds_as_the_other(rounds: int) -> None:
    # The servers of one figure, side by side in the order the turns are drawn from; the
    # turns of a round follow a balanced order, so that neither tree always has the first
    # turn (a fresher machine, or the other's leftover work).
    labels = list(compare.LABELS)
    for names in (
        protected.target_names(["EdDSA", "ES256"], labels),
        logins.server_names(["sqlite", "postgresql"], labels),
        logins.server_names(["sqlite"], labels),
    ):
        turns = rounds_of_turns(len(names), rounds)
        assert len(turns) == rounds
        assert all(sorted(order) == list(range(len(names))) for order in turns)
        for old in range(0, len(names), 2):
            old_first = sum(order.index(old) < order.index(old + 1) for order in turns)
            assert old_first == rounds // 2, (names[old], turns)


def test_without_trees_the_names_and_orders_stay_as_they_were() -> None:
    assert protected.target_names(["EdDSA", "ES256"], [None]) == ["me_EdDSA", "me_ES256"]
    assert logins.server_names(["sqlite", "postgresql"], [None]) == ["sqlite", "postgresql"]
    assert rounds_of_turns(3, 4, balanced=False) == [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]


FAKE_APP = """
import os

import protocol
import server
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


async def where(request):
    return JSONResponse(
        {"server": server.__file__, "protocol": protocol.__file__, "cwd": os.getcwd()}
    )


def create_app_from_environment():
    return Starlette(routes=[Route("/.well-known/jwks.json", where)])
"""

FAKE_CLI = """
import os
import pathlib

import server


def main():
    pathlib.Path(os.environ["BENCH_TEST_MARKER"]).write_text(server.__file__)
"""


def _fake_tree(root: Path) -> procs.Tree:
    """A tree whose server only says where its code came from."""
    for package in ("server", "protocol"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "server" / "app.py").write_text(textwrap.dedent(FAKE_APP))
    (root / "server" / "cli.py").write_text(textwrap.dedent(FAKE_CLI))
    return procs.Tree.at(root)


def test_a_server_started_for_a_tree_imports_that_trees_code(tmp_path: Path) -> None:
    tree = _fake_tree(tmp_path / "tree")
    assert tree.python == Path(sys.executable)  # no .venv of its own: this one
    with procs.running("splitlink", workdir=tmp_path / "work", tree=tree) as server:
        where = httpx.get(server.url + "/.well-known/jwks.json", timeout=10).json()
        assert server.code == tree.root / "server" / "__init__.py"
    assert Path(where["server"]) == tree.root / "server" / "__init__.py"
    assert Path(where["protocol"]) == tree.root / "protocol" / "__init__.py"
    assert Path(where["cwd"]) == tree.root
    # The migrations are the tree's too.
    marker = tmp_path / "migrated-by"
    procs.migrate({**os.environ, "BENCH_TEST_MARKER": str(marker)}, tree=tree)
    assert Path(marker.read_text()) == tree.root / "server" / "__init__.py"


def test_a_server_whose_code_would_come_from_elsewhere_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no server code"):
        procs.Tree.at(tmp_path)
    # Without server code of its own, `server` would be found in this tree's installation.
    elsewhere = procs.Tree(root=tmp_path, python=Path(sys.executable))
    with (
        pytest.raises(RuntimeError, match="not from"),
        procs.running("splitlink", workdir=tmp_path / "work", tree=elsewhere),
    ):
        pass


def test_the_splitlink_server_of_a_copied_tree_serves_from_the_copy(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    for package in ("server", "protocol"):
        shutil.copytree(
            ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    tree = procs.Tree.at(root)
    with deploy.splitlink(tmp_path / "work", "sqlite", workers=1, tree=tree) as server:
        assert server.code == root.resolve() / "server" / "__init__.py"
        assert httpx.get(server.url + "/.well-known/jwks.json", timeout=10).status_code == 200


def test_the_results_name_no_path_of_the_machine_that_ran_them(tmp_path: Path) -> None:
    from bench.compare import _named_trees

    shown = _named_trees(["--old", "work/old", "--new=work/new", "--old-name", "v1"])
    assert shown == ["--old", "OLD", "--new=NEW", "--old-name", "v1"]
    tree = _fake_tree(tmp_path / "tree")
    assert tree.where(tree.root / "server" / "__init__.py") == "server/__init__.py"
