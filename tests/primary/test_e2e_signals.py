"""Signals to the primary: graceful stop, forced stop, rolling restart, scaling."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from helpers import SUP_APP_PAIR, Cluster, alive, children_of, start, wait_until, who


def in_flight(url: str) -> tuple[threading.Thread, dict[str, object]]:
    """A request running in a thread; its outcome lands in the returned dict."""
    outcome: dict[str, object] = {}

    def call() -> None:
        try:
            with httpx.Client(timeout=60) as http:
                outcome["status"] = http.get(url).status_code
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_stop_lets_in_flight_requests_finish_then_exits_0(
    run_cli: Callable[..., Cluster], app: str, signum: int
) -> None:
    cluster = start(run_cli, app, "--workers", "2")
    url = cluster.wait_ready()
    workers = children_of(cluster.pid)
    thread, outcome = in_flight(url + "/slow?s=1.5")
    cluster.wait_for_line(r"slow request started")
    cluster.signal(signum)
    cluster.wait_for_line(r"stopping gracefully")
    thread.join(30)
    assert outcome == {"status": 200}
    assert cluster.wait_exit() == 0
    assert all(not alive(pid) for pid in workers)
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/", timeout=5)




@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_graceful_timeout_kills_what_is_left(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = start(run_cli, app, "--workers", "1", "--graceful-timeout", "0.5")
    url = cluster.wait_ready()
    workers = children_of(cluster.pid)
    thread, outcome = in_flight(url + "/slow?s=30")
    cluster.wait_for_line(r"slow request started")
    cluster.signal(signal.SIGTERM)
    assert cluster.wait_exit() == 0
    thread.join(30)
    assert "error" in outcome
    assert "did not finish within --graceful-timeout 0.5s: killing" in cluster.output()
    assert all(not alive(pid) for pid in workers)


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_a_second_sigint_kills_at_once(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = start(run_cli, app, "--workers", "1")
    url = cluster.wait_ready()
    workers = children_of(cluster.pid)
    thread, _outcome = in_flight(url + "/slow?s=30")
    cluster.wait_for_line(r"slow request started")
    cluster.signal(signal.SIGINT)
    cluster.wait_for_line(r"stopping gracefully")
    cluster.signal(signal.SIGINT)
    assert cluster.wait_exit() == 0
    assert "second interrupt: killing every worker now" in cluster.output()
    thread.join(30)
    assert all(not alive(pid) for pid in workers)


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGUSR2])
@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_rolling_restart_replaces_every_worker_with_no_failed_request(
    run_cli: Callable[..., Cluster], app: str, signum: int
) -> None:
    cluster = start(run_cli, app, "--workers", "2")
    url = cluster.wait_ready()
    old = set(children_of(cluster.pid))
    cluster.signal(signum)
    failures: list[BaseException] = []
    served = 0
    # Load while the restart runs: a new connection per request, bounded in count.
    while "rolling restart complete" not in cluster.output() and served < 5000:
        try:
            who(url + "/")
        except httpx.HTTPError as exc:
            failures.append(exc)
        served += 1
    cluster.wait_status(lambda s: s["reload"]["state"] == "complete", "the rolling restart complete")
    assert failures == []
    ids = {who(url + "/")["id"] for _ in range(4)}
    assert ids == {3, 4}
    wait_until(lambda: not (old & set(children_of(cluster.pid))), "the old workers to exit")
    assert len(children_of(cluster.pid)) == 2


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_a_rolling_restart_to_broken_code_keeps_the_old_workers(
    run_cli: Callable[..., Cluster], app: str, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    cluster = start(run_cli, app, "--workers", "2", env={"SUP_BREAK_FILE": str(broken)})
    url = cluster.wait_ready()
    old = sorted(children_of(cluster.pid))
    broken.touch()
    cluster.signal(signal.SIGHUP)
    status = cluster.wait_status(lambda s: s["reload"]["state"] == "aborted", "the rolling restart aborted")
    assert "broken on purpose by the test" in status["reload"]["reason"]
    line = cluster.wait_for_line(r"rolling restart aborted: the new worker 3 .* failed to boot: (.*); the old")[0]
    assert "broken on purpose by the test" in line.group(1)  # the log says so too
    assert {who(url + "/")["id"] for _ in range(4)} == {1, 2}
    wait_until(lambda: sorted(children_of(cluster.pid)) == old, "the failed replacement to be reaped")
    broken.unlink()
    cluster.signal(signal.SIGHUP)
    cluster.wait_status(lambda s: s["reload"] == {"id": 2, "state": "complete", "reason": None}, "reload 2 complete")
    assert {who(url + "/")["id"] for _ in range(4)} == {4, 5}


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_ttin_adds_a_worker_and_ttou_removes_one(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = start(run_cli, app, "--workers", "2")
    url = cluster.wait_ready()
    cluster.signal(signal.SIGTTIN)
    cluster.wait_status(lambda s: s["target"] == s["ready"] == 3, "3 workers serving")
    assert cluster.serving()[2]["id"] == 3
    assert {who(url + "/")["index"] for _ in range(6)} == {0, 1, 2}
    cluster.signal(signal.SIGTTOU)
    cluster.wait_status(lambda s: s["target"] == 2, "the target down to 2")
    wait_until(lambda: len(children_of(cluster.pid)) == 2, "the removed worker to exit")
    assert {who(url + "/")["index"] for _ in range(6)} == {0, 1}
