"""End-to-end: hostile requests for --static files (adapters.edge.static), on the inline engine and on the stack,
from issue 28's trials: ranges whose numbers no file reaches, and digits that are not ASCII.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import DEADLINE, Cluster, read_all, start

ENGINES = {"inline": ("sup_app:wsgi",), "asgi": ("sup_app:asgi",)}
TEXT = b"0123456789" * 10


def ask(url: str, headers: bytes) -> tuple[int, bytes]:
    """GET /assets/a.txt with ``headers`` sent as they are: the status and the body."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=DEADLINE) as sock:
        sock.sendall(b"GET /assets/a.txt HTTP/1.1\r\nHost: x\r\n" + headers + b"Connection: close\r\n\r\n")
        answer = read_all(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize("engine", ENGINES)
def test_a_range_past_any_file_is_answered_not_failed(run_cli: Callable[..., Cluster], tmp_path: Path,
                                                      engine: str) -> None:
    """A Range whose numbers have thousands of digits (the field may take 8 KB of them) is a range past the end,
    not a 500: int() refuses more than 4300 digits, and the answer was an Internal Server Error with a traceback.
    A range with non-ASCII digits ("²", which str.isdigit() takes) is ignored, as any malformed one."""
    (tmp_path / "a.txt").write_bytes(TEXT)
    cluster = start(run_cli, *ENGINES[engine], "--workers", "1", "--static", f"/assets={tmp_path}")
    url = cluster.wait_ready()
    huge = b"9" * 5000
    assert ask(url, b"Range: bytes=" + huge + b"-\r\n")[0] == 416
    assert ask(url, b"Range: bytes=0-" + huge + b"\r\n") == (206, TEXT)
    assert ask(url, b"Range: bytes=-" + huge + b"\r\n") == (206, TEXT)
    assert ask(url, b"Range: bytes=0-\xb2\r\n") == (200, TEXT)
    assert ask(url, b"Range: bytes=2-3\r\n") == (206, TEXT[2:4])
    assert ask(url, b"If-None-Match: *\r\n") == (304, b"")  # the file exists: "*" matches it (RFC 9110 13.1.2)
    assert "Traceback" not in cluster.output()
