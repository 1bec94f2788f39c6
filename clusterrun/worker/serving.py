"""Serving one worker's app on uvicorn's HTTP protocol stack, on an asyncio loop.

Imported only by the worker's runtime once it chose the stack (clusterrun.worker.runtime.serve): this module is
where a worker loads asyncio and, through the stack's door (clusterrun.adapters.stack.serving), uvicorn.

The worker's runtime (clusterrun.worker.runtime) decides when to start, what to adopt and when to drain; this
module does the serving: the app's lifespan, the listeners, connections the primary passed, the Date
header, and a drain that never races a keep-alive client. It reaches the app through adapters' entry point
(clusterrun.adapters.entry) and uvicorn's protocols through the stack's door, the only other way into adapters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Coroutine, Sequence
from email.utils import formatdate
from typing import Any

from clusterrun.accesslog import AccessLog
from clusterrun.adapters import entry
from clusterrun.adapters.stack import serving as uvicorn_stack
from clusterrun.config.options import Config
from clusterrun.errors import BootError
from clusterrun.identity import WorkerInfo
from clusterrun.wire.counters import SharedCounter
from clusterrun.wire.loads import AcceptBalance, LoadCell
from clusterrun.wire.pages import WorkerPages
from clusterrun.wire.protocol import Beat
from clusterrun.wire.requeststats import RequestStats
from clusterrun.worker.settings import forwarding, limits, proxy_protocol, response_headers, static_files

logger = logging.getLogger("clusterrun")

_DRAIN_POLL = 0.02
def recording(stats: RequestStats | None, access: AccessLog | None) -> uvicorn_stack.Done:
    """What the observer (adapters.stack.observing) tells of each HTTP response: recorded in ``stats`` (--metrics)
    and written to the access log."""

    def record(scope: Any, status: int, size: int, seconds: float, sent: Any) -> None:
        if stats is not None:
            stats.record(status, seconds)
        if access is not None:
            _log_access(access, scope, status, size, seconds, sent)

    return record


def marking_the_first_request(app: Any, mark: SharedCounter) -> Any:
    """The ASGI app, marking the worker's shared page when it takes its first request (HTTP or WebSocket).

    A plain function that returns the app's coroutine, which uvicorn awaits: no coroutine frame of its own, so
    what it costs per request is one call and one test.
    """
    taken = False

    def marking(scope: Any, receive: Any, send: Any) -> Any:
        nonlocal taken
        if not taken:
            taken = True
            mark.add()  # before the app runs: a worker that dies in its first request has taken one
        return app(scope, receive, send)

    return marking


def _log_access(access: AccessLog, scope: Any, status: int, size: int, seconds: float, sent: Any) -> None:
    """One access line; ``sent``: the response headers the app gave (ASGI allows any iterable of pairs)."""
    client = scope.get("client")
    received = scope.get("headers") or ()
    headers = dict(received)
    access.log(f"{client[0]}:{client[1]}" if client else "-", scope["method"], scope["path"],
               scope["query_string"].decode("latin-1"), scope["http_version"], status, size, seconds,
               headers.get(b"referer", b"").decode("latin-1"), headers.get(b"user-agent", b"").decode("latin-1"),
               received, sent)


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """The worker's asyncio loop for --loop ``kind``: uvloop where asked for (auto: where installed)."""
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise BootError("--loop uvloop needs uvloop: pip install uvloop") from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(loop: asyncio.AbstractEventLoop, main: Coroutine[Any, Any, int]) -> int:
    """Run the worker's ``main`` on ``loop``, made the thread's event loop; its exit code."""
    asyncio.set_event_loop(loop)
    return loop.run_until_complete(main)


def close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Finish the loop's async generators, then close it."""
    with contextlib.suppress(Exception):
        loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def websocket_limits(config: Config) -> uvicorn_stack.WebSocketLimits:
    """--ws-max-size, --ws-ping-interval, --ws-ping-timeout (uvicorn's WebSocket protocols enforce them)."""
    return uvicorn_stack.WebSocketLimits(max_size=config.ws_max_size, ping_interval=config.ws_ping_interval,
                                 ping_timeout=config.ws_ping_timeout)


