"""TLS for the inline WSGI engine: each connection's handshake and records, in the worker, on its loop.

The engine's connection code (adapters.engine.connection) is written for a plain non-blocking socket: a read or a write
that cannot go on raises BlockingIOError, and the loop waits for the descriptor. A TLS connection keeps that
contract through ``TLSSocket``, an ``ssl.SSLSocket`` whose reads and writes report "not now" the same way
(OpenSSL says SSLWantReadError or SSLWantWriteError), so that no line of the plain path changes and a server
without TLS pays nothing for it. What differs lives here:

* the handshake: ``TLSConnection.start`` drives ``do_handshake()`` from readable and writable events before
  the first request is read. One that fails (plain HTTP sent to the TLS port, a client that gives up) closes
  that connection with one debug line, as asyncio does on uvicorn's stack; one that never completes is closed
  by the engine's once-a-second sweep after --timeout-request-head, as a connection whose head never comes.
* a write that OpenSSL could not finish is retried with the same bytes first: the connection keeps unsent
  data and sends it again when writable, which OpenSSL requires.
* no sendfile: ``os.sendfile`` would put the file's bytes on the wire unencrypted. ``TLSFileWrapper`` is the
  engine's ``wsgi.file_wrapper`` under TLS; the responder sends a file with sendfile only for the plain
  ``FileWrapper`` type, so this one is iterated and its blocks go through TLS like any body.
"""

from __future__ import annotations

import errno
import logging
import ssl
from typing import Any, cast

from clusterrun.adapters.engine.connection import Connection
from clusterrun.adapters.wsgi_app import FileWrapper, Readable
from mypy_extensions import mypyc_attr

__all__ = ["TLSConnection", "TLSFileWrapper", "TLSSocket", "prepare", "wrap"]

logger = logging.getLogger("clusterrun")

_FILE_BLOCK = 64 * 1024  # a file's block through TLS: four full records per write, few turns of the loop


# A Python class in the compiled build too: mypyc cannot compile a subclass of socket.socket (its __slots__).
@mypyc_attr(native_class=False)
class TLSSocket(ssl.SSLSocket):
    """An SSLSocket that the engine drives like a plain non-blocking socket: "not now" is BlockingIOError."""

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        # No decrypted bytes stay behind in OpenSSL, where the selector would not see them (``pending()``):
        # with read-ahead off (Python's default) one read takes one record from the kernel and no more, and
        # every read of the engine and of an upload thread asks for more than a record holds (16 KiB).
        # Checked on OpenSSL 3.0: records of 100 B to 40 KB sent at once came one read each, pending() 0.
        try:
            return super().recv_into(buffer, nbytes, flags)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            # Not a whole record yet (or only a handshake message): no data for the engine yet.
            raise BlockingIOError(errno.EAGAIN, "no complete TLS record yet") from None

    def send(self, data: Any, flags: int = 0) -> int:
        try:
            return super().send(data, flags)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            # Nothing of ``data`` counts as sent: the caller keeps it and sends it (and maybe more) again.
            raise BlockingIOError(errno.EAGAIN, "the TLS record could not be written yet") from None


def prepare(context: ssl.SSLContext) -> None:
    """Make ``context.wrap_socket`` return TLSSockets (the worker's own context: asyncio never wraps sockets)."""
    context.sslsocket_class = TLSSocket


def wrap(context: ssl.SSLContext, sock: Any) -> TLSSocket:
    """``sock`` (accepted, non-blocking) as a server-side TLS socket whose handshake has not begun."""
    wrapped = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    assert isinstance(wrapped, TLSSocket)
    return wrapped


class TLSFileWrapper(FileWrapper):
    """``wsgi.file_wrapper`` under TLS: the file's blocks are a plain body, never sent with sendfile."""

    __slots__ = ()

    def __init__(self, filelike: Readable, blksize: int = 8192) -> None:
        super().__init__(filelike, max(blksize, _FILE_BLOCK))


class TLSConnection(Connection):
    """A connection whose TLS handshake runs first; then it is served as any other."""

    dontwait = 0  # an SSLSocket takes no flags: the engine made it non-blocking before wrapping it

    def start(self) -> None:
        self.shake()

    def shake(self) -> None:
        """One step of the handshake; the loop calls it again when the socket is ready for the next."""
        try:
            # A cast, not ``sock: TLSSocket`` on the class: mypyc refuses an attribute's type narrowed in a subclass.
            cast(TLSSocket, self.sock).do_handshake()
        except ssl.SSLWantReadError:
            self._wait(readable=True)
            return
        except ssl.SSLWantWriteError:
            self._wait(readable=False)
            return
        except OSError as exc:  # ssl.SSLError among them: not TLS (plain HTTP?), refused, or the client left
            peer = self.peer_address()
            source = f" from {peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""
            logger.debug("TLS handshake%s failed: %s", source, exc)
            self.close()
            return
        loop = self.engine.loop
        loop.remove_writer(self.fd)
        if self.reading:
            self.reading = False
            loop.remove_reader(self.fd)
        # ALPN offers h2 only where HTTP/2 is served (adapters.engine.server): decided here, once per connection.
        if self.engine.http2 is not None and cast(TLSSocket, self.sock).selected_alpn_protocol() == "h2":
            self.to_http2(b"")
            return
        super().start()  # reads (and answers) a request that came with the handshake's last flight

    def _wait(self, readable: bool) -> None:
        # ``reading`` stays true while the handshake waits to read, so that close() unregisters the reader.
        loop = self.engine.loop
        if readable:
            loop.remove_writer(self.fd)
            if not self.reading:
                self.reading = True
                loop.add_reader(self.fd, self.shake)
        else:
            if self.reading:
                self.reading = False
                loop.remove_reader(self.fd)
            loop.add_writer(self.fd, self.shake)
