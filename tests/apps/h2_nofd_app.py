"""A WSGI app whose worker cannot start the inline engine's HTTP/2 side the first time
(tests/adapters/engine/test_e2e_inline_http2.py): the side's event loop needs an epoll descriptor and a socket
pair, and a worker at its descriptor limit gets EMFILE there. Which connection meets the limit cannot be chosen
from outside the worker, so the first ``asyncio.new_event_loop()`` of the worker fails as it would then.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable, Iterable
from typing import Any

_real_new_event_loop = asyncio.new_event_loop
_failed = False


def _new_event_loop() -> asyncio.AbstractEventLoop:
    global _failed
    if not _failed:
        _failed = True
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
    return _real_new_event_loop()


asyncio.new_event_loop = _new_event_loop


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
