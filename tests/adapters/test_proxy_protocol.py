"""The PROXY header parser (adapters.edge.proxy_protocol.parse): what each version's header yields, where it ends,
when more bytes are needed, and what is refused. The end-to-end behaviour is in test_e2e_proxy_protocol."""

from __future__ import annotations

import socket
import struct

import pytest
from clusterrun.adapters.edge.proxy_protocol import V1_MAX, V2_SIGNATURE, HeaderError, parse


def v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def test_v1_names_the_source_and_ends_after_crlf() -> None:
    header = b"PROXY TCP4 192.0.2.1 10.0.0.1 56324 443\r\n"
    assert parse(header + b"GET / HTTP/1.1\r\n") == (len(header), ("192.0.2.1", 56324))
    header6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n"
    assert parse(header6) == (len(header6), ("2001:db8::1", 1))
    assert parse(b"PROXY UNKNOWN ffff:f::1 ffff::2 1 2\r\nGET") == (len(b"PROXY UNKNOWN ffff:f::1 ffff::2 1 2\r\n"),
                                                                    None)


def test_v1_of_exactly_the_longest_length_is_taken() -> None:
    head = b"PROXY UNKNOWN "
    header = head + b"x" * (V1_MAX - len(head) - 2) + b"\r\n"
    assert len(header) == V1_MAX
    assert parse(header) == (V1_MAX, None)
    with pytest.raises(HeaderError):
        parse(head + b"x" * (V1_MAX - len(head) - 1) + b"\r\n")


@pytest.mark.parametrize("prefix", [b"", b"P", b"PROXY", b"PROXY TCP4 192.0.2.1", b"\r\n", V2_SIGNATURE,
                                    V2_SIGNATURE + b"\x21\x11\x00\x0c" + bytes(11)])
def test_a_prefix_of_a_header_asks_for_more(prefix: bytes) -> None:
    assert parse(prefix) is None


def test_v2_names_the_source_skips_tlvs_and_ends_after_its_length() -> None:
    four = socket.inet_aton("198.51.100.2") + socket.inet_aton("10.0.0.1") + struct.pack("!HH", 40000, 443)
    header = v2(1, 0x11, four + b"\x04\x00\x01x")
    assert parse(header + b"GET") == (len(header), ("198.51.100.2", 40000))
    six = (socket.inet_pton(socket.AF_INET6, "2001:db8::5") + socket.inet_pton(socket.AF_INET6, "::1")
           + struct.pack("!HH", 8, 9))
    assert parse(v2(1, 0x21, six)) == (16 + 36, ("2001:db8::5", 8))
    assert parse(v2(0, 0x11, four)) == (16 + 12, None)  # LOCAL
    assert parse(v2(1, 0x00, b"")) == (16, None)  # UNSPEC
    assert parse(v2(1, 0x31, bytes(216))) == (16 + 216, None)  # a Unix socket's client


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\n",
    b"PROXY TCP4 192.0.2.1 10.0.0.1 1 2\n",
    b"PROXY TCP5 192.0.2.1 10.0.0.1 1 2\r\n",
    b"PROXY TCP4 192.0.2.1 10.0.0.1 01 2\r\n",
    b"PROXY TCP4 192.0.2.1 10.0.0.1 -1 2\r\n",
    b"PROXY TCP6 192.0.2.1 10.0.0.1 1 2\r\n",
    b"PROXY TCP4 192.0.2.1 10.0.0.1 1 2 3\r\n",
    b"PROXY TCP4 192.0.2.1 10.0.0.1 1 " + b"9" * 120,
    b"PROXY TCP4 \xff.0.2.1 10.0.0.1 1 2\r\n",
    b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x00",
    v2(2, 0x11, bytes(12)),
    V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12),
    v2(1, 0x11, bytes(11)),
    v2(1, 0x21, bytes(35)),
    v2(1, 0x51, bytes(12)),
    V2_SIGNATURE + b"\x21\x11\x08\x01",
])
def test_a_bad_header_is_refused(data: bytes) -> None:
    with pytest.raises(HeaderError):
        parse(data)
