"""End-to-end: --proxy-protocol (issue 28, item 3), against the real CLI over raw sockets.

A TCP proxy (AWS NLB, HAProxy's send-proxy) opens each connection with a PROXY header naming the client. From a
peer in --forwarded-allow-ips, a v1 or v2 header (IPv4 or IPv6) sets REMOTE_ADDR and REMOTE_PORT (WSGI) and the
scope's client (ASGI); v1 UNKNOWN and v2 LOCAL keep the peer's. An untrusted peer, a missing, malformed,
truncated or too long header: the connection is closed with no answer, and the worker goes on serving. Over TLS
the header comes first, then the handshake. On every engine, under a worker-side and a primary-side policy.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import signal
import socket
import ssl
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from helpers import DEADLINE, TEST_APPS, Cluster, connections_held, read_all, read_head, start, wait_until

# Every way a connection reaches app code: the inline WSGI engine, the WSGI bridge and ASGI on the asyncio stack
# (clusterrun's http1, uvicorn's h11 and httptools protocols); each under a worker-side policy (shared: the worker
# accepts) and rr (the default: the primary accepts and passes the connection with its header unread); sticky and
# balanced once.
ENGINES = [
    pytest.param("proxyproto_app:wsgi", ("--policy", "shared"), id="wsgi-inline-shared"),
    pytest.param("proxyproto_app:wsgi", ("--policy", "rr"), id="wsgi-inline-rr"),
    pytest.param("proxyproto_app:wsgi", ("--threads", "2", "--policy", "sticky"), id="wsgi-threads-sticky"),
    pytest.param("proxyproto_app:asgi", ("--policy", "shared"), id="asgi-shared"),
    pytest.param("proxyproto_app:asgi", ("--policy", "rr"), id="asgi-rr"),
    pytest.param("proxyproto_app:asgi", ("--http", "h11", "--policy", "balanced"), id="asgi-h11-balanced"),
    pytest.param("proxyproto_app:asgi", ("--http", "uvicorn"), id="asgi-uvicorn-httptools"),
]

REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(family: str, source: str, port: int) -> bytes:
    destination = "10.0.0.1" if family == "TCP4" else "2001:db8::1"
    return f"PROXY {family} {source} {destination} {port} 443\r\n".encode()


def v2(source: str, port: int, *, command: int = 1, tlvs: bytes = b"") -> bytes:
    """A v2 header: PROXY (command 1) over TCP from ``source``, or LOCAL (command 0); TLVs after the addresses."""
    six = ipaddress.ip_address(source).version == 6
    kind, family = (socket.AF_INET6, 0x21) if six else (socket.AF_INET, 0x11)
    destination = "2001:db8::1" if six else "10.0.0.1"
    body = (socket.inet_pton(kind, source) + socket.inet_pton(kind, destination) + struct.pack("!HH", port, 443)
            + tlvs)
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def address(url: str) -> tuple[str, int]:
    host, port = url.rpartition("/")[2].rsplit(":", 1)
    return host, int(port)


def exchange(url: str, data: bytes) -> bytes:
    """``data`` on a new connection, then everything the server sends until it closes."""
    with socket.create_connection(address(url), timeout=DEADLINE) as sock:
        sock.sendall(data)
        return read_all(sock)


def answer(url: str, header: bytes) -> dict[str, Any]:
    """The app's answer (the client it was given) to a request behind ``header``."""
    reply = exchange(url, header + REQUEST)
    assert reply.startswith(b"HTTP/1.1 200 "), reply
    result: dict[str, Any] = json.loads(reply.partition(b"\r\n\r\n")[2])
    return result


def refused(url: str, data: bytes) -> None:
    """The connection is closed with no answer at all (no 400: the peer is not speaking HTTP yet)."""
    try:
        reply = exchange(url, data)
    except (BrokenPipeError, ConnectionResetError):  # closed while the rest was still being sent
        reply = b""
    assert reply == b"", data


