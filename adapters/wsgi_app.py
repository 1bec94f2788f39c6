"""What calling a PEP 3333 application takes, whatever serves it: start_response() and write(), their checks,
``wsgi.file_wrapper``, the environ's header keys, and how an app's exception is logged.

Shared by the WSGI-to-ASGI bridge (adapters.stack.bridge, for ``--threads N``) and the inline engine
(adapters.engine.server): both validate the same way and log the same lines.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from types import TracebackType
from typing import Any, Protocol

from mypy_extensions import mypyc_attr

__all__ = [
    "BAD_VALUE", "TOKEN", "Environ", "ExcInfo", "Exchange", "FileWrapper", "Readable", "StartResponse", "WSGIApp",
    "environ_key", "log_app_error", "path_info", "split_host",
]

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


class StartResponse(Protocol):
    def __call__(
        # None, not ``...``, as the default: mypyc compiles this stub too and checks the default against the type.
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None, /
    ) -> Callable[[bytes], object]: ...


WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

logger = logging.getLogger("clusterrun.wsgi")


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


# What HTTP allows in a header name (RFC 9110 token) and forbids in a value (controls other than HTAB). Checked
# in start_response, in the app's frame: uvicorn would otherwise refuse the header only while writing it, after
# marking the response started, and drop the connection with no answer at all.
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class FileWrapper:
    """``wsgi.file_wrapper``: iterates a file in blocks; ``close()`` closes the file."""

    __slots__ = ("blksize", "filelike")

    def __init__(self, filelike: Readable, blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> Iterator[bytes]:
        read, size = self.filelike.read, self.blksize
        while block := read(size):
            yield block

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


# An app sends the same status lines and header fields on nearly every response: each is checked and encoded
# once, and a pair seen before is known good. Cleared when full, so that values an app makes per response (dates,
# cookies) neither grow the memory without end nor keep the common ones out for long.
_STATUSES: dict[str, int] = {}
_PAIRS: dict[tuple[str, str], tuple[bytes, bytes]] = {}
_CACHE_LIMIT = 1024


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _check_status(status: object) -> int:
    """The code of a status line, after checking it (TypeError or ValueError, naming it, if bad)."""
    if not isinstance(status, str):
        raise TypeError(f"WSGI status must be a str, got {type(status).__name__}")
    if not (status[:3].isascii() and status[:3].isdigit() and len(status) >= 3 and status[0] in "12345"):
        raise ValueError(f"WSGI status must start with a 3-digit code from 100 to 599, got {status!r}")
    if not (status.isprintable() and (status.isascii() or _latin1(status))):  # a CR or LF would end it early
        raise ValueError(f"WSGI status must be printable latin-1 text, got {status!r}")
    code = int(status[:3])
    if type(status) is str:
        _remember(_STATUSES, status, code)
    return code


def _check_pair(item: object) -> tuple[bytes, bytes]:
    """A response header field encoded, after checking it (TypeError or ValueError, naming it, if bad)."""
    if type(item) is not tuple or len(item) != 2 or not isinstance(item[0], str) or not isinstance(item[1], str):
        raise TypeError(f"each WSGI response header must be a (str, str) tuple, got {item!r}")
    name, value = item
    if TOKEN.fullmatch(name) is None:
        raise ValueError(f"invalid WSGI response header name {name!r} (value {value!r})")
    # isprintable() is the fast path: true means no control character at all.
    if not value.isprintable() and BAD_VALUE.search(value) is not None:
        raise ValueError(f"WSGI response header {name!r} has a control character in its value {value!r}")
    if len(name) == 14 and name.lower() == "content-length" and not value.strip().isdecimal():
        raise ValueError(f"invalid Content-Length response header {value!r}")
    # Encoding here rather than when sending makes a non-latin-1 header fail inside the app's frame.
    pair = (name.encode("latin-1"), value.encode("latin-1"))
    if type(name) is str and type(value) is str:
        _remember(_PAIRS, item, pair)
    return pair


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value


# adapters/stack/bridge.py subclasses it, and bridge.py is not compiled.
@mypyc_attr(allow_interpreted_subclasses=True)
class Exchange:
    """start_response()/write() state of one request; bound methods avoid building closures per request.

    Validation happens here, in the app's frame: a bad status or header raises where the app can see it.
    """

    __slots__ = ("done", "headers", "length", "pending", "reason", "sent", "size_hint", "started", "status")

    def __init__(self) -> None:
        self.status = self.sent = 0  # sent: body bytes sent, only counted when length is known
        self.started = self.done = False
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.length: int | None = None  # the app's Content-Length, if any
        self.size_hint: int | None = None  # body size when known up front (list/tuple result)
        self.pending: list[bytes] = []  # write() data not sent yet
        self.reason = ""  # the status line's text after the code, as the app gave it

    # status, headers and data are typed object: compiled by mypyc, a typed argument is checked on the way in and
    # refused with mypyc's own TypeError, before the checks below could name what the app got wrong.
    def start_response(
        self, status: object, headers: object, exc_info: ExcInfo | None = None, /
    ) -> Callable[[bytes], None]:
        if exc_info is not None and exc_info[1] is not None:
            try:
                if self.started:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # PEP 3333: drop the traceback reference to avoid a frame cycle
        elif self.headers is not None:
            raise RuntimeError("start_response() called a second time without exc_info")
        code = _STATUSES.get(status) if type(status) is str else None
        if code is None:
            code = _check_status(status)
        if not isinstance(headers, list):
            raise TypeError(f"WSGI response headers must be a list, got {type(headers).__name__}")
        encoded: list[tuple[bytes, bytes]] = []
        length = None
        for item in headers:
            try:
                pair = _PAIRS.get(item)
            except TypeError:  # unhashable: no (str, str) tuple, which _check_pair says
                pair = None
            if pair is None:
                pair = _check_pair(item)
            encoded.append(pair)
            if len(pair[0]) == 14 and pair[0].lower() == b"content-length":
                length = int(pair[1])
        self.status, self.headers, self.length = code, encoded, length
        self.reason = str(status)[4:]  # a str: _check_status refused anything else
        return self.write

    def write(self, data: object) -> None:  # object: see start_response
        if self.headers is None:
            raise RuntimeError("write() called before start_response()")
        if not isinstance(data, bytes):
            raise TypeError(f"write() takes bytes, got {type(data).__name__}")
        # Buffered until the generator next runs (PEP 3333 allows it): write() cannot yield a message itself.
        if data:
            self.pending.append(data)


_KEY_CACHE_LIMIT = 512
# Appended to the app iterable so write() calls made during the last iteration step still get flushed.
_TAIL = (b"",)


def body_chunks(result: Iterable[bytes], pending: list[bytes]) -> Iterator[bytes]:
    """The app's body as its iterable makes it: write() data goes out before the chunk produced after it,
    empty chunks are skipped, anything but bytes is a TypeError (PEP 3333)."""
    for chunk in chain(result, _TAIL):
        if pending:
            chunk = b"".join(pending) + chunk
            pending.clear()
        elif not chunk:
            continue
        elif not isinstance(chunk, bytes):
            raise TypeError(f"WSGI app iterable yielded {type(chunk).__name__}, expected bytes")
        yield chunk


class HeaderKeys:
    """Request headers into the environ, their names' keys remembered: a server sees the same names again and
    again. The memory stops growing at 512 names, so that clients cannot grow it without end."""

    def __init__(self) -> None:
        self._keys: dict[bytes, str] = {}

    def add_to(self, environ: Environ, headers: Iterable[tuple[bytes, bytes]]) -> None:
        keys = self._keys
        for name, value in headers:
            key = keys.get(name)
            if key is None:
                key = environ_key(name)
                if len(keys) < _KEY_CACHE_LIMIT:
                    keys[name] = key
            if not key:
                continue
            text = value.decode("latin-1")
            if key in environ:  # a repeated header: one value, joined as RFC 9110 says (cookies with "; ")
                environ[key] += ("; " if key == "HTTP_COOKIE" else ", ") + text
            else:
                environ[key] = text


def environ_key(name: bytes) -> str:
    if b"_" in name:
        return ""  # "X_User" would alias "X-User" in the environ; gunicorn drops these to prevent spoofing
    key = name.decode("latin-1").upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


def path_info(root_path: str, path: str) -> str:
    """PATH_INFO under --root-path: the path past the prefix when the proxy kept it, else the path as it came
    (a proxy that strips the prefix)."""
    if path == root_path or path.startswith(root_path + "/"):
        return path[len(root_path):]
    return path


def split_host(host: str, scheme: str) -> tuple[str, str]:
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():  # also rejects the tail of a bare IPv6 literal such as "[::1]"
        return name, port
    return host or "localhost", "443" if scheme in ("https", "wss") else "80"


def log_app_error(environ: Environ, exc: Exception) -> None:
    # The path without the query string, which may carry secrets; as the client sent it (RAW_URI).
    path = str(environ.get("RAW_URI", "")).partition("?")[0]
    logger.error(
        "Exception in WSGI application, %s %s: %s: %s",
        environ.get("REQUEST_METHOD"), path, type(exc).__name__, exc, exc_info=exc,
    )
