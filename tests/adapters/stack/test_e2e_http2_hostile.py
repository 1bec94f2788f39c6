"""End-to-end: hostile HTTP/2 clients against the real CLI (adapters.stack.http2), each a trial of issue 28's list
that found a defect: the server must stay bounded and go on serving.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from pathlib import Path

import pytest
from h2_raw import APP, RawClient, start
from hyperframe.frame import PingFrame

from helpers import DEADLINE, Cluster, wait_until

MB = 1024 * 1024


@pytest.mark.parametrize("app", [APP, "inline_h2_app:app"])  # the stack (ASGI), and the inline WSGI engine's side
def test_a_ping_flood_from_a_client_that_reads_nothing_stops_being_read(run_cli: Callable[..., Cluster],
                                                                        tmp_path: Path, app: str) -> None:
    """A client that sends PING after PING and reads none of the answers: once the server's buffer of answers is
    full, the server reads no more from it, so its sends stop (before: the server read on and its buffer of PING
    acknowledgements grew without bound, 57 MB in 20 s). Once the client reads, the server reads again: the
    stream in flight is answered. A SETTINGS flood is bounded the same way. How much the sockets' buffers take is
    the kernel's (a few MB here); the flood is stopped well before 24 MB."""
    _, url = start(run_cli, app, "--timeout-keep-alive", "120", "--timeout-request-head", "120")
    client = RawClient(url)
    try:
        held = client.request(f"/hold?dir={tmp_path}")  # a stream in flight: the connection is not idle
        wait_until(lambda: (tmp_path / "started").exists(), "the app holding the request")
        pings = PingFrame(0, opaque_data=b"flooding").serialize() * 4096
        sent = 0
        while sent < 40 * MB:
            # The one wait that has no event to end it: the server not reading shows as a send that cannot go on.
            if not select.select([], [client.sock], [], 2)[1]:
                break
            sent += client.sock.send(pings)
        assert sent < 24 * MB, f"the server read {sent / MB:.0f} MB of PINGs from a client that read nothing"
        (tmp_path / "release").touch()
        # The answer to the held stream comes after every PING's acknowledgement: read raw, without h2's events.
        answer = b"\x00\x00\x04\x00\x01\x00\x00\x00\x01held"  # DATA, END_STREAM, stream 1: "held"
        seen = b""
        client.sock.settimeout(DEADLINE)
        while answer not in seen:
            data = client.sock.recv(MB)
            assert data, "closed before the held stream's answer"
            seen = seen[-len(answer):] + data
        assert held == 1
    finally:
        client.close()
