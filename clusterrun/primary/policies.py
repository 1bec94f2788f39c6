"""Scheduling policies: how a connection reaches a worker.

A policy is an object behind one small interface, so that the primary never
changes when one is added:

- ``dispatches``: True when the primary accepts and hands each connection to a
  worker over its channel; False when workers accept for themselves.
- ``bind(address, backlog)``: the primary's own socket for one ``--bind``.
- ``worker_sockets(index, listeners, backlog)``: the listening sockets a new
  worker of slot ``index`` serves on (made before the fork). Sockets a policy
  makes for a slot are its own (``held_sockets``), kept for the slot's life and
  given to each worker that serves it; ``release(index)`` closes them when the
  slot goes away, ``close()`` when the cluster stops.
- ``order(ready, peer)``: only a ``Dispatching`` policy has it: the ready
  workers in the order to try them (the dispatcher skips late, full and
  backed-up ones).
- ``tracks_connections``: workers count the connections they close where the
  primary reads them (``clusterrun.wire.counters``), so that its count of each
  worker's open connections is exact.
- ``loads``: only ``balanced`` has one: the array of open connections every
  worker reads (``clusterrun.wire.loads``), mapped when the policy is made,
  before any fork; each worker gets a cell of it with its pages.
"""

from __future__ import annotations

import socket
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import ClassVar, Protocol, TypeVar

from clusterrun.errors import ConfigError
from clusterrun.host import listeners as listening
from clusterrun.host.listeners import BindAddress
from clusterrun.wire.loads import Loads


class Candidate(Protocol):
    @property
    def index(self) -> int: ...

    @property
    def open_connections(self) -> int: ...


W = TypeVar("W", bound=Candidate)


class Policy:
    """Where connections arrive: how the primary binds, and which sockets each worker serves."""

    name: ClassVar[str]
    summary: ClassVar[str]
    dispatches: ClassVar[bool] = False
    tracks_connections: ClassVar[bool] = False
    loads: Loads | None = None

    def bind(self, address: BindAddress, backlog: int) -> socket.socket:
        return listening.bind(address, backlog)

    def worker_sockets(self, index: int, listeners: Sequence[socket.socket], backlog: int) -> list[socket.socket]:
        return []  # dispatching policies: connections arrive over the channel

    def held_sockets(self) -> list[socket.socket]:
        return []

    # Hooks: only a policy that holds sockets per slot has anything to do in them.
    def release(self, index: int) -> None:
        """Slot ``index`` is gone (scaled down or given up) and its last worker exited."""

    def close(self) -> None:
        """The cluster stops."""


class Dispatching(Policy, ABC):
    """The primary accepts each connection and hands it to the worker this policy puts first."""

    dispatches = True

    @abstractmethod
    def order(self, ready: Sequence[W], peer: str) -> Iterator[W]: ...


class RoundRobin(Dispatching):
    name = "rr"
    summary = ("the primary accepts and hands each connection to the next ready worker (Node's SCHED_RR); "
               "even spread, the default")

    def __init__(self) -> None:
        self._cursor = 0

    def order(self, ready: Sequence[W], peer: str) -> Iterator[W]:
        count = len(ready)
        start = self._cursor % count if count else 0
        self._cursor = start + 1
        for step in range(count):
            yield ready[(start + step) % count]


class LeastConnections(RoundRobin):
    name = "least-conn"
    summary = ("like rr, to the ready worker with the fewest open connections; for uneven requests (slow "
               "endpoints, long polls, websockets)")
    tracks_connections = True

    def order(self, ready: Sequence[W], peer: str) -> Iterator[W]:
        # Ties go round-robin: rotate first, then a stable sort keeps the rotation among equals.
        rotated = list(super().order(ready, peer))
        rotated.sort(key=lambda w: w.open_connections)
        return iter(rotated)


