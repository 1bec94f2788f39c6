"""Static files (``--static PREFIX=DIR``), served by the worker before the app: a WSGI layer and an ASGI layer.

One decision for both: ``StaticFiles.answer`` takes a request's method, its raw path (as the client sent it,
still percent-encoded) and a way to read its headers, and returns None when the request is not for a static
mount (the app gets it), or an ``Answer``: a status, the response headers, and the part of an open file to send.

- The inline WSGI engine gets ``StaticWSGI`` in front of the app: the file goes out as the environ's
  ``wsgi.file_wrapper``, which the engine sends with ``os.sendfile`` (zero-copy) on a plain connection.
- uvicorn's stack (ASGI apps, ``--threads N``, ``--http uvicorn|h11``) gets ``StaticASGI``: a file larger than
  ``_BLOCK`` goes as one ``http.response.zerocopysend`` message where the protocol offers that extension
  (clusterrun's own, on asyncio's loops over plain HTTP: loop.sendfile); otherwise the file is read in blocks
  of ``_BLOCK`` and sent as body messages, which works on every ASGI protocol.

The path is checked segment by segment on the raw bytes, before any file is opened: an encoded slash (``%2f``)
or backslash, ``.`` or ``..`` (raw or encoded), and an empty segment are a 404; a NUL byte (raw or ``%00``),
bad percent-encoding or a path that is not UTF-8 is a 400. What is left is joined under the mount's folder, and
its real path (symlinks resolved) must still lie in the folder's real path, else 404. A directory is a 404 too
(no listing, no index.html): a static mount serves named files only.

Imports no asyncio: the inline engine's worker must not load it. Imported (through adapters.entry) only by a
worker given --static.
"""

from __future__ import annotations

import email.utils
import functools
import mimetypes
import os
import stat
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Answer", "StaticASGI", "StaticFiles", "StaticWSGI"]

_BLOCK = 256 * 1024  # the ASGI layer's read size: few messages for a big file, little memory per response
_ALLOW = "GET, HEAD"
# Which precompressed sibling answers which coding, best first: brotli is smaller where the client takes both.
_ENCODINGS = (("br", ".br"), ("gzip", ".gz"))
_HEX = frozenset(b"0123456789abcdefABCDEF")
_PROC_FD = os.path.isdir("/proc/self/fd")  # Linux: an open descriptor's real path is one readlink away
# Types that are text without a text/ prefix: they are sent with charset=utf-8 as well.
_TEXTLIKE = frozenset({"application/javascript", "application/json", "application/xml", "image/svg+xml",
                       "application/manifest+json"})

GetHeader = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Answer:
    """A static response: ``status``, ``headers``, and ``count`` bytes of the open ``fd`` from ``offset``
    (``fd`` -1 for a response without a file: 304, 404, 405, 416...). ``body`` is the text of an error."""

    status: int
    headers: list[tuple[str, str]]
    fd: int = -1
    offset: int = 0
    count: int = 0
    body: bytes = b""


_REASONS = {200: "OK", 206: "Partial Content", 304: "Not Modified", 400: "Bad Request", 404: "Not Found",
            405: "Method Not Allowed", 416: "Range Not Satisfiable"}


def _error(status: int, extra: Sequence[tuple[str, str]] = ()) -> Answer:
    body = f"{status} {_REASONS[status]}\n".encode("ascii")
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), *extra]
    return Answer(status, headers, body=body)


class _Refused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _unquote(segment: bytes) -> bytes:
    """One path segment percent-decoded; _Refused(400) for a bad escape."""
    if b"%" not in segment:
        return segment
    out = bytearray()
    i, size = 0, len(segment)
    while i < size:
        byte = segment[i]
        if byte == 0x25:  # %
            pair = segment[i + 1:i + 3]
            if len(pair) != 2 or not all(c in _HEX for c in pair):
                raise _Refused(400)
            out.append(int(pair, 16))
            i += 3
        else:
            out.append(byte)
            i += 1
    return bytes(out)


