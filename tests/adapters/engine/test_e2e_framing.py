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


def _one(cluster: Cluster, data: bytes) -> tuple[int, dict[str, object] | bytes]:
    """The first answer to ``data``: its status and, for a 200, what the app saw."""
    answers = _responses(_exchange(cluster, data))
    assert answers, "no answer"
    status, body = answers[0]
    return status, json.loads(body) if status == 200 else body


CHUNKED = (b"POST /t HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n0\r\n")


def test_trailers_never_reach_the_headers_nor_the_proxy_logic(run_cli: Callable[..., Cluster]) -> None:
    # The client is 127.0.0.1, a trusted proxy by default: a header X-Forwarded-For would move REMOTE_ADDR.
    cluster = start(run_cli, "echo_app:wsgi", "--workers", "1")
    trailers = b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nContent-Type: evil/type\r\nX-Late: 1\r\n\r\n"
    status, seen = _one(cluster, CHUNKED + trailers)
    assert status == 200, seen
    assert isinstance(seen, dict)
    assert seen["body"] == "hello"
    assert (seen["client"], seen["scheme"]) == ("127.0.0.1", "http")
    headers = dict(seen["headers"])  # type: ignore[arg-type]
    assert headers["CONTENT-TYPE"] == "text/plain"
    assert "X-LATE" not in headers and "X-FORWARDED-FOR" not in headers
    # A trailer that would change the routing or framing is refused, as gunicorn does.
    assert _one(cluster, CHUNKED + b"Host: evil.example.com\r\n\r\n")[0] == 400


