"""End-to-end: what an ASGI app's HTTP/1.1 connections keep, on clusterrun's own protocol (adapters/stack/http1.py,
``--http httptools``, the default) and on uvicorn's (``--http uvicorn``), sent the same bytes and expected to
answer alike: pipelining, streamed bodies both ways with a slow reader, Expect: 100-continue, HEAD, app failures,
the scope, the WebSocket upgrade and the keep-alive timeout. The app is tests/apps/http1_app.py.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from helpers import DEADLINE, TEST_APPS, Cluster, read_all, read_head

# uvicorn's protocol, the alternative, is checked once per CI run (slow: py311), clusterrun's on every Python.
PROTOCOLS = pytest.mark.parametrize("http", ["httptools", pytest.param("uvicorn", marks=pytest.mark.slow)],
                                    ids=["clusterrun", "uvicorn"])


def start(run_cli: Callable[..., Cluster], http: str, *args: str) -> int:
    cluster = run_cli("http1_app:app", "--workers", "1", "--port", "0", "--http", http, *args, cwd=TEST_APPS)
    return int(cluster.wait_ready().rsplit(":", 1)[1])


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)


class Reader:
    """Responses read one by one off a kept connection, whatever each recv brings (pipelined answers share one)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self, size: int) -> None:
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            assert chunk, f"the server closed the connection mid-response: {self.buffer[:200]!r}"
            self.buffer += chunk

    def _take(self, size: int) -> bytes:
        self._fill(size)
        taken, self.buffer = self.buffer[:size], self.buffer[size:]
        return taken

    def _line(self, end: bytes = b"\r\n") -> bytes:
        while end not in self.buffer:
            self._fill(len(self.buffer) + 1)
        line, _, self.buffer = self.buffer.partition(end)
        return line

    def head(self) -> bytes:
        return self._line(b"\r\n\r\n") + b"\r\n\r\n"

    def response(self, *, bodiless: bool = False) -> tuple[bytes, bytes]:
        """The next response's head and body (Content-Length or chunked)."""
        head = self.head()
        fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:] if line)
        if bodiless:
            return head, b""
        if b"content-length" in fields:
            return head, self._take(int(fields[b"content-length"]))
        body = b""
        while size := int(self._line(), 16):
            body += self._take(size)
            self._take(2)
        self._take(2)
        return head, body


@PROTOCOLS
def test_pipelined_requests_are_answered_in_order(run_cli: Callable[..., Cluster], http: str) -> None:
    port = start(run_cli, http)
    with connect(port) as sock:
        sock.sendall(b"GET /scope?i=1 HTTP/1.1\r\nHost: t\r\n\r\n"
                     b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
                     b"GET /scope?i=3 HTTP/1.1\r\nHost: t\r\n\r\n")
        reader = Reader(sock)
        answers = [reader.response()[1] for _ in range(3)]
    assert json.loads(answers[0])["query_string"] == "i=1"
    assert json.loads(answers[1]) == {"size": 5, "sha256": hashlib.sha256(b"hello").hexdigest()}
    assert json.loads(answers[2])["query_string"] == "i=3"


@PROTOCOLS
def test_a_large_upload_streams_to_the_app_intact(run_cli: Callable[..., Cluster], http: str) -> None:
    port = start(run_cli, http)
    body = os.urandom(4 * 1024 * 1024)  # past the 64 KiB at which reading pauses for the app
    with connect(port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        for offset in range(0, len(body), 1 << 20):
            piece = body[offset:offset + (1 << 20)]
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        sock.sendall(b"0\r\n\r\n")
        head, answer = Reader(sock).response()
    assert head.startswith(b"HTTP/1.1 200 ")
    assert json.loads(answer) == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


@PROTOCOLS
def test_a_streamed_answer_reaches_a_slow_reader_intact(run_cli: Callable[..., Cluster], http: str) -> None:
    port = start(run_cli, http)
    chunks = 64  # 4 MiB: far more than the kernel's buffers hold, so the app's sends wait for the client
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(DEADLINE)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /stream?n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % chunks)
        reader = Reader(sock)
        head, body = reader.response()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # the connection is still good for another
        assert reader.response()[1] == b"ok"
    assert b"transfer-encoding: chunked" in head.lower()
    assert body == b"".join(bytes([index]) * 65536 for index in range(chunks))


@PROTOCOLS
def test_expect_100_continue_is_answered_before_the_body(run_cli: Callable[..., Cluster], http: str) -> None:
    port = start(run_cli, http)
    with connect(port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        reader = Reader(sock)
        assert reader.head() == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"abc")
        assert json.loads(reader.response()[1])["size"] == 3


@PROTOCOLS
def test_head_gets_the_head_only(run_cli: Callable[..., Cluster], http: str) -> None:
    port = start(run_cli, http)
    with connect(port) as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
        reader = Reader(sock)
        head, _ = reader.response(bodiless=True)
        assert head.startswith(b"HTTP/1.1 200 ") and b"content-length: 2\r\n" in head.lower()
        assert reader.response() == (head, b"ok")  # no body came between the two heads


