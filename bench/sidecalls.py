"""Side calls for the metrics section: scrape /metrics and ask ``status`` on the control socket, every interval.

    python sidecalls.py --metrics 127.0.0.1:PORT --control PATH [--interval 0.1]

Run as a process of its own, not a thread of the benchmark: the Python load
client runs in the benchmark's process, and a thread there would wait for the
GIL, so its latencies (and the load's) would measure the client, not the
primary. Prints ``ready`` once started, calls until its stdin is closed, then
prints one JSON line: each kind's latencies in milliseconds and its failures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from collections.abc import Callable

from clusterrun.ctl import client
from clusterrun.errors import ControlError

TIMEOUT = 5.0  # a call slower than this counts as failed: the primary stalled for that long
STATUS = {"command": "status"}


def scrape(host: str, port: int) -> None:
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200 or b"clusterrun_workers" not in body:
            raise ValueError(f"/metrics answered {response.status} {body[:80]!r}")
    finally:
        conn.close()


def status(path: str) -> None:
    """One request per connection, one JSON line back (the control protocol); ControlError unless ok."""
    client.call(path, STATUS, timeout=TIMEOUT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metrics", required=True, help="HOST:PORT of the primary's /metrics")
    parser.add_argument("--control", required=True, help="the cluster's control socket")
    parser.add_argument("--interval", type=float, default=0.1)
    args = parser.parse_args()
    host, _, port = args.metrics.rpartition(":")
    calls: dict[str, Callable[[], None]] = {"metrics": lambda: scrape(host, int(port)),
                                            "status": lambda: status(args.control)}
    latencies: dict[str, list[float]] = {kind: [] for kind in calls}
    failures: dict[str, list[str]] = {kind: [] for kind in calls}
    stop = threading.Event()
    def wait_for_eof() -> None:
        sys.stdin.read()  # the benchmark closes our stdin when its load is over
        stop.set()

    # The only thread besides the caller, and it only waits: the calls themselves are made one at a time.
    threading.Thread(target=wait_for_eof, daemon=True).start()
    print("ready", flush=True)
    tick = time.monotonic()
    while not stop.is_set():
        for kind, call in calls.items():
            began = time.perf_counter()
            try:
                call()
            except (OSError, ValueError, http.client.HTTPException, ControlError) as exc:
                failures[kind].append(f"{type(exc).__name__}: {exc}")
            else:
                latencies[kind].append((time.perf_counter() - began) * 1000)
        tick += args.interval
        stop.wait(max(0.0, tick - time.monotonic()))
    print(json.dumps({"latencies_ms": latencies, "failures": failures}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
