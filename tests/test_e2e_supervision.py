"""Respawn, restart throttling and boot failures, with real processes and real signals."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import httpx
import pytest

from helpers import SUP_APP_PAIR, Cluster, children_of, start, wait_until, who


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_a_killed_worker_is_respawned_into_its_slot(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = start(run_cli, app, "--workers", "2")
    url = cluster.wait_ready()
    victim = who(url + "/")
    os.kill(victim["pid"], signal.SIGKILL)

    line = cluster.wait_for_line(rf"worker {victim['id']} \(index {victim['index']}, pid {victim['pid']}\) died "
                                 rf"\(killed by SIGKILL\); respawning slot {victim['index']}")
    assert line
    status = cluster.wait_status(lambda s: s["ready"] == 2 and victim["pid"] not in {w["pid"] for w in s["workers"]},
                                 f"slot {victim['index']} served again")
    respawned = cluster.serving()[victim["index"]]
    assert respawned["id"] == 3  # ids count up with every fork, as Node's worker.id
    assert respawned["pid"] in children_of(cluster.pid)
    assert respawned["slot_restarts"] == 1 and status["restarts"] == 1
    seen = {who(url + "/")["pid"] for _ in range(4)}
    assert respawned["pid"] in seen and victim["pid"] not in seen


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_a_slot_that_keeps_dying_is_given_up_and_the_primary_exits_4(
    run_cli: Callable[..., Cluster], app: str
) -> None:
    # --min-uptime 600: every death counts as an unstable start, however long the worker served first.
    cluster = start(run_cli, app, "--workers", "1", "--max-restarts", "2", "--restart-window", "600",
                    "--min-uptime", "600")
    url = cluster.wait_ready()
    for death in range(1, 4):
        with pytest.raises(httpx.TransportError), httpx.Client(timeout=30) as http:
            http.get(url + "/crash")
        if death < 3:
            cluster.wait_status(lambda s, n=death: s["restarts"] == n and s["ready"] == 1,
                                f"slot 0 respawned after death {death}")
    assert cluster.wait_exit() == 4
    output = cluster.output()
    assert "slot 0 died 3 times within 600s" in output
    assert "not respawning it" in output
    assert "Traceback" not in output
    assert output.count("respawning slot 0") == 2
    assert children_of(cluster.pid) == []


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_boot_failure_stops_everything_with_exit_3_and_no_crash_loop(
    run_cli: Callable[..., Cluster], app: str, tmp_path: os.PathLike[str]
) -> None:
    broken = os.path.join(tmp_path, "broken")
    open(broken, "w").close()
    cluster = start(run_cli, app, "--workers", "2", env={"SUP_BREAK_FILE": broken})
    assert cluster.wait_exit() == 3
    output = cluster.output()
    assert output.count("failed to boot") == 1, output
    assert "importing 'sup_app' failed: RuntimeError: broken on purpose by the test" in output
    assert "Traceback" not in output
    assert "respawning" not in output


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_a_worker_stopped_with_sigterm_drains_and_is_replaced(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = start(run_cli, app, "--workers", "1")
    url = cluster.wait_ready()
    first = who(url + "/")
    with httpx.Client(timeout=30) as http:
        # The slow request is in flight on the only worker when it is told to stop from outside.
        slow = http.build_request("GET", url + "/slow?s=1")
        stream = http.send(slow, stream=True)
        try:
            os.kill(first["pid"], signal.SIGTERM)
            cluster.wait_status(lambda s: s["ready"] == 1 and s["workers"][-1]["id"] == 2, "worker 2 serving")
            assert stream.status_code == 200
            stream.read()
        finally:
            stream.close()
    after = who(url + "/")
    assert after["index"] == 0 and after["id"] == 2
    wait_until(lambda: first["pid"] not in children_of(cluster.pid), "the stopped worker to exit")
