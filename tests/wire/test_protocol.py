"""The frames primary and workers exchange (clusterrun.wire.protocol): every kind, both ways through JSON."""

from __future__ import annotations

import json
import socket

import pytest

from clusterrun.errors import ChannelError
from clusterrun.wire import protocol
from clusterrun.wire.protocol import (
    Beat,
    BootFailed,
    Broadcast,
    Connections,
    Draining,
    Message,
    Online,
    Ready,
    Recycle,
    Stop,
)

EVERY_KIND = [
    Online(), Ready("wsgi", 200), Ready("asgi", None), BootFailed("ImportError: x"), Beat(),
    Beat(12, 3, 1, (0, 12, 0, 0, 0), (3, 9) + (0,) * 14, 0.25),
    Recycle("it served 10"),
    Draining(), Message({"a": [1, None]}), Broadcast("hello"), Connections(socket.AF_INET), Stop(linger=True),
]


@pytest.mark.parametrize("frame", EVERY_KIND, ids=lambda f: type(f).__name__)
def test_every_frame_kind_survives_its_encoding(frame: protocol.Frame) -> None:
    assert protocol.decode(protocol.payload(frame)) == frame


def test_kinds_are_named_once() -> None:
    kinds = [json.loads(protocol.payload(frame))["t"] for frame in EVERY_KIND]
    assert len(set(kinds)) == len({type(frame) for frame in EVERY_KIND})


@pytest.mark.parametrize("obj, message", [
    ({"t": "stopp"}, "unknown frame kind 'stopp'"),
    ({"kind": "stop"}, "not an object with a string 't'"),
    ({"t": "ready"}, "'interface' must be a string"),
    ({"t": "ready", "interface": "wsgi", "connection_room": True}, "'connection_room' must be a whole number"),
    ({"t": "boot_error", "error": None}, "'error' must be a string"),
    ({"t": "recycle", "reason": ["a"]}, "'reason' must be a string"),
    ({"t": "conn"}, "'family' must be a whole number"),
    ({"t": "beat", "requests": 1, "connections": "2", "in_flight": 0}, "'connections' must be a whole number"),
    ({"t": "beat", "requests": 1, "connections": 2, "in_flight": 0, "statuses": [1, -1]}, "'statuses' must be a"),
    ({"t": "beat", "requests": 1, "connections": 2, "in_flight": 0, "seconds": "1"}, "'seconds' must be a number"),
])
def test_a_frame_of_the_wrong_shape_is_refused(obj: dict[str, object], message: str) -> None:
    with pytest.raises(ChannelError, match=message):
        protocol.decode(json.dumps(obj).encode())


def test_text_a_worker_sends_is_bounded() -> None:
    frame = protocol.decode(json.dumps({"t": "boot_error", "error": "x" * 10_000}).encode())
    assert isinstance(frame, BootFailed) and len(frame.error) == 2000


def test_a_passed_connections_frame_is_parsed_once_for_its_bytes() -> None:
    """A worker is passed every connection in one of a few identical frames: the same bytes give the same frame
    object, not a new parse of the JSON each time."""
    data = protocol.payload(Connections(socket.AF_INET6))
    first = protocol.decode(bytes(data))
    assert first == Connections(socket.AF_INET6)
    assert protocol.decode(bytes(data)) is first


def test_a_message_is_parsed_anew_each_time_so_receivers_never_share_its_data() -> None:
    data = protocol.payload(Message({"a": [1]}))
    first, second = protocol.decode(data), protocol.decode(data)
    assert isinstance(first, Message) and isinstance(second, Message)
    assert first == second and first.data is not second.data


def test_frames_kept_for_their_bytes_are_bounded() -> None:
    """A peer sending ever new bytes of a kind kept for its bytes cannot make the receiver keep them all."""
    for family in range(1000, 1200):
        assert protocol.decode(protocol.payload(Connections(family))) == Connections(family)
    assert len(protocol._decoded) <= protocol._DECODED_MOST