@pytest.mark.parametrize(("name", "head"), [
    ("two Host fields", b"GET / HTTP/1.1\r\nHost: example.com\r\nHost: evil.example.com\r\n\r\n"),
    ("two Host fields on an upload", b"POST / HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 5\r\n"
                                     b"Expect: 100-continue\r\n\r\n"),
    ("two Content-Type fields", b"GET / HTTP/1.1\r\nHost: x\r\nContent-Type: a/b\r\nContent-Type: c/d\r\n\r\n"),
    ("a proxy's schemes in conflict", b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\n"
                                      b"X-Forwarded-Ssl: off\r\n\r\n"),
    ("HTTP/2.0 in a request line", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n"),
    ("chunked on HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    ("the target * with GET", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("a relative target", b"GET stuff/here HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("a malformed absolute target", b"PUT s://]ufd/: HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("a lower-case extension method", b"foo / HTTP/1.1\r\nHost: x\r\n\r\n"),
])
def test_requests_gunicorn_refuses_are_refused(run_cli: Callable[..., Cluster], name: str, head: bytes) -> None:
    cluster = start(run_cli, "echo_app:wsgi", "--workers", "1")
    status, answer = _one(cluster, head)
    assert status == 400, (name, answer)


def test_what_gunicorn_takes_is_taken(run_cli: Callable[..., Cluster]) -> None:
    cluster = start(run_cli, "echo_app:wsgi", "--workers", "1")
    status, seen = _one(cluster, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and isinstance(seen, dict) and seen["path"] == "*"
    status, seen = _one(cluster, b"GET http://example.com/a/b?c=d HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and isinstance(seen, dict) and (seen["path"], seen["query"]) == ("/a/b", "c=d")
    # A chunk extension with whitespace around its parts (RFC 9112's BWS) is taken by gunicorn; not yet here.


def test_every_complete_request_before_a_refused_one_is_answered(run_cli: Callable[..., Cluster]) -> None:
    cluster = start(run_cli, "echo_app:wsgi", "--workers", "1")
    # Bytes after a request that closes the connection: the request is answered, the rest never read.
    for head in (b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"GET /a HTTP/1.0\r\n\r\n"):
        answers = _responses(_exchange(cluster, head + b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"))
        assert [(status, json.loads(body)["path"]) for status, body in answers] == [(200, "/a")]
        answers = _responses(_exchange(cluster, head + b"\x00garbage\r\n\r\n"))
        assert [(status, json.loads(body)["path"]) for status, body in answers] == [(200, "/a")]
    # A malformed request after two valid ones: both answered, then the 400.
    data = b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/9.9x\r\n\r\n"
    answers = _responses(_exchange(cluster, data))
    assert [status for status, _ in answers] == [200, 200, 400]
    assert [json.loads(body)["path"] for _, body in answers[:2]] == ["/1", "/2"]
    # The same when a later request is refused by a check of its own (a repeated Host).
    data = b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\nGET /3 HTTP/1.1\r\n\r\n"
    assert [status for status, _ in _responses(_exchange(cluster, data))] == [200, 400]


def test_requests_pipelined_after_an_answer_that_closes_are_not_answered(run_cli: Callable[..., Cluster]) -> None:
    """The app said Connection: close: the connection ends with that answer, as it said."""
    cluster = start(run_cli, "echo_app:wsgi", "--workers", "1")
    data = b"GET /a HTTP/1.1\r\nHost: x\r\nX-Answer-Close: 1\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    answers = _responses(_exchange(cluster, data))
    assert [(status, json.loads(body)["path"]) for status, body in answers] == [(200, "/a")]


def test_extension_methods_are_taken(run_cli: Callable[..., Cluster]) -> None:
    """Any RFC 9110 token method in upper case, as gunicorn: the parser knows only registered ones."""
    cluster = start(run_cli, "echo_app:wsgi", "--workers", "1")
    status, seen = _one(cluster, b"FOO /x?y=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and isinstance(seen, dict) and (seen["method"], seen["path"]) == ("FOO", "/x")
    status, seen = _one(cluster, b"-BLARGH /foo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    assert status == 200 and isinstance(seen, dict) and (seen["method"], seen["body"]) == ("-BLARGH", "hi")
    # Pipelined between known methods, with bodies: each request keeps its own method, in order.
    data = (b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nFOO /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"PURGE /3 HTTP/1.1\r\nHost: x\r\n\r\nBAR-BAZ /4 HTTP/1.1\r\nHost: x\r\n\r\nPOST /5 HTTP/1.1\r\n"
            b"Host: x\r\nContent-Length: 1\r\n\r\nz")
    answers = [json.loads(body) for _, body in _responses(_exchange(cluster, data))]
    assert [(seen["method"], seen["path"], seen["body"]) for seen in answers] == [
        ("GET", "/1", ""), ("FOO", "/2", "abc"), ("PURGE", "/3", ""), ("BAR-BAZ", "/4", ""), ("POST", "/5", "z")]


def test_a_fragment_stays_out_of_the_query_and_field_values_lose_trailing_whitespace(
    run_cli: Callable[..., Cluster]
) -> None:
    cluster = start(run_cli, "echo_app:wsgi", "--workers", "1")
    status, seen = _one(cluster, b"GET /p?q=1#frag HTTP/1.1\r\nHost: x\r\nX-Pad: value \t \r\n\r\n")
    assert status == 200 and isinstance(seen, dict)
    assert (seen["path"], seen["query"]) == ("/p", "q=1")  # the fragment is the client's own
    assert dict(seen["headers"])["X-PAD"] == "value"  # type: ignore[arg-type]


def test_a_header_field_line_is_limited_as_gunicorn_counts_it(run_cli: Callable[..., Cluster]) -> None:
    # A header field line of 8190 bytes with its CRLF passes, one of 8191 is refused.
    cluster = start(run_cli, "echo_app:wsgi", "--workers", "1")
    name = b"X-Long: "
    for size, expected in ((8190, 200), (8191, 431)):
        line = name + b"v" * (size - len(name) - 2) + b"\r\n"
        assert _one(cluster, b"GET / HTTP/1.1\r\nHost: x\r\n" + line + b"\r\n")[0] == expected, size


def test_an_http10_request_is_answered_in_http10(run_cli: Callable[..., Cluster]) -> None:
    """As gunicorn answers (RFC 9110 would let a server say HTTP/1.1; a client moved from gunicorn sees no change)."""
    cluster = start(run_cli, "echo_app:wsgi", "--workers", "1")
    data = _exchange(cluster, b"GET / HTTP/1.0\r\n\r\n")
    assert data.startswith(b"HTTP/1.0 200 "), data[:40]
    data = _exchange(cluster, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 "), data[:40]


def test_an_endless_chunk_extension_is_refused(run_cli: Callable[..., Cluster]) -> None:
    cluster = start(run_cli, "echo_app:wsgi", "--workers", "1")
    with socket.create_connection(_address(cluster), timeout=DEADLINE) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.sendall(b"5;ext=")
        for _ in range(32):  # 512 KiB of one extension: less than what a refused connection still reads
            sock.sendall(b"a" * 16384)
        sock.shutdown(socket.SHUT_WR)
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:80]
    assert b"chunk size line" in answer
