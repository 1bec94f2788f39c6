"""End-to-end: HTTP/2 to a WSGI app, against the real CLI: a streamed answer and an upload both ways with small
windows (here on the stack, --threads 2).
"""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Callable

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from helpers import DEADLINE, TEST_APPS, Cluster

APP = "inline_h2_app:app"


def pattern(size: int) -> bytes:
    return bytes(range(251)) * (size // 251) + bytes(range(size % 251))


def digest(body: bytes) -> str:
    return f"{len(body)} {hashlib.sha256(body).hexdigest()}"


class Client:
    """HTTP/2 with prior knowledge on a plain socket, on the ``h2`` library; every wait has a deadline."""

    def __init__(self, url: str, settings: dict[int, int] | None = None) -> None:
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=DEADLINE)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values=settings or {})
        self.conn.initiate_connection()
        self.authority = f"{host}:{port}".encode()
        self.events: list[h2.events.Event] = []
        self.bodies: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.closed = False
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path: str, method: str = "GET", end: bool = True) -> int:
        stream_id: int = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, [(b":method", method.encode()), (b":scheme", b"http"),
                                           (b":authority", self.authority), (b":path", path.encode())],
                               end_stream=end)
        self.flush()
        return stream_id

    def read(self) -> None:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
            return
        for event in self.conn.receive_data(data):
            self.events.append(event)
            if isinstance(event, h2.events.DataReceived):
                self.bodies.setdefault(event.stream_id, bytearray()).extend(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                self.ended.add(event.stream_id)
        self.flush()

    def until(self, done: Callable[[], object], what: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while not done():
            assert not self.closed, f"the connection closed before {what}: {self.events}"
            assert time.monotonic() < deadline, f"no {what} within {DEADLINE}s"
            self.read()

    def answer(self, stream_id: int) -> tuple[int, bytes]:
        self.until(lambda: stream_id in self.ended, f"the end of stream {stream_id}")
        status = next(int(dict(event.headers)[b":status"]) for event in self.events
                      if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id)
        return status, bytes(self.bodies.get(stream_id, b""))

    def send_body(self, stream_id: int, body: bytes) -> None:
        """Send ``body`` and end the stream, no faster than the server's windows allow."""
        view = memoryview(body)
        while view:
            window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.read()
                continue
            chunk, view = view[:window], view[window:]
            self.conn.send_data(stream_id, bytes(chunk), end_stream=not view)
            self.flush()

    def wait_closed(self) -> None:
        deadline = time.monotonic() + DEADLINE
        while not self.closed:
            assert time.monotonic() < deadline, f"the connection still open after {DEADLINE}s"
            self.read()

    def terminated(self) -> h2.events.ConnectionTerminated | None:
        return next((e for e in self.events if isinstance(e, h2.events.ConnectionTerminated)), None)

    def close(self) -> None:
        self.sock.close()


def start(run_cli: Callable[..., Cluster], *args: str) -> tuple[Cluster, str]:
    cluster = run_cli(APP, "--port", "0", "--workers", "1", "--no-control", *args, cwd=TEST_APPS)
    url = cluster.wait_ready()
    if "--threads" not in args:
        cluster.wait_for_line("serving with the inline WSGI engine")  # the default engine, not the stack
    return cluster, url


@pytest.mark.parametrize("engine", ["--threads 2"])
def test_flow_control_both_ways_with_small_windows(run_cli: Callable[..., Cluster], engine: str) -> None:
    """A 1 MiB streamed answer to a client whose window is 1 KiB arrives whole (h2 fails the read if the server
    sends past the window); a 1 MiB upload reaches the app whole while the server opens its window as the app
    reads. On the stack (--threads 2) too: a WSGI answer streamed in more than one chunk over HTTP/2 stopped after
    its first (the bridge's disconnect watcher took the stream's repeated empty body message for the end)."""
    _, url = start(run_cli, *engine.split()[engine == "inline":])
    client = Client(url, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1024})
    try:
        size = 1024 * 1024
        assert client.answer(client.request(f"/big?n={size}")) == (200, pattern(size))
        upload = pattern(size)
        stream_id = client.request("/echo", method="POST", end=False)
        client.send_body(stream_id, upload)
        assert client.answer(stream_id) == (200, digest(upload).encode())
    finally:
        client.close()
