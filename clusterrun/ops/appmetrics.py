"""An app's own prometheus_client metrics, from every worker, in the primary's /metrics (with --metrics).

prometheus_client's multiprocess mode does the work: every process writes its values to files in the folder
named by PROMETHEUS_MULTIPROC_DIR, and the scrape reads them all. clusterrun creates that folder (private,
fresh, removed when the cluster stops) and sets the variable before the app is imported anywhere, so that
the workers inherit it. A folder the user set already is used as it is, and left in place.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import tempfile

from clusterrun.config.options import Config

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


class AppMetricsDir:
    def __init__(self, config: Config) -> None:
        self.path: str | None = None
        self.created = False
        if config.metrics is None:
            return
        given = os.environ.get(VARIABLE) or os.environ.get(VARIABLE.lower())
        if given:
            self.path = given
            return
        self.path = tempfile.mkdtemp(prefix="clusterrun-metrics-")
        self.created = True
        os.environ[VARIABLE] = self.path

    def close(self) -> None:
        if self.created and self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            if os.environ.get(VARIABLE) == self.path:
                del os.environ[VARIABLE]


_LIVE_GAUGE = re.compile(r"gauge_live\w*?_(\d+)\.db$")


def forget_dead_workers(path: str, live_pids: set[int]) -> None:
    """Drop the live-only gauges of workers that exited (prometheus_client's mark_process_dead)."""
    from prometheus_client import multiprocess

    dead = set()
    for name in glob.glob(os.path.join(path, "gauge_live*.db")):
        match = _LIVE_GAUGE.search(name)
        if match and int(match.group(1)) not in live_pids and int(match.group(1)) != os.getpid():
            dead.add(int(match.group(1)))
    for pid in dead:
        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
