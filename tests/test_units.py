"""Pure unit tests: config parsing, CPU counting, throttling, framing, policies, app loading."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from clusterrun.adapters.loading import detect_interface, load_app
from clusterrun.adapters.methods import stand_in
from clusterrun.adapters.stack.lifespan import Lifespan

from clusterrun import Cluster, cli, logs
from clusterrun.config.build import build_config
from clusterrun.config.options import OPTIONS, Config, Option, resolve_workers
from clusterrun.errors import BootError, ChannelError, ConfigError
from clusterrun.host.cpus import cgroup_cpu_quota, usable_cpus
from clusterrun.host.listeners import BindAddress, parse_bind
from clusterrun.identity import WorkerInfo
from clusterrun.primary.policies import LeastConnections, ReusePort, RoundRobin, Shared, Sticky, make_policy
from clusterrun.wire.channel import HEADER, MAX_PAYLOAD, Channel, connection_frame
from clusterrun.wire.counters import SharedCounter
from clusterrun.wire.protocol import Connections, Message
from clusterrun.worker import hooks as workerhooks

# Config


@pytest.mark.parametrize("spec, cpus, expected", [("4", 8, 4), ("auto", 3, 3), ("2x", 3, 6), ("0.5x", 3, 2),
                                                  ("0.1x", 2, 1), (" AUTO ", 2, 2)])
def test_workers_resolve(spec: str, cpus: int, expected: int) -> None:
    assert resolve_workers(spec, cpus) == expected


@pytest.mark.parametrize("spec", ["abc", "0", "-1", "x", "0x", "2y", ""])
def test_bad_workers_name_the_value_and_the_fix(spec: str) -> None:
    with pytest.raises(ConfigError, match=rf"bad --workers value '{spec}'.*give a number like 4, auto"):
        resolve_workers(spec, 2)


@pytest.mark.parametrize("text, address", [
    ("127.0.0.1:8000", BindAddress("127.0.0.1", 8000)),
    ("[::1]:0", BindAddress("::1", 0)),
    (":9000", BindAddress("0.0.0.0", 9000)),
    ("8080", BindAddress("127.0.0.1", 8080)),
    ("unix:/tmp/app.sock", BindAddress(path="/tmp/app.sock")),
])
def test_bind_forms(text: str, address: BindAddress) -> None:
    assert parse_bind(text) == address


@pytest.mark.parametrize("text, message", [("::1:80", "brackets"), ("host:http", "not a number"),
                                           ("h:70000", "out of range"), ("unix:", "path is empty")])
def test_bad_bind_values(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_bind(text)


def test_build_config_defaults_and_environment() -> None:
    config = build_config("app:app", {}, environ={"WEB_CONCURRENCY": "3", "CLUSTERRUN_SCHED_POLICY": "shared"},
                          cpus=2)
    assert (config.workers, config.policy, config.binds) == (3, "shared", (BindAddress("127.0.0.1", 8000),))
    given = build_config("app:app", {"workers": "2x", "policy": "rr", "host": "0.0.0.0", "port": "0"},
                         environ={"CLUSTERRUN_SCHED_POLICY": "shared"}, cpus=2)
    assert (given.workers, given.policy, given.binds) == (4, "rr", (BindAddress("0.0.0.0", 0),))


@pytest.mark.parametrize("values, message", [
    ({"wrokers": 2}, "unknown option 'wrokers'"),
    ({"policy": "bogus"}, "unknown --policy value 'bogus': choose one of rr, least-conn, sticky, shared, reuseport"),
    ({"threads": "0"}, "bad --threads value '0'"),
    ({"graceful_timeout": "soon"}, "bad --graceful-timeout value 'soon'"),
    ({"binds": ["127.0.0.1:1"], "port": "2"}, "--bind cannot be combined with --host/--port"),
])
def test_bad_options_are_config_errors(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config("app:app", values, environ={}, cpus=2)


# A value of each TOML type, as written in the file, with the Python type it reads as and how a message shows it
# (a list's bad item may be named alone).
_TOML_VALUES = [("true", bool, ("true",)), ("1.5", float, ("1.5",)), ("7", int, ("7",)),
                ("[true]", list, ("[true]", "true")), ("{ a = 1 }", dict, ("{a = 1}",))]
# The options that are not fields of Config, and what they take besides a string.
_NOT_FIELDS: dict[str, tuple[type, ...]] = {"host": (), "port": (int,), "user": (int,), "group": (int,)}


def _right_types(option: Option) -> tuple[type, ...]:
    """The TOML types an option's value may have besides a string, as its Config field (or _NOT_FIELDS) says."""
    if option.name in _NOT_FIELDS:
        return _NOT_FIELDS[option.name]
    annotation = {field.name: str(field.type) for field in dataclasses.fields(Config)}[option.name]
    return {"bool": (bool,), "int": (int,), "float": (int, float), "tuple[int, ...]": (int,)}.get(annotation, ())


