"""What a trusted reverse proxy says about the request it forwards: the client, the scheme, the host.

A proxy in front of the server connects to it itself, so the peer address is the proxy's and the scheme is
the proxy's (plain HTTP) too. The proxy says what the client used in ``Forwarded`` (RFC 7239) or the de facto
``X-Forwarded-For`` / ``X-Forwarded-Proto`` / ``X-Forwarded-Host``. Anybody can send those headers, so they
count only when the peer is trusted (--forwarded-allow-ips), and in a chain of proxies the client is the
nearest address, walking from the right, that is not itself a trusted proxy.

One resolution (``Forwarding.resolve``) for both engines: the inline WSGI engine applies it to its environ,
``ForwardedApp`` to the ASGI scope that uvicorn's stack builds (an ASGI app, or a WSGI app behind the bridge).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ForwardedApp", "Forwarding", "Origin", "apply_to_environ", "apply_to_scope"]

# The header names the resolution reads, as they appear in a WSGI environ and in an ASGI scope.
ENVIRON_KEYS = ("HTTP_FORWARDED", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST")
_SCOPE_NAMES = {b"forwarded": 0, b"x-forwarded-for": 1, b"x-forwarded-proto": 2, b"x-forwarded-host": 3}
_SECURE = {"https": True, "wss": True, "http": False, "ws": False}
_TRUST_CACHE_LIMIT = 1024


@dataclass(frozen=True)
class Origin:
    """What the client used, as the trusted proxy says: each part None where it says nothing."""

    client: tuple[str, int] | None = None
    secure: bool | None = None
    host: str | None = None


class Forwarding:
    """Which peers are trusted proxies, and whether their host counts too (--proxy-host)."""

    def __init__(self, trusted: Sequence[str], *, host: bool = False) -> None:
        # ``trusted``: addresses and networks as --forwarded-allow-ips gives them (checked by config.options),
        # "*" for every peer, "unix" for peers on a Unix socket.
        self.everyone = "*" in trusted
        self.unix = "unix" in trusted or self.everyone
        self.networks = tuple(ipaddress.ip_network(item, strict=False) for item in trusted
                              if item not in ("*", "unix"))
        self.host = host
        self._trusted: dict[str, bool] = {}  # per address text: a peer sends many requests, parsing is not free

    def trusts(self, address: str | None) -> bool:
        """Whether a peer (an IP address's text; None for a Unix socket's peer) is a trusted proxy."""
        if address is None:
            return self.unix
        if self.everyone:
            return True
        known = self._trusted.get(address)
        if known is None:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                known = False  # "unknown", an obfuscated node: never a proxy of ours
            else:
                known = any(ip in network for network in self.networks)
            if len(self._trusted) >= _TRUST_CACHE_LIMIT:
                self._trusted.clear()
            self._trusted[address] = known
        return known

    def resolve(self, values: Sequence[str | None]) -> Origin | None:
        """The origin that the headers ``values`` (in ENVIRON_KEYS' order) give; None when they give nothing.

        The caller has checked that the peer is trusted. ``Forwarded`` wins over the X-Forwarded-* headers.
        """
        forwarded, for_, proto, host = values
        if forwarded:
            return self._from_forwarded(forwarded)
        if not (for_ or proto or (host and self.host)):
            return None
        hops = _split(for_)
        index = self._client_index([_node_host(hop) for hop in hops]) if hops else -1
        scheme = _pick(_split(proto), index, len(hops)).lower()
        forwarded_host = _pick(_split(host), index, len(hops)) if self.host else ""
        return Origin(_node(hops[index]) if hops else None, _SECURE.get(scheme), forwarded_host or None)

    def _from_forwarded(self, header: str) -> Origin | None:
        elements = [_pairs(element) for element in _split(header)]
        elements = [pairs for pairs in elements if pairs]
        if not elements:
            return None
        chosen = elements[self._client_index([_node_host(pairs.get("for", "")) for pairs in elements])]
        client = _node(chosen["for"]) if "for" in chosen else None
        host = chosen.get("host") if self.host else None
        return Origin(client, _SECURE.get(chosen.get("proto", "").lower()), host or None)

    def _client_index(self, hosts: Sequence[str | None]) -> int:
        """Walking from the nearest hop, the first that is not a trusted proxy; the farthest when all are."""
        for index in range(len(hosts) - 1, 0, -1):
            host = hosts[index]
            # A hop named in a header is never a Unix socket's peer: None there is an unknown node.
            if host is None or not self.trusts(host):
                return index
        return 0


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()] if value else []


def _pick(values: list[str], index: int, hops: int) -> str:
    """The value for the chosen hop when the proxies sent one per hop; else the nearest proxy's."""
    if not values:
        return ""
    return values[index] if len(values) == hops and index >= 0 else values[-1]


def _pairs(element: str) -> dict[str, str]:
    """One element of a Forwarded header: ``for=...;proto=...``, values plain or quoted."""
    pairs: dict[str, str] = {}
    for pair in element.split(";"):
        name, sep, value = pair.partition("=")
        if sep:
            pairs[name.strip().lower()] = value.strip().strip('"')
    return pairs


def _node_host(node: str) -> str | None:
    """The address in a node (``192.0.2.1``, ``192.0.2.1:80``, ``[2001:db8::1]:80``); None when it names none."""
    if node.startswith("["):
        return node[1:].partition("]")[0] or None
    if node.count(":") == 1:
        node = node.partition(":")[0]
    return node if node and node != "unknown" and not node.startswith("_") else None


def _node(node: str) -> tuple[str, int] | None:
    host = _node_host(node)
    if host is None:
        return None
    tail = node.rpartition("]")[2] if node.startswith("[") else (node.partition(":")[2] if node.count(":") == 1
                                                                  else "")
    port = tail.lstrip(":")
    return host, int(port) if port.isdigit() else 0


class ForwardedApp:
    """An ASGI app behind a trusted proxy: ``client``, ``scheme`` (and the host, with --proxy-host) of each
    HTTP and WebSocket scope are the client's, as the proxy says."""

    def __init__(self, app: Any, forwarding: Forwarding) -> None:
        self.app = app
        self.forwarding = forwarding

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind in ("http", "websocket"):
            client = scope.get("client")
            if self.forwarding.trusts(client[0] if client else None):
                apply_to_scope(scope, self.forwarding)
        await self.app(scope, receive, send)


def apply_to_scope(scope: Any, forwarding: Forwarding) -> None:
    values: list[str | None] = [None, None, None, None]
    headers: Iterable[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        slot = _SCOPE_NAMES.get(name)
        if slot is not None:
            text = value.decode("latin-1")
            values[slot] = text if values[slot] is None else f"{values[slot]}, {text}"
    origin = forwarding.resolve(values)
    if origin is None:
        return
    if origin.client is not None:
        scope["client"] = origin.client
    if origin.secure is not None:
        plain = "ws" if scope["type"] == "websocket" else "http"
        scope["scheme"] = plain + "s" if origin.secure else plain
    if origin.host is not None:
        others = [(name, value) for name, value in scope["headers"] if name != b"host"]
        scope["headers"] = [(b"host", origin.host.encode("latin-1")), *others]


def apply_to_environ(environ: dict[str, Any], forwarding: Forwarding) -> Origin | None:
    """The same for a WSGI environ: REMOTE_ADDR and REMOTE_PORT, wsgi.url_scheme, HTTP_HOST; the origin applied."""
    origin = forwarding.resolve([environ.get(key) for key in ENVIRON_KEYS])
    if origin is None:
        return None
    if origin.client is not None:
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = origin.client[0], str(origin.client[1])
    if origin.secure is not None:
        environ["wsgi.url_scheme"] = "https" if origin.secure else "http"
    if origin.host is not None:
        environ["HTTP_HOST"] = origin.host
    return origin
