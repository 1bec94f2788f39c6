"""The HTTP/2 tests' raw client (on the h2 library: h2c with prior knowledge, or TLS with ALPN h2), the way they
start a cluster, and their self-signed certificate: shared by tests/adapters/stack/test_e2e_http2*.py and
tests/adapters/engine/test_e2e_inline_http2.py."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hyperframe.frame import Frame

from helpers import DEADLINE, TEST_APPS, Cluster

APP = "h2_app:app"


def pattern(size: int) -> bytes:
    return bytes(range(251)) * (size // 251) + bytes(range(size % 251))


class RawClient:
    """An HTTP/2 client on the h2 library (h2c with prior knowledge; with ``tls``, HTTP/2 chosen by ALPN): it sends
    what the test says and collects h2's events, with a deadline on every wait. ``before``: bytes sent first (a
    PROXY header)."""

    def __init__(self, url: str, settings: dict[int, int] | None = None, before: bytes = b"",
                 tls: ssl.SSLContext | None = None) -> None:
        self.sock = socket.create_connection(address(url), timeout=DEADLINE)
        self.sock.sendall(before)
        if tls is not None:
            tls.set_alpn_protocols(["h2"])
            self.sock = tls.wrap_socket(self.sock, server_hostname=address(url)[0])
            assert self.sock.selected_alpn_protocol() == "h2"
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values=settings or {})
        self.conn.initiate_connection()
        self.host = url.split("://", 1)[1].encode()
        self.events: list[h2.events.Event] = []
        self.bodies: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.closed = False
        self.send_failed: OSError | None = None  # the server closed under a send: what it sent is still read
        self.reset = False  # the connection ended with a reset, not a clean end of stream
        self.flush()

    def flush(self) -> None:
        """Send what h2 has queued. A reset or broken pipe is kept, not raised: the server may end the connection
        while the client's frames are still arriving, and whether it did so correctly (its GOAWAY first) is what
        the reads that follow tell; the next reads see the close."""
        data = self.conn.data_to_send()
        if data and self.send_failed is None:
            try:
                self.sock.sendall(data)
            except (ConnectionResetError, BrokenPipeError) as exc:
                self.send_failed = exc

    def request(self, path: str, method: str = "GET", end: bool = True,
                extra: list[tuple[bytes, bytes]] | None = None) -> int:
        stream_id: int = self.conn.get_next_available_stream_id()
        headers = [(b":method", method.encode()), (b":scheme", b"http"), (b":authority", self.host),
                   (b":path", path.encode()), *(extra or [])]
        self.conn.send_headers(stream_id, headers, end_stream=end)
        self.flush()
        return stream_id

    def read(self) -> None:
        """One read; its events recorded, received DATA acknowledged at once. A reset is the close (once read, what
        came before it was read)."""
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            self.reset = True
            data = b""
        if not data:
            self.closed = True
            return
        for event in self.conn.receive_data(data):
            self.events.append(event)
            if isinstance(event, h2.events.DataReceived):
                self.bodies.setdefault(event.stream_id, bytearray()).extend(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                self.ended.add(event.stream_id)
        self.flush()

    def until(self, done: Callable[[], object], what: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while not done():
            assert not self.closed, f"connection closed before {what}"
            assert time.monotonic() < deadline, f"no {what} within {DEADLINE}s"
            self.read()

    def answer(self, stream_id: int) -> tuple[int, bytes]:
        self.until(lambda: stream_id in self.ended, f"end of stream {stream_id}")
        return int(self.head(stream_id)[b":status"]), bytes(self.bodies.get(stream_id, b""))

    def head(self, stream_id: int) -> dict[bytes, bytes]:
        return next(dict(event.headers) for event in self.events
                    if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id)

    def wait_closed(self) -> None:
        deadline = time.monotonic() + DEADLINE
        while not self.closed:
            assert time.monotonic() < deadline, f"the connection still open after {DEADLINE}s"
            self.read()

    def send_body(self, stream_id: int, body: bytes) -> None:
        """Send ``body`` (ending the stream) no faster than the server's windows allow."""
        view = memoryview(body)
        while view:
            window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.read()
                continue
            chunk, view = view[:window], view[window:]
            self.conn.send_data(stream_id, bytes(chunk), end_stream=not view)
            self.flush()

    def raw_frames(self, done: Callable[[list[Frame]], bool]) -> list[Frame]:
        """The frames the server sends from now on, parsed here (hyperframe), not by h2: h2's client state machine
        takes nothing more once a GOAWAY came, where RFC 9113 6.8 lets streams up to its last-stream-id finish."""
        frames: list[Frame] = []
        buffer = b""
        deadline = time.monotonic() + DEADLINE
        while not done(frames):
            assert time.monotonic() < deadline, f"the frames did not come within {DEADLINE}s: {frames}"
            data = self.sock.recv(65536)
            if not data:
                frames.append(None)  # type: ignore[arg-type]  # the close: the test's done() looks for it
                continue
            buffer += data
            while len(buffer) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(buffer[:9]))
                if len(buffer) < 9 + length:
                    break
                frame.parse_body(memoryview(buffer[9:9 + length]))
                buffer = buffer[9 + length:]
                frames.append(frame)
        return frames

    def terminated(self) -> h2.events.ConnectionTerminated | None:
        return next((e for e in self.events if isinstance(e, h2.events.ConnectionTerminated)), None)

    def close(self) -> None:
        self.sock.close()


def start(run_cli: Callable[..., Cluster], app: str, *args: str) -> tuple[Cluster, str]:
    cluster = run_cli(app, "--port", "0", "--workers", "1", "--no-control", *args, cwd=TEST_APPS)
    return cluster, cluster.wait_ready()


def address(url: str) -> tuple[str, int]:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    return host, int(port)


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, written in ``folder``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(key, hashes.SHA256()))
    crt, pem = folder / "server.crt", folder / "server.key"
    crt.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem
