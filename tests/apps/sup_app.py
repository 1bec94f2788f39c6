"""Test app for supervision: the same endpoints as raw WSGI (``wsgi``) and raw ASGI (``asgi``).

/          the worker's id, index and pid as JSON
/slow?s=N  sleeps N seconds, then answers (an in-flight request for drain tests)
/crash     the worker exits at once with code 1
/peak      the largest number of requests this worker ran at the same time (WSGI threads)
/hang      blocks the event loop (a hung worker)
/block?s=N blocks the event loop for N seconds, then answers (a long inline request, a CPU-bound handler)
/leak?mb=N keeps N MiB more alive in this worker
/garbage   writes garbage into this worker's channel to the primary
Every answer carries "imported_in": the pid that imported this module (the primary under --preload).
If the file named by $SUP_BREAK_FILE exists, importing this module fails (a broken deploy).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
from typing import Any
from urllib.parse import parse_qs

import clusterrun

if os.environ.get("SUP_BREAK_FILE") and os.path.exists(os.environ["SUP_BREAK_FILE"]):
    raise RuntimeError("broken on purpose by the test")

logger = logging.getLogger("sup_app")
IMPORTED_IN = os.getpid()
_kept: list[bytes] = []
_lock = threading.Lock()
_running = 0
_peak = 0


def _who() -> dict[str, Any]:
    worker = clusterrun.current_worker()
    found = {"id": worker.id, "index": worker.index, "pid": worker.pid} if worker else {}
    return dict(found, imported_in=IMPORTED_IN)


def _misbehave(path: str, query: str) -> None:
    """The endpoints shared by both interfaces that make a worker misbehave on purpose."""
    if path == "/crash":
        os._exit(1)
    if path == "/hang":
        logger.warning("hanging on purpose in pid %d", os.getpid())
        time.sleep(3600)  # blocks the event loop in both interfaces: no heartbeat can be sent
    if path == "/block":
        logger.warning("blocking the loop in pid %d", os.getpid())  # tests wait for this line
        time.sleep(_seconds(query))
    if path == "/leak":
        _kept.append(b"x" * (int(parse_qs(query)["mb"][0]) * 1024 * 1024))
    if path == "/garbage":
        _write_garbage_to_unix_sockets()


def _write_garbage_to_unix_sockets() -> None:
    # The channel to the primary is this process's connected AF_UNIX stream socket; an event loop's own
    # wake-up socket may be one too, and garbage there only wakes it.
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        with sock:
            if sock.family == socket.AF_UNIX and sock.type == socket.SOCK_STREAM:
                with contextlib.suppress(OSError):
                    sock.send(b"\xff" * 64)


def _seconds(query: str) -> float:
    return float(parse_qs(query).get("s", ["1"])[0])


def wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    global _running, _peak
    path = environ["PATH_INFO"]
    _misbehave(path, environ["QUERY_STRING"])
    with _lock:
        _running += 1
        _peak = max(_peak, _running)
    try:
        if path == "/slow":
            logger.warning("slow request started")  # tests wait for this line: the request is in flight
            time.sleep(_seconds(environ["QUERY_STRING"]))
        body = dict(_who(), peak=_peak, multithread=environ["wsgi.multithread"])
    finally:
        with _lock:
            _running -= 1
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    _misbehave(scope["path"], scope["query_string"].decode())
    if scope["path"] == "/slow":
        logger.warning("slow request started")
        await asyncio.sleep(_seconds(scope["query_string"].decode()))
    data = json.dumps(_who()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
