"""clusterrun's WSGI-to-ASGI bridge: runs a PEP 3333 application on uvicorn's HTTP protocol stack.

Design:

* A request body that arrived whole with its head (the common case) is a BytesIO, and an inline app runs on
  the loop with no thread hop. Any other body streams (adapters.stack.body): the app runs in a thread whose
  reads of ``wsgi.input`` pull from ``receive()`` on the loop, so an app that rejects an upload answers before
  the rest of it is read, and nothing is buffered beyond uvicorn's window. Input limits (413) live in
  adapters.stack.guard, in front of every app.
* The response is produced by one synchronous generator, ``_respond``, which calls the app and yields the
  ASGI messages to send, in batches: the head and the first body chunk go together, so a whole response
  costs one step into app code (and in pooled mode one hop to the loop) plus the one that runs ``close()``.
  Inline mode (threads == 1) drives it on the event-loop thread; pooled mode drives the same generator in a
  worker thread and hands each batch back to the loop: the logic exists once.
* Inline mode runs the app on the event-loop thread, but app code must not see that loop: Django's ORM refuses
  to run (SynchronousOnlyOperation), asgiref's AsyncToSync (Flask ``async def`` views) and ``asyncio.run()``
  refuse to start, whenever ``asyncio.get_running_loop()`` succeeds. So each step into app code (the call, each
  ``next()`` on the body, ``close()``) runs with the thread's running loop cleared, and the loop is put back
  before the bridge awaits again: one save/restore per step, not per byte.
* An exception from app code is the app's error, not the server's: it is logged here with the request's
  method and path, and answered 500 when no header was sent yet (a response already started is left
  incomplete, so the server closes the connection and the client cannot mistake it for a whole one).
* uvicorn silently drops sends to a client that has gone away, so a streamed response would never learn the
  client left. Once a response turns out to be streamed, a watcher awaits ``receive()`` (which, per ASGI, only
  returns ``http.disconnect`` after the body was consumed) and iteration stops when it fires.
"""

from __future__ import annotations

import asyncio
import io
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, TypeVar

from clusterrun.adapters.deadline import RequestStamp
from clusterrun.adapters.stack.body import AppGate, BodyClock, InputStream
from clusterrun.adapters.wsgi_app import (
    Environ,
    Exchange,
    FileWrapper,
    HeaderKeys,
    StartResponse,
    WSGIApp,
    body_chunks,
    log_app_error,
    path_info,
    split_host,
)
from clusterrun.adapters.wsgi_input import BodyTimeout, ClientDisconnected

from clusterrun._version import __version__

__all__ = ["FileWrapper", "StartResponse", "WSGIApp", "WSGIBridge"]

logger = logging.getLogger("clusterrun")

Message = dict[str, Any]
Batch = tuple[Message, ...]  # messages produced by one step of app code, sent in order
Messages = Generator[Batch, None, None]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
T = TypeVar("T")


# A body is read on the loop before the app is called while it stays below this (uvicorn's own flow-control
# window): past it, or with Expect: 100-continue, it streams to the app instead.
_PREREAD_LIMIT = 64 * 1024
# App calls whose body streams (any mode) run in threads of their own, not in the --threads pool: a thread
# waiting for a slow client must not hold up the next upload, nor the requests that came whole. There is no
# fixed pool that queues: a new upload gets an idle thread or a new one, up to this many at once, and past that
# a 503 at once; each stalled upload frees its thread within --body-timeout (a 408). Inline mode: they take
# turns at the AppGate (one runs app code at a time).
_UPLOAD_THREADS = 128


def _refusal(status: int, phrase: str) -> Batch:
    """A whole plain-text answer that closes the connection (the body, if any, is left unread)."""
    body = f"{phrase}\n".encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body, "more_body": False},
    )


