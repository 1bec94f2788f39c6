"""End-to-end: HTTP/2 on the asyncio stack (issue 28, item 1; adapters.stack.http2), against the real CLI.

httpx with ``http2=True`` gets HTTP/2 over TLS (ALPN) and over h2c with prior knowledge, for an ASGI app and a
WSGI app with --threads 2; then a raw client on the ``h2`` library checks what h2spec's sections check that this
server decides: stream states and multiplexing, flow control both ways with small windows, HPACK, SETTINGS,
GOAWAY on a drain with a stream in flight, the concurrent-streams limit and the rapid-reset guard.
"""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import hpack
import httpx
import pytest
from h2_raw import APP, RawClient, address, pattern, self_signed, start
from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame, PingFrame

from helpers import DEADLINE, Cluster, wait_until


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("h2cert"))


@pytest.mark.parametrize("app", [APP, "h2_app:wsgi --threads 2"])
def test_httpx_gets_http2_over_tls_and_h2c(run_cli: Callable[..., Cluster], cert: tuple[Path, Path],
                                           app: str) -> None:
    name, *extra = app.split()
    _cluster, url = start(run_cli, name, *extra, "--ssl-certfile", str(cert[0]), "--ssl-keyfile", str(cert[1]))
    with httpx.Client(http2=True, verify=ssl.create_default_context(cafile=str(cert[0])), timeout=DEADLINE) as http:
        response = http.post(url + "/scope?x=1", content=b"hello")
    assert response.http_version == "HTTP/2"
    if name == APP:
        seen = response.json()
        assert seen["http_version"] == "2" and seen["scheme"] == "https" and seen["query_string"] == "x=1"
        assert ["host", url.removeprefix("https://")] in seen["headers"]
        assert not any(header.startswith(":") for header, _ in seen["headers"])
    else:
        assert response.text == "HTTP/2 5"
    # A client without ALPN h2 still gets HTTP/1.1 on the same listener.
    with httpx.Client(verify=ssl.create_default_context(cafile=str(cert[0])), timeout=DEADLINE) as http:
        assert http.get(url + "/").http_version == "HTTP/1.1"

    _cluster2, plain = start(run_cli, name, *extra)
    with httpx.Client(http1=False, http2=True, timeout=DEADLINE) as http:
        response = http.post(plain + "/scope", content=b"hello")
    assert response.http_version == "HTTP/2"
    assert (response.json()["http_version"] == "2") if name == APP else response.text == "HTTP/2 5"
    with httpx.Client(timeout=DEADLINE) as http:
        assert http.get(plain + "/").http_version == "HTTP/1.1"


def test_streams_multiplexed_hpack_ping_and_settings(run_cli: Callable[..., Cluster]) -> None:
    """Framing, stream states, HPACK, SETTINGS, PING: three streams open at once each get their own answer; a
    large header sent twice (the second time from HPACK's table) reaches the app whole; the server's SETTINGS say
    --h2-max-concurrent-streams; a PING is answered."""
    _, url = start(run_cli, APP, "--h2-max-concurrent-streams", "7")
    client = RawClient(url)
    try:
        client.until(lambda: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in client.events),
                     "server SETTINGS")
        settings = next(e for e in client.events if isinstance(e, h2.events.RemoteSettingsChanged))
        assert settings.changed_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS].new_value == 7
        big = (b"x-big", b"v" * 3000)
        streams = [client.request(f"/scope?n={n}", extra=[big]) for n in range(3)]
        assert streams == [1, 3, 5]
        for n, stream_id in enumerate(streams):
            status, body = client.answer(stream_id)
            seen = json.loads(body)
            assert status == 200 and seen["http_version"] == "2" and seen["query_string"] == f"n={n}"
            assert ["x-big", "v" * 3000] in seen["headers"]
        client.conn.ping(b"12345678")
        client.flush()
        client.until(lambda: any(isinstance(e, h2.events.PingAckReceived) for e in client.events), "PING ack")
        stream_id = client.request("/", method="HEAD")
        assert client.answer(stream_id) == (200, b"")
    finally:
        client.close()


def test_flow_control_both_ways_with_small_windows(run_cli: Callable[..., Cluster]) -> None:
    """A 1 MiB response to a client whose window is 1 KiB arrives whole (h2 on the client side fails the read if
    the server sends past the window); a 1 MiB upload reaches the app whole while the server's window (64 KiB)
    opens only as the app reads."""
    _, url = start(run_cli, APP)
    client = RawClient(url, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1024})
    try:
        size = 1024 * 1024
        status, body = client.answer(client.request(f"/big?n={size}"))
        assert status == 200 and body == pattern(size)
        upload = pattern(size)
        stream_id = client.request("/echo", method="POST", end=False)
        client.send_body(stream_id, upload)
        status, body = client.answer(stream_id)
        assert status == 200 and body.decode() == f"{size} {hashlib.sha256(upload).hexdigest()}"
    finally:
        client.close()


