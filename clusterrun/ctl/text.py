"""Text for people: status and cluster lists (aligned columns, durations and sizes in short units), and how
every command talks to them: its argument parser, whose usage errors exit 2 in one line that points to --help,
and ``run_command``, which turns a command's error into one line and its exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from clusterrun.errors import EXIT_CONFIG, ClusterrunError


class CommandParser(argparse.ArgumentParser):
    """argparse for clusterrun's commands: a usage error is exit 2 (EXIT_CONFIG) in one line naming --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def run_command(name: str, run: Callable[[], int]) -> int:
    """Run the command ``name``: its ClusterrunError is one line on stderr and the error's exit code; Ctrl-C is
    130, as a shell reports it, without a traceback."""
    try:
        return run()
    except ClusterrunError as exc:
        print(f"clusterrun {name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def duration(seconds: float) -> str:
    """3s, 4m05s, 2h07m, 3d04h."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def size(count: int | None) -> str:
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}GiB"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(header), *([("-" if cell is None else str(cell)) for cell in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in cells)
    return "\n".join(line.rstrip() for line in lines)


def cluster_table(clusters: Sequence[dict[str, Any]]) -> str:
    if not clusters:
        return "no cluster is running"
    return table(
        ["NAME", "PID", "APP", "WORKERS", "UPTIME", "BINDS"],
        [[c["name"], c["pid"], c["app"], f"{c['ready']}/{c['target']}", duration(c["uptime"]), " ".join(c["binds"])]
         for c in clusters],
    )


def status_text(status: dict[str, Any]) -> str:
    reload = status["reload"]
    reload_note = "none" if reload["state"] == "none" else f"{reload['id']} {reload['state']}"
    if reload["reason"]:
        reload_note += f" ({reload['reason']})"
    head = [
        f"{status['name']}: {status['app']}, primary pid {status['pid']}, up {duration(status['uptime'])}"
        + (", stopping" if status["stopping"] else ""),
        f"policy {status['policy']}, listening on {' '.join(status['binds'])}",
        f"workers {status['ready']}/{status['target']} ready, {status['restarts']} restarts, last reload: "
        f"{reload_note}",
        "",
    ]
    rows = [
        [w["id"], w["index"], w["pid"], w["state"], duration(w["uptime"]), w["requests"], w["connections"],
         w["in_flight"], size(w["rss_bytes"]), w["cpu_percent"], w["slot_restarts"], w["last_exit"]]
        for w in status["workers"]
    ]
    return "\n".join(head) + table(
        ["ID", "INDEX", "PID", "STATE", "UPTIME", "REQUESTS", "CONNS", "IN FLIGHT", "RSS", "CPU%", "RESTARTS",
         "LAST EXIT"], rows)