@PROTOCOLS
def test_an_app_failing_before_its_answer_gets_500_and_a_close(run_cli: Callable[..., Cluster], http: str) -> None:
    port = start(run_cli, http)
    with connect(port) as sock:
        sock.sendall(b"GET /boom HTTP/1.1\r\nHost: t\r\n\r\n")
        raw = read_all(sock)
    assert raw.startswith(b"HTTP/1.1 500 ")
    assert b"connection: close" in raw.lower() and raw.endswith(b"Internal Server Error")


@PROTOCOLS
def test_an_app_failing_mid_answer_cuts_the_connection(run_cli: Callable[..., Cluster], http: str) -> None:
    port = start(run_cli, http)
    with connect(port) as sock:
        sock.sendall(b"GET /half HTTP/1.1\r\nHost: t\r\n\r\n")
        raw = read_all(sock)
    assert raw.startswith(b"HTTP/1.1 200 ") and raw.endswith(b"\r\n\r\nhalf")  # 4 of 10 bytes, then the close


@PROTOCOLS
def test_the_scope_names_the_request_the_connection_and_the_worker(run_cli: Callable[..., Cluster],
                                                                    http: str) -> None:
    port = start(run_cli, http, "--root-path", "/api")
    with connect(port) as sock:
        sock.sendall(b"GET /sc%6fpe?a=%20b HTTP/1.0\r\n\r\n")
        raw = read_all(sock)
    assert raw.startswith(b"HTTP/1.0 200 ")
    shown = json.loads(raw.partition(b"\r\n\r\n")[2])
    client_port = shown.pop("client")[1]
    assert client_port > 0
    assert shown == {"http_version": "1.0", "method": "GET", "path": "/api/scope", "scheme": "http",
                     "root_path": "/api", "raw_path": "/api/sc%6fpe", "query_string": "a=%20b",
                     "server": ["127.0.0.1", port], "state": "yes", "worker": 1}


@PROTOCOLS
@pytest.mark.skipif(importlib.util.find_spec("wsproto") is None and importlib.util.find_spec("websockets") is None,
                    reason="uvicorn serves WebSockets with wsproto or websockets")
def test_a_websocket_upgrade_is_served_and_echoes(run_cli: Callable[..., Cluster], http: str) -> None:
    port = start(run_cli, http)
    with connect(port) as sock:
        key = base64.b64encode(os.urandom(16))
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key)
        head = read_head(sock)
        assert head.startswith(b"HTTP/1.1 101 ")
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        assert b"sec-websocket-accept: " + accept in head.lower().replace(accept.lower(), accept)
        mask = os.urandom(4)
        sock.sendall(b"\x81\x85" + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(b"hello")))
        frame = head.partition(b"\r\n\r\n")[2]
        while len(frame) < 7:
            frame += sock.recv(64)
    assert frame[:7] == b"\x81\x05hello"


@PROTOCOLS
def test_an_idle_keep_alive_connection_is_closed_after_its_timeout(run_cli: Callable[..., Cluster],
                                                                  http: str) -> None:
    port = start(run_cli, http, "--timeout-keep-alive", "1")
    with connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert Reader(sock).response()[1] == b"ok"
        assert sock.recv(1) == b""  # the server closed it: nothing more to read


@PROTOCOLS
def test_the_keep_alive_clock_starts_again_with_each_response(run_cli: Callable[..., Cluster], http: str) -> None:
    """A connection reused before its timeout gets the whole timeout again from its latest response: a clock
    left running from the first response would close it 0.3 s after the second."""
    port = start(run_cli, http, "--timeout-keep-alive", "1")
    with connect(port) as sock:
        reader = Reader(sock)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reader.response()[1] == b"ok"
        time.sleep(0.7)  # the time itself is what is tested: most of the timeout, not all of it
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reader.response()[1] == b"ok"
        answered = time.monotonic()
        assert sock.recv(1) == b""
        idle = time.monotonic() - answered
    assert idle >= 0.9, f"closed {idle:.2f} s after the second response, within its 1 s keep-alive timeout"


# What clusterrun's protocol adds to uvicorn's against a hostile client (clusterrun's protocol only: uvicorn's
# protocols, under --http uvicorn or h11, keep uvicorn's behaviour, as docs/asgi.md says).


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(status.read().split("VmRSS:")[1].split()[0])


