"""End-to-end: input limits (issue 10, items 6 and 7), against the real CLI with raw sockets and httpx.

Uploads (item 6): an app that rejects an upload answers while the client is far from done sending it, and
the worker writes nothing to disk; a large body streams to the app intact, chunked or not; inline mode keeps
app code to one place at a time while an upload streams; --limit-request-body answers 413.

Heads (item 7): a long request line, too many headers, a too-long header, an unterminated huge header and a
head that never completes are all refused or closed, by both parsers, for WSGI and ASGI apps, while the
worker keeps serving others and its memory stays small.

The apps are in tests/apps/limits_app.py. Bytes a server "read" are judged from the client: how much it had
sent when the answer came (loopback socket buffers hold a few MiB) and the worker's /proc/PID/io write count.
"""

from __future__ import annotations

import contextlib
import hashlib
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from helpers import DEADLINE, TEST_APPS, Cluster, assert_config_error, read_all, run_to_exit

MiB = 1024 * 1024
BLOCK = bytes(range(256)) * 4096  # 1 MiB


def start(run_cli: Callable[..., Cluster], app: str, *args: str) -> tuple[Cluster, str, int]:
    cluster = run_cli(app, "--workers", "1", "--port", "0", *args, cwd=TEST_APPS)
    url = cluster.wait_ready()
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return cluster, host, int(port)


def worker_pid(cluster: Cluster) -> int:
    pids = cluster.worker_pids()
    assert len(pids) == 1, pids
    return pids[0]


def proc_field(pid: int, name: str, kind: str = "status") -> int:
    """A number from /proc/PID/status (kB values) or /proc/PID/io."""
    for line in Path(f"/proc/{pid}/{kind}").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return int(value.split()[0])
    raise AssertionError(f"no {name} in /proc/{pid}/{kind}")


def blocks(total: int, step: int = MiB) -> Iterator[bytes]:
    """``total`` bytes of a repeating pattern in pieces of ``step`` <= 1 MiB, made as they are sent."""
    for offset in range(0, total, step):
        yield BLOCK[: min(step, total - offset)]


def chunked(pieces: Iterator[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
    yield b"0\r\n\r\n"


def send_watching(host: str, port: int, head: bytes, body: Iterator[bytes]) -> tuple[int, bytes]:
    """Send ``head`` then ``body``, stopping as soon as the server answers or closes; (body bytes sent, answer).

    The answer is what arrived (at least the status line when there was one); b"" when the server closed
    without answering.
    """
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        sent, pending, deadline = 0, b"", time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            if not pending:
                pending = next(body, b"")
            readable, writable, _ = select.select([sock], [sock] if pending else [], [], 1.0)
            try:
                if readable:
                    return sent, read_answer(sock)
                if writable:
                    count = sock.send(pending[: 256 * 1024])
                    sent += count
                    pending = pending[count:]
            except (BrokenPipeError, ConnectionResetError):
                with contextlib.suppress(OSError):
                    return sent, read_answer(sock)
                return sent, b""
        raise AssertionError(f"no answer after sending {sent} bytes")


def read_answer(sock: socket.socket) -> bytes:
    """What the server sends until the end of the response head (or until it closes)."""
    sock.settimeout(DEADLINE)
    answer = b""
    while b"\r\n\r\n" not in answer:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        answer += data
    return answer


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


def exchange(host: str, port: int, request: bytes) -> bytes:
    """One raw request on a new connection; the answer's head (and what came with it)."""
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:
        sock.sendall(request)
        return read_answer(sock)


def get_ok(host: str, port: int) -> None:
    response = httpx.get(f"http://{host}:{port}/", timeout=DEADLINE)
    assert response.status_code == 200 and response.text == "ok"


# --- uploads (item 6) ------------------------------------------------------------------------------------

THREADS = pytest.mark.parametrize("threads", ["1", "4"], ids=["inline", "pooled"])


@THREADS
@pytest.mark.parametrize("route", ["wsgi /reject", "flask /upload"])
def test_rejected_upload_is_answered_before_it_is_read(run_cli: Callable[..., Cluster], threads: str,
                                                        route: str) -> None:
    """A 200 MiB POST to a route that answers 405 (or Flask's MAX_CONTENT_LENGTH 413) without reading it.

    Before: the bridge spooled all 200 MiB to a temporary file, then called the app.
    """
    app, path = route.split()
    cluster, host, port = start(run_cli, f"limits_app:{app}", "--threads", threads)
    pid = worker_pid(cluster)
    get_ok(host, port)
    written = proc_field(pid, "wchar", "io")
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {200 * MiB}\r\n\r\n".encode()
    sent, answer = send_watching(host, port, head, blocks(200 * MiB))
    assert status_of(answer) == (405 if app == "wsgi" else 413)
    assert sent < 32 * MiB, f"the answer came after {sent / MiB:.0f} MiB of 200"
    assert proc_field(pid, "wchar", "io") - written < MiB  # nothing spooled to disk
    get_ok(host, port)
    with httpx.Client(timeout=DEADLINE) as client:  # keep-alive: the unread rest of a body is not a request
        response = client.post(f"http://{host}:{port}{path}", content=blocks(4 * MiB),
                               headers={"Content-Length": str(4 * MiB)})
        assert response.status_code == (405 if app == "wsgi" else 413)
        assert client.get(f"http://{host}:{port}/").text == "ok"
        assert client.get(f"http://{host}:{port}/").text == "ok"


@THREADS
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_large_upload_streams_intact(run_cli: Callable[..., Cluster], threads: str, framing: str) -> None:
    """50 MiB reach the app whole and in order, without touching the disk, with and without chunked framing."""
    cluster, host, port = start(run_cli, "limits_app:wsgi", "--threads", threads)
    pid = worker_pid(cluster)
    written = proc_field(pid, "wchar", "io")
    size, digest = 50 * MiB, hashlib.sha256()
    for block in blocks(size):
        digest.update(block)
    headers = {"Content-Length": str(size)} if framing == "content-length" else {}
    with httpx.Client(timeout=DEADLINE) as client:
        response = client.post(f"http://{host}:{port}/sha", content=blocks(size), headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["length"] == size and response.json()["sha256"] == digest.hexdigest()
    assert proc_field(pid, "wchar", "io") - written < MiB


def test_inline_upload_keeps_app_code_in_one_place(run_cli: Callable[..., Cluster]) -> None:
    """--threads 1: while a slow upload streams to the app off the loop, other requests are still served, and
    no two pieces of app code ever run at once (the app checks it: /guard and /sha's reads mark a busy flag)."""
    cluster, host, port = start(run_cli, "limits_app:guarded", "--threads", "1")
    size = 32 * MiB  # read in 64 KiB steps with a 1 ms stretch of app code each: half a second at least
    digest = hashlib.sha256()
    for block in blocks(size, 64 * 1024):
        digest.update(block)
    result: list[httpx.Response] = []
    uploader = threading.Thread(target=lambda: result.append(
        httpx.post(f"http://{host}:{port}/sha", content=blocks(size, 64 * 1024), timeout=DEADLINE)))
    uploader.start()
    try:
        answers = 0
        with httpx.Client(timeout=DEADLINE) as client:
            while uploader.is_alive():
                response = client.get(f"http://{host}:{port}/guard")
                assert response.status_code == 200, response.text
                answers += 1
    finally:
        uploader.join(DEADLINE)
    assert result and result[0].status_code == 200, result and result[0].text
    assert result[0].json()["sha256"] == digest.hexdigest() and result[0].json()["overlaps"] == 0
    assert answers > 0
    assert "overlap" not in cluster.output()


@pytest.mark.parametrize("http", ["httptools", "h11"])
@THREADS
def test_expect_continue(run_cli: Callable[..., Cluster], http: str, threads: str) -> None:
    """Expect: 100-continue: "100 Continue" comes when the app reads (then the body is served whole); an app
    that answers without reading answers at once, with no 100 and without the body ever being sent."""
    _, host, port = start(run_cli, "limits_app:wsgi", "--http", http, "--threads", threads)
    size = 3 * MiB
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:
        sock.sendall(b"POST /reject HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n" % size)
        assert status_of(read_all(sock)) == 405
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:
        sock.sendall(b"POST /sha HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n" % size)
        interim = read_answer(sock)
        assert status_of(interim) == 100 and interim.endswith(b"\r\n\r\n"), interim
        digest = hashlib.sha256()
        for block in blocks(size):
            digest.update(block)
            sock.sendall(block)
        answer = read_all(sock)
    assert status_of(answer) == 200 and digest.hexdigest().encode() in answer


@pytest.mark.parametrize("http", ["httptools", "h11"])
@pytest.mark.parametrize("app", ["wsgi:1", "wsgi:4", "asgi"])
def test_limit_request_body(run_cli: Callable[..., Cluster], http: str, app: str) -> None:
    """--limit-request-body 1 MiB: 413 on a larger Content-Length before any body is sent, 413 when a chunked
    body grows past it, a body within it served whole."""
    name, _, threads = app.partition(":")
    cluster, host, port = start(run_cli, f"limits_app:{name}", "--http", http, "--limit-request-body", str(MiB),
                                *(["--threads", threads] if threads else []))
    answer = exchange(host, port, f"POST /sha HTTP/1.1\r\nHost: t\r\nContent-Length: {MiB + 1}\r\n\r\n".encode())
    assert status_of(answer) == 413 and b"connection: close" in answer.lower()

    head = b"POST /sha HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    sent, answer = send_watching(host, port, head, chunked(blocks(100 * MiB, 64 * 1024)))
    assert status_of(answer) == 413 and sent < 32 * MiB

    with httpx.Client(timeout=DEADLINE) as client:
        for body in (BLOCK, iter([BLOCK[: MiB // 2], BLOCK[: MiB // 2]])):
            response = client.post(f"http://{host}:{port}/sha", content=body)
            assert response.status_code == 200 and response.json()["length"] == MiB
    assert "refused a request" in cluster.output()


@pytest.mark.parametrize("value", ["-1", "1MB"])
def test_limit_request_body_bad_value(value: str) -> None:
    result = run_to_exit("limits_app:wsgi", "--limit-request-body", value, cwd=TEST_APPS)
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result
    assert "--limit-request-body" in lines[0] and repr(value) in lines[0] and "whole number" in lines[0]


# --- request heads (item 7) ------------------------------------------------------------------------------

# httptools: the inline engine (WSGI) or clusterrun's own protocol (ASGI); uvicorn and h11: uvicorn's protocols.
PARSERS = pytest.mark.parametrize("http", ["httptools", pytest.param("uvicorn", marks=pytest.mark.slow), "h11"])


@PARSERS
@pytest.mark.parametrize("app", ["wsgi", "asgi"])
def test_head_limits(run_cli: Callable[..., Cluster], http: str, app: str) -> None:
    """Request line 4094 bytes -> 414; 101 header fields -> 431; an 8191+ byte field -> 431; a head past 64 KiB
    -> 431. Before: all answered 200 (a 4 MB header too). The worker serves on."""
    cluster, host, port = start(run_cli, f"limits_app:{app}", "--http", http)
    ok = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
    assert status_of(exchange(host, port, b"GET /" + b"a" * 4070 + b" HTTP/1.1\r\nHost: t\r\n\r\n")) == 200
    assert status_of(exchange(host, port, b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")) == 414
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(100))
    fits = fields[: fields.index(b"X-F98:")]  # 98 fields, and Host and Connection: 100
    assert status_of(exchange(host, port, ok + fits + b"\r\n")) == 200
    assert status_of(exchange(host, port, ok + fields + b"\r\n")) == 431  # 102
    assert status_of(exchange(host, port, ok + b"X-Big: " + b"v" * 8000 + b"\r\n\r\n")) == 200
    assert status_of(exchange(host, port, ok + b"X-Big: " + b"v" * 9 * 1024 + b"\r\n\r\n")) == 431
    many = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 8000) for i in range(9))  # each field fine, 72 KB in all
    assert status_of(exchange(host, port, ok + many + b"\r\n")) == 431
    _, answer = send_watching(host, port, ok + b"X-Big: ", iter([b"v" * 4 * MiB, b"\r\n\r\n"]))
    assert status_of(answer) == 431
    get_ok(host, port)
    assert "refused a request" in cluster.output() and "Invalid HTTP request" not in cluster.output()


@pytest.mark.parametrize("app", ["wsgi", "asgi"])  # the inline engine, and clusterrun's own ASGI protocol
def test_head_limit_flags_take_effect(run_cli: Callable[..., Cluster], app: str) -> None:
    _cluster, host, port = start(run_cli, f"limits_app:{app}", "--limit-request-line", "100",
                                 "--limit-request-fields", "5", "--limit-request-field-size", "64")
    ok = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
    assert status_of(exchange(host, port, b"GET /" + b"a" * 70 + b" HTTP/1.1\r\nHost: t\r\n\r\n")) == 200
    assert status_of(exchange(host, port, b"GET /" + b"a" * 150 + b" HTTP/1.1\r\nHost: t\r\n\r\n")) == 414
    assert status_of(exchange(host, port, ok + b"X-A: 1\r\nX-B: 2\r\nX-C: 3\r\n\r\n")) == 200  # 5 fields
    assert status_of(exchange(host, port, ok + b"X-A: 1\r\nX-B: 2\r\nX-C: 3\r\nX-D: 4\r\n\r\n")) == 431
    assert status_of(exchange(host, port, ok + b"X-Big: " + b"v" * 50 + b"\r\n\r\n")) == 200
    assert status_of(exchange(host, port, ok + b"X-Big: " + b"v" * 100 + b"\r\n\r\n")) == 431
    get_ok(host, port)


def test_limit_flag_values_are_checked() -> None:
    result = run_to_exit("limits_app:wsgi", "--limit-request-fields", "0", cwd=TEST_APPS)
    assert_config_error(result, 2, "bad --limit-request-fields value '0'", ">= 1")
    result = run_to_exit("limits_app:wsgi", "--timeout-request-head", "0", cwd=TEST_APPS)
    assert_config_error(result, 2, "bad --timeout-request-head value '0'", "above 0")


@PARSERS
def test_heads_within_limits_are_served(run_cli: Callable[..., Cluster], http: str) -> None:
    """No false refusal from counting a head as it arrives: a head sent a byte at a time, a 60 KB head whose
    blank line straddles two reads, a head and a 300 KB body in one write, two requests in one write."""
    _, host, port = start(run_cli, "limits_app:wsgi", "--http", http)
    head = b"GET / HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 40) for i in range(40))
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in head + b"Connection: close\r\n\r\n":
            sock.send(bytes([byte]))
        assert status_of(read_all(sock)) == 200
    tail = BLOCK[: 16 * 1024]  # a body after the head: counted as head, it would pass 64 KiB
    big = b"POST /sha HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: %d\r\n" % len(tail)
    big += b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 7400) for i in range(8)) + b"\r\n"
    assert 59_000 < len(big) < 64 * 1024 < len(big) + len(tail)
    for cut in (len(big) - 1, len(big) - 2, len(big) - 3):
        with socket.create_connection((host, port), timeout=DEADLINE) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(big[:cut])
            time.sleep(0.05)  # lets the server read the first part on its own (not a wait for a state)
            sock.sendall(big[cut:] + tail)
            assert status_of(read_all(sock)) == 200
    body = BLOCK[: 300 * 1024]
    post = b"POST /sha HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n" % len(body)
    post += b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 100) for i in range(30)) + b"Connection: close\r\n\r\n"
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:
        sock.sendall(post + body)
        answer = read_all(sock)
    assert status_of(answer) == 200 and hashlib.sha256(body).hexdigest().encode() in answer
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert read_all(sock).count(b"HTTP/1.1 200 OK") == 2


@PARSERS
def test_unterminated_huge_header_is_cut_short(run_cli: Callable[..., Cluster], http: str) -> None:
    """One 64 MiB header that never ends: answered 431 (or closed) early; the worker's RSS stays small.

    Before: the worker grew by 66 MB (httptools keeps the value it has so far)."""
    cluster, host, port = start(run_cli, "limits_app:wsgi", "--http", http)
    pid = worker_pid(cluster)
    get_ok(host, port)
    before = proc_field(pid, "VmRSS")
    # The value's bytes are all valid in a header (BLOCK's control bytes would be a 400 from the parser, before the
    # size counts whenever a read brings less than the head limit): what is refused here is the size alone.
    value = (b"v" * MiB for _ in range(64))
    sent, answer = send_watching(host, port, b"GET / HTTP/1.1\r\nHost: t\r\nX-Huge: ", value)
    assert answer == b"" or status_of(answer) == 431
    assert sent < 32 * MiB, f"the server took {sent / MiB:.0f} MiB of one header"
    get_ok(host, port)
    grown = proc_field(pid, "VmRSS") - before
    assert grown < 8 * 1024, f"worker RSS grew by {grown} kB"


@pytest.mark.slow  # waits out the 10 s head timeout: run on one interpreter of the CI matrix (tox.ini)
@PARSERS
def test_incomplete_heads_are_closed(run_cli: Callable[..., Cluster], http: str) -> None:
    """Slowloris: connections that send part of a head (or nothing) are closed by the server within its head
    timeout (10 s), with a 408 when part of a head came; meanwhile others are served. Before: never closed."""
    _, host, port = start(run_cli, "limits_app:wsgi", "--http", http)
    partial = [socket.create_connection((host, port), timeout=DEADLINE) for _ in range(20)]
    idle = socket.create_connection((host, port), timeout=DEADLINE)
    try:
        for sock in partial:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        get_ok(host, port)
        answers = [read_all(sock) for sock in partial]  # each waits, up to DEADLINE, for the server to close
        assert all(status_of(answer) == 408 for answer in answers)
        assert read_all(idle) == b""  # nothing was sent: closed without an answer
        get_ok(host, port)
    finally:
        for sock in [*partial, idle]:
            sock.close()
