"""Unit tests of what a handle may be (clusterrun.wire.handles), and of the close count that goes below zero."""

from __future__ import annotations

import os
import socket
import ssl
import struct
import time

import pytest

from clusterrun.errors import MessageError
from clusterrun.wire import handles
from clusterrun.wire.counters import SharedCounter


def test_a_connection_is_detached_and_a_listener_kept() -> None:
    ours, theirs = socket.socketpair()
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        fd = handles.take(ours)
        assert ours.fileno() == -1  # the caller's object lets go: the channel closes the descriptor once sent
        os.close(fd)
        theirs.settimeout(5)
        assert theirs.recv(1) == b""  # no copy left open anywhere
        dup = handles.take(listener)
        assert listener.fileno() >= 0 and dup != listener.fileno()
        os.close(dup)
    finally:
        theirs.close()
        listener.close()


def test_a_connection_its_client_reset_still_travels() -> None:
    # A client may leave between the router's accept and its send: that is no error of the router's.
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _address = listener.accept()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()  # a reset
    try:
        deadline = time.monotonic() + 5
        while True:  # until the reset arrives: the socket has no peer any more
            try:
                accepted.getpeername()
            except OSError:
                break
            assert time.monotonic() < deadline, "the reset never arrived"
            time.sleep(0.01)
        os.close(handles.take(accepted))
    finally:
        accepted.close()
        listener.close()


def test_what_cannot_travel_is_refused_and_left_to_the_caller() -> None:
    closed = socket.socket()
    closed.close()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    unconnected = socket.socket()
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).wrap_socket(socket.socket(), server_hostname="x",
                                                               do_handshake_on_connect=False)
    try:
        cases = [("a file", "cannot send a str ('a file') as a handle: pass a socket.socket"),
                 (closed, "cannot send a closed socket"), (udp, "cannot send a SOCK_DGRAM socket"),
                 (unconnected, "neither listening nor connected"), (tls, "a TLS session cannot leave this process")]
        for bad, reason in cases:
            with pytest.raises(MessageError, match=reason.replace("(", r"\(").replace(")", r"\)")):
                handles.take(bad)
        assert udp.fileno() >= 0 and unconnected.fileno() >= 0  # still the caller's
    finally:
        for sock in (udp, unconnected, tls):
            sock.close()


def test_the_worker_gets_the_socket_in_the_mode_it_was_sent_in() -> None:
    blocking, peer = socket.socketpair()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    try:
        received = [handles.receive(os.dup(blocking.fileno())), handles.receive(os.dup(listener.fileno()))]
        assert received[0].gettimeout() is None
        assert received[1].gettimeout() == 0.0  # a non-blocking descriptor no longer passes for a blocking one
        assert handles.is_listener(received[1]) and not handles.is_listener(received[0])
        for sock in received:
            sock.close()
    finally:
        for sock in (blocking, peer, listener):
            sock.close()


def test_a_close_count_below_zero_reads_as_negative() -> None:
    count = SharedCounter()
    try:
        count.add(-1)  # a worker took a handle before any passed connection closed
        assert count.read() == -1
        count.add(3)
        assert count.read() == 2
    finally:
        count.close()