@pytest.mark.parametrize(("app", "extra"), ENGINES)
def test_a_trusted_proxys_header_names_the_client(run_cli: Callable[..., Cluster], app: str,
                                                    extra: tuple[str, ...]) -> None:
    cluster = start(run_cli, app, "--workers", "1", "--proxy-protocol", *extra)
    url = cluster.wait_ready()
    assert answer(url, v1("TCP4", "203.0.113.7", 4711)) == {"addr": "203.0.113.7", "port": 4711, "scheme": "http"}
    seen = answer(url, v1("TCP6", "2001:db8::7", 5555))
    assert (seen["addr"], seen["port"]) == ("2001:db8::7", 5555)
    seen = answer(url, v2("198.51.100.9", 61000))
    assert (seen["addr"], seen["port"]) == ("198.51.100.9", 61000)
    # TLVs after the addresses (AWS NLB sends its VPC endpoint id in one) are skipped.
    seen = answer(url, v2("2001:db8::9", 1, tlvs=b"\xea\x00\x05\x01vpce"))
    assert (seen["addr"], seen["port"]) == ("2001:db8::9", 1)
    # v1 UNKNOWN and v2 LOCAL (a proxy's own health check): the peer's address stays.
    assert answer(url, b"PROXY UNKNOWN\r\n")["addr"] == "127.0.0.1"
    assert answer(url, v2("192.0.2.1", 80, command=0))["addr"] == "127.0.0.1"
    # A header split over several sends is read as it comes.
    with socket.create_connection(address(url), timeout=DEADLINE) as sock:
        header = v2("192.0.2.44", 4444)
        for piece in (header[:5], header[5:14], header[14:20], header[20:] + REQUEST):
            sock.sendall(piece)
        reply = read_all(sock)
    assert json.loads(reply.partition(b"\r\n\r\n")[2])["addr"] == "192.0.2.44"
    # Keep-alive: the header once, then requests on the same connection all have the client it named.
    with socket.create_connection(address(url), timeout=DEADLINE) as sock:
        sock.sendall(v1("TCP4", "192.0.2.77", 7777) + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + REQUEST)
        replies = read_all(sock)
    assert replies.count(b'"addr": "192.0.2.77"') == 2, replies
    assert "Traceback" not in cluster.output()


BAD = [
    pytest.param(REQUEST, id="no-header"),
    pytest.param(b"PROXY TCP4 203.0.113.7 10.0.0.1 4711\r\n" + REQUEST, id="v1-missing-port"),
    pytest.param(b"PROXY TCP4 2001:db8::7 10.0.0.1 4711 443\r\n" + REQUEST, id="v1-wrong-family"),
    pytest.param(b"PROXY TCP4 203.0.113.7 10.0.0.1 99999 443\r\n" + REQUEST, id="v1-bad-port"),
    pytest.param(b"PROXY TCP4 203.0.113.7  10.0.0.1 4711 443\r\n" + REQUEST, id="v1-double-space"),
    pytest.param(b"PROXY TCP4 203.0.113.7 10.0.0.1 4711 443\n" + REQUEST, id="v1-bare-lf"),
    pytest.param(b"PROXY UNKNOWN " + b"x" * 120 + b"\r\n" + REQUEST, id="v1-too-long"),
    pytest.param(b"PROXY TCP4 203.0.113.7 10.0.0.1", id="v1-truncated"),
    pytest.param(V2_SIGNATURE[:-1] + b"X" + v2("192.0.2.1", 80)[12:] + REQUEST, id="v2-bad-signature"),
    pytest.param(V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12) + REQUEST, id="v2-bad-version"),
    pytest.param(V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4) + REQUEST, id="v2-short-addresses"),
    pytest.param(V2_SIGNATURE + b"\x21\x41\x00\x0c" + bytes(12) + REQUEST, id="v2-bad-family"),
    pytest.param(V2_SIGNATURE + b"\x21\x11\xff\xff" + bytes(64) + REQUEST, id="v2-too-long"),
    pytest.param(v2("192.0.2.1", 80)[:20], id="v2-truncated"),
]


