"""Unit tests of the scheduling policies: which worker a connection goes to."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from clusterrun.errors import ConfigError
from clusterrun.host.listeners import BindAddress
from clusterrun.primary.policies import LeastConnections, ReusePort, RoundRobin, Shared, Sticky, make_policy

# Policies


@dataclass
class _Worker:
    index: int
    open_connections: int = 0


def _indexes(workers: Iterator[_Worker]) -> list[int]:
    return [w.index for w in workers]


def test_round_robin_rotates_and_offers_the_rest_as_fallbacks() -> None:
    rr, ready = RoundRobin(), [_Worker(0), _Worker(1), _Worker(2)]
    assert [_indexes(rr.order(ready, "")) for _ in range(3)] == [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
    assert list(rr.order([], "")) == []


def test_least_connections_prefers_the_idlest_and_rotates_ties() -> None:
    policy = LeastConnections()
    ready = [_Worker(0, 3), _Worker(1, 1), _Worker(2, 1)]
    assert [_indexes(policy.order(ready, ""))[0] for _ in range(4)] == [1, 1, 2, 1]
    ready[0].open_connections = 0
    assert _indexes(policy.order(ready, ""))[0] == 0


def test_sticky_keeps_a_client_and_moves_only_the_dead_workers_clients() -> None:
    policy = Sticky()
    ready = [_Worker(i) for i in range(4)]
    peers = [f"10.0.0.{n}" for n in range(200)]
    before = {peer: _indexes(policy.order(ready, peer))[0] for peer in peers}
    assert before == {peer: _indexes(policy.order(ready, peer))[0] for peer in peers}
    assert set(before.values()) == {0, 1, 2, 3}
    survivors = [w for w in ready if w.index != 2]
    after = {peer: _indexes(policy.order(survivors, peer))[0] for peer in peers}
    assert all(after[p] == before[p] for p in peers if before[p] != 2)


def test_policies_by_name() -> None:
    assert isinstance(make_policy("rr"), RoundRobin) and isinstance(make_policy("shared"), Shared)
    assert isinstance(make_policy("least-conn"), LeastConnections) and isinstance(make_policy("sticky"), Sticky)
    assert isinstance(make_policy("reuseport"), ReusePort)
    assert not Shared().dispatches and Shared().worker_sockets(0, [], 1) == []
    with pytest.raises(ConfigError, match="unknown --policy value 'x'"):
        make_policy("x")


def test_reuseport_needs_tcp() -> None:
    with pytest.raises(ConfigError, match=r"reuseport cannot serve unix:/tmp/x\.sock: it needs TCP listeners"):
        ReusePort().bind(BindAddress(path="/tmp/x.sock"), 16)


def test_reuseport_gives_each_slot_its_own_socket_on_the_same_port_for_the_slot_s_life() -> None:
    policy = ReusePort()
    held = policy.bind(BindAddress("127.0.0.1", 0), 16)
    try:
        first, second = policy.worker_sockets(0, [held], 16), policy.worker_sockets(1, [held], 16)
        assert {s.getsockname() for s in first + second} == {held.getsockname()}
        assert first[0] is not second[0]
        # A respawn or replacement of slot 0 serves the same socket: its accept queue is never dropped.
        assert policy.worker_sockets(0, [held], 16) == first
        assert policy.held_sockets() == first + second
        client = socket.create_connection(held.getsockname(), timeout=5)
        client.close()
        policy.release(1)
        assert second[0].fileno() == -1 and policy.held_sockets() == first
    finally:
        policy.close()
        held.close()
