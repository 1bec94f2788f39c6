"""Real faults under primary-side policies: hung and stopped workers, descriptor floods, crashing requests.

What a fault may cost is the request in flight on the worker it hits; never the service, and never a
connection that no worker served.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from helpers import (
    DEADLINE,
    SUP_APP_PAIR,
    TEST_APPS,
    Cluster,
    alive,
    children_of,
    run_to_exit,
    start,
    wait_until,
    who,
)

DISPATCHING = ["rr", "least-conn", "sticky"]


def _fire(url: str, count: int, threads: int = 8) -> list[str]:
    """``count`` requests, each on a new connection, from ``threads`` clients at once: "ok" or the error."""

    def one(_: int) -> str:
        # A client of its own: one httpx client shared by threads may close a connection that another thread is
        # reading from (seen once as EBADF in the client, with the server never involved).
        try:
            with httpx.Client(timeout=DEADLINE, limits=httpx.Limits(max_keepalive_connections=0)) as http:
                response = http.get(url)
            return "ok" if response.status_code == 200 else f"status {response.status_code}"
        except httpx.HTTPError as exc:
            return f"failed: {exc!r}"

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(count)))


@pytest.mark.parametrize("policy", DISPATCHING)
@pytest.mark.parametrize("fault", ["sigstop", "hang"])
def test_connections_passed_to_a_hung_worker_are_served_by_another(
    run_cli: Callable[..., Cluster], policy: str, fault: str
) -> None:
    # SIGSTOP under WSGI, a loop blocked by a request under ASGI: the worker reads nothing more from its channel.
    app = "sup_app:wsgi" if fault == "sigstop" else "sup_app:asgi"
    cluster = start(run_cli, app, "--workers", "2", "--policy", policy, "--timeout", "3")
    url = cluster.wait_ready()
    hanging: list[str] = []
    if fault == "sigstop":
        # Under sticky, this client's address belongs to the victim: every connection would go there.
        victim = who(url + "/")["pid"]
        os.kill(victim, signal.SIGSTOP)
    else:
        # The hanging request itself is in flight on the victim: that one may be lost.
        hang = threading.Thread(target=lambda: hanging.append(_fire(url + "/hang", 1, 1)[0]))
        hang.start()
        victim = int(cluster.wait_for_line(r"hanging on purpose in pid (\d+)")[0].group(1))
    try:
        results = _fire(url + "/", 24)
    finally:
        if fault == "sigstop":
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGCONT)
    assert results == ["ok"] * 24, results
    # The victim was taken for hung, killed and replaced; what it had never read went to the other worker.
    cluster.wait_for_line(rf"pid {victim}\) sent no heartbeat")
    wait_until(lambda: not alive(victim), "the hung worker to be killed")
    if fault == "sigstop":
        assert "it is stopped (SIGSTOP or a debugger)" in cluster.output()
        assert "tracebacks follow" not in cluster.output()
    else:
        hang.join(DEADLINE)
    cluster.wait_for_line(r"is serving")
    assert cluster.proc.poll() is None


def _connect_idle(url: str, count: int) -> list[socket.socket]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    idle = []
    for _ in range(count):
        sock = socket.create_connection((host, int(port)), timeout=DEADLINE)
        idle.append(sock)
    return idle


@pytest.mark.parametrize("policy", DISPATCHING)
def test_idle_connections_beyond_the_descriptor_limit_cost_no_worker(
    run_cli: Callable[..., Cluster], policy: str
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1024:  # this test's own client needs 600 descriptors
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    cluster = run_cli("sup_app:wsgi", "--port", "0", "--workers", "2", "--policy", policy, cwd=TEST_APPS,
                      nofile=256)
    url = cluster.wait_ready()
    workers = sorted(children_of(cluster.pid))
    idle = _connect_idle(url, 600)
    try:
        # The primary stops passing connections to a worker whose descriptor table would overflow.
        cluster.wait_for_line(r"is at its descriptor limit")
        assert cluster.proc.poll() is None
        assert sorted(children_of(cluster.pid)) == workers
    finally:
        for sock in idle:
            sock.close()
    # Once the idle clients leave, the same workers serve everyone again.
    assert _fire(url + "/", 20) == ["ok"] * 20
    output = cluster.output()
    assert sorted(children_of(cluster.pid)) == workers, output
    assert "died" not in output and "dropped" not in output and "the primary went away" not in output, output


def test_a_primary_out_of_descriptors_pauses_accepting_and_says_so_once(run_cli: Callable[..., Cluster]) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1024:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    # 64 descriptors: one accept batch (64 connections) overflows the primary's table.
    cluster = run_cli("sup_app:wsgi", "--port", "0", "--workers", "2", cwd=TEST_APPS, nofile=64)
    url = cluster.wait_ready()
    workers = sorted(children_of(cluster.pid))
    # The connections wait in the kernel's backlog while the primary is stopped, so that it wakes up to a
    # full batch of them at once.
    cluster.signal(signal.SIGSTOP)
    try:
        idle = _connect_idle(url, 300)
    finally:
        cluster.signal(signal.SIGCONT)
    try:
        cluster.wait_for_line(r"cannot accept connections: Too many open files")
        assert cluster.proc.poll() is None
    finally:
        for sock in idle:
            sock.close()
    assert _fire(url + "/", 20) == ["ok"] * 20
    output = cluster.output()
    # Rate-limited: one line per 5 seconds with a count, not one per failed accept.
    assert output.count("cannot accept connections") <= 3, output
    assert sorted(children_of(cluster.pid)) == workers, output


def test_a_worker_out_of_descriptors_rests_its_listener_and_serves_again(run_cli: Callable[..., Cluster]) -> None:
    """The shared socket on the inline engine: a worker whose table is full stops watching the listener for a
    second (it stays readable while every accept fails) instead of waking and warning without pause; the
    clients wait in the backlog and are served once descriptors are free. Before: hundreds of warnings a
    second per worker, and a core spent on them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1024:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    cluster = run_cli("sup_app:wsgi", "--port", "0", "--workers", "2", "--policy", "shared", cwd=TEST_APPS,
                      nofile=64)
    url = cluster.wait_ready()
    workers = sorted(children_of(cluster.pid))
    idle = _connect_idle(url, 150)
    try:
        # Two failed accepts of each worker at least: with the rest, the second comes a second after the first.
        cluster.wait_for_line(r"accept failed: .*Too many open files", count=4)
        assert cluster.proc.poll() is None
    finally:
        for sock in idle:
            sock.close()
    assert _fire(url + "/", 20) == ["ok"] * 20
    output = cluster.output()
    assert "not accepting for 1 s (raise ulimit -n)" in output, output
    per_second: dict[tuple[str, str], int] = {}  # (the log line's second, the worker): warnings
    for line in re.finditer(r"^(\S+ \S+) \[(worker \d+) .*accept failed", output, re.MULTILINE):
        key = (line.group(1), line.group(2))
        per_second[key] = per_second.get(key, 0) + 1
    assert max(per_second.values()) <= 2, output  # one a rest: two where a rest ends as the second turns
    assert sorted(children_of(cluster.pid)) == workers, output


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_requests_that_crash_workers_never_stop_the_service(run_cli: Callable[..., Cluster], app: str) -> None:
    # --min-uptime 0: every worker that became ready has served, so none of these deaths counts as unstable.
    cluster = start(run_cli, app, "--workers", "1", "--max-restarts", "1", "--min-uptime", "0")
    url = cluster.wait_ready()
    for crash in range(1, 7):
        with pytest.raises(httpx.TransportError), httpx.Client(timeout=DEADLINE) as http:
            http.get(url + "/crash")
        cluster.wait_for_line(r"is serving", count=crash)
    assert who(url + "/")["index"] == 0
    assert cluster.proc.poll() is None
    output = cluster.output()
    assert "crash 6 of slot 0" in output
    assert "not respawning" not in output


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_respawns_that_fail_to_boot_are_throttled_per_slot_and_exit_4_when_all_gave_up(
    run_cli: Callable[..., Cluster], app: str, tmp_path: os.PathLike[str]
) -> None:
    broken = os.path.join(tmp_path, "broken")
    cluster = start(run_cli, app, "--workers", "2", "--max-restarts", "2", "--policy", "shared",
                    env={"SUP_BREAK_FILE": broken})
    url = cluster.wait_ready()
    open(broken, "w").close()  # a broken deploy: from now on the app cannot be imported
    first = who(url + "/")
    os.kill(first["pid"], signal.SIGKILL)
    cluster.wait_for_line(rf"slot {first['index']} died 3 times .* not respawning it")
    # The other slot serves on: a broken respawn is no reason to stop a cluster that serves.
    assert cluster.proc.poll() is None
    other = who(url + "/")
    assert other["index"] != first["index"]
    os.kill(other["pid"], signal.SIGKILL)
    assert cluster.wait_exit() == 4
    output = cluster.output()
    assert "failed to boot" not in output  # not a boot failure of the app: it had served
    assert children_of(cluster.pid) == []


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_sigusr1_and_stray_signals_never_stop_the_primary(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = start(run_cli, app, "--workers", "1")
    url = cluster.wait_ready()
    workers = children_of(cluster.pid)
    cluster.signal(signal.SIGUSR1)
    cluster.wait_for_line(r"received SIGUSR1: reopening 0 log files here and in every worker")
    cluster.signal(signal.SIGALRM)
    cluster.wait_for_line(r"received SIGALRM, which clusterrun does not use: ignored")
    assert who(url + "/")["pid"] in workers
    assert children_of(cluster.pid) == workers


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_sigquit_stops_at_once_without_draining(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = start(run_cli, app, "--workers", "2", "--graceful-timeout", "60")
    url = cluster.wait_ready()
    slow: list[str] = []
    request = threading.Thread(target=lambda: slow.append(_fire(url + "/slow?s=60", 1, 1)[0]))
    request.start()
    cluster.wait_for_line(r"slow request started")
    cluster.signal(signal.SIGQUIT)
    assert cluster.wait_exit() == 0  # well before --graceful-timeout: nothing waited for the slow request
    request.join(DEADLINE)
    assert slow and slow[0].startswith("failed"), slow
    assert "quick stop" in cluster.output()
    assert children_of(cluster.pid) == []


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_a_short_timeout_keeps_healthy_workers(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = start(run_cli, app, "--workers", "2", "--timeout", "0.5")
    url = cluster.wait_ready()
    workers = sorted(children_of(cluster.pid))
    # Serving for several times --timeout: requests send no frame to the primary, only the heartbeat proves the
    # workers alive, and it comes four times per --timeout.
    until = time.monotonic() + 3.0
    while time.monotonic() < until:
        assert who(url + "/")["pid"] in workers
    output = cluster.output()
    assert "no heartbeat" not in output, output
    assert sorted(children_of(cluster.pid)) == workers


def test_a_timeout_too_short_to_tell_hung_from_healthy_is_refused() -> None:
    result = run_to_exit("flask_app:app", "--timeout", "0.2")
    assert result.returncode == 2
    assert "bad --timeout value '0.2': give 0 (no hung-worker watchdog) or at least 0.5 seconds" in result.stderr



@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_a_connection_held_while_a_worker_is_forked_closes_when_answered(
    run_cli: Callable[..., Cluster], app: str
) -> None:
    """A connection the primary holds (passed back from a worker that died before reading it, none ready to take
    it) while it forks the replacement: the replacement must not inherit a copy. With one, the client got its
    answer but never the close (the copy kept the connection open), so a client that reads to the end hung."""
    cluster = start(run_cli, app, "--workers", "1", "--timeout", "2")
    url = cluster.wait_ready()
    victim = who(url + "/")["pid"]
    os.kill(victim, signal.SIGSTOP)
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=DEADLINE) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        # The stopped worker is taken for hung and killed; the replacement is forked while the primary holds the
        # connection (in the dead worker's channel, or held back from a late worker), and then answers it.
        cluster.wait_for_line(rf"pid {victim}\) sent no heartbeat")
        received = b""
        with contextlib.suppress(TimeoutError):
            while chunk := client.recv(65536):
                received += chunk
        assert received.startswith(b"HTTP/1.1 200"), received
        assert chunk == b"", f"answered, but the connection stayed open: {received!r}"
