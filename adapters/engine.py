"""A worker's server: the app on uvicorn's HTTP protocol stack, fed by listeners or by the primary.

uvicorn supplies the HTTP protocols (httptools or h11, websockets), reached only
through adapters.uvicorn_seam; this module owns the rest of a worker's life: load
the app, run its lifespan, serve on the sockets the policy gives (or adopt
connections the primary passes over the channel), tell the primary when it is
ready, and drain on stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from email.utils import formatdate
from typing import Any

from .. import messaging
from ..channel import Channel
from ..config import Config
from ..counters import SharedCounter
from ..errors import EXIT_BOOT, EXIT_OK, BootError, ChannelError
from ..identity import WorkerInfo
from ..protocol import Beat, BootFailed, Broadcast, Connections, Draining, Message, Online, Ready, Recycle, Stop
from ..supervision import heartbeat_interval
from .lifespan import Lifespan
from .limits import Guard, Limits
from .loading import LoadedApp, load_app
from .uvicorn_seam import Stack

logger = logging.getLogger("clusterrun")

_DRAIN_POLL = 0.02
# A worker stopped by SIGTERM waits this long for the primary's stop frame before draining anyway.
_PRIMARY_ANSWER_WAIT = 2.0


def serve(
    config: Config, info: WorkerInfo, channel: Channel, sockets: Sequence[socket.socket], closes: SharedCounter,
    preloaded: LoadedApp | None = None,
) -> int:
    """Load the app (unless the primary preloaded it) and serve it until told to stop; the worker's exit code."""
    channel.send(Online())
    try:
        loaded = preloaded or load_app(
            config.app, app_dir=config.app_dir, factory=config.factory, interface=config.interface
        )
    except BootError as exc:
        channel.send_blocking(BootFailed(str(exc)))
        return EXIT_BOOT
    loop = _new_loop(config.loop)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(WorkerServer(config, info, channel, sockets, closes, loaded).run())
    finally:
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def preimport(config: Config) -> None:
    """Import the engine in the primary before forking: workers start faster and share the pages."""
    from . import wsgi  # noqa: F401

    _stack(config, _NoApp())  # imports the protocol classes
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: F401


class _NoApp:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("placeholder app")


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise BootError("--loop uvloop needs uvloop: pip install 'clusterrun[standard]'") from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _asgi_app(config: Config, info: WorkerInfo, loaded: LoadedApp) -> Any:
    if loaded.interface == "asgi":
        return loaded.app
    from .wsgi import WSGIBridge

    return WSGIBridge(loaded.app, threads=config.threads, extra_environ={"clusterrun.worker": info})


def _stack(config: Config, app: Any) -> Stack:
    http = config.http
    if http == "httptools":
        try:
            import httptools  # noqa: F401
        except ImportError:
            raise BootError("--http httptools needs httptools: pip install 'clusterrun[standard]'") from None
    return Stack(app, http=http, access_log=config.access_log, timeout_keep_alive=int(config.timeout_keep_alive),
                 backlog=config.backlog)


