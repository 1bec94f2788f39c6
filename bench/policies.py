"""The policies section (issue 4): clusterrun's six policies side by side, and the peers, on the sample apps.

    python bench/run.py --section policies           # about 3 minutes on 2 cores
    python bench/run.py --section policies --quick   # about a minute

Per app, each server is started once and measured three ways:

- fairness: keep-alive, 4 connections per worker, by the tagged Python client
  (it notes which worker gave every answer; wrk cannot): each worker's share of
  the requests and of the connections, and busiest/idlest; twice, saturating and
  paced (see PACE);
- mixed load: 90% ``/`` and 10% ``/heavy`` (about 10 ms of CPU), 16 keep-alive
  connections, by wrk with bench/mix.lua (the tagged client without wrk):
  throughput, p50, p99;
- the same mix from paced clients: 4 connections per worker, opened at once and
  held, each waiting MIX_PACE between requests, by the tagged client: p50, p99
  and each worker's share (where the kernel piles connections, a paced client
  feels it as latency, where a flat-out one hides it in throughput);
- a new connection per request (``Connection: close``) on ``/``, 16 connections,
  by wrk (or the Python client): throughput.

The targets are printed as PASS/MISS lines, never asserted.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import ceiling
import procs
import tagged
from ceiling import Ceiling
from loadgen import LoadResult, LoadSpec, Wrk, parse_wrk
from report import CEILING_TITLE
from sections import (
    BENCH,
    CLUSTERRUN,
    DAGGER_NOTE,
    FLASK,
    PEERS,
    SAMPLES,
    STARLETTE,
    Context,
    Live,
    Measured,
    Output,
    choose,
    command_line,
    dagger,
    fmt,
    server_env,
    started,
    steady,
)
from servers import App, Server

T = TypeVar("T")

MIX = ("/",) * 9 + ("/heavy",)
LUA = BENCH / "mix.lua"
CONNECTIONS = 16  # mixed load and new connection per request
PER_WORKER = 4  # fairness: keep-alive connections per worker
# Fairness is measured twice: flat out, and paced (each connection waits this long between requests, about half
# of what 2 workers serve). Flat out on 2 cores, the client and 2 workers are 3 busy processes on 2 cores: the
# worker that shares a core with the client serves less, whatever the policy did (rr, 4 connections each, measured
# 1.05 then 1.32 in two runs). Paced, no worker is short of CPU and the request shares show the policy's spread.
PACE = 0.005
# The paced mixed load: each connection waits this long between requests. Measured on 2 cores: about 60% of what
# 2 workers serve when the connections are spread evenly, and about all that one worker serves.
MIX_PACE = 0.003

FAIR_MAX = 1.10  # busiest/idlest share, rr, least-conn and balanced
P99_MAX = 0.5  # least-conn p99 / shared p99 under the mixed load
CLOSE_MIN = 0.90  # rr, least-conn and balanced req/s / shared req/s, a new connection per request
SHARED = "clusterrun-shared"
# CPU per request of the server's whole process tree, and of its main process alone (clusterrun's primary
# accepts and hands over every connection under rr, least-conn and sticky; the peers' is a supervisor).
CPU_COLUMNS = "server CPU µs/req | of which main process"
CEILING_S = 1.0  # seconds of each in-process ceiling measurement (CPU time per call: 1 s is hundreds of calls)


@dataclass(frozen=True)
class Durations:
    warmup: float
    fairness: float
    mixed: float
    close: float


def durations(ctx: Context) -> Durations:
    if ctx.duration:
        return Durations(min(1.0, ctx.duration), ctx.duration, ctx.duration, ctx.duration)
    # wrk counts whole seconds: the mixed and close runs are whole seconds in both modes.
    return Durations(0.5, 1.0, 1.0, 1.0) if ctx.quick else Durations(1.0, 2.0, 3.0, 2.0)


@dataclass(frozen=True)
class Fairness:
    requests: int
    rps: float
    errors: int
    workers: int  # configured
    requests_per_worker: list[int]  # busiest first, padded with zeros to the configured count
    connections_per_worker: list[int]  # same order as requests_per_worker

    @property
    def served_by(self) -> int:
        return sum(1 for n in self.requests_per_worker if n)

    @property
    def ratio(self) -> float | None:
        """Busiest worker's requests / idlest worker's; None when a worker served nothing (infinite)."""
        counts = self.requests_per_worker
        return counts[0] / counts[-1] if counts and counts[-1] else None


@dataclass(frozen=True)
class PacedMix:
    load: LoadResult
    spread: Fairness

    def as_json(self) -> dict[str, Any]:
        return {"load": self.load.__dict__, "spread": self.spread.__dict__ | {"ratio": self.spread.ratio}}


@dataclass
class Trial:
    app: App
    server: Server
    startup_s: float | None = None
    fairness: Measured[Fairness] | None = None
    paced: Measured[Fairness] | None = None
    mixed: Measured[LoadResult] | None = None
    paced_mix: Measured[PacedMix] | None = None
    close: Measured[LoadResult] | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        def part(m: Measured[Any] | None) -> dict[str, Any] | None:
            if m is None:
                return None
            if isinstance(m.result, PacedMix):
                result = m.result.as_json()
            else:
                result = m.result.__dict__ | ({"ratio": m.result.ratio} if isinstance(m.result, Fairness) else {})
            return {"result": result, "server_cpu_s": m.cpu.server_s, "main_process_cpu_s": m.main_s,
                    "elsewhere_cores": m.cpu.elsewhere_cores, "remeasured": m.remeasured}

        return {"app": self.app.key, "server": self.server.key, "startup_s": self.startup_s,
                "fairness": part(self.fairness), "paced": part(self.paced), "mixed": part(self.mixed),
                "paced_mix": part(self.paced_mix), "close": part(self.close), "error": self.error}


def run(ctx: Context) -> Output:
    workers = ctx.workers or 2
    spans = durations(ctx)
    pairs = choose(ctx, (*CLUSTERRUN, *PEERS), (STARLETTE, FLASK))
    ceilings = {app.key: ceilings_of(ctx, app) for app in dict.fromkeys(a for a, _ in pairs)}
    trials = []
    for app, server in pairs:
        trial = run_trial(ctx, app, server, workers, spans)
        print(progress(trial), flush=True, file=sys.stderr)
        trials.append(trial)
    return report(ctx, trials, pairs, workers, spans, ceilings)


def ceilings_of(ctx: Context, app: App) -> dict[str, Ceiling]:
    """The app's in-process ceiling (bench/ceiling.py) for the mixed load's paths and for ``/`` alone."""
    found = {}
    for attr, paths in (("mixed", MIX), ("close", ("/",))):
        try:
            found[attr] = ceiling.measure(ctx.python, app.target, app.interface, CEILING_S, cwd=SAMPLES,
                                          env=server_env(), paths=paths)
        except (RuntimeError, ValueError, KeyError, subprocess.SubprocessError) as exc:
            ctx.notes.append(f"{app.title}: no in-process ceiling for the {attr} table: {exc}")
            continue
        print(f"[policies] {app.title} / in-process ceiling, {attr}: {found[attr].per_core:,.0f} calls per CPU"
              " second", flush=True, file=sys.stderr)
    return found


def run_trial(ctx: Context, app: App, server: Server, workers: int, spans: Durations) -> Trial:
    trial = Trial(app, server)
    try:
        with started(ctx, app, server, workers, f"policies-{app.key}-{server.key}") as live:
            trial.startup_s = live.startup_s
            # Warm-up: every worker has booted, served both routes, and settled.
            tagged.run(tagged.Plan("127.0.0.1", live.port, spans.warmup, keepalive=workers * PER_WORKER, paths=MIX))
            trial.fairness = settled(ctx, live, spans.fairness, lambda: fairness(live, workers, spans.fairness))
            trial.paced = settled(ctx, live, spans.fairness, lambda: fairness(live, workers, spans.fairness, PACE))
            trial.mixed = settled(ctx, live, spans.mixed, lambda: mixed(ctx, live, spans.mixed))
            trial.paced_mix = settled(ctx, live, spans.mixed, lambda: paced_mix(live, workers, spans.mixed))
            if "close" in server.modes:  # uWSGI's --http11-socket would answer it over one kept connection
                spec = LoadSpec(url(live), spans.close, CONNECTIONS, close=True)
                trial.close = settled(ctx, live, spans.close, lambda: ctx.client.run(spec))
    except Exception as exc:  # one server failing must not cost the others their results
        trial.error = f"{type(exc).__name__}: {exc}"
    return trial


def settled(ctx: Context, live: Live, duration: float, run: Callable[[], T]) -> Measured[T]:
    """Measure once the server has finished what the previous load left it (see procs.wait_idle)."""
    procs.wait_idle(live.pid)
    return steady(ctx.patience, live.pid, duration, run)


def url(live: Live, path: str = "/") -> str:
    return f"http://127.0.0.1:{live.port}{path}"


def fairness(live: Live, workers: int, duration: float, pause: float = 0.0) -> Fairness:
    tally = tagged.run(tagged.Plan("127.0.0.1", live.port, duration, keepalive=workers * PER_WORKER, pause=pause))
    return spread(tally, workers)


def paced_mix(live: Live, workers: int, duration: float) -> PacedMix:
    plan = tagged.Plan("127.0.0.1", live.port, duration, keepalive=workers * PER_WORKER, paths=MIX, pause=MIX_PACE)
    tally = tagged.run(plan)
    return PacedMix(as_load_result(tally), spread(tally, workers))


def spread(tally: tagged.Tally, workers: int) -> Fairness:
    busiest_first = [w for w, _ in tally.workers.most_common()]
    width = max(workers, len(busiest_first))
    requests = [tally.workers[w] for w in busiest_first] + [0] * (width - len(busiest_first))
    connections = [tally.connections[w] for w in busiest_first] + [0] * (width - len(busiest_first))
    return Fairness(tally.requests, tally.answered / tally.elapsed if tally.elapsed else 0.0, tally.failed,
                    workers, requests, connections)


def mixed(ctx: Context, live: Live, duration: float) -> LoadResult:
    """wrk with bench/mix.lua when wrk is the load generator, else the tagged client with the same mix."""
    if isinstance(ctx.client, Wrk):
        argv = ctx.client.argv(LoadSpec(url(live), duration, CONNECTIONS, close=False))
        return _wrk([*argv[:-1], "-s", str(LUA), argv[-1]], duration)
    tally = tagged.run(tagged.Plan("127.0.0.1", live.port, duration, keepalive=CONNECTIONS, paths=MIX))
    return as_load_result(tally)


def _wrk(argv: list[str], duration: float) -> LoadResult:
    # loadgen.Wrk.run takes no script; its argv (the same flags as the main bench) plus -s, and its parser.
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    return parse_wrk(out.stdout)


def as_load_result(tally: tagged.Tally) -> LoadResult:
    latencies = [v for values in tally.latencies.values() for v in values]
    if len(latencies) < 2:
        return LoadResult(0.0, 0.0, 0.0, tally.failed, len(latencies))
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return LoadResult(len(latencies) / tally.elapsed, cuts[49] * 1000, cuts[98] * 1000, tally.failed, len(latencies))


def progress(trial: Trial) -> str:
    head = f"[policies] {trial.app.title} / {trial.server.title}:"
    if trial.error:
        return f"{head} FAILED {trial.error.splitlines()[0]}"
    parts = []
    for name, m in (("fairness", trial.fairness), ("paced", trial.paced)):
        if m:
            parts.append(f"{name} {'/'.join(map(str, m.result.requests_per_worker))} ({ratio_text(m.result)})")
    if trial.mixed:
        parts.append(f"mixed {trial.mixed.result.rps:,.0f} req/s p99 {trial.mixed.result.p99_ms:.1f} ms")
    if trial.paced_mix:
        r = trial.paced_mix.result
        parts.append(f"paced mix p50 {r.load.p50_ms:.1f} p99 {r.load.p99_ms:.1f} ms"
                     f" {'/'.join(map(str, r.spread.requests_per_worker))}")
    if trial.close:
        parts.append(f"close {trial.close.result.rps:,.0f} req/s")
    return f"{head} {', '.join(parts)}"


def ratio_text(f: Fairness) -> str:
    if f.ratio is not None:
        return f"{f.ratio:.2f}"
    return f"∞: {f.served_by} of {f.workers} workers served"


# The report.


def report(ctx: Context, trials: Sequence[Trial], pairs: Sequence[tuple[App, Server]], workers: int,
           spans: Durations, ceilings: dict[str, dict[str, Ceiling]]) -> Output:
    mixer = f"wrk + {LUA.relative_to(BENCH.parent)}" if isinstance(ctx.client, Wrk) else "the tagged Python client"
    settings = (f"{workers} workers per server, one run each; fairness {spans.fairness:g} s flat out and"
                f" {spans.fairness:g} s paced by the tagged Python client, {workers * PER_WORKER} keep-alive"
                f" connections; mixed {spans.mixed:g} s by {mixer},"
                f" {CONNECTIONS} keep-alive connections, then {spans.mixed:g} s paced by the tagged Python client,"
                f" {workers * PER_WORKER} keep-alive connections, {MIX_PACE * 1000:g} ms between requests;"
                f" new connection per request {spans.close:g} s by"
                f" {ctx.client.name}, {CONNECTIONS} connections; {spans.warmup:g} s of warm-up")
    body: list[str] = []
    targets: list[str] = []
    for app in dict.fromkeys(a for a, _ in pairs):
        mine = [t for t in trials if t.app is app]
        body += fairness_table(app, mine, workers, spans)
        tops = {attr: (c, workers) for attr, c in ceilings.get(app.key, {}).items()}
        body += mixed_table(app, mine, spans, mixer, tops.get("mixed"))
        body += paced_mix_table(app, mine, workers, spans)
        body += close_table(app, mine, spans, ctx.client.name, tops.get("close"))
        targets += check_targets(app, mine)
    failed = [t for t in trials if t.error]
    if failed:
        body += ["", "## Failures", ""] + [f"- {t.app.title} / {t.server.title}: `{t.error}`" for t in failed]
    body += ["", "## Server commands", ""]
    body += [f"- {s.title} ({a.title}): `{command_line(ctx.python, a, s, workers)}`" for a, s in pairs]
    data = {"workers": workers, "durations": spans.__dict__, "trials": [t.as_json() for t in trials],
            "ceilings": {app: {attr: c.__dict__ | {"per_core": c.per_core} for attr, c in found.items()}
                         for app, found in ceilings.items()}}
    return Output("clusterrun policies benchmark", settings, body, targets, data)


def fairness_table(app: App, trials: Sequence[Trial], workers: int, spans: Durations) -> list[str]:
    lines = ["", f"## {app.title}: fairness, keep-alive, {workers * PER_WORKER} connections, {spans.fairness:g} s"
                 f" flat out, then {spans.fairness:g} s paced ({PACE * 1000:g} ms between requests per connection)", "",
             "| server | req/s | requests per worker (share) | busiest/idlest | connections per worker | paced req/s"
             " | paced: requests per worker (share) | paced busiest/idlest | paced connections | errors |",
             "| --- | ---: | --- | ---: | --- | ---: | --- | ---: | --- | ---: |"]
    disturbed = False
    for t in trials:
        cells = [*_fair_cells(t.fairness, t.error), *_fair_cells(t.paced, t.error)]
        errors = sum(m.result.errors for m in (t.fairness, t.paced) if m)
        lines.append(f"| {t.server.title} | {' | '.join(cells)} | {errors} |")
        disturbed |= any(m.disturbed for m in (t.fairness, t.paced) if m)
    return lines + (["", DAGGER_NOTE] if disturbed else [])


def _fair_cells(m: Measured[Fairness] | None, error: str | None) -> list[str]:
    if m is None:
        return [f"failed: {(error or '-').splitlines()[0]}", "", "", ""]
    f = m.result
    return [f"{f.rps:,.0f}{dagger(m.disturbed)}", _shares(f), ratio_text(f), _connections(f)]


def _shares(f: Fairness) -> str:
    """Each worker's requests and share of them, busiest first."""
    total = sum(f.requests_per_worker) or 1
    return " / ".join(f"{n:,} ({n / total:.0%})" for n in f.requests_per_worker)


