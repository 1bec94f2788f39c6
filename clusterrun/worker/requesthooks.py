"""gunicorn's pre_request and post_request hooks, around each request, on every engine.

Imported only by a worker that has such hooks (clusterrun.worker.runtime.with_request_hooks): it wraps the app
once, at start, so that a worker without them runs nothing of this module per request. Wrapping the app, not the
engines, serves them all alike: the inline WSGI engine, the WSGI bridge of --threads N, and ASGI apps on
clusterrun's own HTTP/1.1 protocol or uvicorn's.

The hooks get what gunicorn's get, made from the request as the app sees it:

* ``req``: ``method``, ``uri`` (the request target as sent), ``path`` (its path, not percent-decoded) and
  ``query``, ``version`` ((1, 1)), ``scheme``, ``remote_addr``, and ``headers``: a list of (NAME, value)
  strings with upper-case names, as gunicorn's parser gives them (made on first use).
* ``environ``: the WSGI environ, or the ASGI scope.
* ``resp``: ``status`` ("200 OK"), ``status_code`` (200) and ``headers`` (the app's, as (name, value) strings);
  status 500 when the app failed before it started a response.

pre_request runs before the app is called. post_request runs once the app is done with the request: after the
app's iterable is closed (WSGI: when a body given as a list, the app's return; the engine writes it next), after
the app's coroutine returned or raised (ASGI). A hook that raises is logged; the request goes on.
"""

from __future__ import annotations

import http
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

from clusterrun.adapters import entry
from clusterrun.identity import WorkerInfo

logger = logging.getLogger("clusterrun")

Hook = Callable[..., Any]

__all__ = ["Request", "Response", "wrap"]


class Request:
    """A request under gunicorn's names (gunicorn.http.message.Request); what needs work is made on first use."""

    __slots__ = ("_header_source", "_headers", "_parts", "method", "remote_addr", "scheme", "uri", "version")

    def __init__(self, method: str, uri: str, version: tuple[int, int], scheme: str, remote_addr: Any,
                 header_source: Callable[[], list[tuple[str, str]]]) -> None:
        self.method = method
        self.uri = uri
        self.version = version
        self.scheme = scheme
        self.remote_addr = remote_addr
        self._header_source = header_source
        self._headers: list[tuple[str, str]] | None = None
        self._parts: tuple[str, str, str] | None = None

    def _split(self) -> tuple[str, str, str]:
        if self._parts is None:
            parts = urlsplit(self.uri)
            self._parts = parts.path or "", parts.query or "", parts.fragment or ""
        return self._parts

    @property
    def path(self) -> str:
        return self._split()[0]

    @property
    def query(self) -> str:
        return self._split()[1]

    @property
    def fragment(self) -> str:
        return self._split()[2]

    @property
    def headers(self) -> list[tuple[str, str]]:
        """(NAME, value) pairs, names upper-case, as gunicorn's parser gives them."""
        if self._headers is None:
            self._headers = self._header_source()
        return self._headers

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response:
    """What the app answered, under gunicorn's names (gunicorn.http.wsgi.Response): status ("200 OK"),
    status_code and headers; None and [] while the app has started no response."""

    __slots__ = ("_headers", "_raw_headers", "_status", "status_code")

    def __init__(self) -> None:
        self._status: str | None = None
        self.status_code: int | None = None
        self._headers: list[tuple[str, str]] | None = []
        self._raw_headers: Any = ()  # ASGI's (bytes, bytes) pairs, decoded on first use

    def started(self, status: str | None, status_code: int, headers: list[tuple[str, str]] | None,
                raw_headers: Any = ()) -> None:
        self._status, self.status_code, self._headers, self._raw_headers = status, status_code, headers, raw_headers

    def failed(self) -> None:
        """The app failed before it started a response: the client gets a 500."""
        if self.status_code is None:
            self.started("500 Internal Server Error", 500, [])

    @property
    def status(self) -> str | None:
        if self._status is None and self.status_code is not None:
            try:
                self._status = f"{self.status_code} {http.HTTPStatus(self.status_code).phrase}"
            except ValueError:
                self._status = str(self.status_code)
        return self._status

    @property
    def headers(self) -> list[tuple[str, str]]:
        if self._headers is None:
            self._headers = [(bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
                             for name, value in self._raw_headers]
        return self._headers

    def __repr__(self) -> str:
        return f"<Response {self.status}>"


def wrap(loaded: entry.LoadedApp, worker: WorkerInfo, pre: Sequence[Hook], post: Sequence[Hook]) -> entry.LoadedApp:
    """``loaded`` with its app wrapped to run ``pre`` before each request and ``post`` after it."""
    wrapper = _wsgi if loaded.interface == "wsgi" else _asgi
    return entry.LoadedApp(wrapper(loaded.app, worker, tuple(pre), tuple(post)), loaded.interface)


def _run(event: str, hooks: Sequence[Hook], *args: Any) -> None:
    for hook in hooks:
        try:
            hook(*args)
        except Exception:
            logger.exception("the %s hook %s raised; the request goes on", event,
                             getattr(hook, "__qualname__", None) or hook)


# WSGI.

def _wsgi(app: Any, worker: WorkerInfo, pre: tuple[Hook, ...], post: tuple[Hook, ...]) -> Any:
    def hooked(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        req = _request_of_environ(environ)
        if pre:
            _run("pre_request", pre, worker, req)
        resp = Response()

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            code = status.split(" ", 1)[0]
            resp.started(status, int(code) if code.isdigit() else 0, headers)
            if exc_info is None:
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        done = _Once(lambda: _run("post_request", post, worker, req, environ, resp))
        try:
            result = app(environ, start)
        except BaseException:
            resp.failed()
            done()
            raise
        if not post:
            return result
        if type(result) in (list, tuple):
            done()  # all of it is made: the engine writes it next
            return result
        return _closing(result, environ, done)

    return hooked


def _request_of_environ(environ: Mapping[str, Any]) -> Request:
    uri = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not uri:
        query = environ.get("QUERY_STRING", "")
        path = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), safe="/;=,:@!$&'()*+~")
        uri = path + ("?" + query if query else "")
    protocol = environ.get("SERVER_PROTOCOL", "HTTP/1.1")
    major, _, minor = protocol.removeprefix("HTTP/").partition(".")
    version = (int(major), int(minor or 0)) if major.isdigit() and (minor or "0").isdigit() else (1, 1)
    addr = environ.get("REMOTE_ADDR")
    port = environ.get("REMOTE_PORT", "")
    remote = (addr, int(port)) if addr and port.isdigit() else addr
    return Request(environ.get("REQUEST_METHOD", ""), uri, version, environ.get("wsgi.url_scheme", "http"), remote,
                   lambda: _headers_of_environ(environ))


