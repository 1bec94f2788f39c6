"""An HTTP/2 load generator on the h2 library: h2load is not installed here and cannot be.

    python bench/h2load.py http://127.0.0.1:8000/ -c 4 -m 16 -d 3        # h2c with prior knowledge, 3 s
    python bench/h2load.py https://127.0.0.1:8443/ -c 2 -m 32 -n 100000  # TLS, ALPN h2, a count of requests

``-c`` connections, each in a process of its own (the h2 library is pure Python: one process driving every
connection would be the limit long before any server is), each keeping ``-m`` streams in flight: a GET per
stream, a new one opened as soon as one ends. It prints one JSON object: requests completed, errors (a reset
stream, a status outside 2xx/3xx, a connection lost with streams in flight, a GOAWAY with an error), elapsed
seconds, req/s, p50 and p99 latency, and the CPU seconds the client processes used: the client's own ceiling is
about ``cores / (client CPU per request)``, and a figure near it says more about the client than the server.

The connections start together (each connects and sends its preface first); the clock runs from then. With
``-d`` no stream is opened after the deadline and the ones in flight are finished; with ``-n`` each connection
sends its share. A GOAWAY ends a connection (hypercorn sends one after 1,000 requests): its streams above the
last one the server took, and streams reset with REFUSED_STREAM, were not processed (RFC 9113 8.7): they count
as refused, not as errors, and new streams take their place, on a new connection once the old one has finished
its own.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import select
import socket
import ssl
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

_READ = 256 * 1024
_TIMEOUT = 10.0  # seconds without a byte from the server while streams are in flight: the connection is given up
_WINDOW = 16 * 1024 * 1024  # the client's receive windows: flow control never holds a server back


@dataclass
class Tally:
    """What one connection's process saw."""

    requests: int = 0
    errors: int = 0
    refused: int = 0  # streams a GOAWAY or REFUSED_STREAM turned away unprocessed: opened again, not errors
    reconnects: int = 0
    first_error: str = ""
    latencies: array.array[float] = field(default_factory=lambda: array.array("d"))
    began: float = 0.0
    ended: float = 0.0

    def fail(self, count: int, why: str) -> None:
        self.errors += count
        if count and not self.first_error:
            self.first_error = why


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str
    tls: bool

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"


def parse_url(url: str) -> Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SystemExit(f"h2load: {url!r}: give http://HOST:PORT/PATH (h2c) or https://HOST:PORT/PATH (ALPN h2)")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.hostname, port, path, parts.scheme == "https")


