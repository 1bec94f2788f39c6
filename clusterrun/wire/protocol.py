"""What the primary and a worker say to each other: every frame kind once, with its shape and its checks.

A frame is a JSON object whose ``"t"`` names its kind; the other keys are its
fields. This module is the only place that knows the kinds: both ends build
frames as the dataclasses below, and everything that arrives goes through
``decode``, which checks the kind and the type of every field. A frame that
fails is a ChannelError, which costs the sender (a worker) its life, never the
receiver (the primary). How frames travel — length prefix, passed descriptors —
is the channel's business (channel.py).

Worker to primary: Online, Ready, BootFailed, Beat, Recycle, Draining,
Message, Broadcast. Primary to worker: Connections, Message, Handle, Stop, ReopenLogs.

A new kind is a dataclass here with its ``KIND`` (and, if it has fields, a
``parse`` that checks them), a line in ``_KINDS``, and a ``case`` where it is
handled.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, TypeVar

from clusterrun.errors import ChannelError, MessageError

# Bounds on the text a worker may make the primary keep and log.
_MAX_ERROR = 2000
_MAX_REASON = 500


def _text(obj: Mapping[str, Any], key: str, limit: int) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ChannelError(f"{obj.get('t')!r} frame: {key!r} must be a string")
    return value[:limit]


def _whole(obj: Mapping[str, Any], key: str, optional: bool = False) -> Any:
    value = obj.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ChannelError(f"{obj.get('t')!r} frame: {key!r} must be a whole number")
    return value


def _wholes(obj: Mapping[str, Any], key: str, most: int = 32) -> tuple[int, ...]:
    """A short list of whole numbers >= 0 (absent: empty)."""
    values = obj.get(key, [])
    if not isinstance(values, list) or len(values) > most or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values
    ):
        raise ChannelError(f"{obj.get('t')!r} frame: {key!r} must be a list of at most {most} whole numbers >= 0")
    return tuple(values)


K = TypeVar("K", bound="_Kind")


@dataclass(frozen=True)
class _Kind:
    """A frame kind with no fields; a kind with fields overrides ``parse`` to check each."""

    KIND: ClassVar[str]
    # True where a frame carries nothing but whole numbers, flags and fixed words: the same bytes then always
    # decode to an equal frame, and frames are frozen, so ``decode`` may hand out one frame for them all.
    SAME_BYTES_SAME_FRAME: ClassVar[bool] = False

    @classmethod
    def parse(cls: type[K], obj: Mapping[str, Any]) -> K:
        return cls()


@dataclass(frozen=True)
class Online(_Kind):
    """The worker is forked and is loading the app (Node's "online")."""

    KIND: ClassVar[str] = "online"


@dataclass(frozen=True)
class Ready(_Kind):
    """The worker serves. ``connection_room``: connections its descriptor table can hold (None: no limit)."""

    KIND: ClassVar[str] = "ready"
    interface: str
    connection_room: int | None = None

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Ready:
        return cls(_text(obj, "interface", 16), _whole(obj, "connection_room", optional=True))


@dataclass(frozen=True)
class BootFailed(_Kind):
    """The app failed to load or start in the worker, which exits next."""

    KIND: ClassVar[str] = "boot_error"
    error: str

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> BootFailed:
        return cls(_text(obj, "error", _MAX_ERROR))


@dataclass(frozen=True)
class Beat(_Kind):
    """The worker's event loop is alive (sent four times per --timeout, at most once a second), and its counts.

    ``requests``: served since it started; ``connections``: open now; ``in_flight``: requests being served now.
    """

    KIND: ClassVar[str] = "beat"
    requests: int = 0
    connections: int = 0
    in_flight: int = 0
    # With --metrics (clusterrun.wire.requeststats): responses by status class, the duration histogram's buckets
    # (not cumulative) and the durations' sum in seconds, all since the worker started.
    statuses: tuple[int, ...] = ()
    buckets: tuple[int, ...] = ()
    seconds: float = 0.0

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Beat:
        seconds = obj.get("seconds", 0.0)
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
            raise ChannelError("'beat' frame: 'seconds' must be a number >= 0")
        return cls(_whole(obj, "requests"), _whole(obj, "connections"), _whole(obj, "in_flight"),
                   _wholes(obj, "statuses"), _wholes(obj, "buckets"), float(seconds))


@dataclass(frozen=True)
class Recycle(_Kind):
    """The worker asks to be replaced (--max-requests, --max-memory)."""

    KIND: ClassVar[str] = "recycle"
    reason: str

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Recycle:
        return cls(_text(obj, "reason", _MAX_REASON))


@dataclass(frozen=True)
class Draining(_Kind):
    """The worker was told to stop from outside (SIGTERM): route nothing more to it."""

    KIND: ClassVar[str] = "draining"


@dataclass(frozen=True)
class Message(_Kind):
    """A user message (any JSON value): to the primary's "message" event, or to a worker's callbacks."""

    KIND: ClassVar[str] = "msg"
    data: Any

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Message:
        return cls(obj.get("data"))


@dataclass(frozen=True)
class Handle(_Kind):
    """A user message with a socket (Node's ``worker.send(message, handle)``): its one descriptor travels with it.

    A kind of its own rather than a field of Message, so that plain messages keep their shape both ways and a
    worker never takes a connection the primary passed for rr (Connections) for one the user passed.
    """

    KIND: ClassVar[str] = "handle"
    data: Any

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Handle:
        return cls(obj.get("data"))


@dataclass(frozen=True)
class Broadcast(_Kind):
    """A user message from a worker, for the primary to relay to every other live worker."""

    KIND: ClassVar[str] = "bcast"
    data: Any

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Broadcast:
        return cls(obj.get("data"))


@dataclass(frozen=True)
class Connections(_Kind):
    """Accepted connections of one address family; their descriptors travel with the frame."""

    KIND: ClassVar[str] = "conn"
    SAME_BYTES_SAME_FRAME: ClassVar[bool] = True
    family: int

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Connections:
        return cls(_whole(obj, "family"))


@dataclass(frozen=True)
class Stop(_Kind):
    """Drain and exit. ``linger``: other workers take over, so idle keep-alive connections may stay a while."""

    KIND: ClassVar[str] = "stop"
    linger: bool = False

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Stop:
        return cls(bool(obj.get("linger", False)))


@dataclass(frozen=True)
class ReopenLogs(_Kind):
    """Reopen the log files (the primary got SIGUSR1: logrotate moved them)."""

    KIND: ClassVar[str] = "reopen_logs"


Frame = (Online | Ready | BootFailed | Beat | Recycle | Draining | Message | Handle | Broadcast | Connections
         | Stop | ReopenLogs)

_KINDS: dict[str, Callable[[Mapping[str, Any]], Frame]] = {
    kind.KIND: kind.parse
    for kind in (Online, Ready, BootFailed, Beat, Recycle, Draining, Message, Handle, Broadcast, Connections, Stop,
                 ReopenLogs)
}


def payload(frame: Frame) -> bytes:
    """The frame as compact JSON."""
    return json.dumps({"t": frame.KIND, **asdict(frame)}, separators=(",", ":")).encode()


# Decoded frames of the kinds that allow it, by their bytes. A worker under a primary-side policy is passed
# every connection in one of a few identical frames (channel.connection_frame encodes each shape once): parsing
# the JSON again for each was a tenth of what passing a connection cost the worker in Python calls. Bounded, so
# that a peer sending ever new bytes of such a kind cannot grow it; and only short frames are looked up, so that
# a user message of up to 1 MiB is not hashed for nothing.
_decoded: dict[bytes, Frame] = {}
_DECODED_MOST = 32
_DECODED_BYTES = 64  # a Connections frame is 24


def decode(data: bytes) -> Frame:
    """The frame in ``data``; ChannelError unless it is JSON, of a known kind, with fields of the right types."""
    if len(data) > _DECODED_BYTES:
        return _decode(data)
    frame = _decoded.get(data)
    if frame is None:
        frame = _decode(data)
        if frame.SAME_BYTES_SAME_FRAME and len(_decoded) < _DECODED_MOST:
            _decoded[data] = frame
    return frame


def _decode(data: bytes) -> Frame:
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise ChannelError(f"frame is not JSON: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("t"), str):
        raise ChannelError("frame is not an object with a string 't'")
    parse = _KINDS.get(obj["t"])
    if parse is None:
        raise ChannelError(f"unknown frame kind {obj['t']!r}")
    return parse(obj)


# A user message's limit as encoded JSON, checked by whoever sends one: a worker, the primary's Worker.send
# and broadcast relay. The channel's frame limit (channel.MAX_PAYLOAD) leaves room for the envelope.
MAX_MESSAGE = 1024 * 1024


def check_message(message: Any) -> None:
    """Raise MessageError unless ``message`` is a JSON value of at most 1 MiB."""
    try:
        size = len(json.dumps(message, separators=(",", ":"), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise MessageError(f"the message is not JSON-serialisable ({exc}); send dicts, lists, strings, numbers, "
                           "booleans or None") from None
    if size > MAX_MESSAGE:
        raise MessageError(f"the message is {size} bytes as JSON, above the {MAX_MESSAGE}-byte limit; send a "
                           "reference (a key, a path) instead")