def _client(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


def _error_messages() -> Batch:
    """The answer when the app failed before its response started: what uvicorn sends for a failing ASGI app.

    The connection is closed after it: the failed app may have left the request body half read.
    """
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"21"), (b"connection", b"close")]
    return (
        {"type": "http.response.start", "status": 500, "headers": headers},
        {"type": "http.response.body", "body": b"Internal Server Error", "more_body": False},
    )


class _Exchange(Exchange):
    """start_response()/write() state of one request, and the ASGI messages that carry its response."""

    __slots__ = ()

    def start_message(self) -> Message:
        headers = self.headers
        if headers is None:
            raise RuntimeError("the WSGI app produced body data before calling start_response()")
        self.started = True
        hint = self.size_hint
        if self.length is None and hint is not None and self.status >= 200 and self.status not in (204, 304):
            # A fully known body gets a Content-Length instead of chunked framing, and its final chunk can
            # then carry more_body=False.
            headers.append((b"content-length", str(hint).encode("ascii")))
            self.length = hint
        return {"type": "http.response.start", "status": self.status, "headers": headers}

    def body_message(self, chunk: bytes) -> Message:
        if self.length is not None:
            remaining = self.length - self.sent
            if len(chunk) >= remaining:
                # Content-Length reached: this chunk ends the response (one send fewer than an empty final
                # message), and excess bytes are cut, as gunicorn does, rather than failing the response.
                self.done = True
                return {"type": "http.response.body", "body": chunk[:remaining], "more_body": False}
            self.sent += len(chunk)
        return {"type": "http.response.body", "body": chunk, "more_body": True}


class _Channel:
    """Sends messages on the loop and reports (False) once the client of a streamed response is gone."""

    __slots__ = ("_receive", "_send", "_watch")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive, self._send = receive, send
        self._watch: asyncio.Future[Message] | None = None

    async def send(self, batch: Batch) -> bool:
        watch = self._watch
        if watch is not None and watch.done():
            return False
        for message in batch:
            await self._send(message)
        if batch[-1].get("more_body"):
            if watch is None:
                # Only streamed responses pay for the watcher task; single-message bodies never get here.
                self._watch = asyncio.ensure_future(self._receive())
            # Inline mode blocks the loop between chunks; yielding lets it see the disconnect and flush I/O.
            await asyncio.sleep(0)
        return True

    def close(self) -> None:
        watch = self._watch
        if watch is not None and not watch.cancel() and not watch.cancelled():
            watch.exception()  # mark a failed receive() as retrieved so asyncio does not log it


