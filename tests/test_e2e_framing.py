"""HTTP/1.x framing on the inline WSGI engine, as a client sees it: pipelining, refusals after complete
requests, trailers, repeated fields, and the request forms gunicorn refuses (issue 22).

Each test starts the real CLI with tests/apps/echo_app.py, writes raw bytes to it and reads what comes back.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable

import pytest

from helpers import DEADLINE, Cluster, read_all, start


def _address(cluster: Cluster) -> tuple[str, int]:
    url = cluster.wait_ready()
    host, _, port = url.removeprefix("http://").rpartition(":")
    return host, int(port)


def _exchange(cluster: Cluster, data: bytes) -> bytes:
    """Send ``data`` in one write, then read until the server closes the connection."""
    with socket.create_connection(_address(cluster), timeout=DEADLINE) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)  # nothing more comes: the server answers what came and closes
        return read_all(sock)


def _responses(data: bytes) -> list[tuple[int, bytes]]:
    """Split what a server sent into (status, body) pairs; every response here has a Content-Length."""
    found = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, data[:200]
        status = int(head.split(b" ", 2)[1])
        match = re.search(rb"(?im)^content-length: *(\d+)", head)
        length = int(match.group(1)) if match else len(rest)
        found.append((status, rest[:length]))
        data = rest[length:]
    return found


@pytest.mark.parametrize("policy", ["rr", "shared"])
def test_ten_thousand_pipelined_requests_in_one_write_are_all_answered_in_order(
    run_cli: Callable[..., Cluster], policy: str
) -> None:
    cluster = start(run_cli, "echo_app:wsgi", "--workers", "1", "--policy", policy)
    count = 10_000
    data = b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(count))
    answers = _responses(_exchange(cluster, data))
    assert len(answers) == count
    assert [json.loads(body)["path"] for _, body in answers] == [f"/{i}" for i in range(count)]
    assert all(status == 200 for status, _ in answers)
    assert "Traceback" not in cluster.output()