def connect(target: Target, timeout: float) -> socket.socket:
    sock = socket.create_connection((target.host, target.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if not target.tls:
        return sock
    # A bench client: the server's certificate is whatever the bench made, so it is not verified.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    wrapped = context.wrap_socket(sock, server_hostname=target.host)
    if wrapped.selected_alpn_protocol() != "h2":
        wrapped.close()
        raise ConnectionError(f"the server chose {wrapped.selected_alpn_protocol()!r} by ALPN, not h2")
    return wrapped


class Connection:
    """One HTTP/2 connection keeping up to ``streams`` requests in flight."""

    def __init__(self, target: Target, streams: int) -> None:
        self.sock = connect(target, _TIMEOUT)
        # Validation and normalisation of the client's own headers are off: they are fixed and known good, and
        # the client's CPU per request is its ceiling.
        config = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                           validate_outbound_headers=False, normalize_outbound_headers=False,
                                           validate_inbound_headers=False, normalize_inbound_headers=False)
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _WINDOW, h2.settings.SettingCodes.ENABLE_PUSH: 0})
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(_WINDOW - 65535)
        scheme = b"https" if target.tls else b"http"
        self.headers = [(b":method", b"GET"), (b":scheme", scheme), (b":authority", target.authority.encode()),
                        (b":path", target.path.encode()), (b"user-agent", b"clusterrun-bench-h2load")]
        self.streams = streams
        self.open: dict[int, tuple[float, int]] = {}  # stream id: (start, status)
        self.closed = False  # the server sent GOAWAY or closed: no new stream here

    def fill(self, may_open: bool) -> None:
        if may_open and not self.closed:
            limit = min(self.streams, self.h2.remote_settings.max_concurrent_streams)
            now = time.monotonic()
            while len(self.open) < limit:
                stream_id = self.h2.get_next_available_stream_id()
                self.h2.send_headers(stream_id, self.headers, end_stream=True)
                self.open[stream_id] = (now, 0)
        out = self.h2.data_to_send()
        if out:
            self.sock.sendall(out)

    def read(self, tally: Tally) -> None:
        """One read from the socket and what it completes; marks the connection closed when the server ends it."""
        try:
            data = self.sock.recv(_READ)
        except (OSError, ssl.SSLError) as exc:
            self.lost(tally, f"read: {exc}")
            return
        if not data:
            self.lost(tally, "the server closed the connection")
            return
        now = time.monotonic()
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = next((int(v) for k, v in event.headers if k == b":status"), 0)
                started = self.open.get(event.stream_id)
                if started is not None:
                    self.open[event.stream_id] = (started[0], status)
            elif isinstance(event, h2.events.DataReceived):
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                started = self.open.pop(event.stream_id, None)
                if started is not None:
                    tally.requests += 1
                    tally.latencies.append(now - started[0])
                    if not 200 <= started[1] < 400:
                        tally.fail(1, f"status {started[1]}")
            elif isinstance(event, h2.events.StreamReset):
                if self.open.pop(event.stream_id, None) is not None:
                    if event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM:
                        tally.refused += 1  # not processed: a client sends it again, as the next fill does
                    else:
                        tally.fail(1, f"stream reset: {event.error_code!r}")
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.closed = True
                gone = [sid for sid in self.open if sid > (event.last_stream_id or 0)]
                for sid in gone:
                    del self.open[sid]
                tally.refused += len(gone)  # not processed (RFC 9113 6.8): sent again on the next connection
                if event.error_code != h2.errors.ErrorCodes.NO_ERROR:
                    tally.fail(len(gone), f"GOAWAY {event.error_code!r}")

    def lost(self, tally: Tally, why: str) -> None:
        tally.fail(len(self.open), why)
        self.open.clear()
        self.closed = True

    def close(self) -> None:
        try:
            self.h2.close_connection()
            self.sock.sendall(self.h2.data_to_send())
        except (OSError, ssl.SSLError, h2.exceptions.ProtocolError):
            pass
        self.sock.close()


def drive(target: Target, streams: int, start_at: float, deadline: float, count: int | None,
          ready_fd: int) -> Tally:
    """One connection's load, from ``start_at`` (a shared monotonic instant) until ``deadline`` or ``count``."""
    tally = Tally()
    conn = Connection(target, streams)
    conn.fill(may_open=False)  # the preface and SETTINGS, before the clock starts
    os.write(ready_fd, b"r")
    os.close(ready_fd)
    time.sleep(max(0.0, start_at - time.monotonic()))
    tally.began = time.monotonic()
    opened = 0
    while True:
        now = time.monotonic()
        may_open = now < deadline and (count is None or opened < count)
        if conn.closed and not conn.open:  # after a GOAWAY, the streams the server took are read to their end
            if not may_open:
                break
            conn.close()
            conn = Connection(target, streams)
            tally.reconnects += 1
        if count is not None and may_open:
            conn.streams = min(streams, count - opened + len(conn.open))
        before = len(conn.open)
        conn.fill(may_open)
        opened += len(conn.open) - before
        if not conn.open:
            if not may_open:
                break
            continue
        ready, _, _ = select.select([conn.sock], [], [], _TIMEOUT)
        if not ready and not (isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending()):
            conn.lost(tally, f"no answer within {_TIMEOUT:g} s")
            continue
        conn.read(tally)
    tally.ended = time.monotonic()
    conn.close()
    return tally


@dataclass(frozen=True)
class Result:
    requests: int
    errors: int
    refused: int
    reconnects: int
    elapsed: float
    rps: float
    p50_ms: float
    p99_ms: float
    client_cpu_s: float  # user + system of the client's processes
    connections: int
    streams: int
    first_error: str


