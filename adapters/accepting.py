"""Taking connections from a listening socket that workers share: what both servings do the same way.

The inline engine (adapters.engine.server) accepts on its own loop under --policy shared, balanced and reuseport;
uvicorn's stack (clusterrun.worker.serving) does under balanced. Both take a few connections per wake-up and
treat a failed accept alike: nothing there (another worker took it, the client left) ends the turn quietly; out
of descriptors or kernel memory, the listener would stay readable while every accept fails and wake the loop
again and again, so it rests a moment instead (asyncio's own delay for the same case), and its clients wait in
the kernel's backlog or go to another worker.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

__all__ = ["ACCEPT_BATCH", "ACCEPT_REST", "accept"]

logger = logging.getLogger("clusterrun")

# New connections taken per wake-up while each is answered and closed at once (or, under balanced, while the
# worker may take more): bounds how long timers and the worker's other connections wait meanwhile.
ACCEPT_BATCH = 8
ACCEPT_REST = 1.0
_OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


def accept(listener: socket.socket, rest: Callable[..., object], *args: Any) -> tuple[int, Any] | None:
    """One connection from ``listener``, as its descriptor and the peer's address; None when there is none to
    take now. Out of descriptors, ``rest(*args)`` is called (after a warning naming ulimit -n): it stops watching the
    listener and watches it again ACCEPT_REST seconds later."""
    try:
        # _accept(): the descriptor and the address, without socket.accept()'s enum conversions and default-timeout
        # checks; the caller builds the socket it needs from them.
        fd, peer = listener._accept()  # type: ignore[attr-defined]
    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
        return None  # another worker took it, or the client left before the accept
    except OSError as exc:
        if exc.errno not in _OUT_OF_RESOURCES:
            logger.warning("accept failed: %s", exc)
            return None
        logger.warning("accept failed: %s; not accepting for %g s (raise ulimit -n)", exc, ACCEPT_REST)
        rest(*args)
        return None
    return fd, peer