def _rss_bytes() -> int:
    """Resident memory of this process: /proc on Linux, the peak from getrusage elsewhere."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _nofile_limit() -> int | None:
    """This process's soft limit on open descriptors; None where there is none."""
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def connection_room() -> int | None:
    """How many passed connections this worker can hold open with room to spare; None: no limit.

    The primary passes no more than this (less those closed): a connection whose descriptor the kernel cannot
    install here would be lost. An eighth of the table (at least 16) stays free for what the app opens itself.
    """
    limit = _nofile_limit()
    if limit is None:
        return None
    try:
        open_now = len(os.listdir("/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"))
    except OSError:
        open_now = 0
    return max(1, limit - open_now - max(16, limit // 8))


def _closing_app(app: Any) -> Any:
    """The app, with ``Connection: close`` on every response: uvicorn then closes after responding."""

    async def closing(scope: Any, receive: Any, send: Any) -> None:
        async def send_closing(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await app(scope, receive, send_closing)

    return closing


class WorkerServer:
    def __init__(
        self, config: Config, info: WorkerInfo, channel: Channel, sockets: Sequence[socket.socket],
        closes: SharedCounter, loaded: LoadedApp,
    ) -> None:
        self.config = config
        self.info = info
        self.channel = channel
        self.sockets = sockets
        self.loaded = loaded
        self.app = _asgi_app(config, info, loaded)
        self._stopping: asyncio.Event | None = None
        self._adopting: set[asyncio.Task[Any]] = set()
        # Under a primary-side policy every closed connection is counted where the primary reads it
        # (clusterrun.counters): least-conn orders by it, and every such policy keeps a worker's open connections
        # within its descriptor table.
        self.closes = closes  # shared only under a primary-side policy: then every close is counted
        self._dropped_reported = 0.0  # when dropped descriptors were last logged
        # Recycling limits, fixed per worker; the jitter keeps workers from all being replaced at once.
        self._request_limit = config.max_requests + random.randint(0, config.max_requests_jitter)
        self._recycle_asked = False
        self._linger = False  # on stop, other workers take over: idle keep-alive connections may linger

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        messaging.attach(self._deliver_factory(loop))
        stack = _stack(self.config, self.app)
        lifespan = Lifespan(self.app, self.config.lifespan if self.loaded.interface == "asgi" else "off")
        self._watch_channel(loop)
        loop.add_signal_handler(signal.SIGTERM, self._on_sigterm, loop)
        try:
            await lifespan.startup()
        except BootError as exc:
            self.channel.send_blocking(BootFailed(str(exc)))
            return EXIT_BOOT
        if self._stopping.is_set():  # told to stop while starting up
            await lifespan.shutdown()
            return EXIT_OK

        self.stack = stack
        app_state = lifespan.state
        app_state["clusterrun.worker"] = self.info
        limits = Limits.from_config(self.config)
        stack.guard_requests(lambda conn: Guard(conn, limits), head_limit=limits.head)
        if self.closes.shared:
            stack.notify_close(self.closes.add)
        self.protocol_factory = stack.protocol_factory(loop, app_state)
        self._tick(stack.encoded_headers)
        self._beat(heartbeat_interval(self.config.timeout))
        servers = [
            await loop.create_server(self.protocol_factory, sock=sock, backlog=self.config.backlog)
            for sock in self.sockets
        ]
        self.channel.send(Ready(self.loaded.interface, connection_room()))
        await self._stopping.wait()

        for server in servers:
            server.close()
        await self._drain()
        await lifespan.shutdown()
        with contextlib.suppress(Exception):
            await self.channel_flushed()
        return EXIT_OK

    def _on_sigterm(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stopped from outside: tell the primary first, so that it routes nothing more here, then drain.

        The primary answers with a stop frame, which arrives after every connection it already sent.
        """
        if self.channel.eof:
            self.stop()
            return
        self.channel.send(Draining())
        loop.call_later(_PRIMARY_ANSWER_WAIT, self.stop)

    def stop(self) -> None:
        if self._stopping is not None and not self._stopping.is_set():
            logger.debug("stopping: draining open connections")
            self._stopping.set()

    # The channel: connections and orders from the primary.

    def _watch_channel(self, loop: asyncio.AbstractEventLoop) -> None:
        fd = self.channel.fileno()
        loop.add_reader(fd, self._on_channel_readable, loop)

        def backlog(waiting: bool) -> None:
            if waiting:
                loop.add_writer(fd, self.channel.flush)
            else:
                loop.remove_writer(fd)

        self.channel.on_backlog = backlog

    def _on_channel_readable(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            frames = self.channel.receive()
        except ChannelError as exc:
            logger.error("bad frame from the primary (%s); stopping", exc)
            loop.remove_reader(self.channel.fileno())
            self.stop()
            return
        dropped = self.channel.take_dropped()
        if dropped:
            self._on_dropped(dropped)
        for frame, fds in frames:
            match frame:
                case Connections(family):
                    for fd in fds:
                        self._adopt(loop, fd, family)
                case Message(data):
                    messaging.dispatch(data, loop.create_task)
                case Stop(linger):
                    self._linger = linger
                    self.stop()
                case _:
                    logger.debug("ignoring %s from the primary: not a frame for a worker", type(frame).__name__)
                    for fd in fds:
                        os.close(fd)
        if self.channel.eof:
            # The primary is gone (or broke the channel): finish what is in flight and exit, never linger.
            loop.remove_reader(self.channel.fileno())
            logger.warning("the primary went away; stopping")
            self.stop()

    def _on_dropped(self, count: int) -> None:
        """The kernel closed passed connections this worker had no descriptor for: count them, say so, go on."""
        if self.closes.shared:
            self.closes.add(count)  # the primary counted them as open here
        now = time.monotonic()
        if now - self._dropped_reported >= 5.0:
            self._dropped_reported = now
            logger.error("%d passed connection%s dropped: this worker's descriptor table is full (ulimit -n %s); "
                         "raise it", count, "" if count == 1 else "s", _nofile_limit() or "unlimited")

    def _deliver_factory(self, loop: asyncio.AbstractEventLoop) -> Any:
        """How clusterrun.send() reaches the channel: directly on the loop's thread, else through the loop."""
        loop_thread = threading.get_ident()

        def deliver(frame: Message | Broadcast) -> None:
            if threading.get_ident() == loop_thread:
                self.channel.send(frame)
            else:
                loop.call_soon_threadsafe(self.channel.send, frame)

        return deliver

    def _adopt(self, loop: asyncio.AbstractEventLoop, fd: int, family: int) -> None:
        """Serve a connection the primary accepted, as if this worker's own listener had.

        Given the family, the socket object asks the kernel one question instead of three.
        Nothing else is set here: uvloop's and asyncio's transports both make the socket non-blocking and set
        TCP_NODELAY themselves, as for their own accepts.
        """
        sock = socket.socket(family, socket.SOCK_STREAM, 0, fileno=fd)
        task = loop.create_task(self._connect(loop, sock))
        self._adopting.add(task)
        task.add_done_callback(self._adopting.discard)

    async def _connect(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        try:
            await loop.connect_accepted_socket(self.protocol_factory, sock)
        except OSError as exc:  # the client left before the hand-over completed
            logger.debug("dropping a passed connection: %s", exc)
            sock.close()
            self.closes.add()  # no protocol saw it, so none counts its close

    async def channel_flushed(self) -> None:
        while self.channel.backlog and not (self.channel.eof or self.channel.broken):
            await asyncio.sleep(_DRAIN_POLL)

    # Draining: finish what was accepted, close what is idle.

    async def _drain(self) -> None:
        """Finish every request in flight; close each connection only where no request can be racing.

        Closing an idle keep-alive connection races the client's next request on it, which then fails.
        So when other workers take over (``linger``), idle connections stay open up to --timeout-keep-alive
        and a request that arrives on one is answered with ``Connection: close``. When the whole server
        stops, idle connections close at once. A request in flight always completes, then its connection
        closes.
        """
        if self._adopting:
            await asyncio.gather(*self._adopting, return_exceptions=True)
        deadline = time.monotonic() + (self.config.timeout_keep_alive if self._linger else 0.0)
        closing: set[int] = set()
        while self.stack.busy:
            patient = time.monotonic() < deadline
            for connection in self.stack.open_connections():
                if connection.ident not in closing and connection.wrap_app(_closing_app):
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
        self.stack.set_default_headers([(b"date", formatdate(now, usegmt=True).encode()), *headers])
        loop.call_at(loop.time() + 1.0 - (now % 1.0), self._tick, headers)

    def _beat(self, interval: float) -> None:
        """Every ``interval`` (a quarter of --timeout, at most a second): the heartbeat, the recycling limits.

        The heartbeat proves the loop is not stuck: a worker blocked in one request sends none, so the primary
        passes it nothing new (late) and counts it as hung after --timeout.
        """
        if not self.channel.eof:
            self.channel.send(Beat())
            self._check_recycling()
        asyncio.get_running_loop().call_later(interval, self._beat, interval)

    def _check_recycling(self) -> None:
        if self._recycle_asked:
            return
        reason = ""
        served = self.stack.total_requests
        if self.config.max_requests and served >= self._request_limit:
            reason = f"it served {served} requests (--max-requests {self.config.max_requests})"
        elif self.config.max_memory:
            rss_mib = _rss_bytes() / (1024 * 1024)
            if rss_mib > self.config.max_memory:
                reason = f"its memory grew to {rss_mib:.0f} MiB (--max-memory {self.config.max_memory})"
        if reason:
            # The primary replaces this worker the no-drop way: a new one first, then this one drains.
            self._recycle_asked = True
            self.channel.send(Recycle(reason))