def _headers_of_environ(environ: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The request's header fields back from the environ's CGI names (HTTP_X_TOKEN is X-TOKEN)."""
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.append((key[5:].replace("_", "-"), value))
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            headers.append((key.replace("_", "-"), value))
    return headers


class _Once:
    __slots__ = ("_action",)

    def __init__(self, action: Callable[[], object]) -> None:
        self._action: Callable[[], object] | None = action

    def __call__(self) -> None:
        action, self._action = self._action, None
        if action is not None:
            action()


def _closing(result: Any, environ: Mapping[str, Any], done: _Once) -> Any:
    """The app's iterable, whose ``close()`` then runs post_request. A ``wsgi.file_wrapper`` stays one (a file
    whose close runs it), so that the engine still sends the file with sendfile."""
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None and type(result) is wrapper:
        try:
            return wrapper(_ClosingFile(result.filelike, done), result.blksize)
        except (AttributeError, TypeError):  # another server's wrapper, made otherwise: the plain way below
            pass
    return _ClosingIterable(result, done)


class _ClosingIterable:
    __slots__ = ("_done", "_result")

    def __init__(self, result: Any, done: _Once) -> None:
        self._result, self._done = result, done

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._result)

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._done()


class _ClosingFile:
    """A file for ``wsgi.file_wrapper`` whose ``close()`` runs post_request; everything else is the file's."""

    __slots__ = ("_done", "_file")

    def __init__(self, file: Any, done: _Once) -> None:
        self._file, self._done = file, done

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def close(self) -> None:
        try:
            close = getattr(self._file, "close", None)
            if close is not None:
                close()
        finally:
            self._done()


# ASGI.

def _asgi(app: Any, worker: WorkerInfo, pre: tuple[Hook, ...], post: tuple[Hook, ...]) -> Any:
    async def hooked(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # WebSocket and lifespan: gunicorn's hooks are about HTTP requests
            await app(scope, receive, send)
            return
        req = _request_of_scope(scope)
        if pre:
            _run("pre_request", pre, worker, req)
        if not post:
            await app(scope, receive, send)
            return
        resp = Response()

        async def send_seen(message: Any) -> None:
            if message["type"] == "http.response.start":
                resp.started(None, int(message["status"]), None, message.get("headers", ()))
            await send(message)

        try:
            await app(scope, receive, send_seen)
        except BaseException:
            resp.failed()
            raise
        finally:
            _run("post_request", post, worker, req, scope, resp)

    return hooked


def _request_of_scope(scope: Mapping[str, Any]) -> Request:
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else quote(scope.get("path", ""), safe="/;=,:@!$&'()*+~")
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    major, _, minor = str(scope.get("http_version", "1.1")).partition(".")
    version = (int(major), int(minor or 0)) if major.isdigit() and (minor or "0").isdigit() else (1, 1)
    client = scope.get("client")
    return Request(scope.get("method", ""), path + ("?" + query if query else ""), version,
                   scope.get("scheme", "http"), tuple(client) if client else None,
                   lambda: [(bytes(name).decode("latin-1").upper(), bytes(value).decode("latin-1"))
                            for name, value in scope.get("headers", ())])
