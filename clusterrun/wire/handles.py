"""Sockets passed with a message (Node's ``worker.send(message, handle)``): what may travel, and how each end holds it.

The descriptor travels with a Handle frame (protocol.py) on the worker's channel, as SCM_RIGHTS, like the
connections the primary passes under rr. What the primary keeps of it:

- a connection becomes the worker's: the primary's copy is closed once sent, as Node does (a copy left open in
  the primary would keep the client's connection open after the worker closed it);
- a listener stays open in the primary as well: it is the program's own, it may go to several workers, and
  Node keeps it too. The program closes it when it is done with it.

Only plain stream sockets travel, listening or connected: a TLS socket's session cannot leave its process, and
the channel knows nothing of other objects.
"""

from __future__ import annotations

import fcntl
import os
import socket
import ssl
import weakref

from clusterrun.errors import MessageError

_FIX = "pass a socket.socket (an accepted connection or a listening socket), or no handle"


def is_listener(sock: socket.socket) -> bool:
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    except OSError:
        return False


def _connected(sock: socket.socket) -> bool:
    """Connected, or was: a connection the client reset after it was accepted has no peer any more but a pending
    error. It still travels (the worker reads the end of it and closes it): a router must not fail on a client
    that left between its accept and its send."""
    try:
        sock.getpeername()
    except OSError:
        return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
    return True


def take(handle: object) -> int:
    """The descriptor to send for ``handle``; MessageError (and ``handle`` untouched) unless it can travel.

    A connection is detached: the caller's object is closed from here on, the descriptor is the channel's, which
    closes it once sent. A listener is duplicated: the caller keeps its own.
    """
    if isinstance(handle, ssl.SSLSocket):
        raise MessageError(f"cannot send {handle!r} as a handle: a TLS session cannot leave this process; pass the "
                           "plain socket before it is wrapped, and let the worker serve TLS (--certfile)")
    if not isinstance(handle, socket.socket):
        raise MessageError(f"cannot send a {type(handle).__name__} ({handle!r:.80}) as a handle: {_FIX}")
    if handle.fileno() < 0:
        raise MessageError(f"cannot send a closed socket as a handle: {_FIX}")
    if handle.type != socket.SOCK_STREAM:
        raise MessageError(f"cannot send a {handle.type.name} socket as a handle: only stream sockets (TCP or Unix) "
                           f"travel; {_FIX}")
    if is_listener(handle):
        return os.dup(handle.fileno())
    if not _connected(handle):
        raise MessageError(f"cannot send {handle!r} as a handle: it is neither listening nor connected; {_FIX}")
    return handle.detach()


def receive(fd: int) -> socket.socket:
    """In the worker: the passed descriptor as a socket object it owns, in the mode it was sent in.

    A socket object made from a descriptor takes the default timeout whatever the descriptor's mode, so a
    non-blocking listener would look blocking: the object is told what the descriptor is.
    """
    sock = socket.socket(fileno=fd)
    if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK:
        sock.setblocking(False)
    return sock


# The program's own sockets that the primary's loop watches (Cluster.listen). Not the cluster's to close in the
# primary, but a forked worker inherits them: it closes its copies first thing (a listener held open in the
# workers would stay bound after the program closed it). Held weakly: a socket the program dropped is no concern.
_primary_only: weakref.WeakSet[socket.socket] = weakref.WeakSet()


def primary_only(sock: socket.socket) -> None:
    """In the primary: workers forked from now on close their copy of ``sock``."""
    _primary_only.add(sock)


def close_primary_only() -> None:
    """In a worker, right after the fork: close the copies of the program's sockets (its own copies only)."""
    for sock in list(_primary_only):
        sock.close()
    _primary_only.clear()
