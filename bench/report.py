"""The one table `make bench` prints, the rows stored in the JSON, the chart and the page."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TARGETS = {
    "me_eddsa_vs_bare": 0.40,
    "me_es256_vs_p256": 0.85,
    "logins_per_second": 400.0,
    "growth_p99": 1.25,
    "rss_growth": 1.10,
}
OPERATIONS = {"start": "start", "complete": "completion", "refresh": "refresh", "me": "/v1/me"}


@dataclass
class Row:
    section: str
    figure: str
    value: float | None
    unit: str
    baseline_name: str = ""
    baseline: float | None = None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""
    # CPU (cores) other processes took while the figure, and its baseline, were measured.
    other: float | None = None
    other_baseline: float | None = None
    # "noisy": the verdict is within the run-to-run noise measured beside it.
    caveat: str = ""

    def cells(self) -> list[str]:
        if self.value is None:
            value = "error" if self.note.startswith("error") else "not run"
        else:
            value = f"{_number(self.value)} {self.unit}".strip()
        baseline = self.baseline_name
        if self.baseline is not None:
            baseline += f" {_number(self.baseline)} {self.unit}".rstrip()
        ratio = (
            ""
            if self.ratio is None
            else f"{self.ratio:.2f}"
            if self.ratio >= 0.1
            else f"{self.ratio:.3f}"
        )
        met = {True: "yes", False: "**no**", None: ""}[self.met]
        if self.caveat:
            met = f"{met} ({self.caveat})" if met else self.caveat
        other = "" if self.other is None else f"{self.other:.2f}"
        if self.other_baseline is not None:
            other += f" / {self.other_baseline:.2f}"
        return [self.section, self.figure, value, baseline.strip(), ratio, self.target, met, other]


def _with_other(row: Row, other: float | None, baseline: float | None = None) -> Row:
    row.other, row.other_baseline = other, baseline
    return row


def _number(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if float(value).is_integer() and abs(value) < 100:
        return str(int(value))
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or baseline is None or baseline == 0:
        return None
    return value / baseline


def _at_least(ratio: float | None, target: float) -> bool | None:
    return None if ratio is None else ratio >= target


def _at_most(ratio: float | None, target: float) -> bool | None:
    return None if ratio is None else ratio <= target


def protected_rows(p: dict[str, Any]) -> list[Row]:
    section = f"/v1/me, 1 worker, {p.get('backend', 'sqlite')}"

    def rate(name: str) -> float | None:
        entry = p.get(name)
        return entry["rate"] if entry else None

    def cpu(name: str) -> float | None:
        entry = p.get(name)
        return entry["server_cpu_us_per_request"] if entry else None

    rows = []
    ratio = _ratio(rate("me_EdDSA"), rate("bare"))
    rows.append(
        Row(
            section,
            "GET /v1/me, EdDSA proofs",
            rate("me_EdDSA"),
            "req/s",
            "bare Starlette",
            rate("bare"),
            ratio,
            f">= {TARGETS['me_eddsa_vs_bare']:.2f}",
            _at_least(ratio, TARGETS["me_eddsa_vs_bare"]),
        )
    )
    ratio = _ratio(rate("me_ES256"), rate("p256"))
    rows.append(
        Row(
            section,
            "GET /v1/me, ES256 proofs",
            rate("me_ES256"),
            "req/s",
            "bare + 1 P-256 verify",
            rate("p256"),
            ratio,
            f">= {TARGETS['me_es256_vs_p256']:.2f}",
            _at_least(ratio, TARGETS["me_es256_vs_p256"]),
        )
    )
    rows.append(
        Row(
            section,
            "GET /v1/me, EdDSA proofs",
            rate("me_EdDSA"),
            "req/s",
            "bare + 1 Ed25519 verify",
            rate("ed25519"),
            _ratio(rate("me_EdDSA"), rate("ed25519")),
            "orientation",
        )
    )
    for name, label in (("ed25519", "Ed25519"), ("p256", "P-256")):
        rows.append(
            Row(
                section,
                f"bare + 1 {label} verify",
                rate(name),
                "req/s",
                "bare Starlette",
                rate("bare"),
                _ratio(rate(name), rate("bare")),
                "orientation",
            )
        )
    # The least that the checks of /v1/me cost (bench/apps.py): each against its target's
    # baseline, so that it reads against the target's ratio.
    for name, label, baseline_name, baseline, target in (
        ("ed25519_stored", "Ed25519", "bare Starlette", "bare", "me_eddsa_vs_bare"),
        ("p256_stored", "P-256", "bare + 1 P-256 verify", "p256", "me_es256_vs_p256"),
    ):
        rows.append(
            Row(
                section,
                f"floor: {label} verify + replay entry + session read",
                rate(name),
                "req/s",
                baseline_name,
                rate(baseline),
                _ratio(rate(name), rate(baseline)),
                f"floor of >= {TARGETS[target]:.2f}",
            )
        )
    rows.append(
        Row(
            section,
            "server CPU per request, EdDSA",
            cpu("me_EdDSA"),
            "us",
            "bare Starlette",
            cpu("bare"),
            _ratio(cpu("me_EdDSA"), cpu("bare")),
            "orientation",
        )
    )
    rows.append(
        Row(
            section,
            "server CPU per request, ES256",
            cpu("me_ES256"),
            "us",
            "bare + 1 P-256 verify",
            cpu("p256"),
            _ratio(cpu("me_ES256"), cpu("p256")),
            "orientation",
        )
    )

    def other(name: str) -> float | None:
        entry = p.get(name)
        return entry.get("other_cpu_cores") if entry else None

    pairs = [
        ("me_EdDSA", "bare"),
        ("me_ES256", "p256"),
        ("me_EdDSA", "ed25519"),
        ("ed25519", "bare"),
        ("p256", "bare"),
        ("ed25519_stored", "bare"),
        ("p256_stored", "p256"),
        ("me_EdDSA", "bare"),
        ("me_ES256", "p256"),
    ]
    for row, (name, reference) in zip(rows, pairs, strict=True):
        _with_other(row, other(name), other(reference))
    for name in ("me_EdDSA", "me_ES256"):
        entry = p.get(name)
        if entry and (entry["non_2xx"] or entry["socket_errors"] or entry["pool_exhausted"]):
            rows[0].note += f"{name}: {entry['non_2xx']} refused, {entry['socket_errors']} errors. "
    return rows


def login_rows(logins: dict[str, Any]) -> list[Row]:
    rows = []
    sqlite = logins.get("sqlite") or {}
    postgres = logins.get("postgresql") or {}
    target = TARGETS["logins_per_second"]
    sqlite_other = (sqlite.get("cpu") or {}).get("other_cpu_cores")
    for backend, entry in (("sqlite", sqlite), ("postgresql", postgres)):
        section = f"logins, 2 workers, {backend}"
        if not entry or "error" in entry or "skipped" in entry:
            note = entry.get("error") or entry.get("skipped") or "" if entry else ""
            rows.append(Row(section, "completed logins/s", None, "", note=note))
            continue
        first = len(rows)
        value = entry["logins_per_second"]
        if backend == "sqlite":
            rows.append(
                Row(
                    section,
                    "completed logins/s",
                    value,
                    "/s",
                    "target",
                    target,
                    _ratio(value, target),
                    ">= 1.00",
                    _at_least(_ratio(value, target), 1.0),
                    note=_incomplete(entry),
                )
            )
        else:
            base = sqlite.get("logins_per_second")
            ratio = _ratio(value, base)
            met = None if ratio is None else ratio >= 1.0 and value >= target
            rows.append(
                Row(
                    section,
                    "completed logins/s",
                    value,
                    "/s",
                    "sqlite",
                    base,
                    ratio,
                    f">= 1.00 and >= {target:.0f}/s",
                    met,
                    note=_incomplete(entry),
                )
            )
        with_mail = entry.get("with_mail_logins_per_second")
        if with_mail is not None:
            rows.append(
                Row(
                    section,
                    "logins/s, mail wait counted",
                    with_mail,
                    "/s",
                    "completed logins/s",
                    value,
                    _ratio(with_mail, value),
                    "orientation",
                )
            )
        fewer = entry.get("fewer_connections")
        if fewer:
            rows.append(
                Row(
                    section,
                    f"completed logins/s, {fewer['concurrency']} connections",
                    fewer["logins_per_second"],
                    "/s",
                    f"{entry['concurrency']} connections",
                    value,
                    _ratio(fewer["logins_per_second"], value),
                    "orientation",
                )
            )
        # What a login costs the machine's cores: on SQLite the database works inside the
        # workers, on PostgreSQL its server adds its own share.
        cpu = _login_cpu(entry)
        if cpu is not None:
            base_cpu = None if backend == "sqlite" else _login_cpu(sqlite)
            rows.append(
                Row(
                    section,
                    "CPU per login, workers + database",
                    cpu,
                    "ms",
                    "" if base_cpu is None else "sqlite",
                    base_cpu,
                    _ratio(cpu, base_cpu),
                    "orientation",
                )
            )
        for phase, label in (("start", "start"), ("complete", "completion")):
            for q in ("p50", "p99"):
                latency = entry[phase]["latency_ms"].get(q)
                base = (sqlite.get(phase) or {}).get("latency_ms", {}).get(q)
                if backend == "sqlite":
                    rows.append(Row(section, f"{label} latency {q}", latency, "ms"))
                else:
                    rows.append(
                        Row(
                            section,
                            f"{label} latency {q}",
                            latency,
                            "ms",
                            "sqlite",
                            base,
                            _ratio(latency, base),
                            "orientation",
                        )
                    )
        other = entry["cpu"]["other_cpu_cores"]
        for row in rows[first:]:
            _with_other(row, other, None if backend == "sqlite" else sqlite_other)
    return rows


def _login_cpu(entry: dict[str, Any]) -> float | None:
    workers = entry.get("server_cpu_ms_per_login")
    if workers is None:
        return None
    return round(workers + (entry.get("database_cpu_ms_per_login") or 0.0), 2)


def _incomplete(entry: dict[str, Any]) -> str:
    if entry["completed"] == entry["logins"]:
        return ""
    return f"{entry['completed']} of {entry['logins']} logins completed"


def growth_rows(growth: dict[str, Any]) -> list[Row]:
    rows = []
    target = TARGETS["growth_p99"]
    for backend, entry in growth.items():
        if not entry or "runs" not in entry:
            note = (entry or {}).get("error") or (entry or {}).get("skipped", "")
            rows.append(Row(f"growth, {backend}", "p99 latency", None, "", note=note))
            continue
        empty = entry["runs"][0]
        # The empty database measured again: a p99 that moved more than the allowed ratio by
        # itself makes every verdict of that operation noisy.
        again = [run for run in entry["runs"][1:] if not run["users"]]
        noisy = {
            op: any(
                (r := _ratio(run["p99_ms"][op], empty["p99_ms"][op])) is not None
                and not 1 / target <= r <= target
                for run in again
            )
            for op in OPERATIONS
        }
        level = entry.get("interval_level")
        for run in entry["runs"][1:]:
            # An empty database measured again: the run-to-run noise of these p99s.
            users = f"{run['users']:,} users" if run["users"] else "empty db again"
            section = f"growth, {backend}, {users}"
            spans = run.get("p99_ratio_interval") or {}
            for op, label in OPERATIONS.items():
                value, base = run["p99_ms"][op], empty["p99_ms"][op]
                ratio = _ratio(value, base)
                noise = not run["users"]
                interval = spans.get(op)
                rows.append(
                    _with_other(
                        Row(
                            section,
                            f"{label} p99",
                            value,
                            "ms",
                            "empty db",
                            base,
                            ratio,
                            "noise" if noise else f"<= {target:.2f}",
                            None if noise else _at_most(ratio, target),
                        ),
                        run["cpu"]["other_cpu_cores"],
                        empty["cpu"]["other_cpu_cores"],
                    )
                )
                if interval is not None and level is not None:
                    low, high = interval
                    rows[-1].caveat = f"{100 * level:.0f} % interval {low:.2f}-{high:.2f}"
                    if not noise:
                        # Decided only where the whole interval is on one side of the limit.
                        rows[-1].met = True if high <= target else False if low > target else None
                        if rows[-1].met is None:
                            rows[-1].caveat = "undecided, " + rows[-1].caveat
                elif run["users"] and noisy[op]:
                    rows[-1].caveat = "noisy"
    return rows


def memory_rows(memory: dict[str, Any]) -> list[Row]:
    if not memory or "workers" not in memory:
        note = (memory or {}).get("error") or (memory or {}).get("skipped", "")
        return [Row("memory", "worker RSS", None, "", note=note)]
    target = TARGETS["rss_growth"]
    section = f"memory, {memory['seconds']:.0f} s soak, 2 workers"
    rows = []
    for worker in memory["workers"]:
        ratio = _ratio(worker["rss_end_mb"], worker["rss_start_mb"])
        rows.append(
            _with_other(
                Row(
                    section,
                    f"worker {worker['worker']} RSS at end",
                    worker["rss_end_mb"],
                    "MB",
                    f"at {memory['baseline_at_seconds']:.0f} s",
                    worker["rss_start_mb"],
                    ratio,
                    f"<= {target:.2f}",
                    False if worker.get("exited") else _at_most(ratio, target),
                    note="error: the worker exited during the soak"
                    if worker.get("exited")
                    else _soak_note(memory, worker),
                ),
                memory["cpu"]["other_cpu_cores"],
            )
        )
    return rows


def _soak_note(memory: dict[str, Any], worker: dict[str, Any]) -> str:
    notes = []
    slope = worker.get("slope_mb_per_minute")
    if slope is not None:
        notes.append(f"after the warm-up RSS changed by {slope:+.2f} MB/min")
    statuses = memory.get("load", {}).get("statuses", {})
    refused = sum(n for key, n in statuses.items() if not key.rsplit(":", 1)[1].startswith("2"))
    if refused:
        notes.append(f"{refused} of {sum(statuses.values())} soak requests were refused")
    return "; ".join(notes)


def rows_for(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    if "protected" in results:
        p = results["protected"]
        if "error" in p or "skipped" in p:
            rows.append(Row("/v1/me", "throughput", None, "", note=p.get("error") or p["skipped"]))
        else:
            rows += protected_rows(p)
        for extra in results.get("protected_extra", []):
            if "error" in extra:
                rows.append(Row("/v1/me, postgresql", "throughput", None, "", note=extra["error"]))
                continue
            # Against the references measured above, on SQLite: they use no database.
            references = {k: p.get(k) for k in ("bare", "ed25519", "p256")}
            rows += protected_rows({**references, **extra})[:1]
    if "logins" in results:
        rows += login_rows(results["logins"])
    if "growth" in results:
        rows += growth_rows(results["growth"])
    if "memory" in results:
        rows += memory_rows(results["memory"])
    noise = background_cpu(results)
    if noise is not None:
        cores = results.get("machine", {}).get("nproc") or None
        rows.append(
            Row(
                "machine",
                "CPU taken by other processes",
                noise,
                "cores",
                "of",
                cores,
                _ratio(noise, cores),
                "orientation",
                note="" if noise < 0.25 else "a busy machine: every figure above is lower",
            )
        )
    return rows


def background_cpu(results: dict[str, Any]) -> float | None:
    """Mean CPU (in cores) that processes other than the servers and the load generators used
    while measurements ran, weighted by their duration."""
    spans: list[tuple[float, float]] = []
    protected = results.get("protected") or {}
    for entry in protected.values():
        if isinstance(entry, dict) and "other_cpu_cores" in entry:
            spans.append((entry["seconds"], entry["other_cpu_cores"]))
    for entry in (results.get("logins") or {}).values():
        if isinstance(entry, dict) and "cpu" in entry:
            spans.append((entry["cpu"]["wall_seconds"], entry["cpu"]["other_cpu_cores"]))
    for entry in (results.get("growth") or {}).values():
        for run in (entry or {}).get("runs", []):
            spans.append((run["cpu"]["wall_seconds"], run["cpu"]["other_cpu_cores"]))
    memory = results.get("memory") or {}
    if "cpu" in memory:
        spans.append((memory["cpu"]["wall_seconds"], memory["cpu"]["other_cpu_cores"]))
    total = sum(wall for wall, _ in spans)
    if not total:
        return None
    return round(sum(wall * cores for wall, cores in spans) / total, 2)


HEADER = ["measurement", "figure", "value", "baseline", "ratio", "target", "met", "other CPU"]


def table(rows: list[Row]) -> str:
    """A Markdown table: readable in a terminal, and pasted as it is into README.md."""
    cells = [HEADER] + [row.cells() for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(HEADER))]

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    out = [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(c) for c in cells[1:]]
    return "\n".join(out)


def row_dicts(rows: list[Row]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]


def chart(results: dict[str, Any], path: Path) -> Path | None:
    """Four panels: /v1/me against its references, logins/s, growth ratios, RSS over time."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    fig.suptitle(f"splitlink benchmarks — {results.get('machine', {}).get('summary', '')}")

    ax = axes[0][0]
    p = results.get("protected") or {}
    names = [
        ("bare", "bare\nStarlette"),
        ("ed25519", "bare +\nEd25519"),
        ("p256", "bare +\nP-256"),
        ("ed25519_stored", "floor\nEd25519"),
        ("p256_stored", "floor\nP-256"),
        ("me_EdDSA", "/v1/me\nEdDSA"),
        ("me_ES256", "/v1/me\nES256"),
    ]
    shown = [(label, p[key]["rate"]) for key, label in names if isinstance(p.get(key), dict)]
    if shown:
        bars = ax.bar([s[0] for s in shown], [s[1] for s in shown], color="#4878a8")
        ax.bar_label(bars, fmt="%.0f")
        ax.set_yscale("log")
    ax.set_title("Protected requests, 1 worker (req/s, log scale)")

    ax = axes[0][1]
    logins = results.get("logins") or {}
    shown = [
        (backend, entry["logins_per_second"])
        for backend, entry in logins.items()
        if isinstance(entry, dict) and "logins_per_second" in entry
    ]
    if shown:
        bars = ax.bar([s[0] for s in shown], [s[1] for s in shown], color="#6a9f58")
        ax.bar_label(bars, fmt="%.0f")
    ax.axhline(TARGETS["logins_per_second"], color="#c44e52", linestyle="--", label="target")
    ax.legend()
    ax.set_title("Completed logins/s, 2 workers")

    ax = axes[1][0]
    growth = results.get("growth") or {}
    series = []  # (label, ratio per operation, interval per operation or None)
    for backend, entry in growth.items():
        for run in (entry or {}).get("runs", [])[1:]:
            size = f"{run['users']:,} users" if run["users"] else "empty again (noise)"
            ratios = [run["p99_ratio"][op] or 0.0 for op in OPERATIONS]
            intervals = run.get("p99_ratio_interval") or {}
            spans = [intervals.get(op) or [r, r] for op, r in zip(OPERATIONS, ratios, strict=True)]
            series.append((f"{backend}, {size}", ratios, spans))
    width = 0.8 / max(1, len(series))
    for i, (label, ratios, spans) in enumerate(series):
        positions = [x + (i - (len(series) - 1) / 2) * width for x in range(len(OPERATIONS))]
        # Error bars: each ratio's bootstrap interval.
        below = [max(0.0, r - low) for r, (low, _) in zip(ratios, spans, strict=True)]
        above = [max(0.0, high - r) for r, (_, high) in zip(ratios, spans, strict=True)]
        ax.bar(positions, ratios, width, label=label, yerr=[below, above], capsize=2)
    ax.set_xticks(range(len(OPERATIONS)), list(OPERATIONS.values()))
    ax.axhline(TARGETS["growth_p99"], color="#c44e52", linestyle="--", label="limit")
    ax.axhline(1.0, color="#888888", linewidth=0.8)
    ax.legend(fontsize=7)
    ax.set_title("p99 latency, seeded / empty database")

    ax = axes[1][1]
    memory = results.get("memory") or {}
    for worker in memory.get("workers", []):
        series = worker["series_mb"]
        ax.plot([s[0] for s in series], [s[1] for s in series], label=f"worker {worker['worker']}")
    if memory.get("workers"):
        ax.legend()
        ax.set_xlabel("seconds")
    ax.set_title("Worker RSS under load (MB)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def summary(results: dict[str, Any], *, chart_name: str | None) -> str:
    """The results page that README.md links to: the table, its notes and what was not run."""
    rows = [Row(**row) for row in results["rows"]]
    machine = results["machine"]
    lines = [
        "# Benchmark results",
        "",
        "Generated by `make bench` (`python -m bench`); do not edit. How each figure is made,",
        "and what the targets mean: [docs/benchmarks.md](../docs/benchmarks.md).",
        "",
        f"- mode: {results['mode']}, run {results.get('created', '?')}, "
        f"{results.get('duration_seconds', 0):.0f} s",
        f"- source: {results['git'].get('commit', '?')}"
        + (" with local changes" if results["git"].get("dirty") else ""),
        f"- machine: {machine['summary']}; load average at start "
        f"{' '.join(machine['loadavg_at_start'])}",
    ]
    other = background_cpu(results)
    if other is not None:
        lines.append(f"- other CPU during the measurements: {other:.2f} of a core")
    lines += ["", table(rows), ""]
    for row in rows:
        if row.note:
            lines.append(f"- note: {row.section}, {row.figure}: {row.note}")
    for skipped in results.get("skipped", []):
        lines.append(f"- not run: {skipped}")
    if chart_name:
        lines += ["", f"![charts]({chart_name})"]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.report RESULTS.json --summary PAGE.md`: the page again from a JSON."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.report")
    parser.add_argument("results", type=Path)
    parser.add_argument("--summary", type=Path, required=True)
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    chart_path = args.results.with_suffix(".png")
    chart_name = os.path.relpath(chart_path, args.summary.parent) if chart_path.exists() else None
    args.summary.write_text(summary(results, chart_name=chart_name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
