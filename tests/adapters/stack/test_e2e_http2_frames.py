"""End-to-end: what h2spec checks (RFC 9113 sections 3-8, HPACK RFC 7541), as raw frames against the real CLI.

h2spec is on no registry here; these cases follow its sections. Each case runs on a fresh connection (after the
preface and the SETTINGS exchange) and says what the server must do: answer (a request, a PING), ignore the frame
and go on serving, end the stream (RST_STREAM with a code), or end the connection (GOAWAY with a code, then the
close). As h2spec does, a stream error may also be answered as a connection error with the same code. The frames
are built byte by byte here, not by h2's client, which refuses to send most of them.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import hpack
from h2_raw import APP, address, start
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame, PingFrame, RstStreamFrame, SettingsFrame

from helpers import DEADLINE, Cluster

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Frame types and flags (RFC 9113 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
# Error codes (RFC 9113 7).
PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED, FRAME_SIZE_ERROR, COMPRESSION_ERROR = 0x1, 0x3, 0x5, 0x6, 0x9


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id) + payload


def setting(identifier: int, value: int) -> bytes:
    return struct.pack(">HI", identifier, value)


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment))


def ping(data: bytes = b"h2spec!!", flags: int = 0, stream_id: int = 0) -> bytes:
    return frame(PING, flags, stream_id, data)


class Wire:
    """A connection that has sent the preface and an empty SETTINGS, read the server's SETTINGS and acknowledged
    them; ``block`` encodes header lists with one HPACK encoder for the connection."""

    def __init__(self, url: str) -> None:
        self.sock = socket.create_connection(address(url), timeout=DEADLINE)
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.buffer = b""
        self.frames: list[Frame | None] = []  # None: the connection closed (or was reset)
        self.heads: dict[int, dict[str, str]] = {}  # each stream's response head, decoded in the order they came
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
        self.until(lambda: any(isinstance(f, SettingsFrame) and "ACK" not in f.flags for f in self.frames),
                   "the server's SETTINGS")
        self.sock.sendall(frame(SETTINGS, ACK, 0))

    def block(self, path: str = "/", method: str = "GET", extra: list[tuple[str, str]] | None = None,
              plain: bool = False) -> bytes:
        """A request's header block; ``plain``: its strings not Huffman-coded (as long on the wire as they are)."""
        headers = [(":method", method), (":scheme", "http"), (":authority", "localhost"), (":path", path)]
        return bytes(self.encoder.encode([*headers, *(extra or [])], huffman=not plain))

    def send(self, *data: bytes) -> None:
        try:
            self.sock.sendall(b"".join(data))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server ended the connection: what it sent before is read next

    def read(self) -> None:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.frames.append(None)
            return
        self.buffer += data
        while len(self.buffer) >= 9:
            parsed, length = Frame.parse_frame_header(memoryview(self.buffer[:9]))
            if len(self.buffer) < 9 + length:
                break
            parsed.parse_body(memoryview(self.buffer[9:9 + length]))
            self.buffer = self.buffer[9 + length:]
            self.frames.append(parsed)
            if isinstance(parsed, HeadersFrame):  # decoded as they come: HPACK's table follows every block
                self.heads[parsed.stream_id] = dict(self.decoder.decode(parsed.data))

    def until(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while not done():
            assert time.monotonic() < deadline, f"no {what} within {DEADLINE}s: {self.frames}"
            assert not self.frames or self.frames[-1] is not None, f"closed before {what}: {self.frames}"
            self.read()

    def ended(self) -> bool:
        return bool(self.frames) and (self.frames[-1] is None or any(
            isinstance(f, (GoAwayFrame, RstStreamFrame)) for f in self.frames))

    def status(self, stream_id: int) -> int:
        """The status of the response on ``stream_id``, once its HEADERS came."""
        self.until(lambda: stream_id in self.heads or self.ended(), f"an answer on stream {stream_id}")
        assert stream_id in self.heads, f"no answer on stream {stream_id}: {self.frames}"
        return int(self.heads[stream_id][":status"])

    def close(self) -> None:
        self.sock.close()


@dataclass(frozen=True)
class Case:
    section: str
    what: str
    send: Callable[[Wire], list[bytes]]
    expect: str  # "connection" (GOAWAY), "stream" (RST_STREAM or GOAWAY), "served" (ignored, then served)
    code: int = 0


def judge(url: str, case: Case) -> str | None:
    """Run ``case`` on a fresh connection: None if the server did what it must, else what it did."""
    wire = Wire(url)
    try:
        wire.send(*case.send(wire))
        if case.expect == "served":
            wire.send(ping(b"after!!!"))
            wire.until(lambda: any(isinstance(f, PingFrame) and "ACK" in f.flags for f in wire.frames)
                       or wire.ended(), "the PING's ACK")
            if wire.ended():
                return f"ended: {wire.frames}"
            wire.send(frame(HEADERS, END_STREAM | END_HEADERS, 101, wire.block()))
            status = wire.status(101)
            return None if status == 200 else f"answered {status}"
        wire.until(wire.ended, "an error")
        goaway = next((f for f in wire.frames if isinstance(f, GoAwayFrame)), None)
        reset = next((f for f in wire.frames if isinstance(f, RstStreamFrame)), None)
        if goaway is not None and goaway.error_code == case.code:
            if case.expect == "connection":
                wire.until(lambda: wire.frames[-1] is None, "the close after GOAWAY")
            return None
        if case.expect == "stream" and reset is not None and reset.error_code == case.code:
            return None
        return f"got {[f for f in wire.frames if not isinstance(f, SettingsFrame)]}"
    finally:
        wire.close()


def run_cases(url: str, cases: list[Case]) -> None:
    failed = []
    for case in cases:
        outcome = judge(url, case)
        if outcome is not None:
            failed.append(f"{case.section} {case.what}: expected {case.expect} {case.code:#x}, {outcome}")
    assert not failed, "\n".join(failed)


def request(wire: Wire, stream_id: int = 1, end_stream: bool = True, **kwargs: str) -> bytes:
    return frame(HEADERS, (END_STREAM if end_stream else 0) | END_HEADERS, stream_id, wire.block(**kwargs))


FRAMING = [
    Case("4.1", "an unknown frame type is ignored", lambda w: [frame(0x20, 0xff, 0, b"what is this")], "served"),
    Case("4.1", "undefined flags are ignored", lambda w: [ping(flags=0xfe)], "served"),
    Case("4.2", "a DATA frame past SETTINGS_MAX_FRAME_SIZE",
         lambda w: [request(w, end_stream=False, method="POST"), frame(DATA, 0, 1, b"x" * 16385)],
         "connection", FRAME_SIZE_ERROR),
    Case("4.2", "a HEADERS frame past SETTINGS_MAX_FRAME_SIZE",
         lambda w: [frame(HEADERS, END_HEADERS | END_STREAM, 1, w.block(extra=[("x-big", "v" * 17000)], plain=True))],
         "connection", FRAME_SIZE_ERROR),
    Case("4.3", "a header block that is not HPACK", lambda w: [frame(HEADERS, END_HEADERS | END_STREAM, 1,
                                                                     b"\xff\xff\xff\xff\xff\xff\xff")],
         "connection", COMPRESSION_ERROR),
    Case("5.1", "DATA on an idle stream", lambda w: [frame(DATA, END_STREAM, 1, b"x")], "connection",
         PROTOCOL_ERROR),
    Case("5.1", "RST_STREAM on an idle stream", lambda w: [frame(RST_STREAM, 0, 1, struct.pack(">I", 8))],
         "connection", PROTOCOL_ERROR),
    Case("5.1", "WINDOW_UPDATE on an idle stream", lambda w: [window_update(1, 100)], "connection", PROTOCOL_ERROR),
    Case("5.1", "DATA after END_STREAM (half-closed remote)",
         lambda w: [request(w, method="POST"), frame(DATA, 0, 1, b"late")], "stream", STREAM_CLOSED),
    Case("5.1", "HEADERS after END_STREAM (half-closed remote, not trailers)",
         lambda w: [request(w, method="POST"), request(w)], "stream", STREAM_CLOSED),
    Case("5.1.1", "an even stream id from the client", lambda w: [request(w, stream_id=2)], "connection",
         PROTOCOL_ERROR),
    Case("5.1.1", "a stream id lower than one already used",
         lambda w: [request(w, stream_id=5), request(w, stream_id=3)], "connection", PROTOCOL_ERROR),
    Case("5.3", "PRIORITY frames are accepted and ignored",
         lambda w: [frame(PRIORITY, 0, 1, struct.pack(">IB", 0, 200)), frame(PRIORITY, 0, 9, struct.pack(">IB", 3, 1)),
                    request(w, stream_id=3), request(w, stream_id=5)], "served"),
    Case("5.3.1", "a stream that depends on itself", lambda w: [frame(PRIORITY, 0, 1, struct.pack(">IB", 1, 16))],
         "stream", PROTOCOL_ERROR),
    Case("5.5", "an unknown extension frame in the middle of a stream",
         lambda w: [request(w, end_stream=False, method="POST"), frame(0x21, 0, 1, b"ext"),
                    frame(DATA, END_STREAM, 1, b"body")], "served"),
]

FRAMES = [
    Case("6.1", "DATA on stream 0", lambda w: [frame(DATA, 0, 0, b"x")], "connection", PROTOCOL_ERROR),
    Case("6.1", "DATA whose padding is longer than the frame",
         lambda w: [request(w, end_stream=False, method="POST"), frame(DATA, PADDED, 1, b"\x08abc")],
         "connection", PROTOCOL_ERROR),
    Case("6.2", "HEADERS on stream 0", lambda w: [frame(HEADERS, END_HEADERS | END_STREAM, 0, w.block())],
         "connection", PROTOCOL_ERROR),
    Case("6.3", "PRIORITY of 4 bytes", lambda w: [frame(PRIORITY, 0, 1, b"\x00\x00\x00\x03")], "stream",
         FRAME_SIZE_ERROR),
    Case("6.3", "PRIORITY on stream 0", lambda w: [frame(PRIORITY, 0, 0, struct.pack(">IB", 1, 16))],
         "connection", PROTOCOL_ERROR),
    Case("6.4", "RST_STREAM on stream 0", lambda w: [frame(RST_STREAM, 0, 0, struct.pack(">I", 8))], "connection",
         PROTOCOL_ERROR),
    Case("6.4", "RST_STREAM of 3 bytes",
         lambda w: [request(w, end_stream=False), frame(RST_STREAM, 0, 1, b"\x00\x00\x08")], "connection",
         FRAME_SIZE_ERROR),
    Case("6.5", "SETTINGS ACK with a payload", lambda w: [frame(SETTINGS, ACK, 0, setting(3, 100))], "connection",
         FRAME_SIZE_ERROR),
    Case("6.5", "SETTINGS on a stream", lambda w: [frame(SETTINGS, 0, 1, setting(3, 100))], "connection",
         PROTOCOL_ERROR),
    Case("6.5", "SETTINGS of a length not a multiple of 6", lambda w: [frame(SETTINGS, 0, 0, b"\x00\x03\x00")],
         "connection", FRAME_SIZE_ERROR),
    Case("6.5.2", "SETTINGS_ENABLE_PUSH of 2", lambda w: [frame(SETTINGS, 0, 0, setting(2, 2))], "connection",
         PROTOCOL_ERROR),
    Case("6.5.2", "SETTINGS_INITIAL_WINDOW_SIZE past 2^31-1", lambda w: [frame(SETTINGS, 0, 0, setting(4, 2**31))],
         "connection", FLOW_CONTROL_ERROR),
    Case("6.5.2", "SETTINGS_MAX_FRAME_SIZE below 16384", lambda w: [frame(SETTINGS, 0, 0, setting(5, 16383))],
         "connection", PROTOCOL_ERROR),
    Case("6.5.2", "SETTINGS_MAX_FRAME_SIZE past 2^24-1", lambda w: [frame(SETTINGS, 0, 0, setting(5, 2**24))],
         "connection", PROTOCOL_ERROR),
    Case("6.5.2", "an unknown setting is ignored", lambda w: [frame(SETTINGS, 0, 0, setting(0xff, 1))], "served"),
    Case("6.7", "PING on a stream", lambda w: [ping(stream_id=1)], "connection", PROTOCOL_ERROR),
    Case("6.7", "PING of 7 bytes", lambda w: [frame(PING, 0, 0, b"1234567")], "connection", FRAME_SIZE_ERROR),
    Case("6.7", "a PING ACK is not answered", lambda w: [ping(flags=ACK)], "served"),
    Case("6.8", "GOAWAY on a stream", lambda w: [frame(GOAWAY, 0, 1, struct.pack(">II", 0, 0))], "connection",
         PROTOCOL_ERROR),
    Case("6.9", "WINDOW_UPDATE of 0 on the connection", lambda w: [window_update(0, 0)], "connection",
         PROTOCOL_ERROR),
    Case("6.9", "WINDOW_UPDATE of 0 on a stream", lambda w: [request(w, end_stream=False), window_update(1, 0)],
         "stream", PROTOCOL_ERROR),
    Case("6.9", "WINDOW_UPDATE of 3 bytes", lambda w: [frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01")], "connection",
         FRAME_SIZE_ERROR),
    Case("6.9.1", "the connection's window past 2^31-1", lambda w: [window_update(0, 2**31 - 1)], "connection",
         FLOW_CONTROL_ERROR),
    Case("6.9.1", "a stream's window past 2^31-1",
         lambda w: [request(w, end_stream=False), window_update(1, 2**31 - 1)], "stream", FLOW_CONTROL_ERROR),
    Case("6.9.2", "SETTINGS_INITIAL_WINDOW_SIZE that overflows an open stream's window",
         lambda w: [request(w, end_stream=False), window_update(1, 2**31 - 1 - 65535),
                    frame(SETTINGS, 0, 0, setting(4, 65536))], "connection", FLOW_CONTROL_ERROR),
    Case("6.10", "CONTINUATION without HEADERS", lambda w: [frame(CONTINUATION, END_HEADERS, 1, w.block())],
         "connection", PROTOCOL_ERROR),
    Case("6.10", "a frame of another type inside a header block",
         lambda w: [frame(HEADERS, END_STREAM, 1, w.block()[:5]), ping()], "connection", PROTOCOL_ERROR),
    Case("6.10", "a CONTINUATION of another stream inside a header block",
         lambda w: [frame(HEADERS, END_STREAM, 1, (b := w.block())[:5]), frame(CONTINUATION, END_HEADERS, 3, b[5:])],
         "connection", PROTOCOL_ERROR),
    Case("6.10", "a header block in HEADERS and two CONTINUATION frames",
         lambda w: [frame(HEADERS, END_STREAM, 1, (b := w.block(extra=[("x-a", "v" * 50)]))[:10]),
                    frame(CONTINUATION, 0, 1, b[10:20]), frame(CONTINUATION, END_HEADERS, 1, b[20:])], "served"),
    Case("6.6", "PUSH_PROMISE from a client", lambda w: [frame(PUSH_PROMISE, END_HEADERS, 1,
                                                              struct.pack(">I", 2) + w.block())],
         "connection", PROTOCOL_ERROR),
]

HTTP = [
    Case("8.2", "an uppercase header name", lambda w: [request(w, extra=[("X-Upper", "v")])], "stream",
         PROTOCOL_ERROR),
    Case("8.2.2", "a connection-specific header", lambda w: [request(w, extra=[("connection", "keep-alive")])],
         "stream", PROTOCOL_ERROR),
    Case("8.2.2", "TE other than trailers", lambda w: [request(w, extra=[("te", "gzip")])], "stream",
         PROTOCOL_ERROR),
    Case("8.3", "a pseudo-header after a regular one",
         lambda w: [frame(HEADERS, END_STREAM | END_HEADERS, 1, bytes(w.encoder.encode(
             [(":method", "GET"), (":scheme", "http"), ("x-a", "b"), (":path", "/")])))], "stream", PROTOCOL_ERROR),
    Case("8.3", "no :method", lambda w: [frame(HEADERS, END_STREAM | END_HEADERS, 1, bytes(w.encoder.encode(
        [(":scheme", "http"), (":path", "/")])))], "stream", PROTOCOL_ERROR),
    Case("8.3", "a :path given twice", lambda w: [frame(HEADERS, END_STREAM | END_HEADERS, 1, bytes(w.encoder.encode(
        [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":path", "/")])))], "stream", PROTOCOL_ERROR),
    Case("8.3", "an empty :path", lambda w: [request(w, path="")], "stream", PROTOCOL_ERROR),
    Case("8.3", "an unknown pseudo-header", lambda w: [request(w, extra=[(":what", "v")])], "stream",
         PROTOCOL_ERROR),
    Case("8.1.1", "a body longer than its content-length",
         lambda w: [request(w, end_stream=False, method="POST", extra=[("content-length", "2")]),
                    frame(DATA, END_STREAM, 1, b"four")], "stream", PROTOCOL_ERROR),
    Case("8.1", "trailers ending a request are taken",
         lambda w: [request(w, end_stream=False, method="POST"), frame(DATA, 0, 1, b"body"),
                    frame(HEADERS, END_STREAM | END_HEADERS, 1, bytes(w.encoder.encode([("x-trailer", "t")])))],
         "served"),
]

HPACK = [
    Case("HPACK 4.2", "a dynamic table size update at the start of a block",
         lambda w: [frame(HEADERS, END_STREAM | END_HEADERS, 1, b"\x3f\xe1\x1f" + w.block())], "served"),
    Case("HPACK 4.2", "a table size update past SETTINGS_HEADER_TABLE_SIZE",
         lambda w: [frame(HEADERS, END_STREAM | END_HEADERS, 1, b"\x3f\xe1\xff\x03" + w.block())], "connection",
         COMPRESSION_ERROR),
    Case("HPACK 2.3.3", "an index past the tables", lambda w: [frame(HEADERS, END_STREAM | END_HEADERS, 1,
                                                                     b"\xff\x7f")],
         "connection", COMPRESSION_ERROR),
    Case("HPACK 5.2", "a Huffman string with an EOS symbol",
         lambda w: [frame(HEADERS, END_STREAM | END_HEADERS, 1, b"\x82\x86\x84\x41\x84\xff\xff\xff\xff")],
         "connection", COMPRESSION_ERROR),
]


def test_framing_and_stream_states(run_cli: Callable[..., Cluster]) -> None:
    """RFC 9113 4 (frame format, size, header compression) and 5 (stream states, identifiers, priority,
    extensions)."""
    _, url = start(run_cli, APP)
    run_cases(url, FRAMING)


def test_frame_definitions(run_cli: Callable[..., Cluster]) -> None:
    """RFC 9113 6: each frame type's rules (DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PING, GOAWAY,
    WINDOW_UPDATE and flow control, CONTINUATION, PUSH_PROMISE)."""
    _, url = start(run_cli, APP)
    run_cases(url, FRAMES)


def test_http_semantics(run_cli: Callable[..., Cluster]) -> None:
    """RFC 9113 8: header names, connection-specific fields, pseudo-headers, content-length, trailers."""
    _, url = start(run_cli, APP)
    run_cases(url, HTTP)


def test_hpack(run_cli: Callable[..., Cluster]) -> None:
    """RFC 7541: dynamic table size updates (within and past the limit), indexes, Huffman strings."""
    _, url = start(run_cli, APP)
    run_cases(url, HPACK)


def test_ping_is_answered_with_its_data(run_cli: Callable[..., Cluster]) -> None:
    """RFC 9113 6.7: a PING is answered with a PING ACK carrying the same 8 bytes."""
    _, url = start(run_cli, APP)
    wire = Wire(url)
    try:
        wire.send(ping(b"\x00\x01\x02\x03\x04\x05\x06\x07"))
        wire.until(lambda: any(isinstance(f, PingFrame) and "ACK" in f.flags for f in wire.frames), "PING ACK")
        answer = next(f for f in wire.frames if isinstance(f, PingFrame) and "ACK" in f.flags)
        assert answer.opaque_data == b"\x00\x01\x02\x03\x04\x05\x06\x07"
    finally:
        wire.close()


def test_invalid_preface_is_not_served(run_cli: Callable[..., Cluster]) -> None:
    """RFC 9113 3.4: a preface followed by something other than SETTINGS is a connection error: GOAWAY
    PROTOCOL_ERROR, then the close."""
    _, url = start(run_cli, APP)
    wire = Wire.__new__(Wire)  # without the handshake: the preface is sent by hand
    wire.sock = socket.create_connection(address(url), timeout=DEADLINE)
    wire.decoder, wire.buffer, wire.frames, wire.heads = hpack.Decoder(), b"", [], {}
    try:
        wire.send(PREFACE + ping())
        wire.until(wire.ended, "an error")
        goaway = next((f for f in wire.frames if isinstance(f, GoAwayFrame)), None)
        assert goaway is not None and goaway.error_code == PROTOCOL_ERROR, wire.frames
    finally:
        wire.close()
