"""The socket object a worker wraps around an accepted connection, its own or one the primary passed
(clusterrun.adapters.entry)."""

from __future__ import annotations

import socket

from clusterrun.adapters.entry import AcceptedSocket


def test_an_accepted_connection_reads_its_family_and_type_as_the_kernels_numbers() -> None:
    """uvloop reads them three times per connection: plain numbers, equal to the enums socket.socket gives."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    fd, _addr = listener._accept()  # type: ignore[attr-defined]
    passed = AcceptedSocket(socket.AF_INET, socket.SOCK_STREAM, 0, fileno=fd)
    try:
        assert type(passed.family) is int and passed.family == socket.AF_INET
        assert type(passed.type) is int and passed.type == socket.SOCK_STREAM
        # Still a socket.socket: uvloop detaches such a socket at close instead of closing its descriptor twice.
        assert isinstance(passed, socket.socket)
        passed.sendall(b"ping")
        assert client.recv(4) == b"ping"
    finally:
        passed.close()
        client.close()
        listener.close()
