"""Scheduling policies rr and shared, and WSGI threads, end to end."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from conftest import Cluster
from test_e2e_supervision import APPS, start, who


@pytest.mark.parametrize("app", APPS)
def test_rr_hands_new_connections_to_workers_in_turn(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = start(run_cli, app, "--workers", "2", "--policy", "rr")
    url = cluster.wait_ready()
    assert "policy rr" in cluster.output()
    counts = Counter(who(url + "/")["id"] for _ in range(20))
    assert counts == {1: 10, 2: 10}


@pytest.mark.parametrize("app", APPS)
def test_rr_spreads_keep_alive_clients_two_and_two(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = start(run_cli, app, "--workers", "2", "--policy", "rr")
    url = cluster.wait_ready()
    clients = [httpx.Client(timeout=30) for _ in range(4)]
    try:
        # Each client keeps one connection: the worker it landed on serves all of its requests.
        owners = []
        for http in clients:
            ids = {http.get(url + "/").json()["id"] for _ in range(5)}
            assert len(ids) == 1
            owners.append(ids.pop())
    finally:
        for http in clients:
            http.close()
    assert Counter(owners) == {1: 2, 2: 2}


@pytest.mark.parametrize("app", APPS)
def test_shared_policy_serves_from_every_worker(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = start(run_cli, app, "--workers", "2", env={"CLUSTERRUN_SCHED_POLICY": "shared"})
    url = cluster.wait_ready()
    assert "policy shared" in cluster.output()
    seen: set[int] = set()
    for _ in range(200):
        seen.add(who(url + "/")["id"])
        if seen == {1, 2}:
            break
    assert seen == {1, 2}


def test_policy_flag_wins_over_the_environment(run_cli: Callable[..., Cluster]) -> None:
    cluster = start(run_cli, "sup_app:asgi", "--workers", "1", "--policy", "rr",
                    env={"CLUSTERRUN_SCHED_POLICY": "shared"})
    cluster.wait_ready()
    assert "policy rr" in cluster.output()


@pytest.mark.parametrize("threads, multithread", [("1", False), ("4", True)])
def test_wsgi_threads_run_requests_side_by_side_in_one_worker(
    run_cli: Callable[..., Cluster], threads: str, multithread: bool
) -> None:
    cluster = start(run_cli, "sup_app:wsgi", "--workers", "1", "--threads", threads)
    url = cluster.wait_ready()
    barrier = threading.Barrier(4)
    peaks: list[int] = []

    def call() -> None:
        barrier.wait(30)
        with httpx.Client(timeout=30) as http:
            body = http.get(url + "/slow?s=0.5").json()
        assert body["multithread"] is multithread
        peaks.append(body["peak"])

    callers = [threading.Thread(target=call) for _ in range(4)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(60)
    assert len(peaks) == 4
    if multithread:
        assert max(peaks) >= 2  # the pool ran requests at the same time
    else:
        assert max(peaks) == 1  # inline: one request at a time, as gunicorn's sync worker
