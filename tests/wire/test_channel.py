"""Unit tests of the channel and the shared counters: frames, passed descriptors, malformed input."""

from __future__ import annotations

import os
import socket
import struct
import threading
from typing import Any

import pytest

from clusterrun.errors import ChannelError
from clusterrun.wire.channel import HEADER, MAX_PAYLOAD, Channel, connection_frame, encode
from clusterrun.wire.counters import SharedCounter
from clusterrun.wire.protocol import Connections, Handle, Message

# Channel


def test_frames_and_descriptors_cross_the_channel() -> None:
    left, right = Channel.socketpair()
    sender, receiver = Channel(left), Channel(right)
    try:
        a, b = socket.socketpair()
        sender.send(Message({"n": 1}))
        sender.send_bytes(connection_frame(1, socket.AF_UNIX), [a.detach()])
        frames = receiver.receive()
        assert [f for f, _ in frames] == [Message({"n": 1}), Connections(socket.AF_UNIX)]
        passed = socket.socket(fileno=frames[1][1][0])
        passed.sendall(b"ping")
        assert b.recv(4) == b"ping"
        passed.close()
        b.close()
        sender.close()
        assert receiver.receive() == [] and receiver.eof
    finally:
        receiver.close()
        if sender.sock.fileno() != -1:
            sender.close()


def test_descriptors_a_dead_receiver_never_read_are_taken_back_in_order() -> None:
    left, right = Channel.socketpair()
    # The sender keeps the receiver's end too, as the primary keeps each worker's.
    sender = Channel(left, keep=right)
    peers = [socket.socketpair() for _ in range(5)]
    try:
        sender.send(Message("before"))
        for ours, _theirs in peers:
            sender.send_bytes(connection_frame(1, socket.AF_UNIX), [ours.detach()])
        # The receiver dies without reading: what is in its queue comes back, oldest first.
        back = sender.take_undelivered_fds()
        assert len(back) == 5
        for fd, (_ours, theirs) in zip(back, peers, strict=True):
            with socket.socket(fileno=fd) as passed:
                passed.sendall(b"x")
                assert theirs.recv(1) == b"x"
    finally:
        sender.close()
        for _ours, theirs in peers:
            theirs.close()


def test_handles_a_dead_receiver_never_read_are_closed_not_taken_back() -> None:
    # A socket the program passed with a message (Worker.send(message, handle)) was meant for that worker: it is
    # never handed on as a connection for another. Some were read before the receiver died, some are in its
    # queue, one was never sent (the socket was full).
    left, right = Channel.socketpair()
    sender, receiver = Channel(left, keep=right), Channel(socket.socket(fileno=os.dup(right.fileno())))
    peers = [socket.socketpair() for _ in range(6)]
    handle_frame = encode(Handle("h"), nfds=1)
    try:
        sender.send_handle(handle_frame, peers[0][0].detach())
        sender.send_bytes(connection_frame(1, socket.AF_UNIX), [peers[1][0].detach()])
        read = receiver.receive()
        read += receiver.receive()  # one read stops where the next descriptors begin
        # The receiver took these two, then dies.
        assert [len(fds) for _frame, fds in read] == [1, 1]
        for _frame, fds in read:
            os.close(fds[0])
        receiver.close()
        sender.send_bytes(connection_frame(1, socket.AF_UNIX), [peers[2][0].detach()])
        sender.send_handle(handle_frame, peers[3][0].detach())
        sender.send_bytes(connection_frame(1, socket.AF_UNIX), [peers[4][0].detach()])
        sender.broken = True  # what is queued now stays unsent, as behind a full socket
        sender.send_handle(handle_frame, peers[5][0].detach())
        back = sender.take_undelivered_fds()
        assert len(back) == 2
        for fd, (_ours, theirs) in zip(back, [peers[2], peers[4]], strict=True):
            with socket.socket(fileno=fd) as passed:
                passed.sendall(b"x")
                assert theirs.recv(1) == b"x"
        for _ours, theirs in (peers[3], peers[5]):  # every copy of the handles is closed: their peers see the end
            theirs.settimeout(5)
            assert theirs.recv(1) == b""
    finally:
        sender.close()
        for _ours, theirs in peers:
            theirs.close()


