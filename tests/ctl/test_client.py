"""The control socket's one client (clusterrun.ctl.client), against servers that misbehave on purpose.

The commands, tests/helpers.py and bench/sidecalls.py each had a read loop of their own before, and each met
these failures its own way: ``clusterrun status`` crashed with a traceback on an answer that was JSON but not
an object, the helper and the bench raised bare OSError and ValueError, none bounded an answer's size, and a
server that sent a byte at a time held every one of them for as long as it kept going. Now each failure is a
ControlError that says which it was. The real server's side is tested end to end in test_e2e_control.py.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clusterrun.ctl import client
from clusterrun.errors import ControlError
from clusterrun.host import controlsocket

from helpers import DEADLINE


class FakeServer:
    """A Unix socket served by a thread: it accepts one connection and hands it to ``behaviour``."""

    def __init__(self, path: Path, behaviour: Callable[[FakeServer, socket.socket], None]) -> None:
        self.path = str(path)
        self.behaviour = behaviour
        self.received = b""
        self.done = threading.Event()  # set when the test ends: a server that waits stops waiting
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(1)
        self.listener.settimeout(DEADLINE)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return  # closed by the test before anyone connected
        with conn:
            conn.settimeout(DEADLINE)
            try:
                self.behaviour(self, conn)
            except OSError:
                pass  # the client hung up, as it should when the server misbehaves

    def read_request(self, conn: socket.socket) -> None:
        while b"\n" not in self.received and (chunk := conn.recv(65536)):
            self.received += chunk

    def close(self) -> None:
        self.done.set()
        self.listener.close()
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive()


Serve = Callable[[Callable[[FakeServer, socket.socket], None]], FakeServer]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    servers: list[FakeServer] = []

    def start(behaviour: Callable[[FakeServer, socket.socket], None]) -> FakeServer:
        server = FakeServer(tmp_path / f"fake{len(servers)}.sock", behaviour)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def answering(answer: bytes) -> Callable[[FakeServer, socket.socket], None]:
    """A server that reads the request, sends ``answer`` and hangs up."""
    def behave(server: FakeServer, conn: socket.socket) -> None:
        server.read_request(conn)
        conn.sendall(answer)
    return behave


def test_an_answer_comes_back_decoded_and_a_refusal_as_the_clusters_reason(serve: Serve) -> None:
    ok = serve(answering(b'{"ok":true,"name":"shop"}\n'))
    assert client.request(ok.path, "info", verbose=True) == {"ok": True, "name": "shop"}
    assert ok.received == b'{"command":"info","verbose":true}\n'  # one compact line, as the server reads it

    refused = serve(answering(b'{"ok":false,"error":"unknown command \'x\'"}\n'))
    with pytest.raises(ControlError, match="unknown command 'x'"):
        client.request(refused.path, "x")
    # The raw exchange (what the tests use to send malformed requests) returns a refusal instead.
    again = serve(answering(b'{"ok":false,"error":"no"}\n'))
    assert client.exchange(again.path, b"nonsense\n") == {"ok": False, "error": "no"}


def test_an_answer_closed_without_its_end_of_line_still_counts(serve: Serve) -> None:
    # What the commands accepted before: the server's close ends the answer as well as its newline does.
    server = serve(answering(b'{"ok": true}'))
    assert client.request(server.path, "info") == {"ok": True}


@pytest.mark.parametrize("where", ["no file", "nobody listens"])
def test_nobody_there_is_no_answer(tmp_path: Path, where: str) -> None:
    path = tmp_path / "gone.sock"
    if where == "nobody listens":  # a dead cluster's socket file: bound once, its process gone
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(str(path))
        dead.close()
    with pytest.raises(ControlError, match=r"no answer from .*gone\.sock .*is the cluster running"):
        client.request(str(path), "status")
    assert not client.answers(str(path))


@pytest.mark.parametrize(("sent", "why"), [
    (b"", "closed the connection without an answer"),
    (b"garbage\n", "closed the connection after an answer that is not a JSON object"),
    (b"[1, 2]\n", "closed the connection after an answer that is not a JSON object"),  # crashed ctl before
    (b'{"ok": tr', "closed the connection without an answer"),  # cut short
])
def test_an_answer_that_is_not_one_is_a_control_error(serve: Serve, sent: bytes, why: str) -> None:
    server = serve(answering(sent))
    with pytest.raises(ControlError, match=why):
        client.exchange(server.path, b'{"command":"status"}\n')


def test_a_silent_server_times_out(serve: Serve) -> None:
    def silent(server: FakeServer, conn: socket.socket) -> None:
        server.read_request(conn)
        server.done.wait(DEADLINE)

    server = serve(silent)
    began = time.monotonic()
    with pytest.raises(ControlError, match=r"no answer from .* \(timed out\)"):
        client.exchange(server.path, b'{"command":"status"}\n', timeout=0.3)
    assert time.monotonic() - began < DEADLINE / 2


def test_a_server_that_trickles_is_held_to_the_whole_exchanges_timeout(serve: Serve) -> None:
    # Each byte comes within any per-read timeout: only a deadline for the whole exchange ends it.
    def trickle(server: FakeServer, conn: socket.socket) -> None:
        server.read_request(conn)
        while not server.done.wait(0.02):
            conn.sendall(b" ")

    server = serve(trickle)
    began = time.monotonic()
    with pytest.raises(ControlError, match="timed out"):
        client.exchange(server.path, b'{"command":"status"}\n', timeout=0.5)
    assert time.monotonic() - began < DEADLINE / 2


def test_an_answer_larger_than_the_limit_is_refused(serve: Serve) -> None:
    def flood(server: FakeServer, conn: socket.socket) -> None:
        server.read_request(conn)
        while not server.done.is_set():
            conn.sendall(b"x" * 65536)

    server = serve(flood)
    with pytest.raises(ControlError, match="larger than 100000 bytes: not a cluster's control socket"):
        client.exchange(server.path, b'{"command":"status"}\n', limit=100_000)
    assert controlsocket.MAX_ANSWER >= 1024 * 1024  # the status of a 1024-worker cluster fits


def test_an_answer_sent_before_the_whole_request_was_read_is_still_read(serve: Serve) -> None:
    # The server answers a request too large for it at once and closes (as the real one does past MAX_REQUEST):
    # the client's send fails, its answer is there all the same.
    def hasty(server: FakeServer, conn: socket.socket) -> None:
        conn.recv(1024)
        conn.sendall(b'{"ok":false,"error":"request larger than 1024 bytes"}\n')
        conn.shutdown(socket.SHUT_RDWR)

    server = serve(hasty)
    answer = client.exchange(server.path, b"{" + b" " * (8 * 1024 * 1024))
    assert answer == {"ok": False, "error": "request larger than 1024 bytes"}


def test_a_socket_served_by_another_user_gets_nothing(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without root no other user can serve here: the peer credential is made to say so.
    monkeypatch.setattr(client, "peer_uid", lambda sock: os.getuid() + 1)
    server = serve(answering(b'{"ok":true}\n'))
    with pytest.raises(ControlError, match=rf"served by uid {os.getuid() + 1}, neither you nor root"):
        client.request(server.path, "stop")
    server.close()
    assert server.received == b""  # not sending it anything