@pytest.mark.parametrize(("app", "extra"), [ENGINES[0], ENGINES[1], ENGINES[3], ENGINES[4]])
def test_a_bad_header_closes_the_connection_without_an_answer(run_cli: Callable[..., Cluster], app: str,
                                                              extra: tuple[str, ...]) -> None:
    # The truncated headers are closed at the head timeout: 1 s rather than the default 10 takes 18 s off each
    # run of this test (the timeout itself is test_a_header_that_never_completes_is_closed_at_the_head_timeout's).
    cluster = start(run_cli, app, "--workers", "1", "--proxy-protocol", "--timeout-request-head", "1", *extra)
    url = cluster.wait_ready()
    for param in BAD:
        data = param.values[0]
        assert isinstance(data, bytes)
        refused(url, data)
    # The worker goes on serving, and said why (a warning; the rest within seconds at debug level).
    assert answer(url, v1("TCP4", "203.0.113.7", 4711))["addr"] == "203.0.113.7"
    cluster.wait_for_line(r"WARNING closed a connection from 127\.0\.0\.1:\d+: the connection does not begin "
                          r"with a PROXY header \(--proxy-protocol\)")
    assert "Traceback" not in cluster.output()


@pytest.mark.parametrize(("app", "extra"), [ENGINES[0], ENGINES[1], ENGINES[3], ENGINES[4]])
def test_a_header_from_an_untrusted_peer_closes_the_connection(run_cli: Callable[..., Cluster], app: str,
                                                               extra: tuple[str, ...]) -> None:
    cluster = start(run_cli, app, "--workers", "1", "--proxy-protocol", "--forwarded-allow-ips", "10.0.0.0/8",
                    *extra)
    url = cluster.wait_ready()
    refused(url, v1("TCP4", "203.0.113.7", 4711) + REQUEST)
    refused(url, v2("203.0.113.7", 4711) + REQUEST)
    cluster.wait_for_line(r"closed a connection from 127\.0\.0\.1:\d+: a peer not in --forwarded-allow-ips")


@pytest.mark.parametrize(("app", "extra"), [ENGINES[0], ENGINES[3]])
def test_a_header_that_never_completes_is_closed_at_the_head_timeout(run_cli: Callable[..., Cluster], app: str,
                                                                     extra: tuple[str, ...]) -> None:
    cluster = start(run_cli, app, "--workers", "1", "--proxy-protocol", "--timeout-request-head", "1", *extra)
    url = cluster.wait_ready()
    with socket.create_connection(address(url), timeout=DEADLINE) as sock:
        sock.sendall(b"PROXY TCP4 ")  # and nothing more: the server gives up, the client does not
        assert read_all(sock) == b""
    cluster.wait_for_line(r"no complete PROXY header within 1 s")


@pytest.mark.parametrize(("app", "extra"), [ENGINES[0], ENGINES[3]])
def test_a_graceful_stop_waits_for_a_header_being_read(run_cli: Callable[..., Cluster], app: str,
                                                       extra: tuple[str, ...]) -> None:
    """A connection the worker took whose header is still coming is served by the stopping worker, as a request
    in flight is: the worker does not exit under it."""
    cluster = start(run_cli, app, "--workers", "1", "--proxy-protocol", "--log-level", "debug", *extra)
    url = cluster.wait_ready()
    [worker] = cluster.worker_pids()
    with socket.create_connection(address(url), timeout=DEADLINE) as sock:
        sock.sendall(b"PROXY TCP4 203.0.113.7 ")
        wait_until(lambda: connections_held(worker) == 1, "the worker to take the connection")
        cluster.signal(signal.SIGTERM)
        cluster.wait_for_line(r"stopping: draining open connections")
        sock.sendall(b"10.0.0.1 4711 443\r\n" + REQUEST)
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 200 "), reply
    assert json.loads(reply.partition(b"\r\n\r\n")[2])["addr"] == "203.0.113.7"
    assert cluster.wait_exit() == 0


