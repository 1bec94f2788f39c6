"""The primary's memory stays flat however many workers it replaces (issue 10, item 13).

Every replaced worker once left its handle alive in the primary (a cancelled boot timer held it for
--boot-timeout, reference cycles kept it until a full collection that a quiet primary rarely runs), with
its 256 KiB channel buffer and its shared counter page: about 256 KiB and one memory map per replacement.
Here workers are replaced in all three ways — rolling restarts (SIGHUP), recycling (--max-requests) and
SIGKILL — and the primary's resident memory and its count of memory maps must not follow.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import TEST_APPS, Cluster, wait_until, who

# Long by nature (see tox.ini): run on one interpreter of the CI matrix.
pytestmark = pytest.mark.slow

WORKERS = 2
WARM_UP_ROUNDS = 2
ROUNDS = 8  # each replaces 4 or more workers: 2 by SIGHUP, 1 or more by --max-requests, 1 by SIGKILL
MAX_REQUESTS = 10
# Bounds of growth over the measured rounds. Before the fix they grew by about 256 KiB and 1 map per
# replaced worker: 8 MiB and 32 maps over these rounds.
RSS_BOUND_KB = 2048
MAPS_BOUND = 4


def memory_of(pid: int) -> tuple[int, int]:
    """The process's resident memory in KiB (VmRSS) and its number of memory maps (Linux /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))  # type: ignore[union-attr]
    with open(f"/proc/{pid}/maps") as maps:
        return rss, sum(1 for _ in maps)


def settled(cluster: Cluster, serving: int) -> bool:
    """``serving`` workers have come up in all, and the primary has exactly WORKERS children, none unreaped."""
    if len(re.findall(r"worker \d+ \(index \d+, pid \d+\) is serving", cluster.output())) < serving:
        return False
    states = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == cluster.pid:
                    states.append(fields[0])
    return len(states) == WORKERS and "Z" not in states


class Replacer:
    """Replaces workers in every way the primary knows, waiting after each until the old one is reaped."""

    def __init__(self, cluster: Cluster, url: str) -> None:
        self.cluster = cluster
        self.url = url
        self.serving = 0  # "is serving" lines so far: one per worker that replaced another
        self.rounds = 0

    def round(self) -> None:
        cluster = self.cluster
        # A rolling restart replaces every worker.
        cluster.signal(signal.SIGHUP)
        self.serving += WORKERS
        wait_until(lambda: settled(cluster, self.serving), "a rolling restart to replace every worker")
        # Recycling: requests until a worker has served --max-requests and is replaced.
        recycled = cluster.output().count("recycling worker")
        def recycling() -> bool:
            if cluster.output().count("recycling worker") > recycled:
                return True
            who(self.url)
            return False

        wait_until(recycling, f"a worker to be recycled after --max-requests {MAX_REQUESTS}")
        now = cluster.output().count("recycling worker")
        self.serving += now - recycled
        wait_until(lambda: settled(cluster, self.serving), "a recycled worker to be replaced")
        # A crash: SIGKILL one worker, each slot in turn (so that no slot's restart backoff grows long).
        index = self.rounds % WORKERS
        victim = who(self.url)
        while victim["index"] != index:
            victim = who(self.url)
        os.kill(victim["pid"], signal.SIGKILL)
        self.serving += 1
        wait_until(lambda: settled(cluster, self.serving), "a killed worker to be respawned")
        # Recycling may have replaced another worker meanwhile: count what really came up.
        self.serving = len(re.findall(r"worker \d+ \(index \d+, pid \d+\) is serving", cluster.output()))
        self.rounds += 1


# A dispatching and a kernel-side policy; a WSGI and an ASGI app (the primary's share should not depend on it).
@pytest.mark.parametrize("policy, app", [("rr", "sup_app:wsgi"), ("shared", "sup_app:asgi")])
def test_replacing_workers_many_times_leaves_the_primary_memory_flat(
    run_cli: Callable[..., Cluster], policy: str, app: str
) -> None:
    cluster = run_cli(
        app, "--port", "0", "--workers", str(WORKERS), "--policy", policy, "--log-level", "info",
        "--max-requests", str(MAX_REQUESTS), "--max-restarts", "100", cwd=TEST_APPS,
    )
    url = cluster.wait_ready()
    replacer = Replacer(cluster, url)
    for _ in range(WARM_UP_ROUNDS):
        replacer.round()
    rss_before, maps_before = memory_of(cluster.pid)
    serving_before = replacer.serving
    for _ in range(ROUNDS):
        replacer.round()
    rss_after, maps_after = memory_of(cluster.pid)
    replaced = replacer.serving - serving_before
    assert replaced >= 4 * ROUNDS
    summary = (f"after {replaced} more replacements: VmRSS {rss_before} -> {rss_after} kB, "
               f"maps {maps_before} -> {maps_after}")
    print(summary)  # shown with pytest -s
    assert rss_after - rss_before <= RSS_BOUND_KB, summary
    assert maps_after - maps_before <= MAPS_BOUND, summary
