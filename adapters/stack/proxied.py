"""--proxy-protocol on the stack: the client a PROXY header named, shown to whichever protocol serves the
connection (clusterrun's http1, uvicorn's httptools or h11, and the WebSocket protocol they upgrade to).

Every one of them takes the client from its transport (``get_extra_info("peername")``, uvicorn's from the
``socket`` first), so the protocol is handed a view of the transport that answers with the header's address and
passes everything else through: no protocol's internals are touched. Made only with --proxy-protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["naming_client"]


class _ClientView:
    """A transport whose peer is ``client``; every other attribute is the transport's."""

    def __init__(self, transport: asyncio.BaseTransport, client: tuple[str, int]) -> None:
        self._transport, self._client = transport, client

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._client
        if name == "socket":
            return None  # uvicorn asks the socket for its peer first: it must ask for the peername
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Naming(asyncio.Protocol):
    """Stands in for the served protocol until its transport is made, then hands it the view and steps aside."""

    def __init__(self, protocol: asyncio.BaseProtocol, client: tuple[str, int]) -> None:
        self.protocol, self.client = protocol, client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # From now on the transport calls the served protocol itself: this one is out of every later call.
        transport.set_protocol(self.protocol)
        self.protocol.connection_made(_ClientView(transport, self.client))  # type: ignore[arg-type]


def naming_client(factory: Callable[[], asyncio.BaseProtocol], client: Any) -> Callable[[], asyncio.BaseProtocol]:
    """``factory`` for one connection whose client is ``client`` (the PROXY header's); as it is when the header
    named none (a tuple is an IP peer; anything else, a Unix socket's, is kept)."""
    if not isinstance(client, tuple):
        return factory
    return lambda: _Naming(factory(), client)
