"""End-to-end: the connection and WebSocket limits (issue 14, item 5), against the real CLI.

--limit-concurrency N: a worker serves N connections at once (a connection counts from its first request until
it closes); the first request of one more gets 503 with Connection: close, the N held ones are still served,
and the refusals are logged without flooding. For the inline WSGI engine and uvicorn's stack (an ASGI app),
with connections the primary passes (rr) and ones the worker accepts itself (shared), with both parsers.

--ws-max-size, --ws-ping-interval, --ws-ping-timeout: a real WebSocket client (wsproto, driven over a plain
socket so that the test decides whether pings are answered) sees close code 1009 for a message past the size,
1011 when it leaves pings unanswered, and stays open while it answers them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from helpers import (
    DEADLINE,
    FRESH,
    TEST_APPS,
    Cluster,
    assert_config_error,
    read_all,
    read_head,
    run_to_exit,
    wait_until,
)


def start(run_cli: Callable[..., Cluster], app: str, *args: str) -> tuple[Cluster, int]:
    cluster = run_cli(app, "--workers", "1", "--port", "0", *args, cwd=TEST_APPS)
    url = cluster.wait_ready()
    return cluster, int(url.rsplit(":", 1)[1])


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)


def ask(sock: socket.socket) -> tuple[int, bytes]:
    """One keep-alive GET / on ``sock``: the status and the response head (the body is read by its length)."""
    sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
    head, _, body = read_head(sock).partition(b"\r\n\r\n")
    fields = dict(line.split(b":", 1) for line in head.lower().split(b"\r\n")[1:])
    length = int(fields[b"content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-body"
        body += chunk
    return int(head[9:12]), head


def refused(port: int) -> bytes:
    """A new connection's first request: the whole answer, read until the server closes (it must)."""
    with connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        return read_all(sock)


def fresh_status(port: int) -> int:
    with connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        return int(read_all(sock)[9:12])


