"""A worker's life after the fork: load the app, serve it, obey the primary, drain, exit.

The runtime owns what every worker does whatever it serves: the channel to the primary (passed connections,
messages, stop orders), the heartbeat, the recycling limits, SIGTERM, and the order of start-up and drain.
The serving itself is clusterrun.worker.inline_serving's (a WSGI app on the inline engine, on a loop with no
asyncio) or clusterrun.worker.serving's (uvicorn's HTTP protocols on an asyncio loop). ``serve`` chooses, once
the app is loaded, and imports the stack's serving only where it chose the stack: a WSGI worker on the inline
engine never loads uvicorn or asyncio (unless its app does).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from clusterrun import logs
from clusterrun.adapters import entry
from clusterrun.config.options import Config
from clusterrun.errors import EXIT_BOOT, EXIT_OK, BootError, ChannelError
from clusterrun.host import tls
from clusterrun.identity import WorkerInfo
from clusterrun.wire import handles
from clusterrun.wire.channel import Channel
from clusterrun.wire.counters import SharedCounter
from clusterrun.wire.heartbeat import heartbeat_interval
from clusterrun.wire.pages import WorkerPages
from clusterrun.wire.protocol import (
    BootFailed,
    Broadcast,
    Connections,
    Draining,
    Handle,
    Message,
    Online,
    Ready,
    Recycle,
    ReopenLogs,
    Stop,
)
from clusterrun.worker import current, messaging
from clusterrun.worker import hooks as workerhooks
from clusterrun.worker.inline_serving import InlineServer

if TYPE_CHECKING:
    import asyncio

    from clusterrun.worker.serving import StackServer

    # The part of asyncio's loop API this runtime uses is also what the inline engine's SelectorLoop offers.
    Loop = asyncio.AbstractEventLoop | entry.SelectorLoop

logger = logging.getLogger("clusterrun")

_FLUSH_POLL = 0.02
# A worker stopped by SIGTERM waits this long for the primary's stop frame before draining anyway.
_PRIMARY_ANSWER_WAIT = 2.0


def serve(
    config: Config, info: WorkerInfo, channel: Channel, sockets: Sequence[socket.socket], pages: WorkerPages,
    preloaded: entry.LoadedApp | None = None,
) -> int:
    """Load the app (unless the primary preloaded it) and serve it until told to stop; the worker's exit code.

    A WSGI app called inline (``--threads 1``) is served by clusterrun's own engine on a loop with no asyncio;
    anything else by uvicorn's stack on an asyncio loop.
    """
    handles.close_primary_only()  # the program's own listeners (Cluster.listen) are the primary's alone
    channel.send(Online())
    try:
        workerhooks.post_fork(config, info)  # before the app loads, as gunicorn's
        ssl_context = _ssl_context(config)  # the certificate files as they are now
        loaded = preloaded or entry.load_app(
            config.app, app_dir=config.app_dir, factory=config.factory, interface=config.interface
        )
        loaded = with_request_hooks(loaded, info)
        inline = entry.inline_engine_available(loaded, threads=config.threads, http=config.http)
        if not inline:
            # The one place the stack is chosen, so the one place its serving is imported (with uvicorn and asyncio):
            # a worker on the inline engine never loads them.
            from clusterrun.worker import serving

            server = serving.StackServer(config, info, loaded, pages, ssl_context)
            loop = serving.new_loop(config.loop)
        workerhooks.init(info)  # after the app is loaded (or inherited with --preload), before serving
    except BootError as exc:
        channel.send_blocking(BootFailed(str(exc)))
        return EXIT_BOOT
    if inline:
        logs.announce_engine(info, f"inline WSGI engine (httptools, {entry.engine_build()})")
        return _serve_inline(config, info, channel, sockets, pages, loaded, ssl_context)
    loop_name = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
    logs.announce_engine(info, f"{server.stack.name} + {loop_name}")
    try:
        code = serving.run(loop, WorkerRuntime(config, channel, server, sockets, pages.closes, loop).run())
        workerhooks.exit(info)
        return code
    finally:
        serving.close_loop(loop)


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    """The worker's TLS context: from the --ssl-* files, or what the ssl_context hook makes of that."""
    settings = config.tls
    if settings is None:
        return None

    def default_ssl_context_factory() -> ssl.SSLContext:
        context = tls.worker_context(settings)
        assert context is not None  # settings are given
        return context

    return workerhooks.ssl_context(config, default_ssl_context_factory)()