_RECEIVE_WITH_A_FULL_TABLE = """
import os, resource, socket, sys
from clusterrun.wire.channel import Channel
sock = socket.socket(fileno=int(sys.argv[1]))
# Room for exactly two more descriptors: the frame brings four.
open_now = len(os.listdir("/proc/self/fd"))
resource.setrlimit(resource.RLIMIT_NOFILE, (open_now + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
channel = Channel(sock)
frames = []
while not frames:
    frames = channel.receive()
print(len(frames), len(frames[0][1]), channel.take_dropped())
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors through /proc")
def test_descriptors_the_kernel_drops_for_a_full_table_are_counted_not_fatal() -> None:
    import subprocess
    import sys

    left, right = Channel.socketpair()
    sender = Channel(left)
    peers = [socket.socketpair() for _ in range(4)]
    try:
        child = subprocess.Popen([sys.executable, "-c", _RECEIVE_WITH_A_FULL_TABLE, str(right.fileno())],
                                 pass_fds=[right.fileno()], stdout=subprocess.PIPE, text=True)
        right.close()
        sender.send_bytes(connection_frame(4, socket.AF_UNIX), [ours.detach() for ours, _ in peers])
        out, _ = child.communicate(timeout=30)
        frames, arrived, dropped = map(int, out.split())
        assert (frames, arrived + dropped) == (1, 4) and dropped >= 1
    finally:
        sender.close()
        for _ours, theirs in peers:
            theirs.close()


def test_a_large_frame_is_written_across_many_sends() -> None:
    left, right = Channel.socketpair()
    sender, receiver = Channel(left), Channel(right)
    try:
        sender.send(Message("x" * (MAX_PAYLOAD - 100)))
        got: list[Any] = []
        while sender.backlog or not got:
            got += receiver.receive()
            sender.flush()
        assert got[0][0] == Message("x" * (MAX_PAYLOAD - 100))
    finally:
        sender.close()
        receiver.close()


@pytest.mark.parametrize("payload, message", [
    (HEADER.pack(MAX_PAYLOAD + 1, 0), "larger than"),
    (HEADER.pack(3, 0) + b"{x}", "not JSON"),
    (HEADER.pack(2, 0) + b"[]", "not an object"),
    (HEADER.pack(2, 1) + b"{}", "announces 1 descriptors"),
    *((HEADER.pack(len(body), 0) + body, message) for body, message in [
        (b'{"t":"no"}', "unknown frame kind 'no'"),
        (b'{"t":"ready","interface":1}', "'interface' must be a string"),
        (b'{"t":"conn","family":"inet"}', "'family' must be a whole number"),
    ]),
])
def test_malformed_frames_raise_channel_error(payload: bytes, message: str) -> None:
    left, right = socket.socketpair()
    receiver = Channel(right)
    try:
        left.sendall(payload)
        with pytest.raises(ChannelError, match=message):
            receiver.receive()
    finally:
        left.close()
        receiver.close()


def test_a_count_a_forked_worker_keeps_is_read_by_the_primary() -> None:
    if threading.active_count() > 1:
        pytest.skip("forking a threaded process is unsafe")
    closes = SharedCounter()
    pid = os.fork()
    if pid == 0:  # the worker: count three closes, then leave without running any pytest code
        for _ in range(3):
            closes.add()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert closes.read() == 3


def test_a_count_nobody_reads_is_a_plain_count() -> None:
    closes = SharedCounter(shared=False)  # kernel-side policies: the primary never reads it, so no page
    closes.add(2)
    assert not closes.shared and closes.read() == 2
    closes.close()
    assert closes.read() == 2


def test_header_layout_is_length_then_descriptor_count() -> None:
    payload = b'{"t":"conn","family":%d}' % socket.AF_INET
    assert connection_frame(2, socket.AF_INET) == struct.pack("!IB", len(payload), 2) + payload