def assert_503(answer: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 "), answer[:300]
    lines = head.lower().split(b"\r\n")
    assert b"connection: close" in lines, head
    assert b"content-length: %d" % len(body) in lines, answer  # the whole body, and the server then closed


@pytest.mark.parametrize(("app", "policy", "http"), [
    ("limits_app:wsgi", "rr", "httptools"),  # the inline engine, connections passed by the primary (adopt)
    ("limits_app:wsgi", "shared", "httptools"),  # the inline engine, accepting itself
    ("limits_app:asgi", "rr", "httptools"),  # uvicorn's stack
    ("limits_app:asgi", "shared", "h11"),
])
def test_limit_concurrency(run_cli: Callable[..., Cluster], app: str, policy: str, http: str) -> None:
    """Two connections served and kept alive; three more each get 503 and are closed; the two are still served
    on the same connections; one log line for the three; once one of the two closes, a newcomer is served.

    Before: no --limit-concurrency (unknown option, exit 2). uvicorn's own limit_concurrency would have
    answered the held connections' next requests 503 too, and logged every refusal."""
    cluster, port = start(run_cli, app, "--limit-concurrency", "2", "--policy", policy, "--http", http)
    held = [connect(port), connect(port)]
    try:
        assert [ask(sock)[0] for sock in held] == [200, 200]
        for _ in range(3):
            assert_503(refused(port))
        assert [ask(sock)[0] for sock in held] == [200, 200]
        assert cluster.output().count("refused a connection") == 1, cluster.output()
        assert "--limit-concurrency 2 reached" in cluster.output()
        held.pop().close()
        wait_until(lambda: fresh_status(port) == 200, "a place to free up once a held connection closed")
        assert ask(held[0])[0] == 200
    finally:
        for sock in held:
            sock.close()


def test_refusals_are_logged_without_flooding(caplog: pytest.LogCaptureFixture) -> None:
    """The first refusal at once, then at most one line per 10 s, counting the ones in between (fake clock)."""
    from clusterrun.adapters.admission import Admission

    now = [100.0]
    admission = Admission(1, clock=lambda: now[0])
    assert admission.admit() and not admission.admit()
    with caplog.at_level("WARNING", logger="clusterrun"):
        for second in (0.0, 1.0, 9.0, 10.0, 10.5):
            now[0] = 100.0 + second
            hit = admission.refusal(("10.0.0.1", 5000))
            assert (hit.status, hit.logged) == (503, True)
    assert [record.getMessage() for record in caplog.records] == [
        "refused a connection from 10.0.0.1:5000: --limit-concurrency 1 reached (503 Service Unavailable)",
        "refused a connection from 10.0.0.1:5000: --limit-concurrency 1 reached (503 Service Unavailable); 2 more "
        "refused since the last such line",
    ]
    admission.release()
    assert admission.admit()


def test_limit_concurrency_bad_values() -> None:
    result = run_to_exit("limits_app:wsgi", "--limit-concurrency", "-1", cwd=TEST_APPS)
    assert_config_error(result, 2, "bad --limit-concurrency value '-1'", ">= 0")
    result = run_to_exit("limits_app:wsgi", "--ws-max-size", "0", cwd=TEST_APPS)
    assert_config_error(result, 2, "bad --ws-max-size value '0'", ">= 1")
    result = run_to_exit("limits_app:wsgi", "--ws-ping-interval", "soon", cwd=TEST_APPS)
    assert_config_error(result, 2, "bad --ws-ping-interval value 'soon'", "seconds")
    result = run_to_exit("limits_app:wsgi", "--ws-ping-timeout", "-2", cwd=TEST_APPS)
    assert_config_error(result, 2, "bad --ws-ping-timeout value '-2'", "seconds")


# --- WebSockets ---------------------------------------------------------------------------------------------

def _uvicorn_enforces_ws_limits() -> bool:
    """uvicorn's websockets implementations always do; its wsproto one since 0.46 (max size, pings)."""
    if importlib.util.find_spec("websockets") is not None:
        return True
    version = tuple(int(part) for part in importlib.metadata.version("uvicorn").split(".")[:2])
    return version >= (0, 46)


PING_DEADLINE = 10.0  # seconds: half of uvicorn's default ping interval, many times the 0.2 s the test sets

WS = pytest.mark.skipif(importlib.util.find_spec("wsproto") is None or not _uvicorn_enforces_ws_limits(),
                        reason="the client is wsproto; uvicorn < 0.46 with wsproto ignores the WebSocket limits")


class WebSocket:
    """A WebSocket client: wsproto's state machine over a blocking socket; pings are answered only if asked."""

    def __init__(self, port: int, answer_pings: bool = True) -> None:
        from wsproto import ConnectionType, WSConnection
        from wsproto.events import Request

        self.sock = connect(port)
        self.conn = WSConnection(ConnectionType.CLIENT)
        self.answer_pings = answer_pings
        self.events: deque[Any] = deque()
        self.sock.sendall(self.conn.send(Request(host="test", target="/ws")))

    def next(self) -> Any:
        """The next event from the server (pings answered on the way when ``answer_pings``)."""
        from wsproto.events import Ping

        while not self.events:
            data = self.sock.recv(65536)
            self.conn.receive_data(data or None)
            self.events.extend(self.conn.events())
        event = self.events.popleft()
        if isinstance(event, Ping) and self.answer_pings:
            self.sock.sendall(self.conn.send(event.response()))
        return event

    def send(self, data: bytes) -> None:
        from wsproto.events import BytesMessage

        self.sock.sendall(self.conn.send(BytesMessage(data=data)))

    def close(self) -> None:
        self.sock.close()


def accepted(ws: WebSocket) -> WebSocket:
    from wsproto.events import AcceptConnection

    event = ws.next()
    assert isinstance(event, AcceptConnection), event
    return ws


def echoed(ws: WebSocket, size: int) -> int:
    """Send a message of ``size`` bytes; the length of the message that comes back."""
    from wsproto.events import BytesMessage

    ws.send(b"x" * size)
    received = 0
    while True:
        event = ws.next()
        assert isinstance(event, BytesMessage), event
        received += len(event.data)
        if event.message_finished:
            return received


@WS
def test_ws_max_size(run_cli: Callable[..., Cluster]) -> None:
    """--ws-max-size 1024: a 1024-byte message is echoed, a 1025-byte one closes the socket with code 1009."""
    from wsproto.events import CloseConnection

    _, port = start(run_cli, "e2e_ws:app", "--ws-max-size", "1024")
    ws = accepted(WebSocket(port))
    try:
        assert echoed(ws, 1024) == 1024
        ws.send(b"x" * 1025)
        event = ws.next()
        assert isinstance(event, CloseConnection) and event.code == 1009, event
    finally:
        ws.close()


@WS
def test_ws_pings(run_cli: Callable[..., Cluster]) -> None:
    """--ws-ping-interval 0.2 --ws-ping-timeout 0.3: a client that answers pings gets ping after ping and stays
    open; one that does not is closed with code 1011 after its first unanswered ping."""
    from wsproto.events import CloseConnection, Ping

    _, port = start(run_cli, "e2e_ws:app", "--ws-ping-interval", "0.2", "--ws-ping-timeout", "0.3")
    answering, silent = accepted(WebSocket(port)), accepted(WebSocket(port, answer_pings=False))
    for ws in (answering, silent):
        # Each event is due within half a second; uvicorn's defaults (a ping every 20 s, 20 s to answer) would
        # keep every wait below longer than this deadline, so the flags must have taken effect.
        ws.sock.settimeout(PING_DEADLINE)
    try:
        for _ in range(4):  # each next ping comes only after the last one's pong: 4 pings, 3 answered in time
            event = answering.next()
            assert isinstance(event, Ping), event
        assert echoed(answering, 10) == 10
        event = silent.next()
        assert isinstance(event, Ping), event
        event = silent.next()
        assert isinstance(event, CloseConnection) and event.code == 1011, event
    finally:
        answering.close()
        silent.close()


@pytest.mark.skipif(importlib.util.find_spec("wsproto") is None, reason="the client is wsproto")
def test_websockets_count_toward_limit_concurrency(run_cli: Callable[..., Cluster]) -> None:
    """--limit-concurrency 1 with a WebSocket open: an HTTP request and a WebSocket handshake on new connections
    get 503, the WebSocket still echoes; once it closes, its place is free again."""
    from wsproto.events import RejectConnection

    _, port = start(run_cli, "e2e_ws:app", "--limit-concurrency", "1")
    ws = accepted(WebSocket(port))
    try:
        assert_503(refused(port))
        other = WebSocket(port)
        try:
            event = other.next()
            assert isinstance(event, RejectConnection) and event.status_code == 503, event
        finally:
            other.close()
        assert echoed(ws, 100) == 100
    finally:
        ws.close()
    wait_until(lambda: fresh_status(port) == 200, "the WebSocket's place to free up once it closed")


def test_the_primary_passes_a_new_connection_to_a_worker_with_room(run_cli: Callable[..., Cluster]) -> None:
    # Under rr the primary hands connections out in turn; a worker at --limit-concurrency would answer its turn
    # 503 while the other has room. The primary counts each worker's open connections, so it skips a full one.
    cluster = run_cli("sup_app:wsgi", "--workers", "2", "--port", "0", "--policy", "rr", "--limit-concurrency", "1",
                      cwd=TEST_APPS)
    url = cluster.wait_ready()
    with httpx.Client(timeout=DEADLINE) as held:  # one keep-alive connection: its worker is full from now on
        full = held.get(url).json()["pid"]
        for _ in range(4):
            # Each earlier connection has closed on the worker with room (it is counted where the primary reads).
            cluster.wait_status(lambda status: all(w["connections"] == (w["pid"] == full) for w in status["workers"]),
                                "one connection open, on the full worker")
            response = FRESH.get(url)
            assert response.status_code == 200, response.text
            assert response.json()["pid"] != full
        assert held.get(url).json()["pid"] == full  # and the held one is still served