def with_request_hooks(loaded: entry.LoadedApp, info: WorkerInfo) -> entry.LoadedApp:
    """The app, wrapped to run the pre_request and post_request hooks; the app itself when there are none.

    Decided once per worker, here: without the hooks no request pays anything for them.
    """
    pre, post = workerhooks.request_hooks()
    if not pre and not post:
        return loaded
    from clusterrun.worker import requesthooks  # only where hooks are set

    return requesthooks.wrap(loaded, info, pre, post)


def _serve_inline(
    config: Config, info: WorkerInfo, channel: Channel, sockets: Sequence[socket.socket], pages: WorkerPages,
    loaded: entry.LoadedApp, ssl_context: ssl.SSLContext | None,
) -> int:
    loop = entry.selector_loop()
    try:
        server = InlineServer(config, info, loaded, pages, loop, ssl_context)
        code = WorkerRuntime(config, channel, server, sockets, pages.closes, loop).run_inline()
        workerhooks.exit(info)
        return code
    finally:
        loop.close()


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


class WorkerRuntime:
    """One worker between its fork and its exit, on its loop: asyncio's (``run``) or the inline engine's
    SelectorLoop (``run_inline``), driven through the same part of asyncio's loop API."""

    def __init__(
        self, config: Config, channel: Channel, server: StackServer | InlineServer, sockets: Sequence[socket.socket],
        closes: SharedCounter, loop: Loop,
    ) -> None:
        self.config = config
        self.loop = loop
        self.channel = channel
        self.server = server
        self.sockets = sockets
        self.closes = closes  # shared only under a primary-side policy: then every close is counted
        self._stop_asked = False
        self._on_stop: Callable[[], object] = lambda: None  # wakes the run waiting for the stop
        self._dropped_reported = 0.0  # when dropped descriptors were last logged
        # Recycling limits, fixed per worker; the jitter keeps workers from all being replaced at once.
        self._request_limit = config.max_requests + random.randint(0, config.max_requests_jitter)
        self._recycle_asked = False
        self._linger = False  # on stop, other workers take over: idle keep-alive connections may linger
        # Connections given to clusterrun.serve_connection before the server listens (during an ASGI app's
        # lifespan startup, say): served once it does. None from then on.
        self._early: list[socket.socket] | None = []

    def _attach(self) -> None:
        """Messages, the channel and SIGTERM reach this runtime from now on."""
        messaging.attach(self._deliver_factory(self.loop), self._serve_factory(self.loop))
        current.attach(self._leave_factory(self.loop), lambda: not self.channel.eof)
        self._watch_channel(self.loop)
        self.loop.add_signal_handler(signal.SIGTERM, self._on_sigterm, self.loop)

    def _serving(self) -> None:
        early, self._early = self._early or [], None
        for sock in early:
            self._serve_connection(sock)
        self._beat(heartbeat_interval(self.config.timeout))
        self.channel.send(Ready(self.server.interface, connection_room()))

    async def run(self) -> int:
        """On the running asyncio loop, with uvicorn's stack (which runs an ASGI app's lifespan)."""
        import asyncio  # loaded already by the stack's serving, the only caller: a name here, never a first load

        server = self.server
        assert not isinstance(server, InlineServer)
        stopped: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not stopped.done():
                stopped.set_result(None)

        self._on_stop = wake
        self._attach()
        try:
            await server.start()
        except BootError as exc:
            self.channel.send_blocking(BootFailed(str(exc)))
            return EXIT_BOOT
        if self._stop_asked:  # told to stop while starting up
            await server.stop()
            return EXIT_OK
        await server.listen(self.sockets)
        self._serving()
        if not self._stop_asked:
            await stopped

        await server.drain(self._linger)
        await server.stop()
        self._send_last_counts()
        with contextlib.suppress(Exception):
            await self._channel_flushed()
        return EXIT_OK

    def run_inline(self) -> int:
        """On the inline engine's SelectorLoop (a WSGI app has no lifespan: nothing to start or stop)."""
        server, loop = self.server, self.loop
        assert isinstance(server, InlineServer) and isinstance(loop, entry.SelectorLoop)
        self._attach()
        server.listen(self.sockets)
        self._serving()
        loop.run_until(lambda: self._stop_asked)
        drained: list[bool] = []
        server.drain(self._linger, lambda: drained.append(True))
        loop.run_until(lambda: bool(drained))
        self._send_last_counts()
        self._poll_channel_flushed(loop)
        loop.run_until(lambda: not self._channel_waiting())
        return EXIT_OK

    def _on_sigterm(self, loop: Loop) -> None:
        """Stopped from outside: tell the primary first, so that it routes nothing more here, then drain.

        The primary answers with a stop frame, which arrives after every connection it already sent.
        """
        if self.channel.eof:
            self.stop()
            return
        self.channel.send(Draining())
        loop.call_later(_PRIMARY_ANSWER_WAIT, self.stop)

    def _leave_factory(self, loop: Loop) -> Callable[[], None]:
        """How current_worker().disconnect() reaches this runtime: as SIGTERM would, on the loop's thread."""
        loop_thread = threading.get_ident()

        def leave() -> None:
            logger.info("the app asked to disconnect: draining, then exiting")
            if threading.get_ident() == loop_thread:
                self._on_sigterm(loop)
            else:
                loop.call_soon_threadsafe(self._on_sigterm, loop)

        return leave

    def stop(self) -> None:
        if not self._stop_asked:
            logger.debug("stopping: draining open connections")
            self._stop_asked = True
            self._on_stop()

    # The channel: connections and orders from the primary.

    def _watch_channel(self, loop: Loop) -> None:
        fd = self.channel.fileno()
        loop.add_reader(fd, self._on_channel_readable, loop)

        def backlog(waiting: bool) -> None:
            if waiting:
                loop.add_writer(fd, self.channel.flush)
            else:
                loop.remove_writer(fd)

        self.channel.on_backlog = backlog

    def _on_channel_readable(self, loop: Loop) -> None:
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
                    # Given the family, the socket object asks the kernel one question instead of three.
                    for fd in fds:
                        self.server.adopt(entry.AcceptedSocket(family, socket.SOCK_STREAM, 0, fileno=fd))
                case Message(data):
                    messaging.dispatch(data, _scheduler(loop))
                case Handle(data):
                    if not fds and self.closes.shared:
                        # The kernel dropped it (full table) and _on_dropped counted it as a passed connection that
                        # closed; the primary never counted a handle as passed.
                        self.closes.add(-1)
                    handle = handles.receive(fds[0]) if fds else None
                    for extra in fds[1:]:  # a primary sends one: more would be a bug there, never kept here
                        os.close(extra)
                    messaging.dispatch(data, _scheduler(loop), handle)
                case Stop(linger):
                    self._linger = linger
                    self.stop()
                case ReopenLogs():
                    logs.reopen()
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

    def _deliver_factory(self, loop: Loop) -> Any:
        """How clusterrun.send() reaches the channel: directly on the loop's thread, else through the loop."""
        loop_thread = threading.get_ident()

        def deliver(frame: Message | Broadcast) -> None:
            if threading.get_ident() == loop_thread:
                self.channel.send(frame)
            else:
                loop.call_soon_threadsafe(self.channel.send, frame)

        return deliver

    def _serve_factory(self, loop: Loop) -> Callable[[socket.socket], None]:
        """How clusterrun.serve_connection() reaches the server: directly on the loop's thread, else through it."""
        loop_thread = threading.get_ident()

        def serve(sock: socket.socket) -> None:
            if threading.get_ident() == loop_thread:
                self._serve_connection(sock)
            else:
                loop.call_soon_threadsafe(self._serve_connection, sock)

        return serve

    def _serve_connection(self, sock: socket.socket) -> None:
        """Serve a connection the program handed over (a handle), as the server serves one the primary passed.

        Counted as the server's own accepts are, so that the primary's view of this worker stays exact: under a
        primary-side policy the shared close count goes down by one first (its close nets out: see
        clusterrun.wire.counters), under --policy balanced the worker's load goes up by one.
        """
        if self._early is not None:
            self._early.append(sock)
            return
        if self.closes.shared:
            self.closes.add(-1)
        balance = self.server.balance
        if balance is not None:
            balance.opened()
        self.server.adopt(sock)
        if balance is not None:
            balance.held()

    def _send_last_counts(self) -> None:
        if not self.channel.eof:
            self.channel.send(self.server.counts())  # the last counts: the primary folds them into its totals

    def _channel_waiting(self) -> bool:
        """Frames wait to go up a channel that can still take them."""
        return bool(self.channel.backlog) and not (self.channel.eof or self.channel.broken)

    async def _channel_flushed(self) -> None:
        import asyncio  # as in run, its caller: on the stack only, where asyncio is loaded

        while self._channel_waiting():
            await asyncio.sleep(_FLUSH_POLL)

    def _poll_channel_flushed(self, loop: Loop) -> None:
        """Wake the inline loop every poll while the channel flushes (it may also end by breaking)."""
        if self._channel_waiting():
            loop.call_later(_FLUSH_POLL, self._poll_channel_flushed, loop)

    # The heartbeat and recycling.

    def _beat(self, interval: float) -> None:
        """Every ``interval`` (a quarter of --timeout, at most a second): the heartbeat, the recycling limits.

        The heartbeat proves the loop is not stuck: a worker blocked in one request sends none, so the primary
        passes it nothing new (late) and counts it as hung after --timeout.
        """
        if not self.channel.eof:
            self.channel.send(self.server.counts())
            self._check_recycling()
        self.loop.call_later(interval, self._beat, interval)

    def _check_recycling(self) -> None:
        if self._recycle_asked:
            return
        reason = ""
        served = self.server.total_requests
        if self.config.max_requests and served >= self._request_limit:
            reason = f"it served {served} requests (--max-requests {self.config.max_requests})"
        elif self.config.max_memory:
            rss_mib = _rss_bytes() / (1024 * 1024)
            if rss_mib > self.config.max_memory:
                reason = f"its memory grew to {rss_mib:.0f} MiB (--max-memory {self.config.max_memory})"
        if not reason and self.config.request_timeout and (stuck := self.server.stuck_threads()):
            reason = (f"{stuck} thread{'' if stuck == 1 else 's'} still in the app past --request-timeout "
                      f"{self.config.request_timeout:g} s")
        if reason:
            # The primary replaces this worker the no-drop way: a new one first, then this one drains.
            self._recycle_asked = True
            self.channel.send(Recycle(reason))


def _scheduler(loop: Loop) -> Callable[[Coroutine[Any, Any, Any]], object]:
    """How an async on_message callback runs: a task on an asyncio loop; to its end where no asyncio loop runs."""
    if not isinstance(loop, entry.SelectorLoop):
        return loop.create_task
    return _run_to_end


def _run_to_end(coroutine: Coroutine[Any, Any, Any]) -> object:
    """An async on_message callback on the inline engine, run to its end on a loop of its own."""
    import asyncio  # only for an app that has async callbacks: a worker on the inline engine loads no asyncio itself

    return asyncio.run(coroutine)
