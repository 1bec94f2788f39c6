"""Listener addresses: parsing ``--bind`` values and binding them once, in the primary.

Besides addresses to bind, a listener may be a descriptor this process inherited already listening:
``fd://N`` (``--fd N``), or those systemd passes with socket activation (``LISTEN_FDS``, ``LISTEN_PID``,
``LISTEN_FDNAMES``; used when no address is given). Those are never unlinked on exit: the socket file is
whoever made it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from clusterrun.errors import BindError, ConfigError


@dataclass(frozen=True)
class BindAddress:
    """One ``--bind`` value: a TCP host and port, or a unix socket path."""

    host: str = ""
    port: int = 0
    path: str = ""
    mode: int = 0o666  # a unix socket file's permissions (--uds-mode): who may connect
    fd: int = -1  # an inherited listening descriptor (fd://N, --fd N, socket activation) instead of an address
    origin: str = ""  # where that descriptor came from, for the log ("web, from systemd")

    @property
    def is_unix(self) -> bool:
        return bool(self.path)

    @property
    def is_inherited(self) -> bool:
        return self.fd >= 0

    def __str__(self) -> str:
        if self.is_inherited:
            return f"fd://{self.fd}"
        if self.is_unix:
            return f"unix:{self.path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_bind(value: str) -> BindAddress:
    """``HOST:PORT``, ``[V6]:PORT``, ``:PORT`` (all interfaces), ``PORT`` or ``unix:PATH``."""
    text = value.strip()
    fix = "use HOST:PORT, [IPV6]:PORT or unix:/path"
    if text.startswith("fd://"):
        number = text[len("fd://"):]
        if not number.isdigit():
            raise ConfigError(f"bad --bind value {value!r}: write an inherited descriptor as fd://N, e.g. fd://3")
        return BindAddress(fd=int(number))
    if text.startswith("unix:"):
        path = text[len("unix:"):]
        if not path:
            raise ConfigError(f"bad --bind value {value!r}: the unix socket path is empty; {fix}")
        return BindAddress(path=path)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ConfigError(f"bad --bind value {value!r}: {fix}")
        port_text = rest[1:]
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        if ":" in host:
            raise ConfigError(f"bad --bind value {value!r}: put an IPv6 address in brackets; {fix}")
        host = host or "0.0.0.0"
    else:
        if not text.isdigit():
            # A bare host ("localhost", "0.0.0.0"): say where the port goes rather than calling it a bad port.
            raise ConfigError(f"bad --bind value {value!r}: no port; use HOST:PORT, for example {text or 'HOST'}:8000 "
                              "(or [IPV6]:PORT, PORT, unix:/path)")
        host, port_text = "127.0.0.1", text
    return BindAddress(host=host, port=parse_port(port_text, f"--bind value {value!r}"))


def parse_port(text: str | int, what: str = "--port") -> int:
    try:
        port = int(text)
    except ValueError:
        raise ConfigError(f"bad {what}: port {text!r} is not a number; give 0-65535 (0 picks a free port)") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"bad {what}: port {port} is out of range; give 0-65535 (0 picks a free port)")
    return port


def bind(address: BindAddress, backlog: int, reuse_port: bool = False, listen: bool = True) -> socket.socket:
    """Open one listening socket, or raise BindError naming the address and the fix."""
    try:
        if address.is_inherited:
            return _adopt_listener(address)
        if address.is_unix:
            return _bind_unix(address.path, backlog, address.mode)
        return _bind_tcp(address, backlog, reuse_port, listen)
    except OSError as exc:
        raise BindError(_bind_failure(address, exc)) from exc


# Listeners this process inherited: closed on exit, never unlinked; and how the log names them.
_inherited: weakref.WeakKeyDictionary[socket.socket, str] = weakref.WeakKeyDictionary()


def _adopt_listener(address: BindAddress) -> socket.socket:
    try:
        sock = socket.socket(fileno=address.fd)
    except OSError as exc:
        raise OSError(exc.errno, "no such open socket descriptor") from None
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()  # not ours to close
        raise OSError(errno.EINVAL, "not a listening socket")
    sock.set_inheritable(True)
    _inherited[sock] = ", ".join(filter(None, [f"fd {address.fd}", address.origin]))
    return sock


def activated(environ: Mapping[str, str]) -> tuple[BindAddress, ...]:
    """The listeners systemd passed to this very process (socket activation), as fd:// addresses."""
    count, pid = environ.get("LISTEN_FDS", ""), environ.get("LISTEN_PID", "")
    if not count.isdigit() or pid != str(os.getpid()):
        return ()
    names = environ.get("LISTEN_FDNAMES", "").split(":")
    first = 3  # SD_LISTEN_FDS_START
    return tuple(
        BindAddress(fd=first + i, origin=", ".join(filter(None, [names[i] if i < len(names) else "", "from systemd"])))
        for i in range(int(count))
    )