def safe_parts(rest: bytes) -> list[str]:
    """The names under a mount that ``rest`` (the raw path after the prefix, from its first "/") names.

    _Refused(404) for anything that could leave the folder or name something other than a plain child (an
    encoded "/" or a backslash, ".", "..", an empty segment), _Refused(400) for a NUL byte or bad encoding.
    """
    if not rest.startswith(b"/"):
        raise _Refused(404)
    parts = []
    for raw in rest[1:].split(b"/"):
        segment = _unquote(raw)
        if b"\x00" in segment:
            raise _Refused(400)
        if not segment or segment in (b".", b"..") or b"/" in segment or b"\\" in segment:
            raise _Refused(404)
        try:
            parts.append(segment.decode("utf-8"))
        except UnicodeDecodeError:
            raise _Refused(400) from None
    return parts


def _accepts(header: str | None) -> dict[str, float]:
    """Accept-Encoding as {coding: q}; "*" stands for every coding not named."""
    accepted: dict[str, float] = {}
    if not header:
        return accepted
    for item in header.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if coding:
            accepted[coding.lower()] = q
    return accepted


def _wanted(accepted: dict[str, float], coding: str) -> bool:
    q = accepted.get(coding, accepted.get("*", 0.0))
    return bool(q > 0)


def content_type(name: str) -> str:
    return _type_of(os.path.splitext(name)[1].lower())


@functools.lru_cache(maxsize=256)  # one entry per extension a mount holds: mimetypes costs microseconds per call
def _type_of(extension: str) -> str:
    kind, _ = mimetypes.guess_type("x" + extension, strict=False)
    if kind is None:
        return "application/octet-stream"
    if kind.startswith("text/") or kind in _TEXTLIKE:
        return kind + "; charset=utf-8"
    return kind


def _etag_matches(header: str, etag: str) -> bool:
    """If-None-Match against ``etag``: "*" or any tag equal to it, weakly compared (RFC 9110 13.1.2)."""
    if header.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in header.split(","))


def _http_date(header: str | None) -> float | None:
    if not header:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None


def _digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes "²" and other scripts' digits, which int() refuses or reads."""
    return text.isascii() and text.isdigit()


# A position with more digits than this is past the end of any file, whatever its value: it is not converted
# (int() refuses a string of more than 4300 digits, and the header may hold 8 KB of them).
_POSITION_DIGITS = 19
_BEYOND = 10**_POSITION_DIGITS


def _position(text: str) -> int:
    return int(text) if len(text) <= _POSITION_DIGITS else _BEYOND


