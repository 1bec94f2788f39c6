"""The control socket: a Unix socket in the primary's one wait, for clusterrun status/reload/scale/stop.

One request per connection: a JSON object on one line, answered by a JSON object on one line, then the
connection closes. Only the cluster's own user (or root) is served: the socket file is 0600 in a 0700
folder, and each peer's uid is checked as well (SO_PEERCRED on Linux, LOCAL_PEERCRED on the BSDs and
macOS), since a folder's mode does not stop a process that already holds a descriptor to it. A request that
is malformed, too large or too slow gets an error answer or is closed; it never disturbs the primary.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import selectors
import socket
import stat
import struct
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from .errors import ConfigError
from .oneshot import OneShotServer
from .supervision import Timers

logger = logging.getLogger("clusterrun")

MAX_REQUEST = 64 * 1024  # bytes of one request: every command fits in a few hundred

Answer = dict[str, Any]
Handler = Callable[[dict[str, Any]], Answer]


def control_dir() -> str:
    """Where this user's clusters put their sockets: $XDG_RUNTIME_DIR/clusterrun, else the temp directory's."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "clusterrun")
    return os.path.join(tempfile.gettempdir(), f"clusterrun-{os.getuid()}")


def socket_path(name: str, control: str = "") -> str:
    return control or os.path.join(control_dir(), f"{name}.sock")


def make_private_dir(path: str) -> None:
    """Create the socket folder 0700; refuse one that another user owns or others can enter."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.stat(path)
    if info.st_uid != os.getuid():
        raise ConfigError(f"the control folder {path} belongs to uid {info.st_uid}, not to you: remove it, or "
                          "give --control PATH in a folder of yours")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a connected Unix socket; None where it cannot be learnt."""
    if sys.platform.startswith("linux"):
        so_peercred = getattr(socket, "SO_PEERCRED", 17)
        _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, so_peercred, 12))
        return int(uid)
    with contextlib.suppress(OSError):
        # struct xucred: u_int cr_version, uid_t cr_uid, short cr_ngroups, gid_t cr_groups[16]
        local_peercred, sol_local = 1, 0
        return int(struct.unpack_from("2I", sock.getsockopt(sol_local, local_peercred, 76))[1])
    return None


def allowed(uid: int | None) -> bool:
    return uid is not None and uid in (os.getuid(), 0)


class ControlServer(OneShotServer):
    """The control socket: one JSON request per connection, answered with ``handler``'s JSON."""

    max_request = MAX_REQUEST

    def __init__(self, path: str, selector: selectors.BaseSelector, timers: Timers, handler: Handler) -> None:
        super().__init__(selector, timers)
        self.path = path
        self.handler = handler
        self._inode = 0

    def open(self, name: str) -> None:
        """Bind the socket; ConfigError if a live cluster already answers there (the same name)."""
        make_private_dir(os.path.dirname(self.path) or ".")
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

    def refuse(self, conn: socket.socket) -> bytes | None:
        uid = peer_uid(conn)
        if allowed(uid):
            return None
        logger.warning("control socket: refused a connection from uid %s", uid)
        return _encode({"ok": False, "error": f"permission denied: uid {uid} is neither this cluster's user "
                        f"({os.getuid()}) nor root"})

    def answer(self, received: bytes) -> bytes | None:
        if b"\n" not in received:
            return None
        return _encode(self._handle(received.partition(b"\n")[0]))

    def too_large(self) -> bytes:
        return _encode({"ok": False, "error": f"request larger than {MAX_REQUEST} bytes"})

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


def _encode(answer: Answer) -> bytes:
    return json.dumps(answer, separators=(",", ":")).encode() + b"\n"


def _remove_if_stale(path: str, name: str) -> None:
    """A socket file nobody answers on is a dead cluster's: remove it. One that answers is a live cluster's."""
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
            raise ConfigError(f"cannot check the control socket {path}: {exc.strerror}; give --control PATH "
                              "elsewhere, or --no-control") from None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    finally:
        probe.close()
    raise ConfigError(f"a cluster named {name!r} is already running (control socket {path}): give this one "
                      f"another --name, or stop that one with: clusterrun stop {name}")
