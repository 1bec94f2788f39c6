"""The PROXY protocol (haproxy's proxy-protocol.txt, v1 text and v2 binary): --proxy-protocol.

A TCP proxy (AWS NLB, HAProxy in TCP mode with ``send-proxy``) cannot add headers to the HTTP it does not read,
so it sends one header at the very start of the connection, before the client's first byte (and before a TLS
handshake), naming the client's address. With --proxy-protocol every connection must begin with one, from a
peer in --forwarded-allow-ips; anything else (an untrusted peer, no header, a malformed, truncated or too long
one, or none within the head timeout) closes the connection without an answer: the peer is not speaking HTTP yet.

``HeaderReader`` reads the header off the raw socket on either engine's loop (both have add_reader,
remove_reader and call_later), consuming exactly the header's bytes: what follows stays in the socket for the
engine, its TLS or uvicorn's transport. Engine-neutral: imports only the standard library and adapters.proxy.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from clusterrun.adapters.proxy import Forwarding

__all__ = ["HeaderError", "HeaderReader", "ProxyProtocol", "parse"]

logger = logging.getLogger("clusterrun")

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the spec's bound, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16
# v2's own length field allows 64 KiB; the addresses take at most 216 bytes (AF_UNIX), the rest is TLVs that
# nothing here reads. haproxy itself refuses headers past a few KiB: so does this.
V2_MAX_LENGTH = 2048
_V2_ADDRESSES = {0x11: (socket.AF_INET, 4), 0x12: (socket.AF_INET, 4), 0x21: (socket.AF_INET6, 16),
                 0x22: (socket.AF_INET6, 16)}
_V1_FAMILIES = {b"TCP4": 4, b"TCP6": 6}
_WARN_EVERY = 10.0  # seconds between warnings about refused headers: a scan must not flood the log

Address = tuple[str, int]


class HeaderError(ValueError):
    """A PROXY header that is malformed or too long: the connection is closed."""


def parse(data: bytes) -> tuple[int, Address | None] | None:
    """The header at the start of ``data``: its length and the client's address (None: keep the peer's, for v1
    UNKNOWN, v2 LOCAL and v2's UNSPEC and AF_UNIX families); None when more bytes are needed."""
    if data[:1] == b"P":
        return _parse_v1(data)
    if data[:1] == b"\r":
        return _parse_v2(data)
    if data:
        raise HeaderError("the connection does not begin with a PROXY header")
    return None


def _parse_v1(data: bytes) -> tuple[int, Address | None] | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if not V1_PREFIX.startswith(data[:6]) or len(data) >= V1_MAX or b"\n" in data:
            raise HeaderError("a PROXY v1 header longer than 107 bytes, or without CRLF")
        return None
    line = data[:end]
    if not line.startswith(V1_PREFIX):
        raise HeaderError("not a PROXY v1 header")
    parts = line[len(V1_PREFIX):].split(b" ")
    if parts[0] == b"UNKNOWN":
        return end + 2, None  # the rest of the line is to be ignored (the spec)
    version = _V1_FAMILIES.get(parts[0])
    if version is None or len(parts) != 5:
        raise HeaderError(f"a PROXY v1 header with a bad family or field count: {line[:64]!r}")
    try:
        source = ipaddress.ip_address(parts[1].decode("ascii"))
        destination = ipaddress.ip_address(parts[2].decode("ascii"))
        ports = [_port(part) for part in parts[3:]]
    except (ValueError, UnicodeDecodeError) as exc:
        raise HeaderError(f"a PROXY v1 header with a bad address or port: {line[:64]!r}") from exc
    if source.version != version or destination.version != version:
        raise HeaderError(f"a PROXY v1 header whose addresses are not {parts[0].decode()}: {line[:64]!r}")
    return end + 2, (str(source), ports[0])


def _port(text: bytes) -> int:
    if not text.isdigit() or (len(text) > 1 and text[:1] == b"0") or int(text) > 65535:
        raise ValueError(f"bad port {text!r}")
    return int(text)