def _range(header: str, size: int) -> tuple[int, int] | bool | None:
    """A single byte range as (first, last); None when the header is to be ignored (not bytes=, malformed, or
    several ranges: the whole file is served); False when it cannot be satisfied (416)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_text, dash, last_text = spec.strip().partition("-")
    if not dash:
        return None
    first_text, last_text = first_text.strip(), last_text.strip()
    if not (_digits(first_text) or first_text == "") or not (_digits(last_text) or last_text == ""):
        return None
    if first_text == "":  # a suffix: the last N bytes
        if last_text == "":
            return None
        length = _position(last_text)
        if length == 0 or size == 0:
            return False
        return max(0, size - length), size - 1
    first = _position(first_text)
    if first >= size:
        return False
    last = _position(last_text) if last_text else size - 1
    if last < first:
        return None
    return first, min(last, size - 1)


@dataclass(frozen=True)
class Mount:
    prefix: bytes  # as the client sends it, without a trailing "/" ("" for "/")
    root: str  # the folder's real path


class StaticFiles:
    """The mounts (longest prefix first), --static-max-age and --static-fallthrough; ``answer`` decides."""

    def __init__(self, mounts: Iterable[tuple[str, str]], max_age: int = 0, fallthrough: bool = False) -> None:
        self.mounts = sorted((Mount(prefix.rstrip("/").encode("utf-8"), os.path.realpath(folder))
                              for prefix, folder in mounts), key=lambda mount: -len(mount.prefix))
        self.cache_control = f"public, max-age={max_age}" if max_age > 0 else ""
        self.fallthrough = fallthrough

    def mount_of(self, raw_path: bytes) -> tuple[Mount, bytes] | None:
        for mount in self.mounts:
            prefix = mount.prefix
            if raw_path.startswith(prefix) and raw_path[len(prefix):len(prefix) + 1] in (b"/", b""):
                return mount, raw_path[len(prefix):]
        return None

    def answer(self, method: str, raw_path: bytes, header: GetHeader) -> Answer | None:
        found = self.mount_of(raw_path)
        if found is None:
            return None
        mount, rest = found
        if method not in ("GET", "HEAD"):
            return None if self.fallthrough else _error(405, [("Allow", _ALLOW)])
        try:
            parts = safe_parts(rest)
        except _Refused as refused:
            return None if self.fallthrough and refused.status == 404 else _error(refused.status)
        path = os.path.join(mount.root, *parts)
        opened = self._open(mount.root, path)
        if opened is None:
            return None if self.fallthrough else _error(404)
        fd, info = opened
        try:
            return self._file(mount.root, fd, info, path, header)
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _open(root: str, path: str) -> tuple[int, os.stat_result] | None:
        """The regular file at ``path`` opened, with its stat, if its real path lies in ``root``; else None.

        The check is on what was opened (Linux: the descriptor's own path in /proc, one readlink): a symlink
        swapped in between a check and the open cannot lead out. Elsewhere, the path's realpath after the open.
        """
        try:
            # O_NONBLOCK: opening a FIFO someone left in the folder must not stall the worker.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            try:
                real = os.readlink(f"/proc/self/fd/{fd}") if _PROC_FD else os.path.realpath(path)
            except OSError:
                real = os.path.realpath(path)
            if stat.S_ISREG(info.st_mode) and real.startswith(root + os.sep):
                return fd, info
        except OSError:
            pass
        os.close(fd)
        return None

    def _file(self, root: str, fd: int, info: os.stat_result, path: str, header: GetHeader) -> Answer:
        headers = [("Content-Type", content_type(path))]
        suffix = ""  # the sibling's, when one is sent: its ETag differs from the plain file's
        accepted = _accepts(header("accept-encoding"))
        if accepted:  # a client that names no coding gets the file: no sibling is looked up, so no Vary
            chosen = False
            for coding, ending in _ENCODINGS:
                opened = self._open(root, path + ending)  # in the mount's folder too
                if opened is None:
                    continue
                if not chosen and _wanted(accepted, coding):
                    chosen, suffix = True, ending
                    os.close(fd)
                    fd, info = opened
                    headers.append(("Content-Encoding", coding))
                else:
                    os.close(opened[0])
                if ("Vary", "Accept-Encoding") not in headers:
                    headers.insert(1, ("Vary", "Accept-Encoding"))
        etag = f'"{info.st_mtime_ns:x}-{info.st_size:x}{suffix.replace(".", "-")}"'
        modified = email.utils.formatdate(info.st_mtime, usegmt=True)
        headers += [("ETag", etag), ("Last-Modified", modified), ("Accept-Ranges", "bytes")]
        if self.cache_control:
            headers.append(("Cache-Control", self.cache_control))
        if self._not_modified(info, etag, header):
            os.close(fd)
            return Answer(304, [pair for pair in headers if pair[0] not in ("Content-Type", "Accept-Ranges")])
        size = info.st_size
        wanted = header("range")
        if wanted is not None and self._range_applies(info, etag, header):
            span = _range(wanted, size)
            if span is False:
                os.close(fd)
                return _error(416, [("Content-Range", f"bytes */{size}")])
            if isinstance(span, tuple):
                first, last = span
                count = last - first + 1
                headers += [("Content-Range", f"bytes {first}-{last}/{size}"), ("Content-Length", str(count))]
                return Answer(206, headers, fd, first, count)
        headers.append(("Content-Length", str(size)))
        return Answer(200, headers, fd, 0, size)

    @staticmethod
    def _not_modified(info: os.stat_result, etag: str, header: GetHeader) -> bool:
        tags = header("if-none-match")
        if tags is not None:  # it wins over If-Modified-Since (RFC 9110 13.2.2)
            return _etag_matches(tags, etag)
        since = _http_date(header("if-modified-since"))
        return since is not None and int(info.st_mtime) <= since

    @staticmethod
    def _range_applies(info: os.stat_result, etag: str, header: GetHeader) -> bool:
        """If-Range: the range counts only while the file is the one the client has (strong ETag or date)."""
        condition = header("if-range")
        if condition is None:
            return True
        condition = condition.strip()
        if condition.startswith(('"', "W/")):
            return condition == etag
        since = _http_date(condition)
        return since is not None and int(info.st_mtime) <= since


class _Part:
    """``count`` bytes of ``fd`` from ``offset``, as a file for ``wsgi.file_wrapper``: ``fileno`` and ``tell``
    let the inline engine send it with sendfile (bounded by Content-Length); ``read`` stops at its end."""

    def __init__(self, fd: int, offset: int, count: int) -> None:
        self.fd, self.left = fd, count
        os.lseek(fd, offset, os.SEEK_SET)

    def fileno(self) -> int:
        return self.fd

    def tell(self) -> int:
        return os.lseek(self.fd, 0, os.SEEK_CUR)

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        data = os.read(self.fd, size) if size > 0 else b""
        self.left -= len(data)
        return data

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _environ_header(environ: MutableMapping[str, Any]) -> GetHeader:
    def header(name: str) -> str | None:
        value = environ.get("HTTP_" + name.upper().replace("-", "_"))
        return None if value is None else str(value)

    return header


class StaticWSGI:
    """A WSGI app: static mounts first, the app for everything else."""

    def __init__(self, app: Callable[..., Any], files: StaticFiles) -> None:
        self.app, self.files = app, files

    def __call__(self, environ: MutableMapping[str, Any], start_response: Callable[..., Any]) -> Any:
        raw_uri = environ.get("RAW_URI")
        if raw_uri is None:  # an engine that keeps no raw path: the decoded one, with "/" re-encoded as it was
            raw_path = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1")
        else:
            raw_path = str(raw_uri).partition("?")[0].encode("latin-1")
        answer = self.files.answer(environ["REQUEST_METHOD"], raw_path, _environ_header(environ))
        if answer is None:
            return self.app(environ, start_response)
        start_response(f"{answer.status} {_REASONS[answer.status]}", answer.headers)
        if answer.fd < 0:
            return [answer.body] if environ["REQUEST_METHOD"] != "HEAD" else []
        part = _Part(answer.fd, answer.offset, answer.count)
        if environ["REQUEST_METHOD"] == "HEAD":
            part.close()
            return []
        wrapper = environ.get("wsgi.file_wrapper")
        return wrapper(part, _BLOCK) if wrapper is not None else _blocks(part)


def _blocks(part: _Part) -> Iterator[bytes]:
    try:
        while block := part.read(_BLOCK):
            yield block
    finally:
        part.close()


ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]


class StaticASGI:
    """An ASGI app: static mounts first (HTTP only), the app for everything else (lifespan, WebSockets too)."""

    def __init__(self, app: ASGIApp, files: StaticFiles) -> None:
        self.app, self.files = app, files

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
        root = scope.get("root_path", "").encode("latin-1")
        if root and raw_path.startswith(root):  # the protocols put --root-path first: match what the client sent
            raw_path = raw_path[len(root):]
        headers: list[tuple[bytes, bytes]] = scope["headers"]

        def header(name: str) -> str | None:
            wanted = name.encode("latin-1")
            values = [value.decode("latin-1") for key, value in headers if key.lower() == wanted]
            return ", ".join(values) if values else None

        answer = self.files.answer(scope["method"], raw_path, header)
        if answer is None:
            return await self.app(scope, receive, send)
        await send({"type": "http.response.start", "status": answer.status,
                    "headers": [(name.encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers]})
        if answer.fd < 0 or scope["method"] == "HEAD":
            if answer.fd >= 0:
                os.close(answer.fd)
            await send({"type": "http.response.body", "body": answer.body if scope["method"] != "HEAD" else b""})
            return
        # The kernel copies a big file (sendfile). A small one is read and goes out with the head in one write:
        # loop.sendfile's own set-up costs more than the copy (measured: 1,400 req/s for a 4 KiB file, against
        # 13,000 read).
        if answer.count > _BLOCK and "http.response.zerocopysend" in scope.get("extensions", ()):
            with open(answer.fd, "rb", buffering=0) as file:
                await send({"type": "http.response.zerocopysend", "file": file, "offset": answer.offset,
                            "count": answer.count, "more_body": False})
            return
        part = _Part(answer.fd, answer.offset, answer.count)
        try:
            # Reads from the page cache on the loop's thread, a block at a time: each send waits for the client
            # to take the previous one, so a slow reader holds one block, not the file.
            block = part.read(_BLOCK)
            while True:
                following = part.read(_BLOCK) if block else b""
                await send({"type": "http.response.body", "body": block, "more_body": bool(following)})
                if not following:
                    break
                block = following
        finally:
            part.close()
