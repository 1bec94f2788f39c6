"""The channel between the primary and one worker: framed JSON, plus passed sockets.

One ``socketpair`` per worker. A frame is a 5-byte header (payload length,
number of file descriptors attached) and a JSON object with a string ``"t"``
(its type). Descriptors travel as SCM_RIGHTS ancillary data on the frame's
first byte, so they arrive no later than the frame that names them; the
receiver keeps them in arrival order and hands each frame its own.

Both ends are non-blocking. ``send`` queues and writes what the socket takes
now; the owner flushes the rest when the socket is writable. The primary must
never block on one slow worker.
"""

from __future__ import annotations

import array
import json
import os
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from .errors import ChannelError

Frame = dict[str, Any]

HEADER = struct.Struct("!IB")
MAX_PAYLOAD = 1024 * 1024 + 4096  # a 1 MiB user message plus its envelope
_RECV_BYTES = 256 * 1024
_MAX_FDS_PER_READ = 256
_ANCILLARY_SPACE = socket.CMSG_SPACE(_MAX_FDS_PER_READ * array.array("i").itemsize)
_FD_FLAGS = getattr(socket, "MSG_CMSG_CLOEXEC", 0)


def encode(frame: Frame, nfds: int = 0) -> bytes:
    payload = json.dumps(frame, separators=(",", ":")).encode()
    if len(payload) > MAX_PAYLOAD:
        raise ChannelError(f"frame of {len(payload)} bytes is larger than the {MAX_PAYLOAD}-byte limit")
    return HEADER.pack(len(payload), nfds) + payload


MAX_FDS_PER_FRAME = 64
_connection_frames: dict[tuple[int, int], bytes] = {}


def connection_frame(count: int, family: int) -> bytes:
    """The frame that passes ``count`` accepted connections of one address family; encoded once per shape.

    The family travels so that the worker can wrap each descriptor without asking the kernel what it is.
    """
    frame = _connection_frames.get((count, family))
    if frame is None:
        frame = _connection_frames[count, family] = encode({"t": "conn", "family": family}, nfds=count)
    return frame


def _ignore_backlog(waiting: bool) -> None:
    pass


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.eof = False
        self._inbox = bytearray()
        # Reads land in one buffer kept for the channel's life: a fresh 256 KiB bytes object per read costs
        # an mmap, an mremap and a munmap, on every connection passed.
        self._landing = memoryview(bytearray(_RECV_BYTES))
        self._fds: deque[int] = deque()
        self._outbox: deque[tuple[bytes, list[int]]] = deque()
        self._waiting = False  # bytes are queued until the socket is writable again
        self.broken = False  # a send failed: the peer is gone
        # Set by the owner: told True when bytes wait for the socket to be writable, False when drained.
        self.on_backlog: Callable[[bool], None] = _ignore_backlog

    @classmethod
    def pair(cls) -> tuple[socket.socket, socket.socket]:
        return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def backlog(self) -> int:
        """Frames queued but not yet taken by the socket."""
        return len(self._outbox)

    def send(self, frame: Frame) -> None:
        self.send_bytes(encode(frame))

    def send_bytes(self, data: bytes, fds: list[int] | None = None) -> None:
        """Queue a frame; the channel owns ``fds`` from here and closes them once they are sent."""
        was_idle = not self._outbox
        self._outbox.append((data, fds or []))
        if was_idle:
            self.flush()

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
                # channel; whoever reaps the peer takes the unsent descriptors back (take_unsent_fds).
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
                size, ancillary, _flags, _addr = self.sock.recvmsg_into([self._landing], _ANCILLARY_SPACE, _FD_FLAGS)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                size, ancillary = 0, []
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
                raise ChannelError(f"frame announces {nfds} descriptors but {len(self._fds)} arrived")
            try:
                frame = json.loads(bytes(inbox[offset + HEADER.size:end]))
            except ValueError as exc:
                raise ChannelError(f"frame is not JSON: {exc}") from None
            if not isinstance(frame, dict) or not isinstance(frame.get("t"), str):
                raise ChannelError("frame is not an object with a string 't'")
            frames.append((frame, [self._fds.popleft() for _ in range(nfds)]))
            offset = end
        if offset:
            del inbox[:offset]
        return frames

    def take_unsent_fds(self) -> list[int]:
        """Descriptors queued but never sent (the peer never saw them): the caller owns them now."""
        fds = [fd for _data, frame_fds in self._outbox for fd in frame_fds]
        self._outbox.clear()
        return fds

    def _drop_outbox(self) -> None:
        for _data, fds in self._outbox:
            for fd in fds:
                os.close(fd)
        self._outbox.clear()

    def close(self) -> None:
        """Close the socket and free the buffers now: a closed channel may outlive its worker for a while."""
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
        self._drop_outbox()
        self.sock.close()
        self._landing.release()
        self._landing = memoryview(bytearray())
        self._inbox = bytearray()
        self.on_backlog = _ignore_backlog  # the owner's callback refers back to the owner
