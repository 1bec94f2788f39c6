"""Unit tests for clusterrun's WSGI-to-ASGI bridge, plus one end-to-end test on a real uvicorn server."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib.metadata import version
from typing import Any

import httpx
import pytest
import uvicorn
from clusterrun.adapters.stack.bridge import FileWrapper, WSGIBridge
from flask import Flask

Environ = dict[str, Any]
Message = dict[str, Any]
OK = "200 OK"
TEXT = [("Content-Type", "text/plain")]


@pytest.fixture(params=[1, 4], ids=["inline", "pooled"])
def threads(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def make_scope(
    method: str = "GET",
    path: str = "/",
    *,
    query: bytes = b"",
    headers: Sequence[tuple[str, str]] = (),
    root_path: str = "",
    server: tuple[str, int | None] | None = ("testserver", 8000),
    client: tuple[str, int] | None = ("10.0.0.7", 51234),
    scheme: str = "http",
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": root_path + path,
        "raw_path": (root_path + path).encode(),
        "query_string": query,
        "root_path": root_path,
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "server": server,
        "client": client,
    }


class Peer:
    """The server side of one ASGI connection: feeds request messages and records what the bridge sends.

    After the request body, receive() blocks like uvicorn's until the client disconnects; with
    `gone_after_body` the client is already gone by then.
    """

    def __init__(
        self,
        body: Sequence[bytes] = (b"",),
        *,
        gone_during_body: bool = False,
        gone_after_body: bool = False,
        fail_send_after: int | None = None,
    ) -> None:
        self.incoming: list[Message] = [
            {"type": "http.request", "body": chunk, "more_body": i < len(body) - 1}
            for i, chunk in enumerate(body)
        ]
        if gone_during_body:
            self.incoming[-1] = {"type": "http.disconnect"}
        self.gone_after_body = gone_after_body
        self.fail_send_after = fail_send_after
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        if self.incoming:
            return self.incoming.pop(0)
        if not self.gone_after_body:
            await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.fail_send_after is not None and len(self.sent) >= self.fail_send_after:
            raise ConnectionResetError("client went away")
        self.sent.append(message)

    @property
    def start(self) -> Message:
        assert self.sent[0]["type"] == "http.response.start"
        return self.sent[0]

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.start["headers"])

    @property
    def bodies(self) -> list[Message]:
        assert all(m["type"] == "http.response.body" for m in self.sent[1:])
        assert self.sent[-1]["more_body"] is False
        assert all(m["more_body"] for m in self.sent[1:-1])
        return self.sent[1:]

    @property
    def body(self) -> bytes:
        return b"".join(m["body"] for m in self.bodies)


def serve(
    app: Any, threads: int, scope: dict[str, Any] | None = None, peer: Peer | None = None, **options: Any
) -> Peer:
    peer = peer or Peer()
    bridge = WSGIBridge(app, threads=threads, **options)
    try:
        asyncio.run(bridge(scope or make_scope(), peer.receive, peer.send))
    finally:
        bridge.close()
    return peer


def serve_failing(
    app: Any, threads: int, caplog: pytest.LogCaptureFixture, error: type[Exception], match: str,
    peer: Peer | None = None,
) -> Peer:
    """Serve an app whose code raises ``error``: logged once as the WSGI app's error, never raised to the server."""
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="clusterrun.wsgi"):
        peer = serve(app, threads, peer=peer)
    (record,) = [r for r in caplog.records if r.name == "clusterrun.wsgi"]
    assert record.exc_info is not None and isinstance(record.exc_info[1], error), record.exc_info
    assert re.search(match, str(record.exc_info[1])), record.exc_info[1]
    assert record.getMessage().startswith(f"Exception in WSGI application, GET /: {error.__name__}: ")
    return peer


def assert_500(peer: Peer) -> None:
    """What a client gets when the app failed before its response started: the same 500 uvicorn would send."""
    assert peer.start["status"] == 500
    assert (b"connection", b"close") in peer.start["headers"]
    assert peer.body == b"Internal Server Error"


