"""Scheduling policies: how a connection reaches a worker.

A policy is an object behind one small interface, so that the primary never
changes when one is added:

- ``dispatches``: True when the primary accepts and hands each connection to a
  worker over its channel; False when workers accept for themselves.
- ``worker_sockets(listeners)``: the listening sockets a worker serves on.
- ``order(ready)``: for a dispatching policy, the ready workers in the order to
  try them; the primary skips one whose channel is backed up and takes the next.
"""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import ClassVar, TypeVar

from .errors import ConfigError

W = TypeVar("W")


class Policy(ABC):
    name: ClassVar[str]
    summary: ClassVar[str]
    dispatches: ClassVar[bool]

    @abstractmethod
    def worker_sockets(self, listeners: Sequence[socket.socket]) -> list[socket.socket]: ...

    def order(self, ready: Sequence[W]) -> Iterator[W]:
        raise NotImplementedError(f"policy {self.name} does not dispatch connections")


class RoundRobin(Policy):
    name = "rr"
    summary = "the primary accepts and hands each connection to the next ready worker (Node's SCHED_RR)"
    dispatches = True

    def __init__(self) -> None:
        self._cursor = 0

    def worker_sockets(self, listeners: Sequence[socket.socket]) -> list[socket.socket]:
        return []  # connections arrive over the channel

    def order(self, ready: Sequence[W]) -> Iterator[W]:
        count = len(ready)
        start = self._cursor % count if count else 0
        self._cursor = start + 1
        for step in range(count):
            yield ready[(start + step) % count]


class Shared(Policy):
    name = "shared"
    summary = "every worker accepts on the inherited socket; the kernel picks (what gunicorn and uvicorn do)"
    dispatches = False

    def worker_sockets(self, listeners: Sequence[socket.socket]) -> list[socket.socket]:
        return list(listeners)


POLICY_CLASSES: dict[str, type[Policy]] = {cls.name: cls for cls in (RoundRobin, Shared)}


def make_policy(name: str) -> Policy:
    try:
        return POLICY_CLASSES[name]()
    except KeyError:
        raise ConfigError(f"unknown --policy value {name!r}: choose one of {', '.join(POLICY_CLASSES)}") from None
