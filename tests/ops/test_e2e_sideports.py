"""The primary's side ports (--metrics, --health) under idle and hostile clients, end to end (issue 22, fault 4).

They share the primary's descriptor table with the app's listeners, whose connections the primary hands to the
workers (rr): before, 1,100 idle connections to --metrics filled that table, the primary spun on a listener it
could not accept from, and app requests waited seconds or failed. Now each side port holds a bounded number of
connections (MAX_CLIENTS, less under a low ulimit -n), closes one that sends no request in time, and rests its
listener when an accept fails for want of descriptors.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import selectors
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from clusterrun.host.timers import Timers
from clusterrun.ops.oneshot import ACCEPT_REST, MAX_CLIENTS, OneShotServer

from helpers import DEADLINE, TEST_APPS, Cluster, wait_until


@pytest.fixture(autouse=True)
def _enough_descriptors_for_the_clients() -> Iterator[None]:
    """This test process holds hundreds of client sockets at once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _start(run_cli: Callable[..., Cluster], nofile: int | None) -> Cluster:
    """2 workers of tests/apps/sup_app:wsgi under rr, with --metrics and --health; ``nofile``: its ulimit -n."""
    return run_cli("sup_app:wsgi", "--port", "0", "--log-level", "info", "--workers", "2", "--metrics",
                   "127.0.0.1:0", "--health", "127.0.0.1:0", cwd=TEST_APPS, nofile=nofile)


def _side_urls(cluster: Cluster) -> tuple[str, str]:
    metrics = cluster.wait_for_line(r"metrics on (http://\S+)/metrics")[0].group(1)
    health = cluster.wait_for_line(r"health on (http://\S+)/livez")[0].group(1)
    return metrics, health


def _idle(url: str, count: int) -> list[socket.socket]:
    """``count`` connections that send nothing. Non-blocking connects: past the listener's backlog, a connect
    waits for the server, and this test must not."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sockets = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex((host, int(port)))
        assert code in (0, errno.EINPROGRESS), os.strerror(code)
        sockets.append(sock)
    return sockets


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True  # reset, or never connected: not held open by the server either way


def _fire(url: str, count: int) -> list[int | str]:
    """``count`` GETs on new connections, 4 at once: each status, or the error."""

    def one(_: int) -> int | str:
        try:
            with httpx.Client(timeout=DEADLINE, limits=httpx.Limits(max_keepalive_connections=0)) as http:
                return http.get(url).status_code
        except httpx.HTTPError as exc:
            return repr(exc)

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(count)))


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _close(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


@pytest.mark.parametrize("nofile", [None, 256], ids=["default-ulimit", "ulimit-256"])
def test_idle_side_port_clients_never_hold_up_the_app(run_cli: Callable[..., Cluster], nofile: int | None) -> None:
    cluster = _start(run_cli, nofile)
    url = cluster.wait_ready()
    metrics, health = _side_urls(cluster)
    cap = MAX_CLIENTS if nofile is None else max(2, min(MAX_CLIENTS, nofile // 16))
    assert _fire(url + "/", 4) == [200] * 4
    before = _descriptors(cluster.pid)
    idle = _idle(metrics, 2 * MAX_CLIENTS) + _idle(health, 2 * MAX_CLIENTS)
    try:
        # The primary takes each side port's share, and no more, however long the clients wait.
        wait_until(lambda: _descriptors(cluster.pid) >= before + 2 * cap, f"the primary to hold {2 * cap} clients")
        answers = _fire(url + "/", 10)
        assert answers == [200] * 10, answers
        # Served while every idle client is still held (none has reached the side ports' request timeout):
        # before, app connections waited until the primary dropped side clients to free descriptors.
        assert not any(_closed_by_server(sock) for sock in idle)
        # + 4: the copies of the last app connections (4 at once) the primary keeps until their worker's
        # adoption is read; without the cap, it held every idle client (256 more).
        assert _descriptors(cluster.pid) <= before + 2 * cap + 4
        # A client that sends no request is closed in a few seconds; the ones waiting in the backlog get in.
        wait_until(lambda: any(_closed_by_server(sock) for sock in idle), "the side ports to close an idle client")
    finally:
        _close(idle)
    assert httpx.get(metrics + "/metrics", timeout=DEADLINE).status_code == 200
    assert httpx.get(health + "/livez", timeout=DEADLINE).status_code == 200
    assert cluster.proc.poll() is None


class _Echo(OneShotServer):
    def answer(self, received: bytes) -> bytes | None:
        return received if received.endswith(b"\n") else None

    def too_large(self) -> bytes:
        return b"too large\n"


def _turn(selector: selectors.BaseSelector) -> None:
    for key, mask in selector.select(0.05):
        key.data(mask)


def test_a_side_port_out_of_descriptors_rests_its_listener(caplog: pytest.LogCaptureFixture) -> None:
    """In process, with the descriptor table full: the listener stays readable while every accept fails, so
    the server stops watching it for ACCEPT_REST seconds (one warning), then watches it again. Before, it stayed
    watched: the primary's loop woke at once, again and again (78-95% of a core)."""
    now = [0.0]
    timers = Timers(lambda: now[0])
    selector = selectors.DefaultSelector()
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server = _Echo(selector, timers)
    server.serve(listener)
    filler: list[int] = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 8, hard))
        with contextlib.suppress(OSError):
            while True:
                filler.append(os.dup(0))
        assert [key.fd for key, _ in selector.select(0)] == [listener.fileno()]  # the client waits
        _turn(selector)  # the accept fails
        assert selector.select(0) == []  # resting: not watched, though the client still waits
        _turn(selector)
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert [r.getMessage() for r in caplog.records if "cannot accept" in r.getMessage()] == [
        "_Echo: cannot accept: Too many open files; not accepting for 1 s (raise ulimit -n)"]
    now[0] += ACCEPT_REST
    timers.run_due()
    assert [key.fd for key, _ in selector.select(0)] == [listener.fileno()]  # watched again, and served
    client.sendall(b"hello\n")
    client.setblocking(False)
    answer = b""
    deadline = time.monotonic() + DEADLINE
    while not answer.endswith(b"\n"):
        assert time.monotonic() < deadline, "no answer"
        _turn(selector)
        with contextlib.suppress(BlockingIOError):
            answer += client.recv(64)
    assert answer == b"hello\n"
    server.close()
    client.close()
    selector.close()
