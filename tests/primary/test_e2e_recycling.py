"""Hung workers, recycling, orphan-proofing, malformed frames and --preload, end to end."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from helpers import FRESH, SUP_APP_PAIR, Cluster, alive, children_of, start, wait_until, who


def _fire(url: str) -> threading.Thread:
    """A request that will not come back in time (its worker hangs or dies); its outcome does not matter."""

    def call() -> None:
        try:
            httpx.get(url, timeout=30)
        except httpx.HTTPError:
            pass

    thread = threading.Thread(target=call)
    thread.start()
    return thread


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_a_hung_worker_has_its_traceback_logged_then_is_killed_and_respawned(
    run_cli: Callable[..., Cluster], app: str
) -> None:
    cluster = start(run_cli, app, "--workers", "1", "--timeout", "1")
    url = cluster.wait_ready()
    caller = _fire(url + "/hang")
    try:
        cluster.wait_for_line(r"worker 1 \(index 0, pid \d+\) sent no heartbeat for [\d.]+s \(--timeout\)")
        # faulthandler's dump names the function and file where the worker is stuck.
        cluster.wait_for_line(r'File ".*sup_app\.py", line \d+ in _misbehave')
        cluster.wait_for_line(r"worker 1 .* died \(killed by SIGKILL\); respawning slot 0")
        cluster.wait_for_line(r"worker 2 \(index 0, pid \d+\) is serving")
        assert who(url + "/")["id"] == 2
    finally:
        caller.join(60)


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_max_requests_replaces_the_worker_without_a_failed_request(
    run_cli: Callable[..., Cluster], app: str
) -> None:
    cluster = start(run_cli, app, "--workers", "1", "--max-requests", "5", "--max-requests-jitter", "3")
    url = cluster.wait_ready()
    statuses = []
    while "replaced by worker 2" not in cluster.output() and len(statuses) < 5000:
        statuses.append(FRESH.get(url + "/").status_code)
    line = cluster.wait_for_line(r"recycling worker 1 \(index 0, pid \d+\): it served (\d+) requests "
                                 r"\(--max-requests 5\)")[0]
    assert 5 <= int(line.group(1))
    assert set(statuses) == {200}
    wait_until(lambda: who(url + "/")["id"] == 2, "the replacement to serve")
    wait_until(lambda: len(children_of(cluster.pid)) == 1, "the recycled worker to exit")


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_max_memory_replaces_a_leaking_worker(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = start(run_cli, app, "--workers", "1", "--max-memory", "200")
    url = cluster.wait_ready()
    assert FRESH.get(url + "/leak?mb=300").status_code == 200
    cluster.wait_for_line(r"recycling worker 1 \(index 0, pid \d+\): its memory grew to \d+ MiB "
                          r"\(--max-memory 200\)")
    cluster.wait_for_line(r"slot 0: worker 1 .* replaced by worker 2")
    wait_until(lambda: who(url + "/")["id"] == 2, "the replacement to serve")


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_workers_never_outlive_a_killed_primary(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = start(run_cli, app, "--workers", "2")
    cluster.wait_ready()
    workers = children_of(cluster.pid)
    assert len(workers) == 2
    cluster.signal(signal.SIGKILL)
    cluster.wait_exit()
    # The requirement is 2 seconds; the deadline leaves room for a loaded CI machine.
    wait_until(lambda: not any(alive(pid) for pid in workers), "the orphaned workers to exit", timeout=5)


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_garbage_on_a_channel_costs_that_worker_only(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = start(run_cli, app, "--workers", "2")
    url = cluster.wait_ready()
    caller = _fire(url + "/garbage")
    try:
        line = cluster.wait_for_line(r"worker (\d) \(index \d, pid \d+\) sent a malformed frame \((.*)\): killing it")
        assert "larger than" in line[0].group(2) or "not JSON" in line[0].group(2)
        cluster.wait_for_line(r"worker 3 \(index \d, pid \d+\) is serving")
    finally:
        caller.join(60)
    assert cluster.proc.poll() is None
    assert {who(url + "/")["id"] for _ in range(4)} == {1, 2, 3} - {int(line[0].group(1))}


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_preload_imports_the_app_once_in_the_primary(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = start(run_cli, app, "--workers", "2", "--preload")
    url = cluster.wait_ready()
    assert f"preloaded {app}" in cluster.output()
    answers = [who(url + "/") for _ in range(4)]
    assert {a["imported_in"] for a in answers} == {cluster.pid}
    assert {a["pid"] for a in answers} == set(children_of(cluster.pid))


def test_preload_boot_failure_exits_3_before_forking(run_cli: Callable[..., Cluster], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.touch()
    cluster = start(run_cli, "sup_app:wsgi", "--preload", env={"SUP_BREAK_FILE": str(broken)})
    assert cluster.wait_exit() == 3
    assert "importing 'sup_app' failed: RuntimeError: broken on purpose by the test" in cluster.output()
    assert "Traceback" not in cluster.output()
