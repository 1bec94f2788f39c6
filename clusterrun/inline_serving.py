"""Serving a WSGI app inline (``--threads 1``) on clusterrun's own engine, on a loop with no asyncio.

The worker's runtime (clusterrun.runtime) decides when to listen, what to adopt and when to drain, as for
uvicorn's stack (clusterrun.serving); the serving is the inline engine's (adapters.wsgi_engine), reached
through adapters' one entry point. A WSGI app has no lifespan, so there is nothing to start or stop.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Any

from .adapters import entry
from .config import Config
from .counters import SharedCounter
from .identity import WorkerInfo
from .protocol import Beat
from .serving import limits


class InlineServer:
    """The WSGI app on the inline engine: ``listen``, ``adopt``, ``drain``."""

    interface = "wsgi"

    def __init__(self, config: Config, info: WorkerInfo, loaded: entry.LoadedApp, closes: SharedCounter,
                 loop: entry.SelectorLoop) -> None:
        self.config = config
        # Under a primary-side policy every closed connection is counted where the primary reads it
        # (clusterrun.counters): least-conn orders by it, and the policies keep each worker within its
        # descriptor table.
        self.engine: Any = entry.inline_engine(
            loop, loaded, info=info, limits=limits(config), keep_alive=config.timeout_keep_alive,
            on_close=closes.add if closes.shared else None, access_log=config.access_log,
        )

    def counts(self) -> Beat:
        """The heartbeat, with what this worker served and holds now."""
        return Beat(self.engine.total_requests, self.engine.open_connections, self.engine.in_flight)

    @property
    def total_requests(self) -> int:
        return int(self.engine.total_requests)

    def listen(self, sockets: Sequence[socket.socket]) -> None:
        for sock in sockets:
            self.engine.listen(sock)

    def adopt(self, sock: socket.socket) -> None:
        self.engine.adopt(sock)

    def drain(self, linger: bool, done: Callable[[], object]) -> None:
        """Stop listening, finish what is in flight, then call ``done`` (adapters.wsgi_engine: never racing a
        keep-alive client; idle connections linger up to --timeout-keep-alive when other workers take over)."""
        self.engine.drain(self.config.timeout_keep_alive if linger else 0.0, done)