def forget_activation() -> None:
    """Children must not take the listeners as passed to them (sd_listen_fds' unset_environment)."""
    for variable in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        os.environ.pop(variable, None)


def origin(sock: socket.socket) -> str:
    """" (fd 3, web, from systemd)" for an inherited listener, else nothing."""
    found = _inherited.get(sock)
    return f" ({found})" if found else ""


# Linux's TCP_DEFER_ACCEPT (None elsewhere), and how long a connection that sent nothing is held back: the kernel
# turns it into SYN-ACK retransmissions, and a second is one.
_DEFER_ACCEPT: int | None = getattr(socket, "TCP_DEFER_ACCEPT", None)
_DEFER_SECONDS = 1


def _bind_tcp(address: BindAddress, backlog: int, reuse_port: bool, listen: bool) -> socket.socket:
    infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # "[::]" should mean IPv6 only, so that 0.0.0.0 can be bound beside it.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if _DEFER_ACCEPT is not None:
            # A connection becomes acceptable once its first bytes are in: the worker then reads its request
            # right after accept, where otherwise (measured: 45% of new connections under load) it registers
            # the connection, waits for the loop and reads again, three system calls and a loop round more. A
            # client that sends nothing reaches the server after a second, with no descriptor held meanwhile.
            sock.setsockopt(socket.IPPROTO_TCP, _DEFER_ACCEPT, _DEFER_SECONDS)
        sock.bind(sockaddr)
        if listen:
            sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _bind_unix(path: str, backlog: int, mode: int) -> socket.socket:
    _unlink_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        # The umask made it 0755 or so: a proxy running as another user (nginx as www-data) could not connect.
        os.chmod(path, mode)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _unlink_stale_socket(path: str) -> None:
    """A socket file left by a killed server is removed; one that still answers is in use."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, "a file that is not a socket exists there")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "address already in use")


def _bind_failure(address: BindAddress, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"cannot bind {address}: address already in use; stop what holds it or choose another --bind/--port"
    if exc.errno == errno.EACCES:
        return f"cannot bind {address}: permission denied; use a port above 1023 or run with the needed rights"
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot bind {address}: no such local address; use 127.0.0.1, 0.0.0.0 or an address of this host"
    return f"cannot bind {address}: {exc.strerror or exc}; check the --bind value"


def describe(sock: socket.socket, scheme: str = "http") -> str:
    """The URL a user can open for a bound listener, with the real port (``scheme`` https with TLS)."""
    if sock.family == socket.AF_UNIX:
        return f"unix:{sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    return f"{scheme}://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{scheme}://{host}:{port}"


def close_quietly(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


def close_all(listeners: Sequence[socket.socket]) -> None:
    """Close every listener, and remove the socket file of a unix one: nothing is left behind."""
    for sock in listeners:
        path = sock.getsockname() if sock.family == socket.AF_UNIX and sock not in _inherited else None
        close_quietly(sock)
        if path:
            with contextlib.suppress(OSError):
                os.unlink(path)
