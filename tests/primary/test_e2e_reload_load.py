"""A rolling restart of 4 workers under continuous load: no failed request, for every policy."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

import httpx
import pytest

from helpers import POLICIES, SUP_APP_PAIR, Cluster, children_of, start, wait_until


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_rolling_restart_under_load_fails_no_request(
    run_cli: Callable[..., Cluster], app: str, policy: str
) -> None:
    cluster = start(run_cli, app, "--workers", "4", "--policy", policy)
    url = cluster.wait_ready() + "/"
    old = set(children_of(cluster.pid))
    done = threading.Event()
    outcomes: list[str] = []
    lock = threading.Lock()

    def load(keep_alive: bool) -> None:
        # Bounded in count; half the clients reuse one connection, half open a new one per request.
        limits = httpx.Limits(max_keepalive_connections=1 if keep_alive else 0)
        with httpx.Client(timeout=30, limits=limits) as http:
            for _ in range(20000):
                if done.is_set():
                    return
                try:
                    outcome = str(http.get(url).status_code)
                except httpx.HTTPError as exc:
                    outcome = repr(exc)
                with lock:
                    outcomes.append(outcome)

    clients = [threading.Thread(target=load, args=(n % 2 == 0,)) for n in range(4)]
    for client in clients:
        client.start()
    try:
        wait_until(lambda: len(outcomes) >= 40, "load to start")
        cluster.signal(signal.SIGHUP)
        cluster.wait_for_line(r"rolling restart complete: 4 workers replaced")
        wait_until(lambda: not (old & set(children_of(cluster.pid))), "the old workers to exit")
        served = len(outcomes)
        wait_until(lambda: len(outcomes) >= served + 40, "load on the new workers")
    finally:
        done.set()
        for client in clients:
            client.join(60)
    failures = [o for o in outcomes if o != "200"]
    # reuseport too: each slot keeps its listener across replacements, so no accept queue is ever closed.
    assert failures == [], failures[:5]