def test_requests_pipelined_behind_a_waiting_one_cost_their_bytes(run_cli: Callable[..., Cluster]) -> None:
    """A client that pipelines thousands of requests and reads no answer: the worker holds the bytes, not a request
    cycle for each (before, every request of each read got its scope and cycle: 145 MB for this client)."""
    cluster = run_cli("http1_app:app", "--workers", "1", "--port", "0", cwd=TEST_APPS)
    port = int(cluster.wait_ready().rsplit(":", 1)[1])
    (worker,) = cluster.worker_pids()
    before = _rss_kib(worker)
    request = b"GET /stream?n=4 HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(port) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        sent, until = 0, time.monotonic() + 4  # a bounded flood: 4 s, at most 20 MB
        while time.monotonic() < until and sent < 20_000_000:
            try:
                sent += sock.send(request * 512)
            except BlockingIOError:
                time.sleep(0.05)  # the server reads no more for now: the flood paces its retries
        grown = _rss_kib(worker) - before
    assert sent // len(request) > 5_000, "the test sent too little to tell"
    assert grown < 30_000, f"the worker grew {grown} KiB holding {sent // len(request)} unread pipelined requests"
    with connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 200")


def test_a_pipelined_burst_with_bodies_is_answered_whole(run_cli: Callable[..., Cluster]) -> None:
    """Bytes held behind a waiting request include the next request's body: each upload arrives intact, in order."""
    port = start(run_cli, "httptools")
    bodies = [os.urandom(size) for size in (10, 70_000, 5, 200_000, 0)]
    burst = b"".join(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                     for body in bodies)
    with connect(port) as sock:
        sock.sendall(burst)
        reader = Reader(sock)
        for body in bodies:
            head, answer = reader.response()
            assert head.startswith(b"HTTP/1.1 200"), head
            assert json.loads(answer) == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_a_stalled_asgi_upload_is_answered_408(run_cli: Callable[..., Cluster]) -> None:
    """--body-timeout on an ASGI app: a body that sends nothing while the app waits for it gets 408 and a close."""
    cluster = run_cli("http1_app:app", "--workers", "1", "--port", "0", "--body-timeout", "1", cwd=TEST_APPS)
    port = int(cluster.wait_ready().rsplit(":", 1)[1])
    with connect(port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    cluster.wait_for_line(r"no byte of the request body for 1 s \(--body-timeout\) \(408")


def test_a_stalled_small_upload_to_a_wsgi_app_on_threads_is_answered_408(run_cli: Callable[..., Cluster]) -> None:
    """--body-timeout on a WSGI app with --threads N: the bridge reads a small body (up to 64 KiB) before calling
    the app, and that read keeps the clock too. Before, 10 bytes of 100 and then silence held the request for as
    long as the client kept the connection: no answer."""
    cluster = run_cli("inline_h2_app:app", "--workers", "1", "--port", "0", "--threads", "2", "--body-timeout", "1",
                      cwd=TEST_APPS)
    port = int(cluster.wait_ready().rsplit(":", 1)[1])
    with connect(port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert answer.endswith(b"Request Timeout: no byte of the request body for 1 s (--body-timeout)\n"), answer
    cluster.wait_for_line(r"no byte of the request body for 1 s \(--body-timeout\) \(408")


def test_a_client_that_reads_nothing_of_a_response_is_cut_off(run_cli: Callable[..., Cluster]) -> None:
    """--body-timeout on the response: a client that takes nothing of a streamed answer for that long is cut off,
    and the worker serves on."""
    cluster = run_cli("http1_app:app", "--workers", "1", "--port", "0", "--body-timeout", "1", cwd=TEST_APPS)
    port = int(cluster.wait_ready().rsplit(":", 1)[1])
    with connect(port) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /stream?n=2000 HTTP/1.1\r\nHost: x\r\n\r\n")  # 125 MiB, far past every buffer
        cluster.wait_for_line(r"the client took nothing of the response for 1 s \(--body-timeout\)")
    with connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_zerocopysend_on_asyncio_loops(run_cli: Callable[..., Cluster], tmp_path: Path, framing: str) -> None:
    """http.response.zerocopysend (the file sent with loop.sendfile), offered on asyncio's loop and plain HTTP:
    after a body part, framed by Content-Length or chunked; the connection then serves the next request."""
    data = os.urandom(3 * 1024 * 1024)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    cluster = run_cli("zerocopy_app:app", "--workers", "1", "--port", "0", "--loop", "asyncio", cwd=TEST_APPS)
    url = cluster.wait_ready()
    with httpx.Client(timeout=DEADLINE) as client:
        assert client.get(url + "/extensions").json() == ["http.response.zerocopysend"]
        for offset, count in ((100, 2_000_000), (0, len(data))):
            response = client.get(url + "/", params={"file": str(path), "offset": offset, "count": count,
                                                    "framing": framing})
            assert response.status_code == 200
            assert ("transfer-encoding" in response.headers) == (framing == "chunked")
            assert response.content == b"head" + data[offset:offset + count]


def test_zerocopysend_is_not_offered_on_uvloop(run_cli: Callable[..., Cluster]) -> None:
    """uvloop's loop has no sendfile (NotImplementedError): the extension is not in the scope there."""
    pytest.importorskip("uvloop")
    cluster = run_cli("zerocopy_app:app", "--workers", "1", "--port", "0", "--loop", "uvloop", cwd=TEST_APPS)
    with httpx.Client(timeout=DEADLINE) as client:
        assert client.get(cluster.wait_ready() + "/extensions").json() == []
