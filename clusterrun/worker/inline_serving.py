"""Serving a WSGI app inline (``--threads 1``) on clusterrun's own engine, on a loop with no asyncio.

The worker's runtime (clusterrun.worker.runtime) decides when to listen, what to adopt and when to drain, as for
uvicorn's stack (clusterrun.worker.serving); the serving is the inline engine's (adapters.engine.server), reached
through adapters' one entry point. A WSGI app has no lifespan, so there is nothing to start or stop.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any

from clusterrun.accesslog import AccessLog, Headers
from clusterrun.adapters import entry
from clusterrun.config.options import Config
from clusterrun.identity import WorkerInfo
from clusterrun.wire.counters import SharedCounter
from clusterrun.wire.loads import AcceptBalance
from clusterrun.wire.pages import WorkerPages
from clusterrun.wire.protocol import Beat
from clusterrun.wire.requeststats import RequestStats
from clusterrun.worker.settings import forwarding, limits, proxy_protocol, response_headers, static_files


class InlineServer:
    """The WSGI app on the inline engine: ``listen``, ``adopt``, ``drain``."""

    interface = "wsgi"

    def __init__(self, config: Config, info: WorkerInfo, loaded: entry.LoadedApp, pages: WorkerPages,
                 loop: entry.SelectorLoop, ssl_context: ssl.SSLContext | None = None) -> None:
        self.config = config
        self.stats = RequestStats() if config.metrics is not None else None
        access = AccessLog(config.access_log_format, info) if config.access_log else None
        # Under a primary-side policy every closed connection is counted where the primary reads it
        # (clusterrun.wire.counters): least-conn orders by it, and the policies keep each worker within its
        # descriptor table.
        settings = entry.EngineSettings(
            limits=limits(config), keep_alive=config.timeout_keep_alive, headers=response_headers(config),
            forwarding=forwarding(config), proxy_protocol=proxy_protocol(config), root_path=config.root_path,
            ssl_context=ssl_context,
            extra_environ={"clusterrun.worker": info},
            on_close=pages.closes.add if pages.closes.shared else None,
            on_response=_observer(self.stats, access) if self.stats is not None or access is not None else None,
            # --request-timeout: the engine stamps each stretch of app code where the primary reads it.
            request_clock=pages.request_clock if pages.request_clock.enabled else None,
            h2_max_streams=config.h2_max_concurrent_streams,
        )
        self.engine: Any = entry.inline_engine(loop, loaded, settings)
        files = static_files(config)
        if files is not None:  # in front of the app, inside the engine: the access log and --metrics count it
            self.engine.app = entry.static_wsgi(self.engine.app, files)
        self.engine.app = _marking_the_first_request(self.engine, pages.first_request)
        # --policy balanced: the engine counts what it accepts and closes where every worker reads it, and stops
        # watching its listeners while this worker holds more than its share (clusterrun.wire.loads).
        self.balance = None if pages.load is None else AcceptBalance(pages.load, self.engine, loop.call_later)
        if self.balance is not None:
            self.engine.balance = self.balance
            self.engine.on_close = self.balance.closed

    def counts(self) -> Beat:
        """The heartbeat, with what this worker served and holds now."""
        engine, stats = self.engine, self.stats
        in_flight = engine.take_in_flight()  # the most since the last heartbeat: the loop turns between requests
        if stats is None:
            return Beat(engine.total_requests, engine.open_connections, in_flight)
        return Beat(engine.total_requests, engine.open_connections, in_flight,
                    tuple(stats.by_class), tuple(stats.buckets), stats.seconds)

    @property
    def total_requests(self) -> int:
        return int(self.engine.total_requests)

    def stuck_threads(self) -> int:
        """None here: an app stuck past --request-timeout gets its worker killed by the primary."""
        return 0

    def listen(self, sockets: Sequence[socket.socket]) -> None:
        for sock in sockets:
            self.engine.listen(sock)
        if self.balance is not None:
            self.balance.start()

    def adopt(self, sock: socket.socket) -> None:
        self.engine.adopt(sock)

    def drain(self, linger: bool, done: Callable[[], object]) -> None:
        """Stop listening, finish what is in flight, then call ``done`` (adapters.engine.server: never racing a
        keep-alive client; idle connections linger up to --timeout-keep-alive when other workers take over)."""
        if self.balance is not None:
            self.balance.stop()  # accepting no more: the others must not wait for this worker
        self.engine.drain(self.config.timeout_keep_alive if linger else 0.0, done)


def _marking_the_first_request(engine: Any, mark: SharedCounter) -> Callable[..., Any]:
    """The engine's app for its first request: it marks the worker's shared page, then hands the engine the app.

    The engine calls ``engine.app`` for each request (on the loop and in upload threads alike), so from the
    second request on it calls the app itself: the mark costs nothing per request.
    """
    app = engine.app

    def first(environ: Any, start_response: Any) -> Any:
        mark.add()  # before the app runs: a worker that dies in its first request has taken one
        engine.app = app
        return app(environ, start_response)

    return first


def _observer(stats: RequestStats | None, access: AccessLog | None) -> Callable[..., None]:
    """What the engine calls after each response: --metrics counts it, the access log writes its line."""

    def served(client: str, method: str, path: str, query: str, http_version: str, status: int, size: int,
               seconds: float, referer: str, user_agent: str, request_headers: Headers,
               response_headers: Headers) -> None:
        if stats is not None:
            stats.record(status, seconds)
        if access is not None:
            access.log(client, method, path, query, http_version, status, size, seconds, referer, user_agent,
                       request_headers, response_headers)

    return served
