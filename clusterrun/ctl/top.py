"""``clusterrun top``: a live monitor of one cluster, redrawn once a second.

Per worker: state, requests per second, p50/p99 latency over the last 10 s (from the duration histogram the
workers keep with --metrics; "-" without it), open connections, CPU %, memory, restarts; and the cluster's
totals. On a terminal it draws with rich and reads keys: q quits, r starts a rolling restart, + and - scale by
one. When stdout is not a terminal (or rich is missing) it prints plain text frames instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import sys
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from clusterrun.ctl.client import request, resolve
from clusterrun.ctl.text import duration, size, table
from clusterrun.errors import ControlError
from clusterrun.wire.requeststats import BUCKETS

WINDOW = 10.0  # seconds of history for rates and percentiles
HEADER = ["ID", "INDEX", "PID", "STATE", "REQ/S", "P50", "P99", "CONNS", "CPU%", "RSS", "RESTARTS"]


class History:
    """Status snapshots of the last WINDOW seconds: rates and percentiles come from their differences."""

    def __init__(self) -> None:
        self._snapshots: deque[tuple[float, dict[int, dict[str, Any]]]] = deque()

    def add(self, now: float, status: dict[str, Any]) -> None:
        self._snapshots.append((now, {w["id"]: w for w in status["workers"]}))
        while len(self._snapshots) > 2 and now - self._snapshots[1][0] >= WINDOW:
            self._snapshots.popleft()

    def oldest(self, worker_id: int) -> tuple[float, dict[str, Any]] | None:
        for at, workers in self._snapshots:
            if worker_id in workers:
                return at, workers[worker_id]
        return None


def percentile(buckets: list[int], fraction: float) -> str:
    """The bucket bound under which ``fraction`` of the requests fell ("-" without requests)."""
    count = sum(buckets)
    if count == 0:
        return "-"
    wanted, running = fraction * count, 0
    for bound, n in zip([*BUCKETS, float("inf")], buckets, strict=False):
        running += n
        if running >= wanted:
            return f">{BUCKETS[-1]:g}s" if bound == float("inf") else f"≤{bound * 1000:g}ms"
    return "-"


def rows(status: dict[str, Any], history: History, now: float) -> list[list[Any]]:
    found = []
    for w in status["workers"]:
        then = history.oldest(w["id"])
        rate: Any = "-"
        p50 = p99 = "-"
        if then is not None and now > then[0]:
            rate = f"{(w['requests'] - then[1]['requests']) / (now - then[0]):.1f}"
            latest = w.get("latency_buckets", [])
            earlier = then[1].get("latency_buckets") or [0] * len(latest)  # none yet: the worker had just started
            recent = [a - b for a, b in zip(latest, earlier, strict=False)]
            p50, p99 = percentile(recent, 0.5), percentile(recent, 0.99)
        found.append([w["id"], w["index"], w["pid"], w["state"], rate, p50, p99, w["connections"],
                      w["cpu_percent"], size(w["rss_bytes"]), w["slot_restarts"]])
    return found


def headline(status: dict[str, Any], worker_rows: list[list[Any]]) -> str:
    rate = sum(float(row[4]) for row in worker_rows if row[4] != "-")
    reload = status["reload"]
    return (f"{status['name']} ({status['app']}, pid {status['pid']}, up {duration(status['uptime'])}): "
            f"{status['ready']}/{status['target']} workers ready, {rate:.1f} req/s, {status['restarts']} restarts, "
            f"reload {reload['state']}" + ("" if status["workers"] and "latency_buckets" in status["workers"][0]
                                           else "; latency needs --metrics"))


def frames(path: str, count: int | None) -> Iterator[tuple[dict[str, Any], str, list[list[Any]]]]:
    history = History()
    shown = 0
    while count is None or shown < count:
        now = time.monotonic()
        status = request(path, "status")
        history.add(now, status)
        worker_rows = rows(status, history, now)
        yield status, headline(status, worker_rows), worker_rows
        shown += 1


def run_plain(path: str, count: int | None) -> int:
    for _status, title, worker_rows in frames(path, count):
        print(title)
        print(table(HEADER, worker_rows), flush=True)
        print()
        if count is None or count > 1:
            time.sleep(1.0)
    return 0


def run_live(path: str) -> int:
    from rich.console import Group
    from rich.live import Live
    from rich.table import Table
    from rich.text import Text

    keys = "keys: q quit · r reload · + one worker more · - one fewer"
    note = ""
    with _cbreak(), Live(auto_refresh=False, screen=False) as live:
        for status, title, worker_rows in frames(path, None):
            grid = Table(*HEADER, box=None, header_style="bold")
            for row in worker_rows:
                grid.add_row(*("-" if cell is None else str(cell) for cell in row))
            live.update(Group(Text(title, style="bold"), grid, Text(f"{keys}{note}", style="dim")), refresh=True)
            key = _key(1.0)
            if key == "q":
                return 0
            note = _act(path, key, status) if key else note
    return 0


def _act(path: str, key: str, status: dict[str, Any]) -> str:
    try:
        if key == "r":
            return f" · reload {request(path, 'reload')['reload']} started"
        if key in "+-":
            return f" · scaling to {request(path, 'scale', workers=f'{key}1')['target']}"
    except ControlError as exc:
        return f" · {exc}"
    return ""


def _key(timeout: float) -> str:
    readable, _, _ = select.select([sys.stdin], [], [], timeout)
    return os.read(sys.stdin.fileno(), 1).decode(errors="replace") if readable else ""


@contextlib.contextmanager
def _cbreak() -> Iterator[None]:
    """Keys arrive one by one, unechoed; the terminal is put back however the monitor ends."""
    import termios
    import tty

    if not sys.stdin.isatty():
        yield
        return
    saved = termios.tcgetattr(sys.stdin)
    try:
        tty.setcbreak(sys.stdin.fileno())
        yield
    finally:
        termios.tcsetattr(sys.stdin, termios.TCSADRAIN, saved)


def cmd_top(args: argparse.Namespace) -> int:
    path = resolve(args.name, args.control)
    request(path, "info")  # fail now, with the reason, if nobody answers
    if args.count is not None or not sys.stdout.isatty():
        return run_plain(path, args.count)
    try:
        import rich  # noqa: F401
    except ImportError:
        print("clusterrun top: rich is not installed (pip install rich): plain text instead",
              file=sys.stderr)
        return run_plain(path, None)
    try:
        return run_live(path)
    except KeyboardInterrupt:
        return 0