@pytest.mark.parametrize("option", OPTIONS, ids=[option.name for option in OPTIONS])
def test_every_option_refuses_a_value_of_the_wrong_type_from_the_file(
    option: Option, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 22: `bind = 8000` was a traceback, `timeout = true` silently 1.0 s, `max-memory = 1.5` silently 1 MiB.
    Walks OPTIONS, so that a new option is covered the day it is added: a value of a type it does not take is
    exit 2 with one line naming the flag, the value as written, the file and its key; one of a type it takes is
    served or refused the same way, never a traceback."""
    monkeypatch.chdir(tmp_path)
    for name in os.environ:
        if name.startswith("CLUSTERRUN_") or name in ("WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS"):
            monkeypatch.delenv(name)
    key = option.flags[-1].lstrip("-")
    for written, kind, shown in _TOML_VALUES:
        (tmp_path / "clusterrun.toml").write_text(f'app = "flask_app:app"\n{key} = {written}\n')
        code = cli.main(["config", "--json"])
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        if kind in _right_types(option):
            assert code == 0 or (code == 2 and len(lines) == 1), (written, err)
            continue
        assert code == 2 and len(lines) == 1 and out == "", (written, out, err)
        assert any(lines[0].startswith(f"clusterrun: error: bad {option.flags[-1]} value {value}: ")
                   for value in shown), (written, lines[0])
        assert f"clusterrun.toml: {key}" in lines[0] and ", not a" in lines[0], (written, lines[0])


def test_a_string_from_the_environment_must_read_as_a_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_config("app:app", {}, environ={"CLUSTERRUN_PRELOAD": "off"}, cpus=1).preload is False
    assert build_config("app:app", {}, environ={"CLUSTERRUN_PRELOAD": "Yes"}, cpus=1).preload is True
    with pytest.raises(ConfigError, match=r"bad --preload value 'maybe': give true or false .*CLUSTERRUN_PRELOAD"):
        build_config("app:app", {}, environ={"CLUSTERRUN_PRELOAD": "maybe"}, cpus=1)


def test_the_api_takes_typed_values_and_refuses_wrong_ones() -> None:
    config = build_config("app:app", {"timeout": 5, "fds": [3], "headers": [("X-A", "b")],
                                      "forwarded_allow_ips": ["10.0.0.0/8"], "preload": True}, environ={}, cpus=1)
    assert (config.timeout, config.binds, config.headers, config.preload) == (
        5.0, (BindAddress(fd=3),), (("X-A", "b"),), True)
    with pytest.raises(ConfigError, match=r"bad --max-memory value 1\.5: give MB as an integer, not a number"):
        build_config("app:app", {"max_memory": 1.5}, environ={}, cpus=1)
    with pytest.raises(ConfigError, match="bad --threads value true: give N as an integer, not a boolean"):
        build_config("app:app", {"threads": True}, environ={}, cpus=1)


@pytest.mark.parametrize("app", ["app", "app:", ":app", "my-app:app", "app:1x"])
def test_bad_app_spec(app: str) -> None:
    with pytest.raises(ConfigError, match="write it as module:attribute"):
        build_config(app, {}, environ={}, cpus=1)


# CPUs


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5
    assert usable_cpus(tmp_path) == min(len(os.sched_getaffinity(0)), 2)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    assert cgroup_cpu_quota(tmp_path) is None


def test_no_cgroup_means_affinity(tmp_path: Path) -> None:
    assert usable_cpus(tmp_path) == len(os.sched_getaffinity(0))


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


# Loading


async def _asgi_fn(scope: Any, receive: Any, send: Any) -> None: ...


class _AsgiObject:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None: ...


def _wsgi_fn(environ: Any, start_response: Any) -> list[bytes]:
    return []


@pytest.mark.parametrize("app, kind", [(_asgi_fn, "asgi"), (_AsgiObject(), "asgi"), (_wsgi_fn, "wsgi")])
def test_detect_interface(app: Any, kind: str) -> None:
    assert detect_interface(app) == kind


def test_load_app_errors_name_the_module_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "unit_broken.py").write_text("x = 1\nraise ValueError('boom')\n")
    (tmp_path / "unit_ok.py").write_text("value = 3\ndef make():\n    return lambda e, s: []\n")
    with pytest.raises(BootError, match=r"importing 'unit_broken' failed: ValueError: boom \(unit_broken.py, line 2\)"):
        load_app("unit_broken:app", app_dir=str(tmp_path))
    with pytest.raises(BootError, match="no module named 'unit_missing'"):
        load_app("unit_missing:app", app_dir=str(tmp_path))
    with pytest.raises(BootError, match="module 'unit_ok' has no attribute 'nope'"):
        load_app("unit_ok:nope", app_dir=str(tmp_path))
    with pytest.raises(BootError, match="'unit_ok:value' is a int, not an app"):
        load_app("unit_ok:value", app_dir=str(tmp_path))
    assert load_app("unit_ok:make", app_dir=str(tmp_path), factory=True).interface == "wsgi"


# Lifespan


def test_lifespan_failure_becomes_one_line() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "Traceback...\n  line\nKeyError: 'db'\n"})

    with pytest.raises(BootError, match=r"ASGI lifespan startup failed: KeyError: 'db'$"):
        asyncio.run(Lifespan(app, "auto").startup())


def test_an_app_without_lifespan_is_served_in_auto_but_fails_when_on() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http", "no lifespan here"

    asyncio.run(Lifespan(app, "auto").startup())
    with pytest.raises(BootError, match="AssertionError: no lifespan here"):
        asyncio.run(Lifespan(app, "on").startup())


def test_a_signal_sent_right_after_a_fork_acts_once_the_child_reset_its_handlers() -> None:
    """The defect: SIGTERM to a just-forked worker ran the primary's inherited handler and was lost."""
    from clusterrun.host.signals import fork_holding_signals

    caught: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: caught.append(signum))  # as the primary's
    try:
        pid, mask = fork_holding_signals()
        if pid == 0:  # a slow start: the signal arrives before the child has reset the handlers
            time.sleep(0.3)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            time.sleep(5)
            os._exit(0)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


