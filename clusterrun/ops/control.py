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

from clusterrun.errors import ConfigError
from clusterrun.host.timers import Timers
from clusterrun.ops.oneshot import OneShotServer

logger = logging.getLogger("clusterrun")

MAX_REQUEST = 64 * 1024  # bytes of one request: every command fits in a few hundred

Answer = dict[str, Any]
Handler = Callable[[dict[str, Any]], Answer]


def control_dirs() -> list[str]:
    """Where this user's clusters put their sockets, in order of preference.

    $XDG_RUNTIME_DIR/clusterrun (the runtime folder is the user's own, 0700, by the XDG spec); without one, a
    per-user folder in the temp directory, which any user could create first: a folder there that is not this
    user's own and private is a squatter's, so ~/.clusterrun/run comes next, and the server and the client both
    skip a folder they cannot trust (``distrust``).
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isdir(runtime):
        return [os.path.join(runtime, "clusterrun")]
    return [os.path.join(tempfile.gettempdir(), f"clusterrun-{os.getuid()}"),
            os.path.join(os.path.expanduser("~"), ".clusterrun", "run")]


def control_dir() -> str:
    """The folder this user's next cluster puts its socket in (the first one that is, or can be, trusted)."""
    dirs = control_dirs()
    return next((path for path in dirs if not os.path.lexists(path) or distrust(path) is None), dirs[-1])


def distrust(path: str, socket_file: bool = False, check_mode: bool = True) -> str | None:
    """Why the folder (or socket file) at ``path`` must not be trusted; None if it may be.

    Trusted: a real folder (socket), not a link, that belongs to this user or root, and that no other user may
    write to: another user who could would plant a socket there that receives our commands.
    """
    try:
        info = os.lstat(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    is_right_kind = stat.S_ISSOCK(info.st_mode) if socket_file else stat.S_ISDIR(info.st_mode)
    if not is_right_kind:
        return "is not a socket" if socket_file else "is not a folder"
    if info.st_uid not in (os.getuid(), 0):
        return f"belongs to uid {info.st_uid}"
    if check_mode and stat.S_IMODE(info.st_mode) & 0o077:
        return f"is open to other users (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def socket_path(name: str, control: str = "") -> str:
    """The socket of the cluster ``name``: ``control`` if given, else NAME.sock in the first trusted folder that
    has one (a cluster that fell back from a squatted folder is found too), else where the next one would go."""
    if control:
        return control
    for folder in control_dirs():
        path = os.path.join(folder, f"{name}.sock")
        if os.path.lexists(path) and distrust(folder) is None:
            return path
    return os.path.join(control_dir(), f"{name}.sock")


def choose_dir() -> str:
    """The folder a cluster opens its socket in: the first candidate that is trusted or created now, 0700.

    A folder clusterrun did not create is never chmodded: one that is not private is skipped, with a warning.
    """
    candidates = control_dirs()
    for folder in candidates:
        try:
            created = _make_dir(folder)
        except OSError as exc:
            logger.warning("control folder %s cannot be created (%s): trying the next one", folder, exc.strerror)
            continue
        reason = distrust(folder)
        if reason is None:
            return folder
        if created:  # ours a moment ago: someone changed it since, or the umask let others in
            raise ConfigError(f"the control folder {folder} {reason}: give --control PATH in a folder of yours")
        logger.warning("control folder %s %s: not used (another user may have made it); trying the next one",
                       folder, reason)
    raise ConfigError(f"no control folder can be trusted ({', '.join(candidates)}): give --control PATH in a "
                      "folder of yours, or set XDG_RUNTIME_DIR")


def _make_dir(path: str) -> bool:
    """Create the folder 0700 (its parents too, 0700); whether it was created now."""
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        os.makedirs(parent, mode=0o700, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return False
    return True


def parent_dir(path: str) -> None:
    """For --control PATH: create its folder if missing (0700); else the folder stays as it is, never chmodded.

    A folder of another user (not root) is refused: they could replace the socket with their own.
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the control folder {folder}: {exc.strerror}; give --control PATH "
                          "elsewhere, or --no-control") from None
    owner = os.stat(folder).st_uid
    if owner not in (os.getuid(), 0):
        raise ConfigError(f"the control folder {folder} belongs to uid {owner}, not to you: give --control PATH "
                          "in a folder of yours")


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