class WSGIBridge:
    """An ASGI 3 application that runs a WSGI application, inline (threads=1) or in a thread pool."""

    def __init__(
        self,
        app: WSGIApp,
        *,
        threads: int = 1,
        extra_environ: Mapping[str, Any] | None = None,
        body_timeout: float | None = None,
        request_clock: RequestStamp | None = None,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self._app, self._threads = app, threads
        # --body-timeout's clock on every body read, the read ahead below and InputStream's (None: no timeout).
        self._body_clock = BodyClock(body_timeout) if body_timeout is not None else None
        self._stamp = request_clock if threads == 1 else None  # pooled: with_deadline's 504 and a recycled worker
        # Created on first use: the bridge is built before the worker forks and before any event loop exists.
        self._executor: ThreadPoolExecutor | None = None
        self._uploads: ThreadPoolExecutor | None = None
        self._uploading = 0
        self.stuck_threads = 0  # threads still running app code for a request given up (--request-timeout)
        self._gate = AppGate() if threads == 1 else None
        self._keys = HeaderKeys()
        self._base: Environ = {
            "SCRIPT_NAME": "",
            "SERVER_SOFTWARE": f"clusterrun/{__version__}",
            "GATEWAY_INTERFACE": "CGI/1.1",  # CGI (RFC 3875) names it; wsgiref sets it too
            "wsgi.version": (1, 0),
            "wsgi.multithread": threads > 1,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
            "wsgi.input_terminated": True,  # wsgi.input returns b"" at the end of the body: reading to EOF is safe
            **(extra_environ or {}),
        }

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        uploads, self._uploads = self._uploads, None
        if uploads is not None:
            uploads.shutdown(wait=True, cancel_futures=True)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._other_scope(scope, receive, send)
            return
        body = await self._body_or_408(scope, receive, send)
        if body is None:
            return  # the client left before the request was complete, or stalled it and was answered 408
        stream, size = body
        streamed = isinstance(stream, InputStream)
        # A streamed body's disconnect watcher waits for the app to read it all: it must not take body messages.
        channel = _Channel(stream.receive_after_body if streamed else receive, send)  # type: ignore[union-attr]
        try:
            messages = self._respond(self._environ(scope, stream, size))
            loop = asyncio.get_running_loop()
            if self._threads == 1 and not streamed and self._stamp is not None:
                # --request-timeout: app code on the loop blocks the worker, as on the inline engine: each step
                # is stamped where the primary reads it (adapters.deadline), and an overrun gets the worker killed.
                self._stamp.label(scope["method"].encode("latin-1"), scope.get("raw_path") or scope["path"].encode())
                messages = _stamped(messages, self._stamp)
            if self._threads == 1 and not streamed:
                gate = self._gate
                assert gate is not None
                batch: Batch | None = ()
                try:
                    while True:
                        # An upload's app call off the loop may be running app code: wait for its turn to end.
                        if gate.locked():
                            async with gate:
                                batch = _advance_unseen(messages, loop)
                        else:
                            batch = _advance_unseen(messages, loop)
                        if batch is None or not await channel.send(batch):
                            break
                finally:
                    if batch is not None:  # None: the generator ran to its end, close() of the app's included
                        if gate.locked():
                            async with gate:
                                _close_unseen(messages, loop)
                        else:
                            _close_unseen(messages, loop)
            elif not streamed:
                await self._in_thread(self._pool(), messages, channel, loop)
            else:
                await self._upload(scope, messages, channel, loop)
        finally:
            channel.close()
            stream.close()

    async def _upload(self, scope: dict[str, Any], messages: Messages, channel: _Channel,
                      loop: asyncio.AbstractEventLoop) -> None:
        """A request whose body streams: in a thread of its own (the upload pool), or 503 at its cap."""
        if self._uploading >= _UPLOAD_THREADS:
            messages.close()  # the app was never called
            why = f"{_UPLOAD_THREADS} uploads in progress in this worker (the most at once)"
            logger.warning("refused a request from %s: %s (503 Service Unavailable)", _client(scope), why)
            await channel.send(_refusal(503, f"Service Unavailable: {why}"))
            return
        self._uploading += 1
        try:
            await self._in_thread(self._upload_pool(), messages, channel, loop)
        finally:
            self._uploading -= 1

    async def _in_thread(self, pool: ThreadPoolExecutor, messages: Messages, channel: _Channel,
                         loop: asyncio.AbstractEventLoop) -> None:
        """Drive the app in a thread of ``pool`` until its response is sent.

        Cancelled (--request-timeout, adapters.deadline), the request is given up, but a thread already running
        app code cannot be stopped: it counts as stuck (``stuck_threads``) until the app returns, and the worker
        asks to be replaced meanwhile (clusterrun.worker.runtime), since a pool losing threads serves ever fewer.
        """
        future = pool.submit(_drive_in_thread, messages, channel, loop, self._gate)
        try:
            await asyncio.wrap_future(future, loop=loop)
        except asyncio.CancelledError:
            if future.running():
                self.stuck_threads += 1
                future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._unstuck))
            raise

    def _unstuck(self) -> None:
        self.stuck_threads -= 1

    def _pool(self) -> ThreadPoolExecutor:
        executor = self._executor
        if executor is None:
            executor = self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="clusterrun-wsgi")
        return executor

    def _upload_pool(self) -> ThreadPoolExecutor:
        executor = self._uploads
        if executor is None:
            # An executor grows to max_workers only when no thread is idle: one thread per upload in progress.
            executor = self._uploads = ThreadPoolExecutor(_UPLOAD_THREADS, thread_name_prefix="clusterrun-upload")
        return executor

    async def _body_or_408(self, scope: dict[str, Any], receive: Receive,
                           send: Send) -> tuple[IO[bytes] | InputStream, int] | None:
        """``_read_body``; a body stalled past --body-timeout is answered 408 here, and is None as a client gone."""
        try:
            return await self._read_body(scope, receive)
        except BodyTimeout as exc:
            logger.warning("refused a request from %s: %s (408 Request Timeout)", _client(scope), exc)
            for message in _refusal(408, f"Request Timeout: {exc}"):
                await send(message)
            return None

    async def _read_body(self, scope: dict[str, Any], receive: Receive) -> tuple[IO[bytes] | InputStream, int] | None:
        """The body as a BytesIO and its size if it is here (or small and near), else an InputStream and 0."""
        loop = asyncio.get_running_loop()
        if scope["method"] not in ("GET", "HEAD"):  # they carry no body in practice: spare them the scan
            for name, value in scope["headers"]:
                if name == b"expect" and value.lower() == b"100-continue":
                    # The client waits for "100 Continue", which uvicorn sends on the first receive(): the app's
                    # first read asks for the body, and an app that answers without reading never gets it.
                    return InputStream(receive, loop, gate=self._gate, clock=self._body_clock), 0
        chunks: list[bytes] = []
        size = 0
        clock = self._body_clock
        while True:
            # The body read ahead of the app keeps --body-timeout's clock too: without it, a client that sent part
            # of a small body and went silent held its request (and an HTTP/2 stream) until it left.
            message = await (receive() if clock is None else clock.within(receive()))
            if message["type"] == "http.disconnect":
                return None
            chunk: bytes = message.get("body", b"")
            if not message.get("more_body", False):
                if chunks:
                    chunks.append(chunk)
                    chunk = b"".join(chunks)
                return io.BytesIO(chunk), len(chunk)
            chunks.append(chunk)
            size += len(chunk)
            if size > _PREREAD_LIMIT:
                return InputStream(receive, loop, b"".join(chunks), self._gate, self._body_clock), 0

    def _environ(self, scope: dict[str, Any], stream: IO[bytes] | InputStream, size: int) -> Environ:
        environ = self._base.copy()
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root:
            # uvicorn put the prefix in front of the path it received; past that, the path is what the
            # inline engine would make of it (wsgi_app.path_info).
            path = path_info(root, path.removeprefix(root))
            environ["SCRIPT_NAME"] = root.encode().decode("latin-1")
        query: bytes = scope.get("query_string", b"")
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        scheme: str = scope.get("scheme", "http")
        environ["REQUEST_METHOD"] = scope["method"]
        # PEP 3333 wants the UTF-8 bytes seen as latin-1; isascii() is O(1) and skips the round trip.
        environ["PATH_INFO"] = path if path.isascii() else path.encode().decode("latin-1")
        environ["QUERY_STRING"] = query.decode("latin-1")
        environ["RAW_URI"] = (raw + b"?" + query if query else raw).decode("latin-1")
        environ["SERVER_PROTOCOL"] = "HTTP/" + scope.get("http_version", "1.1")
        environ["wsgi.url_scheme"] = scheme
        environ["wsgi.input"] = stream
        environ["wsgi.errors"] = sys.stderr  # looked up per request: the worker may redirect stderr later
        client = scope.get("client")
        if client is not None:
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = client[0], str(client[1])

        self._keys.add_to(environ, scope["headers"])

        if size and "CONTENT_LENGTH" not in environ:
            environ["CONTENT_LENGTH"] = str(size)  # chunked upload: the real length is known by now
        server = scope.get("server")
        if server is not None and server[1] is not None:
            environ["SERVER_NAME"], environ["SERVER_PORT"] = server[0], str(server[1])
        else:  # unix socket: the socket path is no server name, the Host header is the best we have
            environ["SERVER_NAME"], environ["SERVER_PORT"] = split_host(environ.get("HTTP_HOST", ""), scheme)
        return environ

    def _respond(self, environ: Environ) -> Messages:
        exchange = _Exchange()
        try:
            result = self._app(environ, exchange.start_response)
            try:
                # Not for HEAD: an app may answer it with an empty body that does not reflect the GET length.
                if type(result) in (list, tuple) and environ["REQUEST_METHOD"] != "HEAD":
                    exchange.size_hint = sum(map(len, exchange.pending)) + sum(map(len, result))
                for chunk in body_chunks(result, exchange.pending):
                    # Left to right: start_message() may add the Content-Length that body_message() counts.
                    yield (exchange.body_message(chunk),) if exchange.started else (
                        exchange.start_message(), exchange.body_message(chunk)
                    )
                    if exchange.done:
                        return
                end = {"type": "http.response.body", "body": b"", "more_body": False}
                yield (end,) if exchange.started else (exchange.start_message(), end)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except BodyTimeout as exc:
            # The client stalled its body: the app gave up reading it (a thread is free again).
            logger.warning("refused a request from %s:%s: %s (408 Request Timeout)", environ.get("REMOTE_ADDR", "-"),
                           environ.get("REMOTE_PORT", "-"), exc)
            if not exchange.started:
                yield _refusal(408, f"Request Timeout: {exc}")
        except ClientDisconnected:
            return  # the client left while the app read its body: nobody to answer, nothing to log
        except Exception as exc:
            # Only app code raises in here: sends happen outside this generator, and a close() of it on a
            # disconnect raises GeneratorExit, which is no Exception (and always comes after the head went out).
            log_app_error(environ, exc)
            if not exchange.started:
                yield _error_messages()

    @staticmethod
    async def _other_scope(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif kind == "websocket":
            await receive()  # websocket.connect; closing before accept makes the server reject the handshake
            await send({"type": "websocket.close", "code": 1000})
        else:
            raise ValueError(f"unsupported ASGI scope type {kind!r}")


def _stamped(messages: Messages, stamp: RequestStamp) -> Messages:
    """``messages``, each step into app code (and its close) stamped as running (adapters.deadline)."""
    try:
        while True:
            stamp.begin()
            try:
                batch = next(messages, None)
            finally:
                stamp.end()
            if batch is None:
                return
            yield batch
    finally:
        stamp.begin()
        try:
            messages.close()
        finally:
            stamp.end()


def _advance_unseen(messages: Messages, loop: asyncio.AbstractEventLoop) -> Batch | None:
    """The next batch (None at the end), produced with ``loop`` hidden from the app code that runs for it."""
    asyncio._set_running_loop(None)
    try:
        return next(messages, None)
    finally:
        asyncio._set_running_loop(loop)


def _close_unseen(messages: Messages, loop: asyncio.AbstractEventLoop) -> None:
    """Close the generator (and so the app's iterable) with ``loop`` hidden, as in ``_advance_unseen``."""
    asyncio._set_running_loop(None)
    try:
        messages.close()
    finally:
        asyncio._set_running_loop(loop)


def _drive_in_thread(
    messages: Messages, channel: _Channel, loop: asyncio.AbstractEventLoop, gate: AppGate | None
) -> None:
    """Run the app and send what it produces, from a pool thread; waiting on each send gives the app thread the
    connection's backpressure. With a gate (inline mode), app code runs only while holding it."""

    def on_loop(coroutine: Coroutine[Any, Any, T]) -> T:
        if gate is not None:
            coroutine = gate.released(coroutine)
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    if gate is not None:
        asyncio.run_coroutine_threadsafe(gate.acquire(), loop).result()
    try:
        for batch in messages:
            if not on_loop(channel.send(batch)):
                break
    finally:
        try:
            messages.close()
        finally:
            if gate is not None:
                loop.call_soon_threadsafe(gate.release)