class Sticky(Dispatching):
    name = "sticky"
    summary = ("the same client address always goes to the same live worker; for per-process sessions or "
               "caches (behind a proxy it sees the proxy's address)")

    def order(self, ready: Sequence[W], peer: str) -> Iterator[W]:
        # Rendezvous hashing over slot indexes: a dead worker moves only its own clients, and a respawned
        # worker (same index) gets them back.
        key = peer.encode()
        return iter(sorted(ready, key=lambda w: zlib.crc32(key, w.index * 2654435761 & 0xFFFFFFFF), reverse=True))


class Shared(Policy):
    name = "shared"
    summary = ("every worker accepts on the inherited socket and the kernel picks (what gunicorn and uvicorn "
               "do); no hop through the primary")

    def worker_sockets(self, index: int, listeners: Sequence[socket.socket], backlog: int) -> list[socket.socket]:
        return list(listeners)


class Balanced(Shared):
    name = "balanced"
    summary = ("workers accept on the inherited socket as under shared, but one that holds more open connections "
               "than the least-loaded worker stops accepting until that no longer holds; no hop through the "
               "primary, keep-alive clients spread evenly")

    def __init__(self) -> None:
        # Made here, when the primary starts and before it forks: every worker and every respawn inherits the
        # same shared pages.
        self.loads = self._loads = Loads()

    def close(self) -> None:
        self._loads.close()


class ReusePort(Shared):
    name = "reuseport"
    summary = ("each slot has its own SO_REUSEPORT socket and the kernel hashes connections over them; a "
               "hung worker's share waits for its replacement")

    def __init__(self) -> None:
        # One listener per --bind for each slot, kept by the primary for the slot's life: a worker that dies or
        # is replaced leaves its accept queue to the next worker of the slot, where closing it would make the
        # kernel reset every connection queued there (unless net.ipv4.tcp_migrate_req is set).
        self._slots: dict[int, list[socket.socket]] = {}

    def bind(self, address: BindAddress, backlog: int) -> socket.socket:
        if address.is_unix:
            raise ConfigError(f"--policy reuseport cannot serve {address}: it needs TCP listeners; use rr or shared")
        if not hasattr(socket, "SO_REUSEPORT"):
            raise ConfigError("--policy reuseport needs SO_REUSEPORT, which this system lacks; use rr or shared")
        # SO_REUSEPORT lets any socket of the same user join a port where others listen: alone, it would let
        # this cluster share a port that another program (another clusterrun, another app) already serves,
        # and take half its connections. So first prove the address free with a socket that does not set
        # it — that bind fails wherever anything is bound with listeners (SO_REUSEADDR still passes over
        # TIME_WAIT leftovers) — and only then take the address with SO_REUSEPORT for this cluster's workers.
        probe = listening.bind(address, backlog, listen=False)  # BindError: "address already in use; ..."
        port = probe.getsockname()[1]  # the real one, for port 0
        probe.close()
        # The primary's socket only holds the address: bound, never listening, so that the kernel hashes no
        # connection to it.
        return listening.bind(BindAddress(host=address.host, port=port), backlog, reuse_port=True, listen=False)

    def worker_sockets(self, index: int, listeners: Sequence[socket.socket], backlog: int) -> list[socket.socket]:
        own = self._slots.get(index)
        if own is None:
            own = self._slots[index] = []
            for held in listeners:
                host, port = held.getsockname()[:2]
                own.append(listening.bind(BindAddress(host=host, port=port), backlog, reuse_port=True))
        return list(own)

    def held_sockets(self) -> list[socket.socket]:
        return [sock for own in self._slots.values() for sock in own]

    def release(self, index: int) -> None:
        for sock in self._slots.pop(index, []):
            listening.close_quietly(sock)

    def close(self) -> None:
        for index in list(self._slots):
            self.release(index)


POLICY_CLASSES: dict[str, type[Policy]] = {
    cls.name: cls for cls in (RoundRobin, LeastConnections, Sticky, Shared, Balanced, ReusePort)
}


def make_policy(name: str) -> Policy:
    try:
        return POLICY_CLASSES[name]()
    except KeyError:
        raise ConfigError(f"unknown --policy value {name!r}: choose one of {', '.join(POLICY_CLASSES)}") from None