@pytest.mark.parametrize("app", ["proxyproto_app:wsgi", "proxyproto_app:asgi"])
def test_a_proxy_on_a_socket_file_names_the_client(run_cli: Callable[..., Cluster], tmp_path: Path,
                                                   app: str) -> None:
    """HAProxy to a socket file: its peer is trusted as 'unix' (in the default --forwarded-allow-ips)."""
    path = tmp_path / "app.sock"
    cluster = run_cli(app, "--workers", "1", "--bind", f"unix:{path}", "--proxy-protocol", "--policy", "shared",
                      cwd=TEST_APPS)
    cluster.wait_ready()
    for header, client in ((v1("TCP4", "203.0.113.7", 4711), ["203.0.113.7", 4711]),
                           (b"PROXY UNKNOWN\r\n", [None, 0])):  # the peer's: a socket file's has no address
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(DEADLINE)
            sock.connect(str(path))
            sock.sendall(header + REQUEST)
            reply = read_all(sock)
        seen = json.loads(reply.partition(b"\r\n\r\n")[2])
        assert [seen["addr"], seen["port"]] == client, reply


@pytest.mark.parametrize("extra", [(), ("--http", "uvicorn")], ids=["http1", "uvicorn-httptools"])
def test_a_websocket_behind_the_header_has_the_client(run_cli: Callable[..., Cluster], extra: tuple[str, ...]) -> None:
    """The upgraded protocol takes the connection, and the client, over from the HTTP one."""
    cluster = start(run_cli, "proxyproto_app:asgi", "--workers", "1", "--proxy-protocol", *extra)
    url = cluster.wait_ready()
    upgrade = (b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    with socket.create_connection(address(url), timeout=DEADLINE) as sock:
        sock.sendall(v2("2001:db8::42", 4242) + upgrade)
        reply = read_head(sock)
    assert reply.startswith(b"HTTP/1.1 101 "), reply
    assert b"x-client: 2001:db8::42:4242\r\n" in reply.lower(), reply


def test_without_the_option_a_header_is_not_http(run_cli: Callable[..., Cluster]) -> None:
    """Off, nothing reads a header: it is a bad request line (what a proxy misconfigured to send one gets)."""
    cluster = start(run_cli, "proxyproto_app:wsgi", "--workers", "1")
    url = cluster.wait_ready()
    assert exchange(url, v1("TCP4", "203.0.113.7", 4711) + REQUEST).startswith(b"HTTP/1.1 400 ")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed certificate and its key in one PEM file, for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    path = tmp_path_factory.mktemp("proxy-tls") / "server.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path


@pytest.mark.parametrize(("app", "extra"), [ENGINES[0], ENGINES[1], ENGINES[3], ENGINES[4]])
def test_over_tls_the_header_comes_before_the_handshake(run_cli: Callable[..., Cluster], certificate: Path,
                                                        app: str, extra: tuple[str, ...]) -> None:
    cluster = start(run_cli, app, "--workers", "1", "--proxy-protocol", "--ssl-certfile", str(certificate), *extra)
    url = cluster.wait_ready()
    assert url.startswith("https://"), url
    context = ssl.create_default_context(cafile=str(certificate))
    for header, client in ((v1("TCP6", "2001:db8::7", 5555), ("2001:db8::7", 5555)),
                           (v2("203.0.113.8", 4712), ("203.0.113.8", 4712))):
        with socket.create_connection(address(url), timeout=DEADLINE) as raw:
            raw.sendall(header)
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                sock.sendall(REQUEST)
                reply = read_all(sock)
        assert reply.startswith(b"HTTP/1.1 200 "), reply
        seen = json.loads(reply.partition(b"\r\n\r\n")[2])
        assert (seen["addr"], seen["port"], seen["scheme"]) == (*client, "https")
    # A handshake with no header first is refused like any connection without one.
    with socket.create_connection(address(url), timeout=DEADLINE) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
            context.wrap_socket(raw, server_hostname="127.0.0.1")
    assert "Traceback" not in cluster.output()
