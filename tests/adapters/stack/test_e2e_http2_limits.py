"""End-to-end: the request limits HTTP/1.1 applies, on HTTP/2 streams too (adapters.stack.http2), against the real
CLI, with the raw h2 client of test_e2e_http2: --limit-request-field-size (431 on the stream), --limit-concurrency
(503 on the stream, then GOAWAY), --timeout-request-head (GOAWAY for a connection that sends no request, and for
a header block that never ends), --body-timeout (408 on a stalled upload's stream; a stream whose window stays
shut while the app waits to send is reset).
"""

from __future__ import annotations

import hashlib
import http
from collections.abc import Callable
from pathlib import Path

import h2.errors
import h2.events
import h2.settings
import pytest
from h2_raw import APP, RawClient, pattern, start
from hyperframe.frame import ContinuationFrame, GoAwayFrame, HeadersFrame

from helpers import Cluster, wait_until

TOO_LARGE = http.HTTPStatus(413).phrase.encode()
REQUEST = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"localhost"), (b":path", b"/")]


def settled(client: RawClient) -> None:
    """Wait for the server's SETTINGS to be acknowledged: frames sent after it are read under them."""
    client.until(lambda: any(isinstance(e, h2.events.SettingsAcknowledged) for e in client.events), "SETTINGS ack")


def reset_of(client: RawClient, stream_id: int) -> h2.events.StreamReset | None:
    return next((e for e in client.events if isinstance(e, h2.events.StreamReset) and e.stream_id == stream_id), None)


def test_a_field_past_limit_request_field_size_is_431_on_its_stream(run_cli: Callable[..., Cluster]) -> None:
    """--limit-request-field-size applies to an HTTP/2 request: 431 on its stream, with the reason (a stream error,
    as HTTP/1.1 answers it: the field was decoded whole within the header-list limit, so HPACK's table is in step
    and the connection serves on); a request whose body is still coming is then reset with NO_ERROR."""
    cluster, url = start(run_cli, APP, "--limit-request-field-size", "200")
    client = RawClient(url)
    try:
        status, body = client.answer(client.request("/", extra=[(b"x-long", b"v" * 200)]))
        assert status == 431 and body.startswith(b"Request Header Fields Too Large: a header field of 210 bytes")
        stream_id = client.request("/echo", method="POST", end=False, extra=[(b"x-long", b"v" * 200)])
        assert client.answer(stream_id)[0] == 431
        client.until(lambda: reset_of(client, stream_id) is not None, "the stream's reset")
        reset = reset_of(client, stream_id)
        assert reset is not None and reset.error_code == h2.errors.ErrorCodes.NO_ERROR
        assert client.answer(client.request("/", extra=[(b"x-fits", b"v" * 150)])) == (200, b"ok")
    finally:
        client.close()
    cluster.wait_for_line(r"a header field of 210 bytes \(the limit is 200\) \(431 ")


def test_more_fields_than_limit_request_fields_is_431(run_cli: Callable[..., Cluster]) -> None:
    """--limit-request-fields applies to an HTTP/2 request: 431 on its stream; the connection serves on."""
    cluster, url = start(run_cli, APP, "--limit-request-fields", "5")
    client = RawClient(url)
    try:
        many = [(b"x-field-%d" % n, b"v") for n in range(6)]
        status, body = client.answer(client.request("/", extra=many))
        assert status == 431 and body.startswith(b"Request Header Fields Too Large: more than 5 header fields")
        assert client.answer(client.request("/", extra=many[:5])) == (200, b"ok")
    finally:
        client.close()
    cluster.wait_for_line("more than 5 header fields")


def test_a_connection_past_limit_concurrency_gets_503_and_goaway(run_cli: Callable[..., Cluster],
                                                                 tmp_path: Path) -> None:
    """--limit-concurrency 1: an HTTP/2 connection holds its place from its first stream until it closes (as an
    HTTP/1.1 one from its first request); a second connection's first stream is answered 503, then GOAWAY naming it,
    and the close. Once the first closes, a new connection is served."""
    cluster, url = start(run_cli, APP, "--limit-concurrency", "1")
    first = RawClient(url)
    second: RawClient | None = None
    try:
        held = first.request(f"/hold?dir={tmp_path}")
        wait_until(lambda: (tmp_path / "started").exists(), "the app holding the request")
        second = RawClient(url)
        stream_id = second.request("/")
        status, body = second.answer(stream_id)
        assert status == 503 and body.startswith(b"Service Unavailable: too many connections")
        second.until(lambda: second.terminated() is not None, "GOAWAY")
        goaway = second.terminated()
        assert goaway is not None and goaway.last_stream_id == stream_id
        second.until(lambda: second.closed, "the close")
        (tmp_path / "release").touch()
        assert first.answer(held) == (200, b"held")
        assert first.answer(first.request("/")) == (200, b"ok")  # its place is held: its streams are served
    finally:
        first.close()
        if second is not None:
            second.close()
    cluster.wait_for_line("--limit-concurrency 1 reached")

    def served() -> bool:
        third = RawClient(url)
        try:
            return third.answer(third.request("/"))[0] == 200
        finally:
            third.close()

    # The first connection's close gave its place back (once the worker has read that close).
    wait_until(served, "a new connection served")


