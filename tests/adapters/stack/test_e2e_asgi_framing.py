"""End-to-end: request framing on the stack (issue 22: faults item 9 and 11, corpus items 1, 2, 3, 5).

ASGI apps are served by clusterrun's own HTTP/1.1 protocol (adapters/stack/http1.py, the default) or uvicorn's
(``--http uvicorn``, ``--http h11``), with clusterrun's guard (adapters/limits.py, adapters/stack/guard.py). Each
test sends raw bytes to the real CLI on all three and reads what came back: the app (tests/apps/framing_echo.py)
answers what it saw of the request as JSON.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable
from typing import Any

import pytest

from helpers import DEADLINE, TEST_APPS, Cluster, read_all, read_head

# --http uvicorn, the alternative to the default's protocol on the same parser, is checked once per CI run (slow).
PARSERS = ["httptools", pytest.param("uvicorn", marks=pytest.mark.slow), "h11"]
SERVED_BY = {"httptools": "clusterrun http1 \\(httptools, (compiled|pure Python)\\)", "uvicorn": "uvicorn httptools",
             "h11": "uvicorn h11"}


def start(run_cli: Callable[..., Cluster], *args: str, app: str = "framing_echo:app") -> tuple[Cluster, int]:
    cluster = run_cli(app, "--workers", "1", "--port", "0", "--log-level", "info", *args, cwd=TEST_APPS)
    url = cluster.wait_ready()
    return cluster, int(url.rsplit(":", 1)[1])


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it (the client never closes first)."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(data)
        return read_all(sock)


def responses(raw: bytes) -> list[tuple[int, bytes]]:
    """The (status, body) of each response in ``raw``: Content-Length, chunked, or up to the close (h11's 400)."""
    found = []
    while raw.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")):
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        fields = {name.strip(): value.strip() for name, value in (line.lower().split(b":", 1) for line in lines[1:])}
        if b"content-length" in fields:
            size = int(fields[b"content-length"])
            body, raw = rest[:size], rest[size:]
        elif fields.get(b"transfer-encoding") == b"chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                body, rest = body + rest[:size], rest[size + 2:]
                if not size:
                    break
            raw = rest
        else:
            body, raw = rest, b""
        found.append((int(lines[0].split()[1]), body))
    assert not raw, f"bytes after the last response: {raw[:200]!r}"
    return found


def seen(body: bytes) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(body)
    return answer


@pytest.mark.parametrize("parser", PARSERS)
def test_engine_named_in_start_log(run_cli: Callable[..., Cluster], parser: str) -> None:
    cluster, _port = start(run_cli, "--http", parser, "--loop", "asyncio")
    cluster.wait_for_line(rf"serving with the {SERVED_BY[parser]} \+ asyncio$")


def test_inline_engine_named_in_start_log(run_cli: Callable[..., Cluster]) -> None:
    cluster, _port = start(run_cli, app="e2e_wsgi_raw:app")
    cluster.wait_for_line(r"serving with the inline WSGI engine \(httptools, (compiled|pure Python)\)$")


@pytest.mark.parametrize("parser", PARSERS)
def test_content_length_with_transfer_encoding_is_refused(run_cli: Callable[..., Cluster], parser: str) -> None:
    """CL+TE: a proxy that frames by Content-Length forwards the "body" as a second request (smuggling)."""
    _cluster, port = start(run_cli, "--http", parser)
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
    raw = exchange(port, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"0\r\n\r\n%s" % (5 + len(smuggled), smuggled))
    assert [status for status, _ in responses(raw)] == [400], raw  # and closed: read_all returned
    assert b"smuggled" not in raw


@pytest.mark.parametrize("parser", PARSERS)
def test_trailers_never_reach_the_app(run_cli: Callable[..., Cluster], parser: str) -> None:
    """Trailer fields are not headers: not in the scope, not read as proxy headers (127.0.0.1 is trusted)."""
    _cluster, port = start(run_cli, "--http", parser)
    raw = exchange(port, b"POST /t HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                         b"3\r\nabc\r\n0\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n"
                         b"Content-Type: text/evil\r\nX-Trailer: 1\r\n\r\n")
    [(status, body)] = responses(raw)
    assert status == 200, raw
    request = seen(body)
    assert request["body"] == "abc"
    assert request["client"] == "127.0.0.1" and request["scheme"] == "http", request
    assert request["headers"] == [["host", "t"], ["transfer-encoding", "chunked"], ["connection", "close"]]


@pytest.mark.parametrize("parser", PARSERS)
def test_a_field_name_with_an_underscore_reaches_the_app_as_sent_and_moves_nothing(
    run_cli: Callable[..., Cluster], parser: str
) -> None:
    """An ASGI app gets such a field as sent, as uvicorn gives it (it aliases nothing in a scope: gunicorn's 400
    or drop are for the WSGI environ), and the proxy logic reads X-Forwarded-For only by its own name."""
    _cluster, port = start(run_cli, "--http", parser)
    raw = exchange(port, b"GET / HTTP/1.1\r\nHost: t\r\nX_Forwarded_For: 6.6.6.6\r\nConnection: close\r\n\r\n")
    [(status, body)] = responses(raw)
    assert status == 200, raw
    request = seen(body)
    assert request["client"] == "127.0.0.1", request
    assert ["x_forwarded_for", "6.6.6.6"] in request["headers"], request


@pytest.mark.parametrize("parser", PARSERS)
def test_framing_trailers_are_refused(run_cli: Callable[..., Cluster], parser: str) -> None:
    """A Host (or Content-Length, Transfer-Encoding...) trailer: 400, as gunicorn answers."""
    _cluster, port = start(run_cli, "--http", parser)
    raw = exchange(port, b"POST /t HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"3\r\nabc\r\n0\r\nHost: evil.example\r\n\r\n")
    assert [status for status, _ in responses(raw)] == [400], raw


AMBIGUOUS = {
    "two Host fields": b"GET / HTTP/1.1\r\nHost: t\r\nHost: evil.example\r\n\r\n",
    "two Content-Type fields": b"GET / HTTP/1.1\r\nHost: t\r\nContent-Type: a/b\r\nContent-Type: c/d\r\n\r\n",
    "X-Forwarded-Proto and -Ssl disagree": b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-Proto: https\r\n"
                                           b"X-Forwarded-Ssl: off\r\n\r\n",
    "HTTP/2.0": b"GET / HTTP/2.0\r\nHost: t\r\n\r\n",
    "chunked on HTTP/1.0": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "GET *": b"GET * HTTP/1.1\r\nHost: t\r\n\r\n",
    "a malformed absolute target": b"GET http:/t/x HTTP/1.1\r\nHost: t\r\n\r\n",
}


@pytest.mark.parametrize("parser", PARSERS)
def test_ambiguous_heads_are_refused(run_cli: Callable[..., Cluster], parser: str) -> None:
    """What gunicorn refuses with 400 (gunicorn/http/message.py), refused alike; the same requests made plain pass."""
    _cluster, port = start(run_cli, "--http", parser)
    accepted = {}
    for case, request in AMBIGUOUS.items():
        statuses = [status for status, _ in responses(exchange(port, request))]
        if statuses != [400]:
            accepted[case] = statuses
    assert not accepted, f"not refused with 400 and a close: {accepted}"
    for request in (b"OPTIONS * HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                    b"GET http://t/x?y HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                    b"GET / HTTP/1.0\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Ssl: on\r\n\r\n"):
        assert [status for status, _ in responses(exchange(port, request))] == [200], request


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("refused", [b"GARBAGE\r\n\r\n", b"GET /two HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"])
def test_requests_before_a_refused_one_are_answered(run_cli: Callable[..., Cluster], parser: str,
                                                    refused: bytes) -> None:
    """A malformed request pipelined after complete ones: they are answered, then the 400, then the close."""
    _cluster, port = start(run_cli, "--http", parser)
    raw = exchange(port, b"GET /one HTTP/1.1\r\nHost: t\r\n\r\nPOST /two HTTP/1.1\r\nHost: t\r\n"
                         b"Content-Length: 3\r\n\r\nabc" + refused)
    answers = responses(raw)
    assert [status for status, _ in answers] == [200, 200, 400], raw
    assert [seen(body)["path"] for _, body in answers[:2]] == ["/one", "/two"]


@pytest.mark.parametrize("parser", PARSERS)
def test_chunk_extensions_are_bounded(run_cli: Callable[..., Cluster], parser: str) -> None:
    """A chunk-size line whose extension goes on and on (512 KiB of it here) is refused.

    Bounded at 512 KiB, less than what the worker reads and discards after a refusal: past that it closes, and
    the reset of a close with unread bytes could destroy the answer before the client reads it.
    """
    _cluster, port = start(run_cli, "--http", parser)
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"x" * 512 * 1024)
        sock.settimeout(5.0)  # unbounded extensions are simply waited on: no answer comes
        answer = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 "), f"no 400 after 512 KiB of one chunk extension: {answer[:200]!r}"


@pytest.mark.parametrize("parser", PARSERS)
def test_header_line_limit_counts_the_line(run_cli: Callable[..., Cluster], parser: str) -> None:
    """gunicorn's limit_request_field_size (8190) counts a field's line with its CRLF."""
    _cluster, port = start(run_cli, "--http", parser)
    head = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX: %s\r\n\r\n"
    fits = head % (b"y" * (8190 - len(b"X: \r\n")))
    assert [status for status, _ in responses(exchange(port, fits))] == [200]
    assert [status for status, _ in responses(exchange(port, head % (b"y" * (8191 - len(b"X: \r\n")))))] == [431]


@pytest.mark.parametrize("parser", PARSERS)
def test_extension_methods_reach_the_app(run_cli: Callable[..., Cluster], parser: str) -> None:
    """Any token is a method (RFC 9110 9.1), as gunicorn accepts: not only those httptools lists."""
    _cluster, port = start(run_cli, "--http", parser)
    [(status, body)] = responses(exchange(port, b"-BLARGH /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
    assert status == 200 and seen(body)["method"] == "-BLARGH"
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        for _ in range(2):  # a keep-alive connection: each request in a read of its own
            sock.sendall(b"FOO /y HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi")
            answer = b""
            while not answer.endswith(b"}"):
                answer += sock.recv(65536)
            [(status, body)] = responses(answer)
            assert status == 200 and (seen(body)["method"], seen(body)["body"]) == ("FOO", "hi")
    for method in (b"F(O", b"-bl"):  # not a token; lowercase (gunicorn refuses it)
        assert [status for status, _ in responses(exchange(port, method + b" / HTTP/1.1\r\nHost: t\r\n\r\n"))] == [400]


@pytest.mark.parametrize("parser", PARSERS)
def test_fragment_stays_out_of_the_query_string(run_cli: Callable[..., Cluster], parser: str) -> None:
    _cluster, port = start(run_cli, "--http", parser)
    [(status, body)] = responses(exchange(port, b"GET /p?q=1#frag HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
    assert status == 200 and (seen(body)["path"], seen(body)["query_string"]) == ("/p", "q=1")


@pytest.mark.parametrize("parser", PARSERS)
def test_field_values_lose_trailing_whitespace(run_cli: Callable[..., Cluster], parser: str) -> None:
    _cluster, port = start(run_cli, "--http", parser)
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a \t \r\n\r\n")  # the head of a keep-alive connection...
        answer = b""
        while not answer.endswith(b"}"):
            answer += sock.recv(65536)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-B: b\t\r\nConnection: close\r\n\r\n")  # ...and the next one
        answer += read_all(sock)
    assert [seen(body)["headers"][1] for _, body in responses(answer)] == [["x-a", "a"], ["x-b", "b"]]


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("closing", [b"GET /one HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                                     b"GET /one HTTP/1.0\r\n\r\n"])
def test_request_that_closes_is_answered_despite_bytes_after_it(run_cli: Callable[..., Cluster], parser: str,
                                                                closing: bytes) -> None:
    """Bytes after a request that ends the connection: that request is answered, and nothing after it is served."""
    _cluster, port = start(run_cli, "--http", parser)
    answers = responses(exchange(port, closing + b"GET /two HTTP/1.1\r\nHost: t\r\n\r\n"))
    assert answers and answers[0][0] == 200 and seen(answers[0][1])["path"] == "/one", answers
    assert all(status == 400 for status, _ in answers[1:]), answers


@pytest.mark.parametrize("parser", PARSERS)
def test_http10_request_gets_an_http10_status_line(run_cli: Callable[..., Cluster], parser: str) -> None:
    """As gunicorn answers: the response to an HTTP/1.0 request says HTTP/1.0 (and to HTTP/1.1, 1.1)."""
    _cluster, port = start(run_cli, "--http", parser)
    assert exchange(port, b"GET /a HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200 OK\r\n")
    raw = exchange(port, b"GET /b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and seen(responses(raw)[0][1])["path"] == "/b"


@pytest.mark.parametrize("parser", PARSERS)
def test_a_head_whose_body_is_not_ready_goes_out_at_once(run_cli: Callable[..., Cluster], parser: str) -> None:
    """The stack sends an answer's head with its first body write, in one system call (adapters/stack/seam.py,
    _JoinedWriter). A head with no body behind it in the same turn of the loop must still go out then: a client
    of a streamed answer (server-sent events, a long poll) reads the head while the app waits. Held until the
    body came, this head would never arrive: the app sends none while the client is connected."""
    _cluster, port = start(run_cli, "--http", parser, app="head_first:app")
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        head = read_head(sock)
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert b"transfer-encoding: chunked" in head.lower(), head
    assert head.endswith(b"\r\n\r\n"), f"a body byte came with the head: {head!r}"
