"""From trials to results: medians over rounds, the tables, the target checks, the JSON.

A trial is one server started once for one app in one round. Rows report the
median over rounds of req/s, p50 and p99 (so that one disturbed round does not
move the result), and the *sum* of errors over rounds (a median would hide a
round that failed requests).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ceiling import Ceiling
from loadgen import LoadResult
from procs import DISTURBED_CORES, CpuUse, Memory
from servers import BASELINE, SERVERS, App, Server

MODES = ("keep-alive", "close")
CEILING_TITLE = "in-process ceiling"


@dataclass
class Trial:
    round: int
    app: str
    server: str
    startup_s: float | None = None
    stop_s: float | None = None
    memory: Memory | None = None
    loads: dict[str, LoadResult] = field(default_factory=dict)
    cpu: dict[str, CpuUse] = field(default_factory=dict)
    remeasured: list[str] = field(default_factory=list)  # modes measured again because another job disturbed them
    error: str | None = None


@dataclass(frozen=True)
class Row:
    server: Server
    rounds: int  # rounds that produced a measurement
    planned: int  # rounds in which it was started
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    cpu_us: float | None = None  # server CPU time per request, in microseconds
    elsewhere_cores: float = 0.0  # the worst round
    failed: str | None = None

    @property
    def disturbed(self) -> bool:
        return self.elsewhere_cores > DISTURBED_CORES


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def load_row(trials: Sequence[Trial], server: Server, mode: str) -> Row:
    measured = [t for t in trials if mode in t.loads]
    failures = [t.error for t in trials if t.error]
    if not measured:
        return Row(server, 0, len(trials), failed=failures[0].splitlines()[0] if failures else "not measured")
    results = [t.loads[mode] for t in measured]
    cpus = [t.cpu[mode] for t in measured if mode in t.cpu]
    per_request = [c.server_s / r.requests * 1e6 for c, r in zip(cpus, results, strict=True) if r.requests]
    return Row(
        server, len(results), len(trials), statistics.median(r.rps for r in results),
        statistics.median(r.p50_ms for r in results), statistics.median(r.p99_ms for r in results),
        sum(r.errors for r in results), _median(per_request), max((c.elsewhere_cores for c in cpus), default=0.0),
    )


Pairs = Sequence[tuple[App, Server]]  # what was run: each app with each server that could serve it here


def apps_of(pairs: Pairs) -> list[App]:
    return list(dict.fromkeys(app for app, _ in pairs))


def trials_of(trials: Sequence[Trial], app: App, server_key: str) -> list[Trial]:
    return [t for t in trials if t.app == app.key and t.server == server_key]


def rows_for(trials: Sequence[Trial], pairs: Pairs, app: App, mode: str) -> list[Row]:
    return [load_row(trials_of(trials, app, s.key), s, mode) for a, s in pairs
            if a is app and s.load and mode in s.modes]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def load_table(rows: Sequence[Row], ceiling: Ceiling | None = None, workers: int = 1) -> list[str]:
    """The servers' rows, and the in-process ceiling's (ceiling.py) when measured: its rate per core times the
    workers; each server's req/s over it is the ``vs ceiling`` column."""
    base = next((r.rps for r in rows if r.server.key == BASELINE), None)
    top = ceiling.per_core * workers if ceiling and ceiling.per_core else None
    lines = ["| server | req/s | p50 ms | p99 ms | errors | vs clusterrun rr | vs ceiling | server CPU µs/req |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if r.rps is None:
            lines.append(f"| {r.server.title} | failed: {r.failed} | | | | | | |")
            continue
        ratio = f"{r.rps / base:.2f}x" if base else "-"
        mark = " †" if r.disturbed else ""
        # A median over fewer rounds than planned (the others failed: see Failures) says so.
        partial = f" ({r.rounds} of {r.planned} rounds)" if r.rounds < r.planned else ""
        cells = [f"{r.server.title}{partial}", f"{r.rps:,.0f}{mark}", _fmt(r.p50_ms, ".2f"), _fmt(r.p99_ms, ".2f"),
                 str(r.errors), ratio, _share(r.rps / top) if top else "-", _fmt(r.cpu_us, ".0f")]
        lines.append(f"| {' | '.join(cells)} |")
    if ceiling and top:
        versus = f"{top / base:.2f}x" if base else "-"
        lines.append(f"| {CEILING_TITLE} (1 core x {workers}) | {top:,.0f} | - | - | - | {versus} | 1.00x"
                     f" | {1e6 / ceiling.per_core:.1f} |")
    if any(r.disturbed for r in rows):
        lines += ["", f"† more than {DISTURBED_CORES} cores were busy with other work during at least one round"]
    if ceiling and top:
        lines += ["", f"{CEILING_TITLE}: the app alone, called in a loop in one process (bench/ceiling.py), with no"
                      f" server and no socket: {ceiling.per_core:,.0f} calls per CPU second, times {workers} workers"
                      " (median over rounds). Its CPU µs/req is the app's own cost. On this machine the load generator"
                      " shares the cores, so no server can reach it: compare the servers' fractions of it."]
    return lines


def _share(ratio: float) -> str:
    """A ratio to the ceiling: two decimals, or two significant digits below 0.1 (a raw hello app's ceiling is in
    the millions: its servers get a few thousandths of it, which two decimals would print as 0.00x)."""
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


def memory_table(trials: Sequence[Trial], pairs: Pairs) -> list[str]:
    lines = ["| app | server | processes | RSS MiB (sum) | PSS MiB (sum) | start-up s | stop s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for app, server in pairs:
        mine = [t for t in trials_of(trials, app, server.key) if t.error is None]
        if mine:
            lines.append(f"| {app.title} | {server.title} | {' | '.join(_memory_cells(mine))} |")
    return lines


def _memory_cells(trials: Sequence[Trial]) -> list[str]:
    mems = [t.memory for t in trials if t.memory]
    return [
        _fmt(_median(m.processes for m in mems), ".0f"),
        _fmt(_median(m.rss_mib for m in mems), ".1f"),
        _fmt(_median(m.pss_mib for m in mems), ".1f"),
        _fmt(_median(t.startup_s for t in trials), ".2f"),
        # stop_s is None when the server was still running at the stop deadline and had to be killed
        _fmt(_median(t.stop_s for t in trials), ".2f") if any(t.stop_s for t in trials) else "killed",
    ]


# Targets of issue 3, checked here and printed; never asserted (timings do not belong in tests).


@dataclass(frozen=True)
class Goal:
    apps: tuple[str, ...]
    versus: str  # server key
    minimum: float | None  # None: reported for information, no target


GOALS = (
    Goal(("asgi", "starlette"), "uvicorn", 1.0),
    Goal(("asgi", "starlette"), "granian", 1.5),
    Goal(("flask",), "gunicorn-gthread", 2.0),
    Goal(("flask",), "granian", None),
)


def check_goals(trials: Sequence[Trial], pairs: Pairs, modes: Sequence[str]) -> list[str]:
    """One line per goal, app and mode, for the apps of this run."""
    lines = []
    for goal in GOALS:
        for app in (a for a in apps_of(pairs) if a.key in goal.apps):
            servers = {s.key: s for a, s in pairs if a is app}
            lines += [_goal_line(trials, servers, goal, app, mode) for mode in modes]
    return lines


def _goal_line(trials: Sequence[Trial], servers: dict[str, Server], goal: Goal, app: App, mode: str) -> str:
    def row(key: str) -> Row | None:
        return load_row(trials_of(trials, app, key), servers[key], mode) if key in servers else None

    mine, other = row(BASELINE), row(goal.versus)
    ours, theirs = (mine.rps if mine else None), (other.rps if other else None)
    title = next((s.title for s in SERVERS if s.key == goal.versus), goal.versus)
    where = f"{app.title}, {mode}"
    if ours is None or theirs is None:
        missing = "clusterrun rr" if ours is None else title
        return f"SKIP  {where}: {missing} not measured"
    ratio = ours / theirs
    text = f"{where}: clusterrun rr {ours:,.0f} req/s = {ratio:.2f}x {title} ({theirs:,.0f})"
    if (mine and mine.disturbed) or (other and other.disturbed):
        text += " [disturbed by other jobs]"
    if goal.minimum is None:
        return f"INFO  {text}, no target"
    verdict = "PASS" if ratio >= goal.minimum else "MISS"
    return f"{verdict}  {text}, target >= {goal.minimum:.1f}x"


def median_ceiling(ceilings: Sequence[Ceiling]) -> Ceiling | None:
    """The round whose rate per core is the median (a median of the rates, kept as one measurement)."""
    if not ceilings:
        return None
    ranked = sorted(ceilings, key=lambda c: c.per_core)
    return ranked[(len(ranked) - 1) // 2]


def markdown(meta: dict[str, Any], trials: Sequence[Trial], pairs: Pairs, modes: Sequence[str],
             goals: Sequence[str], ceilings: dict[str, list[Ceiling]] | None = None, workers: int = 1) -> str:
    out = [f"# clusterrun benchmark ({meta['mode']})", ""]
    out += [f"- {name}: {value}" for name, value in meta["header"].items()]
    out += [f"- note: {note}" for note in meta["notes"]]
    for app in apps_of(pairs):
        for mode in modes:
            rows = rows_for(trials, pairs, app, mode)
            if rows:
                top = median_ceiling((ceilings or {}).get(app.key, []))
                out += ["", f"## {app.title}, {mode}", "", *load_table(rows, top, workers)]
    out += ["", "## Memory after warm-up and start-up time (medians over rounds)", "",
            *memory_table(trials, pairs)]
    out += ["", "## Targets (issue 3)", "", "```", *goals, "```"]
    failed = [t for t in trials if t.error]
    if failed:
        out += ["", "## Failures", ""]
        for t in failed:
            out += [f"{t.server}, {t.app}, round {t.round}:", "", "```", t.error or "", "```", ""]
    out += ["", "## Server commands", ""]
    out += [f"- {title}: `{command}`" for title, command in meta["commands"].items()]
    return "\n".join(out) + "\n"


def as_json(meta: dict[str, Any], trials: Sequence[Trial], goals: Sequence[str],
            ceilings: dict[str, list[Ceiling]] | None = None) -> dict[str, Any]:
    """``ceilings``: per app, each round's in-process measurement (calls, CPU seconds)."""
    per_app = {app: [asdict(c) | {"per_core": c.per_core} for c in found] for app, found in (ceilings or {}).items()}
    return {"meta": meta, "targets": goals, "trials": [asdict(t) for t in trials], "ceilings": per_app}
