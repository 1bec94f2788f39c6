"""End-to-end: a closed connection leaves nothing to Python's cycle collector in a worker (uvicorn's stack).

Each connection's objects must be freed when it closes, by reference counting, as in uvicorn itself. A
reference cycle per connection (the request guard of adapters.limits and uvicorn's protocol holding each other)
left about 23 objects per connection to the collector, which then ran every few dozen connections: with a new
connection per request, a quarter more CPU per request than uvicorn on the same app.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import httpx
import pytest

from helpers import DEADLINE, TEST_APPS, Cluster, read_all

CONNECTIONS = 40


def one_request(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        return read_all(sock)


@pytest.mark.parametrize(("policy", "http"), [
    ("shared", "httptools"),  # the worker's own listener
    ("rr", "h11"),  # connections the primary passes, the other parser
])
def test_closed_connections_leave_no_garbage_cycles(run_cli: Callable[..., Cluster], policy: str, http: str) -> None:
    cluster = run_cli("garbage_app:app", "--workers", "1", "--port", "0", "--policy", policy, "--http", http,
                      cwd=TEST_APPS)
    url = cluster.wait_ready()
    port = int(url.rsplit(":", 1)[1])
    with httpx.Client(base_url=url, timeout=DEADLINE) as client:  # one keep-alive connection, open throughout
        before = int(client.get("/collected").text)
        for _ in range(CONNECTIONS):
            assert one_request(port).startswith(b"HTTP/1.1 200 ")
        freed = int(client.get("/collected").text) - before
    assert freed < CONNECTIONS, f"{freed} objects freed by the cycle collector after {CONNECTIONS} connections"
