"""The control socket: a Unix socket in the primary's one wait, for clusterrun status/reload/scale/stop.

One request per connection: a JSON object on one line, answered by a JSON object on one line, then the
connection closes. Only the cluster's own user (or root) is served: the socket file is 0600 in a 0700
folder, and each peer's uid is checked as well. Where the socket lives, what may be trusted and the format of
an exchange are the client's rules too: they live in clusterrun.host.controlsocket. A request that is
malformed, too large or too slow gets an error answer or is closed; it never disturbs the primary.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import selectors
import socket
from collections.abc import Callable
from typing import Any

from clusterrun.errors import ConfigError
from clusterrun.host.controlsocket import (
    MAX_REQUEST,
    allowed,
    choose_dir,
    encode,
    first_line,
    parent_dir,
    peer_uid,
    probe,
)
from clusterrun.host.timers import Timers
from clusterrun.ops.oneshot import OneShotServer

logger = logging.getLogger("clusterrun")

Answer = dict[str, Any]
Handler = Callable[[dict[str, Any]], Answer]


class ControlServer(OneShotServer):
    """The control socket: one JSON request per connection, answered with ``handler``'s JSON."""

    max_request = MAX_REQUEST

    def __init__(self, path: str, selector: selectors.BaseSelector, timers: Timers, handler: Handler) -> None:
        """``path``: the socket's path (--control), or "" for NAME.sock in the folder ``open`` chooses."""
        super().__init__(selector, timers)
        self.path = path
        self.explicit = bool(path)
        self.handler = handler
        self._inode = 0

    def open(self, name: str) -> None:
        """Bind the socket; ConfigError if a live cluster already answers there (the same name)."""
        if self.explicit:
            parent_dir(self.path)
        else:
            self.path = os.path.join(choose_dir(), f"{name}.sock")
        _remove_if_stale(self.path, name)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old_mask = os.umask(0o177)  # created 0600: no moment where others could connect
            try:
                sock.bind(self.path)
            finally:
                os.umask(old_mask)
            sock.listen(16)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot open the control socket {self.path}: {exc.strerror}; give --control PATH "
                              "elsewhere, or --no-control") from None
        self._inode = os.stat(self.path).st_ino
        self.serve(sock)

    def close(self) -> None:
        was_open = self.sock is not None
        super().close()
        if was_open:
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_ino == self._inode:  # ours still, not a successor's
                    os.unlink(self.path)

    def describe(self) -> str:
        return f"control socket {self.path}"

    def refuse(self, conn: socket.socket) -> bytes | None:
        uid = peer_uid(conn)
        if allowed(uid):
            return None
        logger.warning("control socket: refused a connection from uid %s", uid)
        return encode({"ok": False, "error": f"permission denied: uid {uid} is neither this cluster's user "
                       f"({os.getuid()}) nor root"})

    def answer(self, received: bytes) -> bytes | None:
        line = first_line(received)
        return None if line is None else encode(self._handle(line))

    def too_large(self) -> bytes:
        return encode({"ok": False, "error": f"request larger than {MAX_REQUEST} bytes"})

    def _handle(self, line: bytes) -> Answer:
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "the request is not JSON: send one JSON object on one line"}
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            return {"ok": False, "error": 'the request must be a JSON object with a "command" string'}
        try:
            return self.handler(request)
        except Exception as exc:  # a bug in a command must not take the primary down
            logger.error("control command %r failed", request.get("command"), exc_info=True)
            return {"ok": False, "error": f"the command failed: {type(exc).__name__}: {exc}"}


def _remove_if_stale(path: str, name: str) -> None:
    """A socket file nobody answers on is a dead cluster's: remove it. One that answers is a live cluster's."""
    if not os.path.exists(path):
        return
    refused = probe(path)
    if refused is not None:
        if refused.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
            raise ConfigError(f"cannot check the control socket {path}: {refused.strerror}; give --control PATH "
                              "elsewhere, or --no-control")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    raise ConfigError(f"a cluster named {name!r} is already running (control socket {path}): give this one "
                      f"another --name, or stop that one with: clusterrun stop {name}")
