"""The control socket's ground rules, which its server (clusterrun.ops.control) and its client
(clusterrun.ctl.client) both follow: where a user's sockets live, when a folder or a socket file may be trusted,
who is at the other end of a connection, and what one exchange looks like.

One exchange per connection: the client sends one JSON object on one line, the server answers with one JSON
object on one line and closes. Trust: only a folder (or socket file) of this user or root that no other user may
write to; and at each end, a peer that is this user or root (SO_PEERCRED on Linux, LOCAL_PEERCRED on the BSDs and
macOS), since a folder's mode does not stop a process that already holds a descriptor to it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import stat
import struct
import sys
import tempfile
from typing import Any

from clusterrun.errors import ConfigError

logger = logging.getLogger("clusterrun")

MAX_REQUEST = 64 * 1024  # bytes of one request: every command fits in a few hundred
# Bytes of one answer the client reads at most. The largest is the status of 1024 workers (under 1 MiB): the
# limit is there so that something that is not a cluster, streaming without end, cannot fill the client's memory.
MAX_ANSWER = 16 * 1024 * 1024
END = b"\n"  # ends a request and an answer: JSON text never holds a raw newline once encoded


def encode(message: dict[str, Any]) -> bytes:
    """A request or an answer as it travels: compact JSON, one line."""
    return json.dumps(message, separators=(",", ":")).encode() + END


def first_line(received: bytes) -> bytes | None:
    """The whole first line of what has arrived (without its end); None while it is not complete."""
    line, end, _rest = received.partition(END)
    return line if end else None


# Where the sockets live.

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
    return _fallback_dirs()


def _fallback_dirs() -> list[str]:
    return [os.path.join(tempfile.gettempdir(), f"clusterrun-{os.getuid()}"),
            os.path.join(os.path.expanduser("~"), ".clusterrun", "run")]


def search_dirs() -> list[str]:
    """Where a client looks for this user's clusters: control_dirs(), then the folders a cluster started without
    $XDG_RUNTIME_DIR uses. A cluster started at boot by a systemd unit has none, while a login shell has one:
    ``clusterrun ls`` there must still find it."""
    dirs = control_dirs()
    return dirs + [path for path in _fallback_dirs() if path not in dirs]


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
    for folder in search_dirs():
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


# Who is at the other end.

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
    """Whether a peer of ``uid`` may be talked to: this process's user, or root."""
    return uid is not None and uid in (os.getuid(), 0)


def probe(path: str, timeout: float = 2.0) -> OSError | None:
    """Connect to the socket at ``path`` and hang up: None if something listens there, else why not.

    The server asks before it takes a name (a live cluster already has it), the client before it forgets a
    socket file (nobody answers: a dead cluster's); each judges the error its own way.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as exc:
        return exc
    finally:
        sock.close()
    return None