def test_concurrent_streams_past_the_limit_are_refused(run_cli: Callable[..., Cluster], tmp_path: Path) -> None:
    """--h2-max-concurrent-streams 2: a third stream open at once is refused alone (REFUSED_STREAM)."""
    _, url = start(run_cli, APP, "--h2-max-concurrent-streams", "2")
    client = RawClient(url)
    try:
        client.until(lambda: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in client.events),
                     "server SETTINGS")
        client.conn.update_settings({})  # keeps h2's own count of the server's limit from stopping the client
        held = [client.request(f"/hold?dir={tmp_path}") for _ in range(2)]
        # h2 on the client side refuses to open a third; sent past it by lowering what it believes the limit is.
        client.conn.remote_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = 10
        client.conn.remote_settings.acknowledge()
        extra = client.request("/")
        client.until(lambda: extra in client.ended, "a refusal")
        reset = next(e for e in client.events if isinstance(e, h2.events.StreamReset))
        assert reset.stream_id == extra and reset.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
        (tmp_path / "release").touch()
        for stream_id in held:  # a stream error: the two in flight finish
            assert client.answer(stream_id) == (200, b"held")
        assert client.answer(client.request("/")) == (200, b"ok")  # and a new one is taken once they are done
    finally:
        client.close()


def test_goaway_on_drain_lets_the_stream_in_flight_finish(run_cli: Callable[..., Cluster], tmp_path: Path) -> None:
    """SIGHUP (a rolling restart): the old worker sends GOAWAY naming the stream in flight, which then completes;
    the connection closes after it."""
    cluster, url = start(run_cli, APP)
    client = RawClient(url)
    try:
        stream_id = client.request(f"/hold?dir={tmp_path}")
        wait_until(lambda: (tmp_path / "started").exists(), "the app holding the request")
        cluster.signal(signal.SIGHUP)
        frames = client.raw_frames(lambda got: any(isinstance(frame, GoAwayFrame) for frame in got))
        goaway = next(frame for frame in frames if isinstance(frame, GoAwayFrame))
        assert goaway.error_code == 0 and goaway.last_stream_id == stream_id
        (tmp_path / "release").touch()
        frames = client.raw_frames(lambda got: bool(got) and got[-1] is None)  # up to the close
        decoder = hpack.Decoder()
        heads = [dict(decoder.decode(frame.data, raw=True)) for frame in frames
                 if isinstance(frame, HeadersFrame) and frame.stream_id == stream_id]
        body = b"".join(frame.data for frame in frames if isinstance(frame, DataFrame) and frame.stream_id == stream_id)
        assert heads and heads[0][b":status"] == b"200" and body == b"held"
        last = [frame for frame in frames if isinstance(frame, GoAwayFrame)]
        assert last and last[-1].last_stream_id == stream_id  # the final GOAWAY, then the close
    finally:
        client.close()


@pytest.mark.parametrize("app", [APP, "inline_h2_app:app"])  # the stack (ASGI), and the inline WSGI engine's side
def test_rapid_reset_is_closed_with_enhance_your_calm(run_cli: Callable[..., Cluster], app: str) -> None:
    """CVE-2023-44487: a client opening streams and resetting each at once gets GOAWAY ENHANCE_YOUR_CALM, and the
    close lingers: the frames the client still sends are read and discarded, never answered with a reset (which
    failed the client's sends, and can destroy the GOAWAY before the client reads it), and the connection then
    ends cleanly."""
    _, url = start(run_cli, app)
    client = RawClient(url)
    try:
        # Far more than the guard's 200: on a loaded machine the app answers some streams before their reset
        # arrives, and those do not count.
        for _ in range(1000):
            stream_id = client.request("/")
            client.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            client.flush()
            if client.send_failed is not None:  # the server ended the connection: its GOAWAY must be readable
                break
        client.until(lambda: client.terminated() is not None, "GOAWAY")
        goaway = client.terminated()
        assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        ping = PingFrame(0, opaque_data=b"late")
        for _ in range(3):  # in flight when the GOAWAY came: still taken, after the server's end of stream too
            client.sock.sendall(ping.serialize() * 64)
            assert client.sock.recv(65536) == b""
        assert client.send_failed is None
    finally:
        client.close()


def test_idle_connection_gets_goaway_after_keep_alive_timeout(run_cli: Callable[..., Cluster]) -> None:
    """--timeout-keep-alive applies to HTTP/2 connections too: idle after a request, GOAWAY and the close."""
    _, url = start(run_cli, APP, "--timeout-keep-alive", "1")
    client = RawClient(url)
    try:
        stream_id = client.request("/")
        assert client.answer(stream_id) == (200, b"ok")
        client.until(lambda: client.terminated() is not None, "GOAWAY")
        goaway = client.terminated()
        assert goaway is not None and goaway.error_code == 0 and goaway.last_stream_id == stream_id
        client.until(lambda: client.closed, "the close")
    finally:
        client.close()


