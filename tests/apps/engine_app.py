"""A raw WSGI app exercising PEP 3333 for the inline engine's tests (tests/adapters/engine/test_engine.py).

GET  /                 200 "ok"
GET  /environ          the environ's str/bool/tuple values as JSON, plus whether an asyncio loop is running
GET  /asyncio-run      asyncio.run() inside the view: {"answer": 8}
GET  /stream           three chunks from a generator (no Content-Length: chunked)
GET  /write            write() twice, then an iterable
GET  /big?N            N bytes in one chunk, no Content-Length
GET  /file?N           a temporary file of N bytes through wsgi.file_wrapper, with Content-Length
GET  /endless          chunks until the client leaves; its close() is counted
GET  /closes           how many times an iterable's close() ran
GET  /exc-info         start_response, then an error reported with exc_info before any body: a 500
GET  /no-content      204 with a body the server must not send
GET  /slow?S           says so on stderr, sleeps S seconds, then "slow"
POST /sha              reads the body in 64 KiB reads: {"length": N, "sha256": HEX}
POST /lines            reads one line with readline(), the next two with readline(5), the rest by iterating:
                       {"first": LINE, "short": [PART, PART], "rest": N, "last": LINE}
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

_closes = [0]
TEXT = [("Content-Type", "text/plain")]


class _Counted:
    """An iterable whose close() is counted (PEP 3333: the server must call it, whatever happens)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        _closes[0] += 1


def _endless() -> Iterator[bytes]:
    while True:
        yield b"x" * 65536


def _stream() -> Iterator[bytes]:
    yield from (b"one,", b"two,", b"three")


def _raise() -> bytes:
    raise RuntimeError("the body failed")


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _eight() -> int:
    await asyncio.sleep(0)
    return 8


def _sha(environ: dict[str, Any]) -> bytes:
    stream, digest, length = environ["wsgi.input"], hashlib.sha256(), 0
    while chunk := stream.read(65536):
        digest.update(chunk)
        length += len(chunk)
    return json.dumps({"length": length, "sha256": digest.hexdigest()}).encode()


def _file(size: int) -> Any:
    handle = tempfile.TemporaryFile()
    handle.write(bytes(range(256)) * (size // 256) + b"z" * (size % 256))
    handle.seek(0)
    return handle


def app(environ: dict[str, Any], start_response: Any) -> Any:
    path, query = environ["PATH_INFO"], environ["QUERY_STRING"]
    if path.startswith("/environ"):
        shown = {key: value for key, value in environ.items() if isinstance(value, (str, bool, tuple))}
        shown["loop running"] = _loop_running()
        shown["has worker"] = "clusterrun.worker" in environ
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(shown).encode()]
    if path == "/asyncio-run":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"answer": asyncio.run(_eight())}).encode()]
    if path == "/stream":
        start_response("200 OK", TEXT)
        return _Counted(_stream())
    if path == "/write":
        write = start_response("200 OK", TEXT)
        write(b"w1,")
        write(b"w2,")
        return [b"end"]
    if path == "/big":
        start_response("200 OK", TEXT)
        return iter([b"b" * int(query)])
    if path == "/file":
        start_response("200 OK", [*TEXT, ("Content-Length", query)])
        return environ["wsgi.file_wrapper"](_file(int(query)), 8192)
    if path == "/sized":  # a framework's response: an iterable that declared its length; ?declared,chunk,chunk...
        declared, *parts = query.split(",")
        start_response("200 OK", [*TEXT, ("Content-Length", declared)])
        return _Counted(part.encode() if part != "raise" else _raise() for part in parts)
    if path == "/endless":
        start_response("200 OK", TEXT)
        return _Counted(_endless())
    if path == "/closes":
        start_response("200 OK", TEXT)
        return [str(_closes[0]).encode()]
    if path == "/exc-info":
        start_response("200 OK", TEXT)
        try:
            raise KeyError("late trouble")
        except KeyError:
            start_response("500 Internal Server Error", TEXT, sys.exc_info())
        return [b"reported"]
    if path == "/no-content":
        start_response("204 No Content", [])
        return [b"must not be sent"]
    if path == "/slow":
        print("slow request started", file=sys.stderr, flush=True)
        time.sleep(float(query or "0.5"))
        start_response("200 OK", TEXT)
        return [b"slow"]
    if path == "/lines":
        stream = environ["wsgi.input"]
        first, short = stream.readline(), [stream.readline(5), stream.readline(5)]
        rest = list(stream)
        body = json.dumps({"first": first.decode(), "short": [part.decode() for part in short], "rest": len(rest),
                           "last": rest[-1].decode()}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/sha":
        body = _sha(environ)
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    start_response("200 OK", TEXT)
    return [b"ok"]
