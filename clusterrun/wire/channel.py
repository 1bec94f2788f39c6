"""The channel between the primary and one worker: framed JSON, plus passed sockets.

One ``socketpair`` per worker. A frame is a 5-byte header (payload length,
number of file descriptors attached) and its payload, which protocol.py
encodes and checks. Descriptors travel as SCM_RIGHTS ancillary data on the frame's
first byte, so they arrive no later than the frame that names them; the
receiver keeps them in arrival order and hands each frame its own.

Both ends are non-blocking. ``send`` queues and writes what the socket takes
now; the owner flushes the rest when the socket is writable. The primary must
never block on one slow worker.

No passed connection is lost with its worker. The primary keeps the worker's
end of the pair open too (``keep``): when a worker dies or is killed before
reading what was sent to it, the kernel would close every descriptor still in
its socket's receive queue; held open by the primary, that queue survives the
worker, and ``take_undelivered_fds`` reads the descriptors back out of it. No
copy, frame or system call per connection: the cost is one descriptor per
worker in the primary.

A handle (a socket the program passed with a message: handles.py) is not a connection for any worker: when
its worker dies before reading it, ``take_undelivered_fds`` closes it rather than hand it back with the
connections, as Node loses a handle sent to a process that exits. The channel tells them apart by position:
what a dead worker never read is the tail of all that was queued for it, in order, and the channel keeps the
positions of the last handles it queued (no bookkeeping per connection, one addition per frame).

A receiver whose descriptor table is full gets a frame without (some of) its
descriptors: the kernel drops what it cannot install and says so with
MSG_CTRUNC. That is not a malformed frame: the frame is delivered with the
descriptors that did arrive, and the rest are counted in ``dropped_fds``.
"""

from __future__ import annotations

import array
import os
import socket
import struct
from collections import deque
from collections.abc import Callable

from clusterrun.errors import ChannelError
from clusterrun.wire import protocol
from clusterrun.wire.protocol import Connections, Frame

HEADER = struct.Struct("!IB")
MAX_PAYLOAD = 1024 * 1024 + 4096  # a 1 MiB user message plus its envelope
_RECV_BYTES = 256 * 1024
_MAX_FDS_PER_READ = 256
_ANCILLARY_SPACE = socket.CMSG_SPACE(_MAX_FDS_PER_READ * array.array("i").itemsize)
_FD_FLAGS = getattr(socket, "MSG_CMSG_CLOEXEC", 0)
# A plain number: ``flags & socket.MSG_CTRUNC`` would build a MsgFlag enum on every read, that is for every
# connection a worker is passed (three Python calls of enum's, more than the test itself).
_MSG_CTRUNC = int(getattr(socket, "MSG_CTRUNC", 0))


def encode(frame: Frame, nfds: int = 0) -> bytes:
    """The frame with its header, announcing ``nfds`` descriptors sent along."""
    payload = protocol.payload(frame)
    if len(payload) > MAX_PAYLOAD:
        raise ChannelError(f"frame of {len(payload)} bytes is larger than the {MAX_PAYLOAD}-byte limit")
    return HEADER.pack(len(payload), nfds) + payload


MAX_FDS_PER_FRAME = 64
# Handles whose position a channel keeps: more than this many unread by a dead worker, and the oldest of them
# would be handed back as connections.
_HANDLES_TRACKED = 4096
_connection_frames: dict[tuple[int, int], bytes] = {}


def connection_frame(count: int, family: int) -> bytes:
    """The frame that passes ``count`` accepted connections of one address family; encoded once per shape.

    The family travels so that the worker can wrap each descriptor without asking the kernel what it is.
    """
    frame = _connection_frames.get((count, family))
    if frame is None:
        frame = _connection_frames[count, family] = encode(Connections(family), nfds=count)
    return frame


def _ignore_backlog(waiting: bool) -> None:
    pass