def test_no_request_within_timeout_request_head_gets_goaway(run_cli: Callable[..., Cluster]) -> None:
    """--timeout-request-head: a connection that sends the preface and no request gets GOAWAY (NO_ERROR) and is
    closed within it, not after --timeout-keep-alive."""
    cluster, url = start(run_cli, APP, "--timeout-request-head", "1", "--timeout-keep-alive", "120")
    client = RawClient(url)
    try:
        client.until(lambda: client.terminated() is not None, "GOAWAY")
        goaway = client.terminated()
        assert goaway is not None and goaway.error_code == 0 and goaway.last_stream_id == 0
        client.until(lambda: client.closed, "the close")
        assert not client.reset
    finally:
        client.close()
    cluster.wait_for_line(r"no request within 1 s \(--timeout-request-head\)")


def test_a_header_block_that_never_ends_gets_goaway(run_cli: Callable[..., Cluster], tmp_path: Path) -> None:
    """--timeout-request-head: HEADERS without END_HEADERS and no CONTINUATION after it (every other frame of the
    connection must wait for it) gets GOAWAY PROTOCOL_ERROR within the timeout, even with a stream in flight that
    keeps the connection from being idle."""
    cluster, url = start(run_cli, APP, "--timeout-request-head", "1", "--timeout-keep-alive", "120")
    client = RawClient(url)
    try:
        settled(client)
        client.request(f"/hold?dir={tmp_path}")
        wait_until(lambda: (tmp_path / "started").exists(), "the app holding the request")
        block = client.conn.encoder.encode(REQUEST)
        client.sock.sendall(HeadersFrame(3, data=block[:4]).serialize())  # no END_HEADERS: a block begun
        frames = client.raw_frames(lambda got: any(isinstance(frame, GoAwayFrame) for frame in got))
        goaway = next(frame for frame in frames if isinstance(frame, GoAwayFrame))
        assert goaway.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR and goaway.last_stream_id == 1
    finally:
        (tmp_path / "release").touch()
        client.close()
    cluster.wait_for_line(r"a header block not complete after 1 s \(--timeout-request-head\)")


def test_a_header_block_in_several_frames_is_served(run_cli: Callable[..., Cluster]) -> None:
    """The head clock does not refuse what ends: a header block in HEADERS and two CONTINUATION frames, sent in
    three writes, is one request (RFC 9113 6.10)."""
    _, url = start(run_cli, APP, "--timeout-request-head", "5")
    client = RawClient(url)
    try:
        settled(client)
        block = client.conn.encoder.encode([*REQUEST, (b"x-big", b"v" * 300)])
        client.sock.sendall(HeadersFrame(1, data=block[:100], flags=["END_STREAM"]).serialize())
        client.sock.sendall(ContinuationFrame(1, data=block[100:200]).serialize())
        client.sock.sendall(ContinuationFrame(1, data=block[200:], flags=["END_HEADERS"]).serialize())
        frames = client.raw_frames(lambda got: any(isinstance(frame, HeadersFrame) and frame.stream_id == 1
                                                   for frame in got))
        head = next(frame for frame in frames if isinstance(frame, HeadersFrame))
        assert client.conn.decoder.decode(head.data, raw=True)[0] == (b":status", b"200")
    finally:
        client.close()


