"""The one client of the control socket: find a cluster's socket, send it one request, read and decode its answer.

The commands (clusterrun status, top, reload ...), the tests and the benchmarks all talk to a cluster through
here. Every way an exchange can fail (nobody listens, a socket of another user, no answer in time, an answer
that is cut short, too large or not JSON, a refusal) is a ControlError whose message says which. The rules it
shares with the server (where sockets live, what may be trusted, the format of an exchange) are in
clusterrun.host.controlsocket.
"""

from __future__ import annotations

import glob
import json
import os
import socket
import sys
import time
from typing import Any

from clusterrun.errors import ControlError
from clusterrun.host.controlsocket import (
    END,
    MAX_ANSWER,
    allowed,
    control_dir,
    distrust,
    encode,
    first_line,
    peer_uid,
    probe,
    search_dirs,
    socket_path,
)

TIMEOUT = 10.0  # seconds one exchange may take, from the connect to the answer's end: a primary answers in ms
_CHUNK = 65536


def exchange(path: str, data: bytes, timeout: float = TIMEOUT, limit: int = MAX_ANSWER) -> dict[str, Any]:
    """Send ``data`` (a request as bytes, valid or not) to the socket at ``path``; the answer, ok or not.

    ControlError when there is no answer to decode: nobody listens, the server is neither this user nor root,
    ``timeout`` seconds pass, or the answer is cut short, larger than ``limit`` bytes or not a JSON object.
    """
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        # The server checks who connects; the client checks who serves: a socket another user planted (in a
        # folder they made first, or given by mistake) must not get our commands.
        server_uid = peer_uid(sock)
        if not allowed(server_uid):
            raise ControlError(f"the control socket {path} is served by uid {server_uid}, neither you nor root: "
                               "not sending it anything")
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer before it has read everything (a request too large): read that answer
        received = _read_answer(sock, path, deadline, limit)
    except OSError as exc:
        raise ControlError(f"no answer from {path} ({exc.strerror or exc}): is the cluster running? clusterrun ls "
                           "lists the running ones") from None
    finally:
        sock.close()
    try:
        answer = json.loads(first_line(received) or received)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        what = "without an answer" if END not in received else "after an answer that is not a JSON object"
        raise ControlError(f"the cluster at {path} closed the connection {what}")
    return answer


def _read_answer(sock: socket.socket, path: str, deadline: float, limit: int) -> bytes:
    """What the server sends up to the end of its answer (or until it closes); OSError when time runs out."""
    received = bytearray()
    while END not in received:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")  # a server that sends a byte at a time must not hold us longer
        sock.settimeout(left)
        try:
            chunk = sock.recv(_CHUNK)
        except ConnectionResetError:
            break  # closed after its answer, with our unread request still in its buffer: keep what came
        if not chunk:
            break
        received += chunk
        if len(received) > limit:
            raise ControlError(f"the answer from {path} is larger than {limit} bytes: not a cluster's control "
                               "socket")
    return bytes(received)


def call(path: str, message: dict[str, Any], timeout: float = TIMEOUT) -> dict[str, Any]:
    """Send ``message`` to the cluster at ``path``; its answer if ok, else ControlError with the cluster's reason."""
    answer = exchange(path, encode(message), timeout)
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error", "the cluster refused the command")))
    return answer


def request(path: str, command: str, **fields: Any) -> dict[str, Any]:
    """The command ``command`` with ``fields`` to the cluster at ``path``: its answer, or ControlError."""
    return call(path, {"command": command, **fields})


def answers(path: str) -> bool:
    """Something listens on the socket at ``path``."""
    refused = probe(path)
    # Busy or briefly unreachable is not proof that it is gone.
    return not isinstance(refused, (ConnectionRefusedError, FileNotFoundError))


# Finding clusters.

def trusted_sockets() -> list[str]:
    """The socket files in this user's control folders that may be trusted; a warning on stderr for the rest."""
    paths = []
    for folder in search_dirs():
        if not os.path.lexists(folder):
            continue
        reason = distrust(folder)
        if reason is not None:
            _warn(f"the control folder {folder} {reason}: ignored")
            continue
        for path in sorted(glob.glob(os.path.join(folder, "*.sock"))):
            reason = distrust(path, socket_file=True)
            if reason is None:
                paths.append(path)
            else:
                _warn(f"the control socket {path} {reason}: ignored")
    return paths


def _warn(message: str) -> None:
    print(f"clusterrun: warning: {message}", file=sys.stderr)


def live_clusters() -> list[tuple[str, dict[str, Any]]]:
    """This user's running clusters, as (socket path, info); a dead cluster's socket file is removed."""
    found = []
    for path in trusted_sockets():
        try:
            found.append((path, request(path, "info")))
        except ControlError:
            _remove_stale(path)
    return found


def _remove_stale(path: str) -> None:
    if isinstance(probe(path), ConnectionRefusedError):
        os.unlink(path)  # nobody listens: its cluster died without cleaning up


def resolve(name: str | None, control: str | None) -> str:
    """The control socket of the cluster named ``name`` (or at ``control``); without either, the only one."""
    if control or name:
        path = socket_path(name or "", control or "")
        if os.path.lexists(path):
            # Its folder too, unless the user named the socket: a folder of theirs may well be open to others.
            folder_reason = None if control else distrust(os.path.dirname(path))
            reason = folder_reason or distrust(path, socket_file=True, check_mode=not control)
            if reason is not None:
                where = f"the control folder {os.path.dirname(path)}" if folder_reason else f"the control socket {path}"
                raise ControlError(f"{where} {reason}: not trusting it; remove it, or give --control PATH")
        return path
    clusters = live_clusters()
    if len(clusters) == 1:
        return clusters[0][0]
    if not clusters:
        raise ControlError(f"no cluster is running (no control socket answers in {control_dir()})")
    names = ", ".join(info["name"] for _path, info in clusters)
    raise ControlError(f"{len(clusters)} clusters are running ({names}): name one")