def test_upgrade_h2c_is_answered_on_stream_1(run_cli: Callable[..., Cluster]) -> None:
    """``Upgrade: h2c`` with HTTP2-Settings: 101, then the request's answer in HTTP/2 on stream 1, and the
    connection goes on in HTTP/2. A request with a body asking for it is answered in HTTP/1.1."""
    _, url = start(run_cli, APP)
    host = url.removeprefix("http://").encode()
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    settings = conn.initiate_upgrade_connection()
    with socket.create_connection(address(url), timeout=DEADLINE) as sock:
        sock.sendall(b"GET /scope HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                     b"Upgrade: h2c\r\nHTTP2-Settings: %s\r\n\r\n" % (host, settings))
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(1)
            assert data, f"closed after {head!r}"
            head += data
        assert head.startswith(b"HTTP/1.1 101 ") and b"upgrade: h2c" in head.lower()
        sock.sendall(conn.data_to_send())
        events: list[h2.events.Event] = []
        body = bytearray()
        deadline = time.monotonic() + DEADLINE
        while not any(isinstance(e, h2.events.StreamEnded) and e.stream_id == 1 for e in events):
            assert time.monotonic() < deadline, "no answer on stream 1"
            data = sock.recv(65536)
            assert data, f"closed before the answer: {events}"
            for event in conn.receive_data(data):
                events.append(event)
                if isinstance(event, h2.events.DataReceived):
                    body += event.data
            sock.sendall(conn.data_to_send())
        seen = json.loads(bytes(body))
        assert seen["http_version"] == "2" and seen["method"] == "GET" and seen["path"] == "/scope"
        assert ["host", host.decode()] in seen["headers"]
        assert not any(name in ("upgrade", "http2-settings", "connection") for name, _ in seen["headers"])
    with socket.create_connection(address(url), timeout=DEADLINE) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                     b"Upgrade: h2c\r\nHTTP2-Settings: %s\r\nContent-Length: 2\r\n\r\nhi" % settings)
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            assert data
            answer += data
        assert answer.startswith(b"HTTP/1.1 200 ")


def test_header_list_past_limit_request_head_closes(run_cli: Callable[..., Cluster]) -> None:
    """--limit-request-head is SETTINGS_MAX_HEADER_LIST_SIZE, enforced: a larger header list ends the connection."""
    _, url = start(run_cli, APP, "--limit-request-head", "4096")
    client = RawClient(url)
    try:
        client.until(lambda: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in client.events),
                     "server SETTINGS")
        settings = next(e for e in client.events if isinstance(e, h2.events.RemoteSettingsChanged))
        assert settings.changed_settings[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE].new_value == 4096
        assert client.answer(client.request("/", extra=[(b"x-small", b"v" * 1000)])) == (200, b"ok")
        client.request("/", extra=[(b"x-large", b"v" * 8000)])
        client.until(lambda: client.terminated() is not None or client.closed, "the connection's end")
        goaway = client.terminated()
        assert goaway is None or goaway.error_code != 0
    finally:
        client.close()


def test_a_stream_whose_app_reads_nothing_does_not_stall_the_others(run_cli: Callable[..., Cluster],
                                                                   tmp_path: Path) -> None:
    """A body the app does not read fills its stream's window only: another stream's upload still completes (with
    the connection's window no larger than one stream's, the first stream held it all)."""
    _, url = start(run_cli, APP)
    client = RawClient(url)
    try:
        client.until(lambda: any(isinstance(e, h2.events.SettingsAcknowledged) for e in client.events), "SETTINGS ack")
        held = client.request(f"/hold?dir={tmp_path}", method="POST", end=False)
        for size in (16384, 16384, 16384, 16383):  # the stream's whole window (65535), in frames of 16 KiB at most
            client.conn.send_data(held, b"x" * size)
        client.flush()
        wait_until(lambda: (tmp_path / "started").exists(), "the app holding the request")
        upload = pattern(300_000)
        stream_id = client.request("/echo", method="POST", end=False)
        client.send_body(stream_id, upload)
        status, body = client.answer(stream_id)
        assert status == 200 and body.decode() == f"{len(upload)} {hashlib.sha256(upload).hexdigest()}"
        (tmp_path / "release").touch()
    finally:
        client.close()


def test_a_first_read_past_8_kib_reaches_http2_whole(run_cli: Callable[..., Cluster]) -> None:
    """The preface, a request and 40 KB of its body in one send: the HTTP/1.1 protocol parses a read 8 KiB at a
    time, and what followed the slice it handed over in was lost (the upload stalled)."""
    _, url = start(run_cli, APP)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    conn.send_headers(1, [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"localhost"),
                          (b":path", b"/echo")])
    upload = pattern(40_000)
    for start_at in range(0, len(upload), 16384):
        conn.send_data(1, upload[start_at:start_at + 16384], end_stream=start_at + 16384 >= len(upload))
    with socket.create_connection(address(url), timeout=DEADLINE) as sock:
        sock.sendall(conn.data_to_send())
        body = bytearray()
        ended = False
        while not ended:
            data = sock.recv(65536)
            assert data, "closed before the answer"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    body += event.data
                ended = ended or (isinstance(event, h2.events.StreamEnded) and event.stream_id == 1)
            sock.sendall(conn.data_to_send())
    assert body.decode() == f"{len(upload)} {hashlib.sha256(upload).hexdigest()}"