def _layered(config: Config, info: WorkerInfo, loaded: entry.LoadedApp, pages: WorkerPages,
             stats: RequestStats | None) -> tuple[Any, Any]:
    """The app as an ASGI app (a WSGI app through the bridge: returned first, it counts stuck threads), then
    with its layers, from the inside out: the request deadline, static files, the access log and --metrics
    (which count static answers too), and the proxy headers outermost (every layer sees the client they name)."""
    stamp = pages.request_clock if pages.request_clock.enabled else None
    bridged = app = uvicorn_stack.as_asgi(loaded, threads=config.threads, info=info, body_timeout=config.body_timeout,
                                          request_clock=stamp)
    if config.request_timeout:  # each request cancelled at its deadline, 504 (adapters.deadline)
        app = uvicorn_stack.with_deadline(app, config.request_timeout)
    files = static_files(config)
    if files is not None:
        app = entry.static_asgi(app, files)
    access = AccessLog(config.access_log_format, info) if config.access_log else None
    if stats is not None or access is not None:
        app = uvicorn_stack.observed(app, recording(stats, access))
    proxies = forwarding(config)
    if proxies is not None:
        app = entry.ForwardedApp(app, proxies)
    return bridged, app


class StackServer:
    """The app on uvicorn's protocols: ``start`` (lifespan), ``listen``, ``adopt``, ``drain``, ``stop``."""

    def __init__(self, config: Config, info: WorkerInfo, loaded: entry.LoadedApp, pages: WorkerPages,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.config = config
        # With TLS, asyncio's (or uvloop's) transports do the handshake, on listeners and passed connections
        # alike, and uvicorn's protocols then report the scheme https; a handshake not done within the head
        # timeout is dropped, like a request head that does not come.
        self._tls: dict[str, Any] = {} if ssl_context is None else {
            "ssl": ssl_context, "ssl_handshake_timeout": config.timeout_request_head}
        self.info = info
        self.interface = loaded.interface
        self.stats = RequestStats() if config.metrics is not None else None
        self.bridged, self.app = _layered(config, info, loaded, pages, self.stats)
        self.date_header = not config.no_date_header
        # Only the requests' app marks the first request: the lifespan below runs the app unmarked.
        served = marking_the_first_request(self.app, pages.first_request)
        self.stack = uvicorn_stack.http_stack(
            served, http=config.http, access_log=False, headers=response_headers(config),
            timeout_keep_alive=int(config.timeout_keep_alive), backlog=config.backlog, root_path=config.root_path,
            ws=websocket_limits(config),
            # --body-timeout: on an ASGI app's body here; a WSGI app's input (the --threads bridge) keeps its own.
            body_timeout=config.body_timeout if loaded.interface == "asgi" else None, send_timeout=config.body_timeout,
            h2_max_streams=config.h2_max_concurrent_streams, h2_max_fields=config.limit_request_fields,
        )
        if ssl_context is not None and self.stack.http2:  # ALPN offers h2 first; a client without it gets HTTP/1.1
            ssl_context.set_alpn_protocols(["h2", "http/1.1"])
        self.lifespan = uvicorn_stack.Lifespan(self.app, config.lifespan if loaded.interface == "asgi" else "off")
        # Under a primary-side policy every closed connection is counted where the primary reads it
        # (clusterrun.wire.counters): least-conn orders by it, and every such policy keeps a worker's open
        # connections within its descriptor table.
        self.closes = pages.closes
        self._load: LoadCell | None = pages.load  # --policy balanced: this worker's cell
        self.balance: AcceptBalance | None = None
        self._listening: list[socket.socket] = []  # balanced, --proxy-protocol: the listeners it accepts on itself
        self._servers: list[asyncio.Server] = []
        self._adopting: set[_Adoption] = set()
        self._protocol_factory: Any = None
        # --proxy-protocol: each connection's PROXY header is read off its socket first, so this worker accepts
        # on its listeners itself (as under balanced) and serves every connection as a passed one.
        self.proxy_protocol = proxy_protocol(config)
        self._reading_headers = 0  # connections taken whose PROXY header is still coming: a drain waits for them

    @property
    def total_requests(self) -> int:
        return self.stack.total_requests

    def stuck_threads(self) -> int:
        """Threads still running a WSGI app's code for a request given up at --request-timeout."""
        return uvicorn_stack.stuck_threads(self.bridged)

    def counts(self) -> Beat:
        """The heartbeat, with what this worker served and holds now."""
        stats = self.stats
        if stats is None:
            return Beat(self.stack.total_requests, self.stack.connection_count, self.stack.in_flight)
        return Beat(self.stack.total_requests, self.stack.connection_count, self.stack.in_flight,
                    tuple(stats.by_class), tuple(stats.buckets), stats.seconds)

    async def start(self) -> None:
        """Run the app's lifespan startup; a failure is a BootError."""
        await self.lifespan.startup()

    async def listen(self, sockets: Sequence[socket.socket]) -> None:
        """Serve on ``sockets`` (none under a primary-side policy: connections then come through ``adopt``)."""
        loop = asyncio.get_running_loop()
        app_state = self.lifespan.state
        app_state["clusterrun.worker"] = self.info
        request_limits = limits(self.config)
        # One per worker, with --limit-concurrency; without it there is nothing to count.
        admission = entry.Admission(request_limits.concurrency) if request_limits.concurrency else None
        clock = uvicorn_stack.HeadClock()  # one sweep a second checks every connection's head clock
        clock.start(loop)
        self.stack.guard_requests(lambda conn: uvicorn_stack.Guard(conn, request_limits, clock, admission),
                                  head_limit=request_limits.head, upgraded_close=admission is not None,
                                  limits=request_limits, admission=admission)
        if self.closes.shared:
            self.stack.notify_close(self.closes.add)
        if self._load is not None:  # before the protocols are made: they report each close from then on
            self.balance = AcceptBalance(self._load, self, loop.call_later)
            self.stack.notify_close(self.balance.closed)
        self._protocol_factory = self.stack.protocol_factory(loop, app_state)
        self._tick(self.stack.encoded_headers)
        if self.balance is not None or self.proxy_protocol is not None:
            self._listen_itself(sockets)
            return
        self._servers = [
            await loop.create_server(self._protocol_factory, sock=sock, backlog=self.config.backlog, **self._tls)
            for sock in sockets
        ]

    def _listen_itself(self, sockets: Sequence[socket.socket]) -> None:
        """--policy balanced (and --proxy-protocol): accept here, from a reader on each listener, and serve each
        connection as a passed one. An asyncio server accepts up to its backlog per wake-up and has no way to stop
        accepting for a while; a reader stops and starts again with the loop's remove_reader/add_reader, on
        asyncio's loops and uvloop's alike (clusterrun.wire.loads decides when)."""
        for sock in sockets:
            sock.setblocking(False)
            self._listening.append(sock)
        self.resume_accepting()
        if self.balance is not None:
            self.balance.start()

    def pause_accepting(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self._listening:
            loop.remove_reader(sock.fileno())

    def resume_accepting(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self._listening:
            loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, listener: socket.socket) -> None:
        balance = self.balance
        kind = (listener.family, listener.type, listener.proto)
        for _ in range(entry.ACCEPT_BATCH):
            taken = entry.accept(listener, self._rest, listener)
            if taken is None:
                return
            if balance is not None:
                balance.opened()
            self._adopt(entry.AcceptedSocket(*kind, taken[0]), taken[1])
            if balance is not None:
                balance.held()
                if balance.paused:
                    return

    def _rest(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(listener.fileno())
        loop.call_later(entry.ACCEPT_REST, self._rested, listener)

    def _rested(self, listener: socket.socket) -> None:
        if listener in self._listening and not (self.balance is not None and self.balance.paused):
            asyncio.get_running_loop().add_reader(listener.fileno(), self._accept, listener)

    async def stop(self) -> None:
        """Run the app's lifespan shutdown."""
        await self.lifespan.shutdown()

    def adopt(self, sock: socket.socket) -> None:
        """Serve a connection the primary accepted, as if this worker's own listener had.

        Nothing is set on the socket here: uvloop's and asyncio's transports both make it non-blocking and
        set TCP_NODELAY themselves, as for their own accepts.
        """
        self._adopt(sock, None)

    def _adopt(self, sock: socket.socket, peer: Any) -> None:
        loop = asyncio.get_running_loop()
        if self.proxy_protocol is not None:  # the PROXY header first, off the raw socket (before TLS)
            self._reading_headers += 1
            entry.HeaderReader(loop, sock, peer, self.proxy_protocol, self._adopt_named, self._refused).start()
            return
        _Adoption(self, sock, loop.connect_accepted_socket(self._protocol_factory, sock, **self._tls), loop).step()

    def _adopt_named(self, sock: socket.socket, client: Any) -> None:
        """A connection whose PROXY header named ``client``: served as if it came from there."""
        self._reading_headers -= 1
        loop = asyncio.get_running_loop()
        factory = uvicorn_stack.naming_client(self._protocol_factory, client)
        _Adoption(self, sock, loop.connect_accepted_socket(factory, sock, **self._tls), loop).step()

    def _refused(self) -> None:
        """A connection closed for its PROXY header: no protocol saw it, so none counts its close."""
        self._reading_headers -= 1
        self.closes.add()
        if self.balance is not None:
            self.balance.closed()

    def _adopted(self, adoption: _Adoption, exc: BaseException | None) -> None:
        self._adopting.discard(adoption)
        if exc is None:
            return
        if not isinstance(exc, (OSError, asyncio.TimeoutError)):
            raise exc  # a bug, not a client: the loop's exception handler logs it
        # The client left, or its TLS handshake failed or timed out.
        logger.debug("dropping a passed connection: %s", exc)
        adoption.sock.close()
        self.closes.add()  # no protocol saw it, so none counts its close
        if self.balance is not None:
            self.balance.closed()

    async def drain(self, linger: bool) -> None:
        """Stop listening; finish every request in flight; close each connection only where none can race.

        Closing an idle keep-alive connection races the client's next request on it, which then fails.
        So when other workers take over (``linger``), idle connections stay open up to --timeout-keep-alive
        and a request that arrives on one is answered with ``Connection: close``. When the whole server
        stops, idle connections close at once. A request in flight always completes, then its connection
        closes.
        """
        for server in self._servers:
            server.close()
        if self.balance is not None:
            self.balance.stop()  # accepting no more: the others must not wait for this worker
        if self._listening:  # balanced or --proxy-protocol: this worker's own readers on the listeners
            self.pause_accepting()
            for sock in self._listening:
                sock.close()
            self._listening.clear()
        # A connection the listener accepted in the loop turn that brought the stop order is not counted yet:
        # its protocol's connection_made is still scheduled (asyncio and uvloop both defer it), so the first
        # count could find the worker idle and let it exit under that client's request. One poll of the loop
        # runs those callbacks first.
        await asyncio.sleep(_DRAIN_POLL)
        # Passed connections whose PROXY header is still coming (at most --timeout-request-head), or whose
        # transport (and TLS handshake) is still being made.
        while self._adopting or self._reading_headers:
            await asyncio.sleep(_DRAIN_POLL)
        deadline = time.monotonic() + (self.config.timeout_keep_alive if linger else 0.0)
        closing: set[int] = set()
        while self.stack.busy:
            patient = time.monotonic() < deadline
            for connection in self.stack.open_connections():
                if connection.ident not in closing and connection.wrap_app(uvicorn_stack.closing_app):
                    closing.add(connection.ident)
                if connection.idle:
                    if not patient:
                        connection.shutdown()  # closes it now
                elif not (patient and connection.response_started):
                    # In flight: close after the response. Only before its headers go out (they then say
                    # Connection: close), or the client would reuse a connection that closes under it.
                    connection.shutdown()
            await asyncio.sleep(_DRAIN_POLL)

    def _tick(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Once a second, on the event loop: the Date header, which uvicorn's protocols add to every response."""
        loop = asyncio.get_running_loop()
        now = time.time()
        date = [(b"date", formatdate(now, usegmt=True).encode())] if self.date_header else []
        self.stack.set_default_headers([*date, *headers])
        loop.call_at(loop.time() + 1.0 - (now % 1.0), self._tick, headers)


class _Adoption:
    """A passed connection's ``connect_accepted_socket``, driven step by step from the loop's callbacks rather than
    as a task: a task per connection cost about 2-4 us of the 8-12 that building a transport takes on uvloop
    (measured alone, 3,000 sockets). The coroutine only ever waits on futures (the transport's connection_made,
    a TLS handshake), each of which resumes it when done."""

    __slots__ = ("coro", "loop", "server", "sock")

    def __init__(self, server: StackServer, sock: socket.socket, coro: Coroutine[Any, Any, Any],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.server, self.sock, self.coro, self.loop = server, sock, coro, loop

    def step(self, _done: object = None) -> None:
        try:
            waiting = self.coro.send(None)
        except StopIteration:
            self.server._adopted(self, None)
            return
        except BaseException as exc:  # handed to _adopted, which raises again what is not the client's doing
            self.server._adopted(self, exc)
            return
        self.server._adopting.add(self)
        if waiting is None:  # a bare yield (asyncio.sleep(0)): go on at the next turn
            self.loop.call_soon(self.step)
        else:
            waiting.add_done_callback(self.step)