@pytest.mark.parametrize("app", [APP, "inline_h2_app:app"])  # the stack (ASGI), and the inline WSGI engine's side
def test_a_stalled_upload_gets_408_on_its_stream(run_cli: Callable[..., Cluster], app: str) -> None:
    """--body-timeout: a request body that stops arriving while the app waits in receive() is answered 408 on its
    stream (then reset with NO_ERROR: the client stops sending it), the app sees a disconnect, and the connection
    serves on. Empty DATA frames do not keep a stalled body alive."""
    cluster, url = start(run_cli, app, "--body-timeout", "1", "--timeout-keep-alive", "120")
    client = RawClient(url)
    try:
        stream_id = client.request("/echo", method="POST", end=False)
        client.conn.send_data(stream_id, b"x" * 1000)
        client.flush()
        status, body = client.answer(stream_id)
        assert status == 408 and body.startswith(b"Request Timeout: no byte of the request body for 1 s")
        client.until(lambda: reset_of(client, stream_id) is not None, "the stream's reset")
        reset = reset_of(client, stream_id)
        assert reset is not None and reset.error_code == h2.errors.ErrorCodes.NO_ERROR
        upload = pattern(100_000)
        other = client.request("/echo", method="POST", end=False)
        client.send_body(other, upload)
        assert client.answer(other) == (200, f"{len(upload)} {hashlib.sha256(upload).hexdigest()}".encode())
    finally:
        client.close()
    cluster.wait_for_line(r"no byte of the request body for 1 s \(--body-timeout\) \(408 ")


@pytest.mark.parametrize("app", [APP, "inline_h2_app:app"])  # the stack (ASGI), and the inline WSGI engine's side
def test_a_stream_whose_window_stays_shut_is_reset(run_cli: Callable[..., Cluster], app: str) -> None:
    """--body-timeout on the response: a client that leaves a stream's window at 0 while the app waits to send
    (a 10 MB answer) gets that stream reset (CANCEL) after it; the connection serves on. On the inline engine the
    stuck stream also held the HTTP/2 side's one bridge thread, and with it every other HTTP/2 stream of the worker."""
    cluster, url = start(run_cli, app, "--body-timeout", "1", "--timeout-keep-alive", "120")
    client = RawClient(url, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    try:
        stream_id = client.request(f"/big?n={10 * 1024 * 1024}")
        client.until(lambda: stream_id in client.ended, "the stream's end")
        reset = reset_of(client, stream_id)
        assert reset is not None and reset.error_code == h2.errors.ErrorCodes.CANCEL
        client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65535})
        client.flush()
        assert client.answer(client.request("/")) == (200, b"ok")
    finally:
        client.close()
    cluster.wait_for_line(r"its window stayed shut for 1 s, the response waiting \(--body-timeout\)")


def test_answers_that_leave_bodies_unread_give_the_window_back(run_cli: Callable[..., Cluster]) -> None:
    """An app that answers without reading the request body (``/`` here): the body's bytes count against the
    connection's window all the same, and are given back when the stream is done (they were kept: after a few
    hundred such requests the connection's window was spent and every upload on it stalled)."""
    _, url = start(run_cli, APP)
    client = RawClient(url)
    try:
        settled(client)
        for _ in range(150):  # 9 MB: more than the connection's window (100 streams' windows and one)
            stream_id = client.conn.get_next_available_stream_id()
            client.conn.send_headers(stream_id, [(b":method", b"POST"), *REQUEST[1:]])
            for _ in range(4):  # with the head in one write: the stream is open when its body is read
                client.conn.send_data(stream_id, b"x" * 15_000, end_stream=_ == 3)
            client.flush()
            assert client.answer(stream_id) == (200, b"ok")
    finally:
        client.close()


def test_a_body_past_limit_request_body_is_413_on_its_stream(run_cli: Callable[..., Cluster]) -> None:
    """--limit-request-body applies to an HTTP/2 request: a Content-Length past it is answered 413 before the app
    is called; a body that grows past it as it arrives is answered 413 then (the app sees a disconnect). The
    connection serves on."""
    cluster, url = start(run_cli, APP, "--limit-request-body", "50000")
    client = RawClient(url)
    try:
        declared = client.request("/echo", method="POST", end=False, extra=[(b"content-length", b"60000")])
        status, body = client.answer(declared)
        # The phrase is Python's (http.HTTPStatus): 3.13 says "Content Too Large" (RFC 9110), as on HTTP/1.1.
        assert status == 413 and body.startswith(TOO_LARGE + b": a body of 60000 bytes"), body
        stream_id = client.request("/echo", method="POST", end=False)
        client.send_body(stream_id, pattern(60_000))
        status, body = client.answer(stream_id)
        assert status == 413 and body.startswith(TOO_LARGE + b": a body of more than 50000 bytes"), body
        upload = pattern(50_000)
        other = client.request("/echo", method="POST", end=False)
        client.send_body(other, upload)
        assert client.answer(other) == (200, f"{len(upload)} {hashlib.sha256(upload).hexdigest()}".encode())
    finally:
        client.close()
    cluster.wait_for_line(r"a body of more than 50000 bytes \(413 ")