def _connections(f: Fairness) -> str:
    return " / ".join(str(n) for n in f.connections_per_worker)


Top = tuple[Ceiling, int]  # an in-process ceiling and the workers it is multiplied by


def load_table(heading: str, trials: Sequence[Trial], attr: str, versus: str, top: Top | None = None) -> list[str]:
    """The mixed or the new-connection table: ``versus`` is the column divided by clusterrun shared's; ``top``
    the in-process ceiling of the same paths, its row last and each server's req/s over it."""
    shared = next((t for t in trials if t.server.key == SHARED), None)
    base: Measured[LoadResult] | None = getattr(shared, attr) if shared else None
    limit = top[0].per_core * top[1] if top and top[0].per_core else None
    lines = ["", heading, "", f"| server | req/s | p50 ms | p99 ms | errors | {versus} vs clusterrun shared"
                              f" | req/s vs ceiling | {CPU_COLUMNS} |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    measured = [m for t in trials if (m := getattr(t, attr))]
    lines += [_load_row(t, getattr(t, attr), base.result if base else None, versus, limit) for t in trials]
    if top and limit:
        lines.append(f"| {CEILING_TITLE} (1 core x {top[1]}) | {limit:,.0f} | - | - | - | - | 1.00x"
                     f" | {1e6 / top[0].per_core:.0f} | - |")
    lines += ["", DAGGER_NOTE] if any(m.disturbed for m in measured) else []
    if top and limit:
        lines += ["", f"{CEILING_TITLE}: the app alone on the same paths, called in a loop in one process"
                      f" (bench/ceiling.py): {top[0].per_core:,.0f} calls per CPU second, times {top[1]} workers."]
    return lines


def _load_row(t: Trial, m: Measured[LoadResult] | None, base: LoadResult | None, versus: str,
              limit: float | None) -> str:
    if m is None:
        if t.error is None and versus != "p99" and "close" not in t.server.modes:
            # Not run, not failed: this server's HTTP socket keeps connections (uWSGI's --http11-socket).
            return f"| {t.server.title} | not run: it keeps the connection whatever the client asks | | | | | | | |"
        return f"| {t.server.title} | failed: {(t.error or '-').splitlines()[0]} | | | | | | | |"
    r = m.result
    if versus == "p99":
        ratio = fmt(r.p99_ms / base.p99_ms if base and base.p99_ms else None, ".2f", "x")
    else:
        ratio = fmt(r.rps / base.rps if base and base.rps else None, ".2f", "x")
    of_top = fmt(r.rps / limit if limit else None, ".2f", "x")
    return (f"| {t.server.title} | {r.rps:,.0f}{dagger(m.disturbed)} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors}"
            f" | {ratio} | {of_top} | {_per_request(m.cpu.server_s, r)} | {_per_request(m.main_s, r)} |")


def _per_request(seconds: float, result: LoadResult) -> str:
    return fmt(seconds / result.requests * 1e6 if result.requests else None, ".0f")


def mixed_table(app: App, trials: Sequence[Trial], spans: Durations, mixer: str, top: Top | None) -> list[str]:
    heading = (f"## {app.title}: mixed load, 90% / and 10% /heavy, {CONNECTIONS} keep-alive connections,"
               f" {spans.mixed:g} s, {mixer}")
    return load_table(heading, trials, "mixed", "p99", top)


def paced_mix_table(app: App, trials: Sequence[Trial], workers: int, spans: Durations) -> list[str]:
    lines = ["", f"## {app.title}: the same mix from paced clients, {workers * PER_WORKER} keep-alive connections"
                 f" opened at once, {MIX_PACE * 1000:g} ms between requests per connection, {spans.mixed:g} s,"
                 " the tagged Python client", "",
             "| server | req/s | p50 ms | p99 ms | errors | p50 vs clusterrun shared | p99 vs clusterrun shared"
             " | requests per worker (share) | connections per worker |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    shared = next((t.paced_mix.result.load for t in trials if t.server.key == SHARED and t.paced_mix), None)
    for t in trials:
        m = t.paced_mix
        if m is None:
            lines.append(f"| {t.server.title} | failed: {(t.error or '-').splitlines()[0]} | | | | | | | |")
            continue
        r, spread_of = m.result.load, m.result.spread
        versus = [fmt(getattr(r, a) / getattr(shared, a) if shared and getattr(shared, a) else None, ".2f", "x")
                  for a in ("p50_ms", "p99_ms")]
        lines.append(f"| {t.server.title} | {r.rps:,.0f}{dagger(m.disturbed)} | {r.p50_ms:.2f} | {r.p99_ms:.2f}"
                     f" | {r.errors} | {versus[0]} | {versus[1]} | {_shares(spread_of)} | {_connections(spread_of)} |")
    return lines + (["", DAGGER_NOTE] if any(t.paced_mix and t.paced_mix.disturbed for t in trials) else [])


def close_table(app: App, trials: Sequence[Trial], spans: Durations, client: str, top: Top | None) -> list[str]:
    heading = f"## {app.title}: a new connection per request, {CONNECTIONS} connections, {spans.close:g} s, {client}"
    return load_table(heading, trials, "close", "req/s", top)


def check_targets(app: App, trials: Sequence[Trial]) -> list[str]:
    by_key = {t.server.key: t for t in trials}
    lines = [_fair_line(app, by_key.get(f"clusterrun-{p}"), p, paced) for p in ("rr", "least-conn", "balanced")
             for paced in (False, True)]
    lines.append(_fair_line(app, by_key.get("clusterrun-sticky"), "sticky", paced=True))
    lines.append(_p99_line(app, by_key.get("clusterrun-least-conn"), by_key.get(SHARED), paced=False))
    lines.append(_p99_line(app, by_key.get("clusterrun-least-conn"), by_key.get(SHARED), paced=True))
    lines += [_close_line(app, by_key.get(f"clusterrun-{p}"), by_key.get(SHARED), p)
              for p in ("rr", "least-conn", "balanced")]
    return [line for line in lines if line]


def _suffix(*measured: Measured[Any] | None) -> str:
    return " [disturbed by other jobs]" if any(m and m.disturbed for m in measured) else ""


def _fair_line(app: App, trial: Trial | None, policy: str, paced: bool) -> str:
    where = f"{app.title}, fairness {'paced' if paced else 'flat out'}"
    if trial is None:
        return ""
    m = trial.paced if paced else trial.fairness
    if m is None:
        return f"SKIP  {where}: clusterrun {policy} not measured"
    f = m.result
    if policy == "sticky":
        return (f"INFO  {where}: clusterrun sticky: {f.served_by} of {f.workers} workers served every request"
                " (one client address: by design)")
    text = f"{where}: clusterrun {policy} busiest/idlest {ratio_text(f)}{_suffix(m)}"
    verdict = "PASS" if f.ratio is not None and f.ratio <= FAIR_MAX else "MISS"
    return f"{verdict}  {text}, target <= {FAIR_MAX:.2f}"


def _p99_line(app: App, least: Trial | None, shared: Trial | None, paced: bool) -> str:
    where = f"{app.title}, mixed load{' from paced clients' if paced else ''}"
    if least is None or shared is None:
        return ""
    ours_m, theirs_m = (least.paced_mix, shared.paced_mix) if paced else (least.mixed, shared.mixed)
    if ours_m is None or theirs_m is None:
        return f"SKIP  {where}: clusterrun least-conn or shared not measured"
    ours, theirs = (_load_of(ours_m.result).p99_ms, _load_of(theirs_m.result).p99_ms)
    ratio = ours / theirs if theirs else float("inf")
    verdict = "PASS" if ratio <= P99_MAX else "MISS"
    return (f"{verdict}  {where}: clusterrun least-conn p99 {ours:.1f} ms = {ratio:.2f}x clusterrun shared p99"
            f" ({theirs:.1f} ms){_suffix(ours_m, theirs_m)}, target <= {P99_MAX:.2f}x")


def _load_of(result: LoadResult | PacedMix) -> LoadResult:
    return result.load if isinstance(result, PacedMix) else result


def _close_line(app: App, trial: Trial | None, shared: Trial | None, policy: str) -> str:
    where = f"{app.title}, new connection per request"
    if trial is None or shared is None:
        return ""
    if trial.close is None or shared.close is None:
        return f"SKIP  {where}: clusterrun {policy} or shared not measured"
    ours, theirs = trial.close.result.rps, shared.close.result.rps
    ratio = ours / theirs if theirs else float("inf")
    verdict = "PASS" if ratio >= CLOSE_MIN else "MISS"
    return (f"{verdict}  {where}: clusterrun {policy} {ours:,.0f} req/s = {ratio:.2f}x clusterrun shared"
            f" ({theirs:,.0f}){_suffix(trial.close, shared.close)}, target >= {CLOSE_MIN:.2f}x")
