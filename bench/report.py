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
from servers import ISSUE3_BASELINE, SERVERS, App, Server

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
    user_us: float | None = None  # of cpu_us: user mode
    system_us: float | None = None  # of cpu_us: the kernel, on the server's behalf
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
    cpu_us, user_us, system_us = median_split(
        [(c.server_s / r.requests * 1e6, c.user_s / r.requests * 1e6, c.system_s / r.requests * 1e6)
         for c, r in zip(cpus, results, strict=True) if r.requests])
    return Row(
        server, len(results), len(trials), statistics.median(r.rps for r in results),
        statistics.median(r.p50_ms for r in results), statistics.median(r.p99_ms for r in results),
        sum(r.errors for r in results), cpu_us, user_us, system_us,
        max((c.elsewhere_cores for c in cpus), default=0.0),
    )


def median_split(rounds: Sequence[tuple[float, float, float]]) -> tuple[float | None, float | None, float | None]:
    """(total, user, system) of the round whose total is the median (the mean of the two middle rounds for an even
    count): a median of each part on its own would not add up to the median total."""
    if not rounds:
        return None, None, None
    ranked = sorted(rounds)
    middle = ranked[(len(ranked) - 1) // 2: len(ranked) // 2 + 1]
    total, user, system = (statistics.fmean(parts) for parts in zip(*middle, strict=True))
    return total, user, system


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


def load_table(rows: Sequence[Row], ceiling: Ceiling | None = None, workers: int = 1,
               baseline: str = ISSUE3_BASELINE) -> list[str]:
    """The servers' rows, and the in-process ceiling's (ceiling.py) when measured: its rate per core times the
    workers; each server's req/s over it is the ``vs ceiling`` column. ``baseline``: the server key the two
    ``vs clusterrun`` columns divide by (clusterrun's default policy)."""
    mine = next((r for r in rows if r.server.key == baseline), None)
    base, base_cpu = (mine.rps, mine.cpu_us) if mine else (None, None)
    named = baseline.replace("clusterrun-", "clusterrun ")
    top = ceiling.per_core * workers if ceiling and ceiling.per_core else None
    lines = [f"| server | req/s | p50 ms | p99 ms | errors | vs {named} | vs ceiling | server CPU µs/req | user µs/req"
             f" | sys µs/req | CPU vs {named} |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if r.rps is None:
            lines.append(f"| {r.server.title} | failed: {r.failed} | | | | | | | | | |")
            continue
        ratio = f"{r.rps / base:.2f}x" if base else "-"
        mark = " †" if r.disturbed else ""
        # A median over fewer rounds than planned (the others failed: see Failures) says so.
        partial = f" ({r.rounds} of {r.planned} rounds)" if r.rounds < r.planned else ""
        cells = [f"{r.server.title}{partial}", f"{r.rps:,.0f}{mark}", _fmt(r.p50_ms, ".2f"), _fmt(r.p99_ms, ".2f"),
                 str(r.errors), ratio, _share(r.rps / top) if top else "-", _fmt(r.cpu_us, ".0f"),
                 _fmt(r.user_us, ".0f"), _fmt(r.system_us, ".0f"), _cpu_ratio(r.cpu_us, base_cpu)]
        lines.append(f"| {' | '.join(cells)} |")
    if ceiling and top:
        versus = f"{top / base:.2f}x" if base else "-"
        own = 1e6 / ceiling.per_core
        lines.append(f"| {CEILING_TITLE} (1 core x {workers}) | {top:,.0f} | - | - | - | {versus} | 1.00x"
                     f" | {own:.1f} | - | - | {_cpu_ratio(own, base_cpu)} |")
    if any(r.disturbed for r in rows):
        lines += ["", f"† more than {DISTURBED_CORES} cores were busy with other work during at least one round"]
    if ceiling and top:
        lines += ["", f"{CEILING_TITLE}: the app alone, called in a loop in one process (bench/ceiling.py), with no"
                      f" server and no socket: {ceiling.per_core:,.0f} calls per CPU second, times {workers} workers"
                      " (median over rounds). Its CPU µs/req is the app's own cost. On this machine the load generator"
                      " shares the cores, so no server can reach it: compare the servers' fractions of it."]
    return lines


def _cpu_ratio(cpu_us: float | None, base_us: float | None) -> str:
    """A row's CPU per request over the baseline's: below 1.00x it costs less per request."""
    if cpu_us is None or not base_us:
        return "-"
    return _share(cpu_us / base_us)


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

    mine, other = row(ISSUE3_BASELINE), row(goal.versus)
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


# Targets of issues 24 (WSGI) and 25 (ASGI): server CPU per request of clusterrun's default policy against the
# fastest peer of each row.


@dataclass(frozen=True)
class CpuGoal:
    app: str
    mode: str
    versus: str  # server key: the peer that this row measures (uWSGI's keep-alive and close are two servers)
    maximum: float  # clusterrun's CPU per request over the peer's, at most
    issue: int = 24


CPU_GOALS = (
    CpuGoal("wsgi", "keep-alive", "granian", 0.80),
    CpuGoal("wsgi", "close", "uwsgi-close", 1.0),
    CpuGoal("flask", "keep-alive", "uwsgi", 1.0),
    CpuGoal("flask", "close", "uwsgi-close", 1.0),
    CpuGoal("starlette", "keep-alive", "granian", 1.0, 25),
    CpuGoal("starlette", "close", "granian", 1.0, 25),
    CpuGoal("fastapi", "keep-alive", "granian", 1.0, 25),
    CpuGoal("fastapi", "close", "granian", 1.0, 25),
)
# Figures beside the goals: every server's CPU per request against clusterrun's, for the rows with a goal on the
# ASGI side (issue 24 asked that Starlette get no worse; issue 25 sets its goal against granian).
CPU_INFO_APPS = ("starlette", "fastapi")


def check_cpu_goals(trials: Sequence[Trial], pairs: Pairs, modes: Sequence[str], baseline: str,
                    issue: int = 24) -> list[str]:
    """One PASS/FAIL/SKIP line per goal of ``issue`` whose app and mode this run measured, then, for issue 25, INFO
    lines for the ASGI framework rows; ``baseline``: clusterrun's default policy's server key."""
    run_apps = {a.key: a for a in apps_of(pairs)}
    lines = []
    for goal in CPU_GOALS:
        app = run_apps.get(goal.app)
        if goal.issue == issue and app is not None and goal.mode in modes:
            lines.append(_cpu_goal_line(trials, pairs, app, goal, baseline))
    for key in CPU_INFO_APPS if issue == 25 else ():
        if key in run_apps:
            lines += [_cpu_info_line(trials, pairs, run_apps[key], mode, baseline) for mode in modes]
    return lines


def _cpu_row(trials: Sequence[Trial], pairs: Pairs, app: App, key: str, mode: str) -> Row | None:
    server = next((s for a, s in pairs if a is app and s.key == key and mode in s.modes and s.load), None)
    if server is None:
        return None
    row = load_row(trials_of(trials, app, key), server, mode)
    return row if row.cpu_us is not None else None


def _cpu_figure(row: Row) -> str:
    return f"{_fmt(row.cpu_us, '.0f')} µs/req (user {_fmt(row.user_us, '.0f')} + sys {_fmt(row.system_us, '.0f')})"


def _cpu_goal_line(trials: Sequence[Trial], pairs: Pairs, app: App, goal: CpuGoal, baseline: str) -> str:
    mine, other = (_cpu_row(trials, pairs, app, key, goal.mode) for key in (baseline, goal.versus))
    named = baseline.replace("clusterrun-", "clusterrun ")
    title = next((s.title for s in SERVERS if s.key == goal.versus), goal.versus)
    where = f"{app.title}, {goal.mode}"
    if mine is None or other is None or not other.cpu_us:
        return f"SKIP  {where}: {named if mine is None else title} not measured"
    assert mine.cpu_us is not None
    ratio = mine.cpu_us / other.cpu_us
    text = (f"{where}: {named} (the default) {_cpu_figure(mine)} = {ratio:.2f}x {title}'s {_cpu_figure(other)},"
            f" target <= {goal.maximum:.2f}x")
    if ratio > goal.maximum:
        text += f": {mine.cpu_us - goal.maximum * other.cpu_us:.0f} µs/req over"
    if mine.disturbed or other.disturbed:
        text += " [disturbed by other jobs]"
    return f"{'PASS' if ratio <= goal.maximum else 'FAIL'}  {text}"


def _cpu_info_line(trials: Sequence[Trial], pairs: Pairs, app: App, mode: str, baseline: str) -> str:
    named = baseline.replace("clusterrun-", "clusterrun ")
    where = f"{app.title}, {mode}"
    mine = _cpu_row(trials, pairs, app, baseline, mode)
    if mine is None or not mine.cpu_us:
        return f"SKIP  {where}: {named} not measured"
    others = [row for a, s in pairs if a is app and s.key != baseline
              if (row := _cpu_row(trials, pairs, app, s.key, mode)) is not None and row.cpu_us]
    versus = "; ".join(f"{r.server.title} {r.cpu_us:.0f} ({mine.cpu_us / r.cpu_us:.2f}x)" for r in others
                       if r.cpu_us)
    disturbed = " [disturbed by other jobs]" if mine.disturbed or any(r.disturbed for r in others) else ""
    return (f"INFO  {where}: {named} (the default) {_cpu_figure(mine)}"
            f"{'; ours over theirs: ' + versus if versus else ''}, no target{disturbed}")


def median_ceiling(ceilings: Sequence[Ceiling]) -> Ceiling | None:
    """The round whose rate per core is the median (a median of the rates, kept as one measurement)."""
    if not ceilings:
        return None
    ranked = sorted(ceilings, key=lambda c: c.per_core)
    return ranked[(len(ranked) - 1) // 2]


def markdown(meta: dict[str, Any], trials: Sequence[Trial], pairs: Pairs, modes: Sequence[str],
             goals: Sequence[str], ceilings: dict[str, list[Ceiling]] | None = None, workers: int = 1,
             baseline: str = ISSUE3_BASELINE, cpu_goals: Sequence[str] = (), asgi_goals: Sequence[str] = ()) -> str:
    """``baseline``: the server key of clusterrun's default policy; ``goals``, ``cpu_goals``, ``asgi_goals``: the
    target lines of issues 3, 24 and 25."""
    out = [f"# clusterrun benchmark ({meta['mode']})", ""]
    out += [f"- {name}: {value}" for name, value in meta["header"].items()]
    out += [f"- note: {note}" for note in meta["notes"]]
    for app in apps_of(pairs):
        for mode in modes:
            rows = rows_for(trials, pairs, app, mode)
            if rows:
                top = median_ceiling((ceilings or {}).get(app.key, []))
                out += ["", f"## {app.title}, {mode}", "", *load_table(rows, top, workers, baseline)]
    out += ["", "## Memory after warm-up and start-up time (medians over rounds)", "",
            *memory_table(trials, pairs)]
    out += ["", "## Targets (issue 3)", "", "```", *goals, "```"]
    out += ["", "## Targets (issue 24)", "",
            "Server CPU per request (user + system, whole process tree), medians over rounds, of clusterrun's"
            " default policy against the peer each row measures.", "", "```", *cpu_goals, "```"]
    out += ["", "## Targets (issue 25)", "",
            "The same, for the ASGI frameworks against granian; then every server's figure beside clusterrun's.", "",
            "```", *asgi_goals, "```"]
    failed = [t for t in trials if t.error]
    if failed:
        out += ["", "## Failures", ""]
        for t in failed:
            out += [f"{t.server}, {t.app}, round {t.round}:", "", "```", t.error or "", "```", ""]
    out += ["", "## Server commands", ""]
    out += [f"- {title}: `{command}`" for title, command in meta["commands"].items()]
    return "\n".join(out) + "\n"


def as_json(meta: dict[str, Any], trials: Sequence[Trial], goals: Sequence[str],
            ceilings: dict[str, list[Ceiling]] | None = None, cpu_goals: Sequence[str] = (),
            asgi_goals: Sequence[str] = ()) -> dict[str, Any]:
    """``ceilings``: per app, each round's in-process measurement (calls, CPU seconds)."""
    per_app = {app: [asdict(c) | {"per_core": c.per_core} for c in found] for app, found in (ceilings or {}).items()}
    return {"meta": meta, "targets": goals, "targets_issue24": list(cpu_goals),
            "targets_issue25": list(asgi_goals), "trials": [asdict(t) for t in trials],
            "ceilings": per_app}