def capture(target: dict[str, Any], body: Iterable[bytes] = (b"ok",)) -> Callable[..., Iterable[bytes]]:
    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        target.update(environ)
        target["body"] = environ["wsgi.input"].read()
        start_response(OK, list(TEXT))
        return list(body)

    return app


class Tracked:
    """A response iterable that records close() and can fail or run forever."""

    def __init__(self, chunks: Iterable[bytes], fail_at: int | None = None) -> None:
        self.chunks, self.fail_at, self.produced = iter(chunks), fail_at, 0
        self.closed_event = threading.Event()  # set from whichever thread runs the response

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self.produced == self.fail_at:
            raise RuntimeError("iteration failed")
        self.produced += 1
        return next(self.chunks)

    @property
    def closed(self) -> bool:
        return self.closed_event.is_set()

    def close(self) -> None:
        self.closed_event.set()


def tracked_app(result: Tracked, headers: list[tuple[str, str]] | None = None) -> Callable[..., Any]:
    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response(OK, headers if headers is not None else list(TEXT))
        return result

    return app


def forever() -> Iterator[bytes]:
    while True:
        yield b"tick"


# --- environ ---------------------------------------------------------------------------------------------


def test_environ_keys(threads: int) -> None:
    seen: dict[str, Any] = {}
    scope = make_scope(
        "POST",
        "/caf\u00e9/x",
        query=b"a=1&b=%C3%A9",
        root_path="/app",
        headers=[("Host", "example.com"), ("Content-Type", "application/json"), ("Content-Length", "2")],
    )
    serve(capture(seen), threads, scope, Peer([b"{}"]), extra_environ={"clusterrun.worker": "w-3"})
    assert seen["REQUEST_METHOD"] == "POST"
    assert seen["SERVER_SOFTWARE"] == f"clusterrun/{version('clusterrun')}"  # httpbin refuses chunked without it
    assert seen["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert seen["SCRIPT_NAME"] == "/app"
    assert seen["PATH_INFO"] == "/caf\u00e9/x".encode().decode("latin-1")
    assert seen["QUERY_STRING"] == "a=1&b=%C3%A9"
    assert seen["RAW_URI"] == "/app/caf\u00e9/x?a=1&b=%C3%A9".encode().decode("latin-1")
    assert (seen["SERVER_NAME"], seen["SERVER_PORT"]) == ("testserver", "8000")
    assert seen["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert (seen["REMOTE_ADDR"], seen["REMOTE_PORT"]) == ("10.0.0.7", "51234")
    assert (seen["CONTENT_TYPE"], seen["CONTENT_LENGTH"]) == ("application/json", "2")
    assert seen["HTTP_HOST"] == "example.com"
    assert "HTTP_CONTENT_TYPE" not in seen and "HTTP_CONTENT_LENGTH" not in seen
    assert seen["body"] == b"{}"
    assert seen["wsgi.version"] == (1, 0)
    assert seen["wsgi.url_scheme"] == "http"
    assert seen["wsgi.errors"] is sys.stderr
    assert seen["wsgi.multithread"] is (threads > 1)
    assert seen["wsgi.multiprocess"] is True and seen["wsgi.run_once"] is False
    assert seen["wsgi.file_wrapper"] is FileWrapper
    assert seen["wsgi.input_terminated"] is True
    assert seen["clusterrun.worker"] == "w-3"


def test_minimal_scope_without_client_or_body(threads: int) -> None:
    seen: dict[str, Any] = {}
    serve(capture(seen), threads, make_scope(client=None))
    assert "REMOTE_ADDR" not in seen and "REMOTE_PORT" not in seen
    assert "CONTENT_LENGTH" not in seen and seen["body"] == b""
    assert seen["SCRIPT_NAME"] == "" and seen["PATH_INFO"] == "/" and seen["RAW_URI"] == "/"


def test_headers_joined_and_underscore_dropped(threads: int) -> None:
    seen: dict[str, Any] = {}
    headers = [
        ("Accept", "text/html"),
        ("X-User", "alice"),
        ("X_User", "mallory"),
        ("Accept", "*/*"),
        ("Cookie", "a=1"),
        ("Cookie", "b=2"),
    ]
    serve(capture(seen), threads, make_scope(headers=headers))
    assert seen["HTTP_ACCEPT"] == "text/html, */*"
    assert seen["HTTP_COOKIE"] == "a=1; b=2"
    assert seen["HTTP_X_USER"] == "alice"


@pytest.mark.parametrize(
    ("host", "scheme", "expected"),
    [
        ("example.com:8080", "http", ("example.com", "8080")),
        ("example.com", "https", ("example.com", "443")),
        ("[::1]:9000", "http", ("[::1]", "9000")),
        ("[::1]", "http", ("[::1]", "80")),
        (None, "http", ("localhost", "80")),
    ],
)
def test_unix_socket_server_name_from_host(
    threads: int, host: str | None, scheme: str, expected: tuple[str, str]
) -> None:
    seen: dict[str, Any] = {}
    headers = [("Host", host)] if host else []
    serve(
        capture(seen),
        threads,
        make_scope(server=("/run/app.sock", None), client=None, headers=headers, scheme=scheme),
    )
    assert (seen["SERVER_NAME"], seen["SERVER_PORT"]) == expected
    seen.clear()
    serve(capture(seen), threads, make_scope(server=None, headers=headers, scheme=scheme))
    assert (seen["SERVER_NAME"], seen["SERVER_PORT"]) == expected


# --- app code never sees the running loop ------------------------------------------------------------------


def loop_visible() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class LoopProbe:
    """A response iterable that records, at each step of app code, whether a running loop was visible."""

    def __init__(self, chunks: int) -> None:
        self.left = chunks
        self.seen: list[tuple[str, bool]] = []

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        self.seen.append(("next", loop_visible()))
        if not self.left:
            raise StopIteration
        self.left -= 1
        return b"chunk"

    def close(self) -> None:
        self.seen.append(("close", loop_visible()))


@pytest.mark.parametrize("client_leaves", [False, True], ids=["complete", "client-left"])
def test_app_code_runs_with_no_running_loop(threads: int, client_leaves: bool) -> None:
    """Django's ORM, asgiref's AsyncToSync and asyncio.run() all refuse to run where a loop is running."""
    probe = LoopProbe(3 if not client_leaves else 1000)

    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        probe.seen.append(("call", loop_visible()))
        probe.seen.append(("asyncio.run", asyncio.run(asyncio.sleep(0, result=True))))
        start_response(OK, list(TEXT))
        return probe

    async def main() -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        bridge = WSGIBridge(app, threads=threads)
        try:
            await bridge(make_scope(), Peer(gone_after_body=client_leaves).receive, Peer().send)
        finally:
            bridge.close()
        # Put back after the request: the serving loop is the running loop again.
        assert asyncio.get_running_loop() is loop
        return loop

    asyncio.run(main())
    steps = [step for step, _ in probe.seen]
    assert steps[:2] == ["call", "asyncio.run"] and steps[-1] == "close" and "next" in steps
    assert probe.seen[1] == ("asyncio.run", True)
    assert not any(visible for step, visible in probe.seen if step != "asyncio.run"), probe.seen


def test_loop_restored_when_app_code_fails(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        raise RuntimeError("app failed")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        bridge = WSGIBridge(app, threads=1)
        peer = Peer()
        with caplog.at_level(logging.ERROR, logger="clusterrun.wsgi"):
            await bridge(make_scope(), peer.receive, peer.send)
        assert asyncio.get_running_loop() is loop
        assert_500(peer)

    asyncio.run(main())


# --- request body ----------------------------------------------------------------------------------------


def test_single_message_body_uses_bytesio(threads: int) -> None:
    seen: dict[str, Any] = {}
    serve(capture(seen), threads, make_scope("PUT", headers=[("Content-Length", "5")]), Peer([b"hello"]))
    assert type(seen["wsgi.input"]) is io.BytesIO and seen["body"] == b"hello"
    assert seen["wsgi.input"].closed  # the bridge closes the input once the response is done


def test_large_upload_streams_to_the_app(threads: int) -> None:
    """Past 64 KiB a body is not buffered before the app runs: the app reads it through the loop, off it."""
    payload = bytes(range(256)) * (3 * 1024 * 1024 // 256)
    pieces = [payload[i : i + 65536] for i in range(0, len(payload), 65536)]
    loop_thread = threading.get_ident()
    seen: dict[str, Any] = {}

    def echo(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        stream = environ["wsgi.input"]
        seen.update(type=type(stream).__name__, off_loop=threading.get_ident() != loop_thread)
        seen["length"] = environ.get("CONTENT_LENGTH")  # chunked: unknown up front, and not invented
        seen["multithread"] = environ["wsgi.multithread"]
        start_response(OK, [("Content-Length", str(len(payload)))])
        return FileWrapper(stream, 256 * 1024)

    peer = serve(echo, threads, make_scope("POST", headers=[("Transfer-Encoding", "chunked")]), Peer(pieces))
    assert peer.body == payload
    assert len(peer.sent) == 1 + 12  # 3 MiB in 256 KiB blocks, the last one carrying more_body=False
    assert seen == {"type": "InputStream", "off_loop": True, "length": None, "multithread": threads > 1}


def test_rejecting_app_never_reads_a_streamed_body(threads: int) -> None:
    """An app that answers without reading gets called after one window of the body, not after all of it."""
    pulled: list[int] = []

    class Counting(Peer):
        async def receive(self) -> Message:
            pulled.append(1)
            return await super().receive()

    def reject(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
        start_response("405 Method Not Allowed", [("Content-Length", "0")])
        return []

    peer = Counting([b"x" * 65536] * 100)
    serve(reject, threads, make_scope("POST", headers=[("Content-Length", str(65536 * 100))]), peer)
    assert peer.start["status"] == 405 and len(pulled) == 2 and len(peer.incoming) == 98


def test_expect_continue_waits_for_the_first_read(threads: int) -> None:
    """With Expect: 100-continue, receive() (which makes uvicorn send the 100) is first called by a read."""
    calls: list[str] = []

    class Recording(Peer):
        async def receive(self) -> Message:
            calls.append("receive")
            return await super().receive()

    def app(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
        calls.append("app")
        body = environ["wsgi.input"].read()
        assert environ["wsgi.input"].read() == b"" and environ["wsgi.input"].readline() == b""
        start_response(OK, [("Content-Length", str(len(body)))])
        return [body]

    scope = make_scope("POST", headers=[("Content-Length", "7"), ("Expect", "100-continue")])
    peer = serve(app, threads, scope, Recording([b"abc", b"defg"]))
    assert peer.body == b"abcdefg" and calls[:2] == ["app", "receive"]


def test_streamed_readline_and_iteration(threads: int) -> None:
    lines: dict[str, Any] = {}

    def app(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
        stream = environ["wsgi.input"]
        lines["first"] = stream.readline()
        lines["limited"] = stream.readline(3)
        lines["rest"] = list(stream)
        start_response(OK, [("Content-Length", "0")])
        return []

    big = b"y" * 70000 + b"\n"
    pieces = [b"one\ntw", b"o\n", big[:40000], big[40000:] + b"last"]
    serve(app, threads, make_scope("POST", headers=[("Content-Length", str(sum(map(len, pieces))))]), Peer(pieces))
    assert lines == {"first": b"one\n", "limited": b"two", "rest": [b"\n", big, b"last"]}


def test_disconnect_during_streamed_body_raises_in_the_app(threads: int) -> None:
    raised: list[BaseException] = []

    def app(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
        try:
            environ["wsgi.input"].read()
        except OSError as exc:
            raised.append(exc)
            raise
        return []

    chunks = [b"z" * 65536, b"z" * 65536, b"never"]
    peer = serve(app, threads, make_scope("POST"), Peer(chunks, gone_during_body=True))
    assert peer.sent == [] and len(raised) == 1 and "disconnected" in str(raised[0])


def test_small_chunked_upload_stays_in_memory(threads: int) -> None:
    seen: dict[str, Any] = {}
    serve(capture(seen), threads, make_scope("POST"), Peer([b"ab", b"", b"cd"]))
    assert seen["body"] == b"abcd" and seen["CONTENT_LENGTH"] == "4"
    assert type(seen["wsgi.input"]) is io.BytesIO


def test_disconnect_while_reading_body_skips_app(threads: int) -> None:
    called: list[Environ] = []

    def app(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
        called.append(environ)
        return []

    peer = serve(app, threads, make_scope("POST"), Peer([b"part", b"never"], gone_during_body=True))
    assert called == [] and peer.sent == []


# --- response --------------------------------------------------------------------------------------------


def test_list_body_gets_content_length(threads: int) -> None:
    peer = serve(capture({}, [b"hel", b"lo"]), threads)
    assert peer.start["status"] == 200
    assert peer.headers == {b"Content-Type": b"text/plain", b"content-length": b"5"}
    assert [m["body"] for m in peer.bodies] == [b"hel", b"lo"]


def test_flask_json_is_exactly_two_sends(threads: int) -> None:
    flask_app = Flask(__name__)

    @flask_app.get("/json")
    def data() -> dict[str, Any]:
        return {"ok": True, "n": 3}

    peer = serve(flask_app, threads, make_scope(path="/json"))
    assert len(peer.sent) == 2
    assert peer.start["status"] == 200 and peer.headers[b"Content-Type"] == b"application/json"
    assert peer.sent[1]["more_body"] is False and json.loads(peer.sent[1]["body"]) == {"ok": True, "n": 3}


def test_streamed_chunks_sent_as_produced(threads: int) -> None:
    peer = Peer()

    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response(OK, list(TEXT))
        yield b"one"
        assert peer.sent[-1]["body"] == b"one"  # already handed to the server before the next chunk exists
        yield b""
        yield b"two"
        assert peer.sent[-1]["body"] == b"two"
        yield b"three"

    serve(app, threads, peer=peer)
    assert b"content-length" not in peer.headers
    assert [m["body"] for m in peer.bodies] == [b"one", b"two", b"three", b""]


def test_headers_deferred_until_first_nonempty_chunk(threads: int) -> None:
    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response(OK, list(TEXT))
        yield b""
        try:
            raise KeyError("late failure")
        except KeyError:
            start_response("503 Service Unavailable", [], sys.exc_info())  # nothing sent yet: replaces
        yield b"sorry"

    peer = serve(app, threads)
    assert peer.start["status"] == 503 and peer.body == b"sorry"


def test_empty_iterable_sends_headers_at_end(threads: int) -> None:
    peer = serve(tracked_app(Tracked([b"", b""]), [("Content-Length", "0")]), threads)
    assert peer.start["status"] == 200 and peer.sent[1:] == [
        {"type": "http.response.body", "body": b"", "more_body": False}
    ]


def test_content_length_ends_iteration_early(threads: int) -> None:
    result = Tracked([b"abc", b"def", b"never"])
    peer = serve(tracked_app(result, [("Content-Length", "6")]), threads)
    assert [(m["body"], m["more_body"]) for m in peer.sent[1:]] == [(b"abc", True), (b"def", False)]
    assert result.produced == 2 and result.closed


def test_excess_body_truncated_to_content_length(threads: int) -> None:
    peer = serve(tracked_app(Tracked([b"abc", b"defg"]), [("Content-Length", "4")]), threads)
    assert peer.body == b"abcd"


def test_write_data_precedes_iterable(threads: int) -> None:
    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterator[bytes]:
        write = start_response(OK, list(TEXT))
        write(b"first,")
        write(b"")
        write(b"second,")
        return iter([b"third,", b"fourth"])

    assert serve(app, threads).body == b"first,second,third,fourth"


def test_write_only_app(threads: int, caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
        start_response(OK, list(TEXT))("written")
        return []

    assert_500(serve_failing(app, threads, caplog, TypeError, "write"))

    def good(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
        start_response(OK, list(TEXT))(b"written")
        return []

    peer = serve(good, threads)
    assert peer.body == b"written" and peer.headers[b"content-length"] == b"7"


@pytest.mark.parametrize(
    ("status", "headers", "error", "match"),
    [
        (200, [], TypeError, "status must be a str"),
        ("OK", [], ValueError, "3-digit"),
        ("20x Bad", [], ValueError, "3-digit"),
        ("600 Beyond", [], ValueError, "3-digit code from 100 to 599"),
        ("099 Below", [], ValueError, "3-digit code from 100 to 599"),
        (OK, (("A", "b"),), TypeError, "must be a list"),
        (OK, [["A", "b"]], TypeError, r"\(str, str\)"),
        (OK, [("A", 1)], TypeError, r"\(str, str\)"),
        (OK, [("Content-Length", "-1")], ValueError, "Content-Length"),
        # CR, LF, NUL (and other controls but HTAB) in a value, anything but a token as a name: uvicorn would
        # refuse them only while writing the head, and drop the connection without an answer.
        (OK, [("X-A", "v\r\nSet-Cookie: x=1")], ValueError, r"header 'X-A' .* value 'v\\r\\nSet-Cookie: x=1'"),
        (OK, [("X-A", "v\nw")], ValueError, r"header 'X-A' .* value 'v\\nw'"),
        (OK, [("X-A", "v\x00")], ValueError, r"header 'X-A' .* value 'v\\x00'"),
        (OK, [("X-A", "v\x7f")], ValueError, r"header 'X-A' .* value 'v\\x7f'"),
        (OK, [("X-A\r\n", "v")], ValueError, r"header name 'X-A\\r\\n' \(value 'v'\)"),
        (OK, [("X A", "v")], ValueError, r"header name 'X A'"),
        (OK, [("X:A", "v")], ValueError, r"header name 'X:A'"),
        (OK, [("", "v")], ValueError, r"header name ''"),
    ],
)
def test_start_response_validation(
    threads: int, caplog: pytest.LogCaptureFixture, status: Any, headers: Any, error: type[Exception], match: str
) -> None:
    raised: list[BaseException] = []

    def app(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
        try:
            start_response(status, headers)
        except Exception as exc:
            raised.append(exc)  # raised in the app's own frame, where it can see and handle it
            raise
        return [b"x"]

    assert_500(serve_failing(app, threads, caplog, error, match))
    assert len(raised) == 1


def test_header_value_tab_and_latin1_allowed(threads: int) -> None:
    def app(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
        start_response(OK, [("X-Tab", "a\tb"), ("X-Latin", "caf\u00e9"), ("X-Odd!#$%&'*+-.^_`|~", "1")])
        return [b"x"]

    headers = serve(app, threads).headers
    assert headers[b"X-Tab"] == b"a\tb" and headers[b"X-Latin"] == b"caf\xe9"
    assert headers[b"X-Odd!#$%&'*+-.^_`|~"] == b"1"


def test_app_handles_its_own_bad_header(threads: int) -> None:
    """The error is raised where the app can see it: an app that catches it can still answer properly."""

    def app(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
        try:
            start_response(OK, [("X-Bad", "a\nb")])
        except ValueError:
            start_response("400 Bad Request", list(TEXT), sys.exc_info())
            return [b"rejected"]
        return [b"x"]

    peer = serve(app, threads)
    assert peer.start["status"] == 400 and peer.body == b"rejected"


def test_second_start_response_without_exc_info_raises(threads: int, caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
        start_response(OK, [])
        start_response("500 Oops", [])
        return []

    assert_500(serve_failing(app, threads, caplog, RuntimeError, "second time"))


def test_body_before_start_response_raises(threads: int, caplog: pytest.LogCaptureFixture) -> None:
    app = lambda environ, start_response: [b"x"]  # noqa: E731
    assert_500(serve_failing(app, threads, caplog, RuntimeError, "before calling start_response"))


def test_exc_info_after_headers_sent_reraises(threads: int, caplog: pytest.LogCaptureFixture) -> None:
    result = Tracked([])

    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response(OK, list(TEXT))
        try:
            yield b"partial"
            raise LookupError("backend died")
        except LookupError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        finally:
            result.close()

    peer = serve_failing(app, threads, caplog, LookupError, "backend died")
    # The head went out: the response is left incomplete (no final message), so the server drops the connection.
    assert peer.start["status"] == 200 and [m["body"] for m in peer.sent[1:]] == [b"partial"] and result.closed
    assert peer.sent[-1]["more_body"] is True


def test_app_exception_before_start_is_logged_and_answered_500(
    threads: int, caplog: pytest.LogCaptureFixture
) -> None:
    def app(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
        raise ZeroDivisionError("boom")

    peer = serve_failing(app, threads, caplog, ZeroDivisionError, "boom")
    assert_500(peer)
    assert len(peer.sent) == 2


def test_app_error_log_names_method_and_path_not_query(threads: int, caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
        raise KeyError("missing")

    with caplog.at_level(logging.ERROR, logger="clusterrun.wsgi"):
        serve(app, threads, make_scope("DELETE", "/items/7", query=b"token=secret"))
    (record,) = [r for r in caplog.records if r.name == "clusterrun.wsgi"]
    assert record.getMessage() == "Exception in WSGI application, DELETE /items/7: KeyError: 'missing'"
    assert "secret" not in caplog.text and "Traceback" in caplog.text


def test_close_called_when_iteration_raises(threads: int, caplog: pytest.LogCaptureFixture) -> None:
    result = Tracked([b"a", b"b", b"c"], fail_at=1)
    peer = serve_failing(tracked_app(result), threads, caplog, RuntimeError, "iteration failed")
    assert result.closed and [m["body"] for m in peer.sent[1:]] == [b"a"]
    assert peer.sent[-1]["more_body"] is True  # incomplete: never passed off as the whole body


def test_close_error_after_complete_response_is_logged(threads: int, caplog: pytest.LogCaptureFixture) -> None:
    class FailingClose(Tracked):
        def close(self) -> None:
            super().close()
            raise OSError("close failed")

    result = FailingClose([b"a", b"b"])
    peer = serve_failing(tracked_app(result), threads, caplog, OSError, "close failed")
    assert peer.body == b"ab" and result.closed  # the response itself was complete


def test_close_called_when_send_fails(threads: int) -> None:
    result = Tracked(forever())
    with pytest.raises(ConnectionResetError):
        serve(tracked_app(result), threads, peer=Peer(fail_send_after=3))
    assert result.closed


def test_streaming_stops_when_client_disconnects(threads: int) -> None:
    result = Tracked(forever())
    peer = serve(tracked_app(result), threads, peer=Peer(gone_after_body=True))
    assert result.closed and 1 <= result.produced < 10
    assert all(m["more_body"] for m in peer.sent[1:])


def test_file_wrapper(threads: int) -> None:
    source = io.BytesIO(b"0123456789")

    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response(OK, list(TEXT))
        wrapper: Iterable[bytes] = environ["wsgi.file_wrapper"](source, 4)
        return wrapper

    peer = serve(app, threads)
    assert [m["body"] for m in peer.bodies] == [b"0123", b"4567", b"89", b""]
    assert source.closed
    assert list(FileWrapper(io.BytesIO(b"x" * 9000))) == [b"x" * 8192, b"x" * 808]


def test_head_sends_headers_without_inventing_length(threads: int) -> None:
    peer = serve(capture({}, [b""]), threads, make_scope("HEAD"))
    assert peer.start["status"] == 200 and b"content-length" not in peer.headers
    result = Tracked([b"hello"])
    peer = serve(tracked_app(result, [("Content-Length", "5")]), threads, make_scope("HEAD"))
    assert peer.headers[b"Content-Length"] == b"5" and len(peer.sent) == 2 and result.closed


def test_no_content_length_added_for_204(threads: int) -> None:
    def app(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
        start_response("204 No Content", [])
        return []

    peer = serve(app, threads)
    assert peer.start["status"] == 204 and peer.headers == {}


def test_modes_and_pool_lifecycle() -> None:
    names: list[str] = []

    def app(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
        names.append(threading.current_thread().name)
        start_response(OK, [])
        return []

    with pytest.raises(ValueError, match="threads"):
        WSGIBridge(app, threads=0)
    pooled = WSGIBridge(app, threads=2)
    assert pooled._executor is None  # nothing started before the first request (the worker forks first)
    asyncio.run(pooled(make_scope(), Peer().receive, Peer().send))
    pooled.close()
    pooled.close()
    serve(app, 1)
    assert names[0].startswith("clusterrun-wsgi") and names[1] == threading.current_thread().name


# --- other scope types -----------------------------------------------------------------------------------


def test_lifespan_and_websocket_scopes(threads: int) -> None:
    bridge = WSGIBridge(capture({}), threads=threads)
    sent: list[Message] = []

    async def record(message: Message) -> None:
        sent.append(message)

    async def main() -> None:
        incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
        await bridge({"type": "lifespan", "asgi": {"version": "3.0"}}, lambda: _next(incoming), record)
        connect = iter([{"type": "websocket.connect"}])
        await bridge({"type": "websocket", "path": "/ws"}, lambda: _next(connect), record)
        with pytest.raises(ValueError, match="unsupported"):
            await bridge({"type": "mystery"}, lambda: _next(connect), record)

    try:
        asyncio.run(main())
    finally:
        bridge.close()
    assert sent == [
        {"type": "lifespan.startup.complete"},
        {"type": "lifespan.shutdown.complete"},
        {"type": "websocket.close", "code": 1000},
    ]


async def _next(messages: Iterator[Message]) -> Message:
    return next(messages)


# --- end to end on uvicorn -------------------------------------------------------------------------------


ENDLESS: list[Tracked] = []


def e2e_app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/endless":
        start_response(OK, list(TEXT))
        ENDLESS.append(Tracked(forever()))
        return ENDLESS[-1]
    if path == "/upload":
        data = environ["wsgi.input"].read()
        start_response(OK, [("Content-Type", "application/json")])
        return [
            json.dumps(
                {
                    "length": environ.get("CONTENT_LENGTH"),  # streamed chunked: unknown, not invented
                    "read": len(data),
                    "te": environ.get("HTTP_TRANSFER_ENCODING"),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            ).encode()
        ]
    if path == "/stream":
        start_response(OK, list(TEXT))
        return (b"line %d\n" % i for i in range(5))
    start_response(OK, list(TEXT))
    return [b"hello from ", environ["SERVER_PROTOCOL"].encode()]


def test_served_by_uvicorn(threads: int) -> None:
    bridge = WSGIBridge(e2e_app, threads=threads)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app=bridge,
        interface="asgi3",
        lifespan="off",
        log_config=None,
        http="httptools",
        ws="none",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.005)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            response = client.get("/")
            assert response.status_code == 200 and response.text == "hello from HTTP/1.1"
            assert response.headers["content-length"] == str(len(response.content))

            payload = bytes(range(256)) * 8192  # 2 MiB, sent chunked: streamed to the app
            response = client.post(
                "/upload", content=(payload[i : i + 100_000] for i in range(0, len(payload), 100_000))
            )
            assert response.json() == {
                "length": None,
                "read": len(payload),
                "te": "chunked",
                "sha256": hashlib.sha256(payload).hexdigest(),
            }

            with client.stream("GET", "/stream") as streamed:
                assert streamed.headers["transfer-encoding"] == "chunked"
                assert b"".join(streamed.iter_bytes()) == b"".join(b"line %d\n" % i for i in range(5))

        # uvicorn drops sends to a gone client silently: the bridge must still stop and close an endless body.
        ENDLESS.clear()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(b"GET /endless HTTP/1.1\r\nHost: test\r\n\r\n")
            assert raw.recv(65536).startswith(b"HTTP/1.1 200 OK")
        deadline = time.monotonic() + 5
        while not ENDLESS:
            assert time.monotonic() < deadline, "endless response never started"
            time.sleep(0.005)
        assert ENDLESS[0].closed_event.wait(5), "endless response not closed after the client disconnected"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        bridge.close()
    assert not thread.is_alive()