def _parse_v2(data: bytes) -> tuple[int, Address | None] | None:
    if not V2_SIGNATURE.startswith(data[:12]):
        raise HeaderError("not a PROXY v2 signature")
    if len(data) < V2_FIXED:
        return None
    version_command, family = data[12], data[13]
    length = int.from_bytes(data[14:16], "big")
    if version_command >> 4 != 2 or version_command & 0xF > 1:
        raise HeaderError(f"a PROXY v2 header with version/command byte {version_command:#x}")
    if length > V2_MAX_LENGTH:
        raise HeaderError(f"a PROXY v2 header of {length} bytes (at most {V2_MAX_LENGTH} taken)")
    total = V2_FIXED + length
    if len(data) < total:
        return None
    if version_command & 0xF == 0:  # LOCAL: the proxy's own connection (a health check): the peer is the client
        return total, None
    address = _V2_ADDRESSES.get(family)
    if address is None:
        if family in (0x00, 0x31, 0x32):  # UNSPEC, or a Unix socket's client: no IP address to name
            return total, None
        raise HeaderError(f"a PROXY v2 header with address family byte {family:#x}")
    kind, size = address
    if length < 2 * size + 4:
        raise HeaderError(f"a PROXY v2 header too short for its addresses ({length} bytes)")
    source = socket.inet_ntop(kind, data[V2_FIXED:V2_FIXED + size])
    port = int.from_bytes(data[V2_FIXED + 2 * size:V2_FIXED + 2 * size + 2], "big")
    return total, (source, port)  # TLVs after the addresses: skipped


class ProxyProtocol:
    """--proxy-protocol's settings: whose headers count (--forwarded-allow-ips) and how long one may take."""

    def __init__(self, trusted: Forwarding, timeout: float) -> None:
        self.trusted = trusted
        self.timeout = timeout
        self._warned = 0.0
        self.refused = 0  # since the last warning

    def refuse(self, peer: Any, why: str) -> None:
        """Log a refused header: a warning at most every few seconds (counting the rest), else at debug."""
        self.refused += 1
        now = time.monotonic()
        source = f" from {peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""
        if now - self._warned >= _WARN_EVERY:
            more = f" ({self.refused - 1} more refused since the last warning)" if self.refused > 1 else ""
            logger.warning("closed a connection%s: %s (--proxy-protocol)%s", source, why, more)
            self._warned, self.refused = now, 0
        else:
            logger.debug("closed a connection%s: %s (--proxy-protocol)", source, why)


class HeaderReader:
    """Reads one connection's PROXY header on ``loop``, then calls ``done(sock, client)`` (the peer's own address
    for v1 UNKNOWN and v2 LOCAL) or, refused, closes the socket and calls ``failed()``.

    Peeks at what arrived, then takes from the socket only bytes that belong to the header: the bytes after it
    are never read here. A header that comes in pieces has its pieces taken as they come (so the socket does
    not stay readable and wake the loop in a circle). The socket's blocking mode is left as it is: each read
    says MSG_DONTWAIT."""

    def __init__(self, loop: Any, sock: Any, peer: Any, settings: ProxyProtocol,
                 done: Callable[[Any, Any], object], failed: Callable[[], object]) -> None:
        self.loop, self.sock, self.peer, self.settings = loop, sock, peer, settings
        self.done, self.failed = done, failed
        self.taken = b""
        self.timer: Any = None

    def start(self) -> None:
        peer = self.peer
        if peer is None:
            try:
                peer = self.peer = self.sock.getpeername()
            except OSError:
                self._close("the client left")
                return
        if not self.settings.trusted.trusts(peer[0] if isinstance(peer, tuple) else None):
            self._close("a peer not in --forwarded-allow-ips")
            return
        self.timer = self.loop.call_later(self.settings.timeout, self._late)
        self.loop.add_reader(self.sock.fileno(), self._readable)
        self._readable()  # it often came with the connection

    def _readable(self) -> None:
        if self.sock.fileno() < 0:
            return
        try:
            seen = self.sock.recv(V1_MAX + V2_FIXED + V2_MAX_LENGTH, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._stop()
            self._close(f"the client left ({exc})")
            return
        if not seen:
            self._stop()
            self._close("the connection closed before its PROXY header was complete")
            return
        try:
            header = parse(self.taken + seen)
        except HeaderError as exc:
            self._stop()
            self._close(str(exc))
            return
        try:
            if header is None:
                # All of it is header: take it, and wait for the rest.
                self.taken += self.sock.recv(len(seen), socket.MSG_DONTWAIT)
                return
            length, client = header
            self.sock.recv(length - len(self.taken), socket.MSG_DONTWAIT)  # exactly the header: the rest is HTTP's
        except OSError as exc:
            self._stop()
            self._close(f"the client left ({exc})")
            return
        self._stop()
        self.done(self.sock, client if client is not None else self.peer)

    def _late(self) -> None:
        self.timer = None
        self._stop()
        self._close(f"no complete PROXY header within {self.settings.timeout:g} s")

    def _stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())

    def _close(self, why: str) -> None:
        self.settings.refuse(self.peer, why)
        self.sock.close()
        self.failed()