@pytest.mark.parametrize(("data", "expected"), [
    (b"FOO /x HTTP/1.1\r\nHost: t\r\n\r\n", (0, b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n", b"FOO")),
    # After a complete request in the same read: found where it begins, the one before left out.
    (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n-BLARGH /y HTTP/1.1\r\n\r\n",
     (27, b"GET /y HTTP/1.1\r\n\r\n", b"-BLARGH")),
    (b"foo / HTTP/1.1\r\n\r\n", None),  # lowercase: gunicorn refuses it too
    (b"FO / HTTP/1.1\r\n\r\n", None),  # fewer than 3 characters
    (b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n", None),  # a failure that is no method's
    (b"CONNECT example.com:443 HTTP/1.1\r\n\r\nFOO / HTTP/1.1\r\n\r\n", None),  # the parser stops at CONNECT
    (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", None),  # nothing fails
])
def test_an_extension_method_is_found_where_httptools_fails_on_it(data: bytes, expected: Any) -> None:
    assert stand_in(data) == expected


# Events and hooks


def test_the_door_routes_worker_hooks_to_the_worker_and_cluster_events_to_the_primary() -> None:
    cluster = Cluster("app:app", bind="127.0.0.1:0")
    seen: list[object] = []
    try:
        cluster.on("worker_init", seen.append)
        cluster.on("exit")(seen.append)  # as a decorator
        workerhooks.init(WorkerInfo(1, 0, os.getpid()))
        assert seen == [WorkerInfo(1, 0, os.getpid())]  # the hook ran as the worker would run it
        assert cluster.events.wanted("exit") and not cluster.events.wanted("online")
        with pytest.raises(ConfigError, match=r"unknown cluster event 'bogus': choose one of fork, .*, on_exit, "
                                              r"worker_init, worker_exit$"):
            cluster.on("bogus", print)
        with pytest.raises(ConfigError, match="the handler for event 'worker_exit' is a int, not a function"):
            cluster.on("worker_exit", 3)
    finally:
        workerhooks.clear()


# Logs


@dataclass(frozen=True)
class _LogSettings:
    """Only what logs.setup reads (logs.LogSettings): the leaf takes no Config."""

    log_file: str
    log_level: str = "info"
    log_format: str = "json"
    log_config: str = ""
    access_log: bool = False
    access_log_file: str = ""
    run_as: None = None


def test_log_setup_reads_its_few_settings_and_puts_everything_back(tmp_path: Path) -> None:
    path = tmp_path / "primary.log"
    own = logging.getLogger("clusterrun")
    before = (list(own.handlers), own.level, own.propagate)
    restore = logs.setup(_LogSettings(str(path)))
    try:
        own.info("hello")
    finally:
        restore()
    entry = json.loads(path.read_text())
    assert (entry["message"], entry["level"], entry["primary"]) == ("hello", "info", os.getpid())
    assert (list(own.handlers), own.level, own.propagate) == before
