"""End-to-end: slow bodies and stuck requests (issue 22, faults items 3 and 10), against the real CLI.

Item 3, --body-timeout: stalled uploads (a head with Content-Length 1 MiB and 70 KiB of body, then nothing)
must not starve the uploads that come after them, under rr and shared, inline and with --threads 4, and an
ASGI app keeps serving uploads beside them as it did; a stalled upload is answered 408 once its body has been
silent for --body-timeout.

Item 10, --request-timeout: an inline WSGI worker stuck in one request is killed and respawned, the request
named in the log; with --threads 4 the client gets 504 and the worker is replaced gracefully; an ASGI request
is cancelled and answered 504 (or its connection closed when the response had started).

The apps are in tests/apps/timeouts_app.py.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from helpers import DEADLINE, TEST_APPS, Cluster, assert_config_error, read_all, run_to_exit

KiB, MiB = 1024, 1024 * 1024
STALLED = 20  # more than the 8 upload threads the inline engine had, more than --threads 4

# (app, --policy, --threads): inline WSGI under rr and shared, pooled WSGI, ASGI.
UPLOAD_MODES = pytest.mark.parametrize("app,policy,threads", [
    ("wsgi", "rr", "1"), ("wsgi", "shared", "1"), ("wsgi", "least-conn", "1"), ("wsgi", "reuseport", "1"),
    ("wsgi", "rr", "4"), ("wsgi", "shared", "4"), ("asgi", "rr", "1"),
], ids=["inline-rr", "inline-shared", "inline-least-conn", "inline-reuseport", "pooled-rr", "pooled-shared",
        "asgi-rr"])


def start(run_cli: Callable[..., Cluster], app: str, *args: str) -> tuple[Cluster, str, int]:
    cluster = run_cli(f"timeouts_app:{app}", "--workers", "1", "--port", "0", *args, cwd=TEST_APPS)
    url = cluster.wait_ready()
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return cluster, host, int(port)


@contextlib.contextmanager
def stalled_uploads(host: str, port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections that each sent a head promising 1 MiB and 70 KiB of it, then nothing more."""
    head = f"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: {MiB}\r\n\r\n".encode()
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection((host, port), timeout=DEADLINE)
            socks.append(sock)
            sock.sendall(head + b"x" * (70 * KiB))
        yield socks
    finally:
        for sock in socks:
            sock.close()


def wait_reading(base: str, count: int) -> None:
    """Poll /reading until ``count`` uploads are in the app, reading their bodies."""
    deadline = time.monotonic() + DEADLINE
    with httpx.Client(timeout=DEADLINE) as client:
        while (reading := int(client.get(base + "/reading").text)) < count:
            assert time.monotonic() < deadline, f"only {reading} of {count} uploads reached the app"
            time.sleep(0.05)


# --- item 3: --body-timeout ------------------------------------------------------------------------------


@UPLOAD_MODES
def test_stalled_uploads_do_not_starve_the_next(run_cli: Callable[..., Cluster], app: str, policy: str,
                                               threads: str) -> None:
    """20 stalled uploads, then 10 normal ones: each is answered while the stalled ones still wait (their body
    timeout is far away), in full. Before: the inline engine's 8 upload threads (and --threads 4's pool) sat in
    the stalled reads, and the normal upload waited behind them for good."""
    cluster, host, port = start(run_cli, app, "--policy", policy, "--threads", threads, "--body-timeout", "600")
    base = f"http://{host}:{port}"
    with stalled_uploads(host, port, STALLED) as socks:
        wait_reading(base, STALLED)
        for _ in range(10):
            response = httpx.post(base + "/upload", content=b"y" * MiB, timeout=DEADLINE)
            assert response.status_code == 200 and response.text == str(MiB), response.text
        assert httpx.get(base + "/", timeout=DEADLINE).text == "ok"
        waiting, _, _ = select.select(socks, [], [], 0)
        assert not waiting, "a stalled upload was answered long before its --body-timeout"
    assert "Traceback" not in cluster.output()


@pytest.mark.parametrize("policy,threads", [("rr", "1"), ("shared", "1"), ("rr", "4")],
                         ids=["inline-rr", "inline-shared", "pooled-rr"])
def test_stalled_upload_is_answered_408(run_cli: Callable[..., Cluster], policy: str, threads: str) -> None:
    """A body silent for --body-timeout: 408 (nothing of the response went out), the connection closed, the
    thread free again (the next uploads are served), the refusal logged. Before: no answer, ever."""
    cluster, host, port = start(run_cli, "wsgi", "--policy", policy, "--threads", threads, "--body-timeout", "1")
    base = f"http://{host}:{port}"
    with stalled_uploads(host, port, STALLED) as socks:
        answers = [read_all(sock) for sock in socks]
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    wait_reading(base, 0)
    response = httpx.post(base + "/upload", content=b"y" * MiB, timeout=DEADLINE)
    assert response.status_code == 200 and response.text == str(MiB)
    cluster.wait_for_line(r"--body-timeout.*408")
    assert "Traceback" not in cluster.output()


