"""Respawn, restart throttling and boot failures, with real processes and real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from helpers import (
    DEADLINE,
    FRESH,
    SUP_APP_PAIR,
    Cluster,
    assert_config_error,
    children_of,
    run_to_exit,
    start,
    wait_until,
    who,
)

PIDS_CGROUPS = Path("/sys/fs/cgroup/pids")  # cgroup v1's pids controller


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
def test_a_slot_whose_workers_die_before_any_request_is_given_up_and_the_primary_exits_4(
    run_cli: Callable[..., Cluster], app: str
) -> None:
    # --min-uptime 600: a worker killed before it took a request is an unstable start, however long it was up.
    cluster = start(run_cli, app, "--workers", "1", "--max-restarts", "2", "--restart-window", "600",
                    "--min-uptime", "600")
    cluster.wait_ready()
    for death in range(1, 4):
        victim = cluster.serving()[0]["pid"]
        os.kill(victim, signal.SIGKILL)  # no request ever reached it
        if death < 3:
            cluster.wait_status(lambda s, n=death, v=victim: s["restarts"] == n and s["ready"] == 1
                                and s["workers"][0]["pid"] != v, f"slot 0 respawned after death {death}")
    assert cluster.wait_exit() == 4
    output = cluster.output()
    assert "slot 0 died 3 times within 600s without taking a request" in output
    assert "not respawning it" in output
    assert "Traceback" not in output
    assert output.count("respawning slot 0") == 2
    assert children_of(cluster.pid) == []


@pytest.mark.parametrize("policy", ["rr", "shared"])  # the primary hands over the connections, or never sees them
@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_a_client_that_crashes_every_worker_it_reaches_never_ends_the_cluster(
    run_cli: Callable[..., Cluster], app: str, policy: str
) -> None:
    # The default limits (--max-restarts 5, --min-uptime 1): every crash hits a worker that became ready moments
    # before, which took the crashing request: no such death counts toward giving its slot up.
    cluster = start(run_cli, app, "--workers", "2", "--policy", policy)
    url = cluster.wait_ready()
    for _ in range(20):
        with pytest.raises(httpx.TransportError), httpx.Client(timeout=DEADLINE) as http:
            http.get(url + "/crash")
    cluster.wait_status(lambda s: s["restarts"] == 20 and s["ready"] == 2, "20 respawns, both slots serving")
    assert FRESH.get(url + "/").status_code == 200
    output = cluster.output()
    assert output.count("it had taken requests") == 20, output
    assert "not respawning" not in output and "no worker is left" not in output
    cluster.signal(signal.SIGTERM)
    assert cluster.wait_exit() == 0


@pytest.mark.slow
@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_a_crashing_url_hit_3_times_a_second_for_30s_costs_under_1_percent_of_other_requests(
    run_cli: Callable[..., Cluster], app: str
) -> None:
    cluster = start(run_cli, app, "--workers", "2")
    url = cluster.wait_ready()
    until = time.monotonic() + 30
    answered: list[bool] = []

    def normal_client() -> None:  # keep-alive, one request at a time, as a browser or an API client
        with httpx.Client(timeout=DEADLINE) as http:
            while time.monotonic() < until:
                try:
                    answered.append(http.get(url + "/").status_code == 200)
                except httpx.TransportError:
                    answered.append(False)
                time.sleep(0.02)

    normal = threading.Thread(target=normal_client)
    normal.start()
    crashes = 0
    next_crash = time.monotonic()
    try:
        while next_crash < until:  # on a schedule of 3 a second, however long each crash takes to answer
            time.sleep(max(0.0, next_crash - time.monotonic()))
            with pytest.raises(httpx.TransportError), httpx.Client(timeout=DEADLINE) as http:
                http.get(url + "/crash")
            crashes += 1
            next_crash += 1 / 3
    finally:
        normal.join(DEADLINE)
    assert crashes >= 85 and cluster.proc.poll() is None
    assert len(answered) > 300 and answered.count(True) >= 0.99 * len(answered), (
        f"{answered.count(False)} of {len(answered)} normal requests failed")
    cluster.wait_status(lambda s: s["ready"] == 2, "both slots serving")
    assert "not respawning" not in cluster.output()
    cluster.signal(signal.SIGTERM)
    assert cluster.wait_exit() == 0


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


# Fork failures and the worker count


def test_a_worker_count_past_the_cap_is_refused_in_one_line() -> None:
    assert_config_error(run_to_exit("flask_app:app", "--workers", "100000"), 2,
                        "bad --workers value '100000': 100000 workers, and one cluster runs at most 1024")


def test_a_worker_count_past_the_process_limit_is_refused() -> None:
    # The check reads the real limit as the real user: a child lowers its RLIMIT_NPROC (ulimit -u) and, as
    # root (whom the kernel does not hold to it), becomes nobody first.
    probe = """
import os, resource
from clusterrun.config.options import resolve_workers
from clusterrun.errors import ConfigError
resource.setrlimit(resource.RLIMIT_NPROC, (4, 4))
if os.geteuid() == 0:
    os.setuid(65534)
print(resolve_workers("3", 2))
try:
    resolve_workers("4", 2)
except ConfigError as exc:
    print(exc)
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=DEADLINE,
                            stdin=subprocess.DEVNULL)
    assert result.stdout.splitlines() == [
        "3", "bad --workers value '4': 4 workers and the primary exceed the process limit of 4 (ulimit -u); give "
        "fewer workers or raise ulimit -u"], result.stderr


@pytest.fixture
def pids_cgroup(tmp_path: Path) -> Iterator[Path]:
    """A pids cgroup of the test's own: the way to make fork fail for real as root, whom RLIMIT_NPROC spares."""
    if os.geteuid() != 0 or not (PIDS_CGROUPS / "cgroup.procs").exists():
        pytest.skip("needs root and cgroup v1's pids controller at /sys/fs/cgroup/pids")
    group = PIDS_CGROUPS / f"clusterrun-test-{os.getpid()}-{tmp_path.name}"
    try:
        group.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot make a pids cgroup: {exc}")
    try:
        yield group
    finally:
        for pid in (group / "cgroup.procs").read_text().split():  # a cluster left by a failed test: out first
            (PIDS_CGROUPS / "cgroup.procs").write_text(pid)
        group.rmdir()


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_a_fork_the_system_refuses_costs_the_slot_a_wait_never_the_primary(
    run_cli: Callable[..., Cluster], app: str, pids_cgroup: Path
) -> None:
    cluster = start(run_cli, app, "--workers", "2")
    url = cluster.wait_ready()
    # From now on each fork of the primary counts against a limit of one task, its own: fork fails with EAGAIN,
    # as past ulimit -u. Its workers stay in the cgroup they were forked into.
    (pids_cgroup / "pids.max").write_text("1")
    (pids_cgroup / "cgroup.procs").write_text(str(cluster.pid))
    victim = who(url + "/")
    os.kill(victim["pid"], signal.SIGKILL)
    refused = rf"cannot fork a worker for slot {victim['index']}: Resource temporarily unavailable"
    cluster.wait_for_line(refused + r" .*; trying again in 0\.1s, 1 worker serving")
    cluster.wait_for_line(refused + r" .*; trying again in 0\.2s", count=1)  # refused again, waiting longer
    assert who(url + "/")["index"] != victim["index"]  # the other worker serves on
    (pids_cgroup / "pids.max").write_text("max")
    cluster.wait_status(lambda s: s["ready"] == 2, f"slot {victim['index']} serving again")
    assert "Traceback" not in cluster.output()
    cluster.signal(signal.SIGTERM)
    assert cluster.wait_exit() == 0