def run(url: str, connections: int, streams: int, duration: float | None, count: int | None) -> Result:
    """Fork one process per connection; gather their tallies through pipes; reap them with their CPU use."""
    target = parse_url(url)
    if (duration is None) == (count is None):
        raise SystemExit("h2load: give either -d SECONDS or -n REQUESTS")
    start_at = time.monotonic() + 0.2 + 0.05 * connections  # every connection is open and ready by then
    deadline = start_at + duration if duration is not None else float("inf")
    shares = [count // connections + (i < count % connections) for i in range(connections)] if count else []
    children: list[tuple[int, int]] = []
    for index in range(connections):
        ready_r, ready_w = os.pipe()
        out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the client process: never returns into the parent's code
            os.close(ready_r)
            os.close(out_r)
            code = 0
            try:
                tally = drive(target, streams, start_at, deadline, shares[index] if count else None, ready_w)
            except Exception as exc:  # a connection that cannot even start: reported, not raised
                tally = Tally(first_error=f"{type(exc).__name__}: {exc}", errors=1)
                code = 1
            payload = json.dumps({k: v for k, v in asdict(tally).items() if k != "latencies"}).encode()
            with os.fdopen(out_w, "wb") as out:
                out.write(len(payload).to_bytes(4, "big") + payload + tally.latencies.tobytes())
            os._exit(code)
        os.close(ready_w)
        os.close(out_w)
        os.read(ready_r, 1)  # connected (or failed: then the pipe is closed and read returns b"")
        os.close(ready_r)
        children.append((pid, out_r))
    tallies: list[Tally] = []
    cpu = 0.0
    for pid, out_r in children:
        with os.fdopen(out_r, "rb") as pipe:
            raw = pipe.read()
        _, _, usage = os.wait4(pid, 0)
        cpu += usage.ru_utime + usage.ru_stime
        if len(raw) < 4:
            tallies.append(Tally(errors=1, first_error="a client process ended without a report"))
            continue
        size = int.from_bytes(raw[:4], "big")
        fields = json.loads(raw[4:4 + size])
        latencies = array.array("d")
        latencies.frombytes(raw[4 + size:])
        tallies.append(Tally(**fields, latencies=latencies))
    return summarise(tallies, cpu, connections, streams)


def summarise(tallies: Sequence[Tally], cpu: float, connections: int, streams: int) -> Result:
    began = min((t.began for t in tallies if t.began), default=0.0)
    ended = max((t.ended for t in tallies if t.ended), default=0.0)
    elapsed = max(ended - began, 1e-9)
    latencies = [x for t in tallies for x in t.latencies]
    cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [0.0] * 99
    requests = sum(t.requests for t in tallies)
    first = next((t.first_error for t in tallies if t.first_error), "")
    return Result(requests, sum(t.errors for t in tallies), sum(t.refused for t in tallies),
                  sum(t.reconnects for t in tallies), elapsed, requests / elapsed, cuts[49] * 1000,
                  cuts[98] * 1000, cpu, connections, streams, first)


def probe(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """One GET over HTTP/2 (h2c prior knowledge, or ALPN h2): its status and body. Raises OSError or
    ConnectionError when the server does not answer in HTTP/2."""
    target = parse_url(url)
    conn = Connection(target, 1)
    conn.sock.settimeout(timeout)
    status, body = 0, bytearray()
    try:
        conn.fill(may_open=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = conn.sock.recv(_READ)
            if not data:
                raise ConnectionError("the server closed the connection without an HTTP/2 answer")
            for event in conn.h2.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = next((int(v) for k, v in event.headers if k == b":status"), 0)
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    return status, bytes(body)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    raise ConnectionError(f"GOAWAY {_code(event.error_code)} before an answer")
                elif isinstance(event, h2.events.StreamReset):
                    raise ConnectionError(f"the stream was reset: {_code(event.error_code)}")
            conn.fill(may_open=False)
        raise TimeoutError(f"no HTTP/2 answer within {timeout:g} s")
    except h2.exceptions.ProtocolError as exc:
        raise ConnectionError(f"not an HTTP/2 answer: {exc}") from exc
    finally:
        conn.close()


def _code(code: int | None) -> str:
    """An HTTP/2 error code by its name (HTTP_1_1_REQUIRED), or its number when h2 knows no name for it."""
    try:
        return h2.errors.ErrorCodes(code).name if code is not None else "without a code"
    except ValueError:
        return str(code)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="http://HOST:PORT/PATH (h2c, prior knowledge) or https://... (ALPN h2)")
    parser.add_argument("-c", "--connections", type=int, default=4, help="connections, one process each (default 4)")
    parser.add_argument("-m", "--streams", type=int, default=16,
                        help="streams in flight per connection (default 16; the server's limit caps it)")
    parser.add_argument("-d", "--duration", type=float, help="seconds of load")
    parser.add_argument("-n", "--requests", type=int, help="requests in all, shared by the connections")
    args = parser.parse_args(argv)
    if args.connections < 1 or args.streams < 1:
        parser.error("-c and -m must be at least 1")
    result = run(args.url, args.connections, args.streams, args.duration, args.requests)
    print(json.dumps(asdict(result)))
    return 0 if result.requests else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