@pytest.mark.parametrize("threads", ["1", "4"], ids=["inline", "pooled"])
def test_uploads_past_the_cap_are_refused_at_once(run_cli: Callable[..., Cluster], threads: str) -> None:
    """A worker streams at most 128 uploads at once (a thread each): the next is answered 503 at once rather
    than queued behind stalled ones; requests that came whole are still served."""
    cluster, host, port = start(run_cli, "wsgi", "--threads", threads, "--body-timeout", "600")
    base = f"http://{host}:{port}"
    with stalled_uploads(host, port, 128):
        wait_reading(base, 128)
        with stalled_uploads(host, port, 1) as (extra,):
            assert read_all(extra).startswith(b"HTTP/1.1 503 ")
        assert httpx.get(base + "/", timeout=DEADLINE).text == "ok"
    cluster.wait_for_line(r"uploads in progress")


# --- item 10: --request-timeout --------------------------------------------------------------------------


@pytest.mark.parametrize("http", ["httptools", "h11"], ids=["engine", "uvicorn-stack"])
def test_inline_request_timeout_replaces_the_worker(run_cli: Callable[..., Cluster], http: str) -> None:
    """Inline WSGI, on clusterrun's engine and on uvicorn's stack (--http h11): the app stuck in /sleep past
    --request-timeout 1 gets its worker killed by the primary and respawned (counted in the status), the request
    named in the log; the client's connection closes with no answer, and the new worker serves. Before: the
    worker sat in the request for its 60 s."""
    cluster, host, port = start(run_cli, "wsgi", "--request-timeout", "1", "--http", http)
    base = f"http://{host}:{port}"
    first = cluster.serving()[0]["id"]
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:
        sock.sendall(b"GET /sleep?token=secret HTTP/1.1\r\nHost: test\r\n\r\n")
        assert read_all(sock) == b""
    cluster.wait_for_line(r"request GET /sleep ran [\d.]+s, past --request-timeout 1 s: killing and respawning")
    status = cluster.wait_status(lambda s: any(w["state"] == "ready" and w["id"] != first for w in s["workers"]),
                                 "a respawned worker")
    assert status["workers"][0]["slot_restarts"] >= 1, status
    assert httpx.get(base + "/", timeout=DEADLINE).text == "ok"
    assert "secret" not in cluster.output()  # the query is no part of the name: it may hold secrets


def test_pooled_request_timeout_answers_504_and_recycles(run_cli: Callable[..., Cluster]) -> None:
    """--threads 4: the client of a request stuck past --request-timeout gets 504 at once, and the worker, with a
    thread stuck in the app, is replaced gracefully (a new worker first). Before: the client waited 60 s."""
    cluster, host, port = start(run_cli, "wsgi", "--threads", "4", "--request-timeout", "1")
    base = f"http://{host}:{port}"
    first = cluster.serving()[0]["id"]
    response = httpx.get(base + "/sleep", timeout=DEADLINE)
    assert response.status_code == 504, response.text
    assert "--request-timeout" in response.text
    cluster.wait_for_line(r"request GET /sleep ran past --request-timeout 1 s: cancelled, answered 504")
    cluster.wait_for_line(r"recycling .*: 1 thread still in the app past --request-timeout 1 s")
    cluster.wait_status(lambda s: [w["id"] for w in s["workers"] if w["state"] == "ready"] not in ([], [first]),
                        "a replacement worker")
    assert httpx.get(base + "/", timeout=DEADLINE).text == "ok"


def test_asgi_request_timeout_cancels_the_task(run_cli: Callable[..., Cluster]) -> None:
    """ASGI: the request's task is cancelled at --request-timeout: 504 when nothing was sent yet; once the
    response began, the connection is closed instead (the client never takes it for whole). The worker serves
    on, not replaced. Before: both requests waited 60 s in the app."""
    cluster, host, port = start(run_cli, "asgi", "--request-timeout", "1")
    base = f"http://{host}:{port}"
    response = httpx.get(base + "/sleep", timeout=DEADLINE)
    assert response.status_code == 504, response.text
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:
        sock.sendall(b"GET /started HTTP/1.1\r\nHost: test\r\n\r\n")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and b"first" in answer and b"late" not in answer, answer
    assert not answer.endswith(b"0\r\n\r\n"), answer  # no last chunk: the response is visibly cut short
    cluster.wait_for_line(r"request GET /started ran past --request-timeout 1 s: cancelled, its connection closed")
    assert httpx.get(base + "/", timeout=DEADLINE).text == "ok"
    assert "recycling" not in cluster.output()


@pytest.mark.parametrize("args,expected", [
    (("--body-timeout", "0"), ("bad --body-timeout value '0'", "above 0")),
    (("--request-timeout", "-1"), ("bad --request-timeout value '-1'", ">= 0")),
    (("--request-timeout", "soon"), ("bad --request-timeout value 'soon'", ">= 0")),
])
def test_bad_timeouts_exit_2_naming_them(args: tuple[str, ...], expected: tuple[str, ...]) -> None:
    assert_config_error(run_to_exit("timeouts_app:wsgi", *args, cwd=TEST_APPS), 2, *expected)