class Channel:
    def __init__(self, sock: socket.socket, keep: socket.socket | None = None) -> None:
        sock.setblocking(False)
        self.sock = sock
        # The peer's end, held open by this side so that what the peer never read outlives it (see above).
        self._peer_end = keep
        self.eof = False
        self._truncated = 0  # reads whose descriptors the kernel cut short (MSG_CTRUNC)
        self.dropped_fds = 0  # descriptors announced by frames that never arrived: see take_dropped()
        self._inbox = bytearray()
        # Reads land in one buffer kept for the channel's life: a fresh 256 KiB bytes object per read costs
        # an mmap, an mremap and a munmap, on every connection passed.
        self._landing = memoryview(bytearray(_RECV_BYTES))
        self._fds: deque[int] = deque()
        self._outbox: deque[tuple[bytes, list[int]]] = deque()
        self._queued_fds = 0  # descriptors ever queued to send, in one sequence: handles and connections
        self._handles_at: deque[int] = deque(maxlen=_HANDLES_TRACKED)  # the positions of the handles in it
        self._waiting = False  # bytes are queued until the socket is writable again
        self.broken = False  # a send failed: the peer is gone
        self.is_open = True  # False once the owner stopped talking on it (hang_up); closed for good by close()
        # Set by the owner: told True when bytes wait for the socket to be writable, False when drained.
        self.on_backlog: Callable[[bool], None] = _ignore_backlog

    @staticmethod
    def socketpair() -> tuple[socket.socket, socket.socket]:
        """The two connected sockets a primary and a worker each wrap in a Channel."""
        return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    def fileno(self) -> int:
        return self.sock.fileno()

    def filenos(self) -> list[int]:
        """Every descriptor this end holds: a process forked later must close them all. The passed connections
        not sent yet too: a copy left open in a worker keeps the client's connection open after it is answered."""
        own = [self.sock.fileno()] + ([self._peer_end.fileno()] if self._peer_end is not None else [])
        return own + [fd for _data, fds in self._outbox for fd in fds]

    @property
    def backlog(self) -> int:
        """Frames queued but not yet taken by the socket."""
        return len(self._outbox)

    def send(self, frame: Frame) -> None:
        self.send_bytes(encode(frame))

    def send_bytes(self, data: bytes, fds: list[int] | None = None) -> None:
        """Queue a frame; the channel owns ``fds`` from here and closes them once they are sent."""
        if fds:
            self._queued_fds += len(fds)
        was_idle = not self._outbox
        self._outbox.append((data, fds or []))
        if was_idle:
            self.flush()

    def send_handle(self, data: bytes, fd: int) -> None:
        """Queue a frame with a handle (see above): the channel owns ``fd``, as ``send_bytes``."""
        self._handles_at.append(self._queued_fds)
        self.send_bytes(data, [fd])

    def flush(self) -> bool:
        """Write queued frames until the socket would block; True once nothing waits."""
        if self.broken:
            return False
        while self._outbox:
            data, fds = self._outbox[0]
            try:
                if fds:
                    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                    sent = self.sock.sendmsg([data], ancillary)
                else:
                    sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                if not self._waiting:
                    self._waiting = True
                    self.on_backlog(True)
                return False
            except OSError:
                # The peer is gone. What is queued stays queued, so the backlog keeps dispatch away from this
                # channel; whoever reaps the peer takes the unsent descriptors back (take_undelivered_fds).
                self.broken = True
                return False
            for fd in fds:
                os.close(fd)  # the peer holds its own copy now
            if sent < len(data):
                # The descriptors went with the first byte; the rest of the frame goes without them.
                self._outbox[0] = (data[sent:], [])
                continue
            self._outbox.popleft()
        if self._waiting:
            self._waiting = False
            self.on_backlog(False)
        return True

    def send_blocking(self, frame: Frame) -> None:
        """For a worker that is about to exit: deliver one frame whatever the socket's state."""
        self.flush()
        self.sock.setblocking(True)
        try:
            self.sock.sendall(encode(frame))
        finally:
            self.sock.setblocking(False)

    def receive(self) -> list[tuple[Frame, list[int]]]:
        """Every complete frame readable now, each with its descriptors; sets ``eof`` at end of file."""
        while True:
            try:
                size, ancillary, flags, _addr = self.sock.recvmsg_into([self._landing], _ANCILLARY_SPACE, _FD_FLAGS)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                size, ancillary, flags = 0, [], 0
            if flags & _MSG_CTRUNC:
                self._truncated += 1
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                    self._fds.extend(fds)
            if not size:
                self.eof = True
                break
            self._inbox += self._landing[:size]
            if size < _RECV_BYTES:
                break
        return self._parse()

    def _parse(self) -> list[tuple[Frame, list[int]]]:
        frames: list[tuple[Frame, list[int]]] = []
        inbox = self._inbox
        offset = 0
        while len(inbox) - offset >= HEADER.size:
            length, nfds = HEADER.unpack_from(inbox, offset)
            if length > MAX_PAYLOAD:
                raise ChannelError(f"frame of {length} bytes is larger than the {MAX_PAYLOAD}-byte limit")
            end = offset + HEADER.size + length
            if len(inbox) < end:
                break
            if nfds > len(self._fds):
                if not self._truncated:
                    raise ChannelError(f"frame announces {nfds} descriptors but {len(self._fds)} arrived")
                # The kernel dropped them (full descriptor table): deliver the frame with what arrived.
                self._truncated -= 1
                self.dropped_fds += nfds - len(self._fds)
                nfds = len(self._fds)
            frame = protocol.decode(bytes(inbox[offset + HEADER.size:end]))
            frames.append((frame, [self._fds.popleft() for _ in range(nfds)]))
            offset = end
        if offset:
            del inbox[:offset]
        return frames

    def take_dropped(self) -> int:
        """How many announced descriptors never arrived since the last call (the kernel dropped them)."""
        dropped, self.dropped_fds = self.dropped_fds, 0
        return dropped

    def take_undelivered_fds(self) -> list[int]:
        """After the peer died: every connection it never received, oldest first; the caller owns them now.

        First those still in the dead peer's receive queue (readable through the end kept open), then those
        this side never got to send. Handles among them are closed here (see above).
        """
        fds: list[int] = []
        if self._peer_end is not None:
            fds += _drain_fds(self._peer_end)
        fds += [fd for _data, frame_fds in self._outbox for fd in frame_fds]
        self._outbox.clear()
        first = self._queued_fds - len(fds)  # the position of the first of them among all that were queued
        handles = {at - first for at in self._handles_at if at >= first}
        if not handles:
            return fds
        for index in handles:
            os.close(fds[index])
        return [fd for index, fd in enumerate(fds) if index not in handles]

    def _drop_outbox(self) -> None:
        for _data, fds in self._outbox:
            for fd in fds:
                os.close(fd)
        self._outbox.clear()

    def hang_up(self) -> None:
        """Talk no more on this channel; it stays readable for take_undelivered_fds until close()."""
        self.is_open = False

    def close(self) -> None:
        """Close the socket and free the buffers now: a closed channel may outlive its worker for a while."""
        self.is_open = False
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
        self._drop_outbox()
        self.sock.close()
        if self._peer_end is not None:
            for fd in _drain_fds(self._peer_end):
                os.close(fd)
            self._peer_end.close()
            self._peer_end = None
        self._landing.release()
        self._landing = memoryview(bytearray())
        self._inbox = bytearray()
        self.on_backlog = _ignore_backlog  # the owner's callback refers back to the owner


def _drain_fds(sock: socket.socket) -> list[int]:
    """Read a socket's receive queue to its end (never blocking), keeping only the descriptors in it."""
    fds: list[int] = []
    while True:
        try:
            size, ancillary, _flags, _addr = sock.recvmsg(_RECV_BYTES, _ANCILLARY_SPACE,
                                                          _FD_FLAGS | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return fds
        except OSError:
            return fds
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
                fds.extend(received)
        if not size:
            return fds
