"""A sync WSGI app some of whose requests wait on I/O: ``/slow`` sleeps 100 ms (a database or an upstream call,
standing for any blocking wait), ``/`` answers at once. The load generator decides which requests are slow (every
tenth, in the least-conn section), so the mix does not depend on which worker a request reaches."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

BODY = b"Hello, world!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]
SLOW_S = 0.1


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/slow":
        time.sleep(SLOW_S)  # blocks the worker's one thread, as a sync driver's call would
    start_response("200 OK", HEADERS)
    return [BODY]
