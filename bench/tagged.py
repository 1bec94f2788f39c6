"""A bounded asyncio load client that records which worker gave every answer (wrk cannot).

The policies section needs per-worker shares, the reload section needs every
failure by kind, and the respawn test needs the moment a new worker first
answers: one client does all three. Each connection loop sends a request, reads
the whole answer and notes its worker: the ``X-Worker-Id`` header when the
server sets it (clusterrun, through the sample apps' middleware), else the
``pid`` field of the JSON body (the sample apps' ``/`` has it under any server).

Bounded: a hard deadline, a per-request timeout, answers capped at 64 KiB, and
a short pause after each failure so that a server that refuses connections
cannot make the loops spin (and the error counts explode) while it is down.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from loadgen import read_chunked

_MAX_RESPONSE = 64 * 1024
_PAUSE_AFTER_FAILURE = 0.01
_MAX_FAILURE_TIMES = 10_000  # failure timestamps kept (for "when did they fail"); counts are never capped
_PID = re.compile(rb'"pid"\s*:\s*(\d+)')


@dataclass(frozen=True)
class Plan:
    host: str
    port: int
    duration: float  # hard bound, in seconds
    keepalive: int  # connection loops that reuse their connection
    fresh: int = 0  # connection loops that open a new connection for every request
    paths: tuple[str, ...] = ("/",)  # cycled over all requests: ("/",) * 9 + ("/heavy",) is a 90/10 mix
    pause: float = 0.0  # seconds each loop waits between requests: > 0 to probe rather than load
    timeout: float = 10.0  # per request, connect included


@dataclass(frozen=True)
class Answer:
    path: str
    status: int
    worker: str | None  # "worker 3" (X-Worker-Id) or "pid 1234" (JSON body), None when neither is there
    pid: int | None
    at: float  # time.monotonic() when the answer was complete


@dataclass
class Tally:
    requests: int = 0  # attempts, those whose connection failed included
    ok: int = 0  # answered 2xx or 3xx
    statuses: Counter[int] = field(default_factory=Counter)  # the other answers, by status
    connect_errors: int = 0  # refused, reset or timed out while connecting: the request was never sent
    dropped_fresh: int = 0  # sent on a new connection, closed or reset before a whole answer
    dropped_reused: int = 0  # sent on a reused keep-alive connection, closed before any answer (clients retry these)
    timeouts: int = 0  # sent, no whole answer within the timeout
    latencies: dict[str, list[float]] = field(default_factory=dict)  # seconds, by path, answered requests only
    workers: Counter[str] = field(default_factory=Counter)  # answers per worker
    connections: Counter[str] = field(default_factory=Counter)  # connections per worker that gave their first answer
    failure_times: list[float] = field(default_factory=list)  # time.monotonic() of failures (first ones only)
    elapsed: float = 0.0

    @property
    def failed(self) -> int:
        return self.requests - self.ok

    @property
    def connection_errors(self) -> int:
        return self.connect_errors + self.dropped_fresh + self.dropped_reused

    @property
    def answered(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    def fail(self, kind: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.failure_times) < _MAX_FAILURE_TIMES:
            self.failure_times.append(time.monotonic())


OnAnswer = Callable[[Answer], None]


def run(plan: Plan, on_answer: OnAnswer | None = None) -> Tally:
    """Load for ``plan.duration`` seconds (less if ``on_answer`` raises ``Enough``)."""
    return asyncio.run(drive(plan, on_answer=on_answer))


class Enough(Exception):
    """Raised by an ``on_answer`` callback: stop the whole run now."""


async def drive(plan: Plan, stop: asyncio.Event | None = None, on_answer: OnAnswer | None = None) -> Tally:
    """Run ``plan`` until its deadline, ``stop`` is set, or ``on_answer`` raises ``Enough``."""
    stop = stop or asyncio.Event()
    tally = Tally()
    paths = itertools.cycle(plan.paths)  # shared by all loops: the mix holds over the whole run, not per loop
    began = time.monotonic()
    deadline = began + plan.duration
    loops = [_Loop(plan, paths, tally, stop, deadline, on_answer, fresh=i >= plan.keepalive)
             for i in range(plan.keepalive + plan.fresh)]
    await asyncio.gather(*(loop.run() for loop in loops))
    tally.elapsed = time.monotonic() - began
    return tally


class _Loop:
    """One client connection's life: requests one after another, reconnecting whenever needed."""

    def __init__(self, plan: Plan, paths: Iterator[str], tally: Tally, stop: asyncio.Event, deadline: float,
                 on_answer: OnAnswer | None, fresh: bool) -> None:
        self.plan, self.paths, self.tally, self.stop = plan, paths, tally, stop
        self.deadline, self.on_answer, self.fresh = deadline, on_answer, fresh
        self.conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.served = 0  # answers on the current connection

    def running(self) -> bool:
        return not self.stop.is_set() and time.monotonic() < self.deadline

    async def run(self) -> None:
        try:
            while self.running():
                if not await self.one(next(self.paths)):
                    await self.drop()
                    await asyncio.sleep(_PAUSE_AFTER_FAILURE)
                elif self.plan.pause:
                    await asyncio.sleep(self.plan.pause)
        finally:
            await self.drop()

    async def one(self, path: str) -> bool:
        """One request; False when it failed in a way that leaves the connection unusable."""
        tally, plan = self.tally, self.plan
        tally.requests += 1
        begin = time.monotonic()
        if self.conn is None:
            try:
                self.conn = await asyncio.wait_for(asyncio.open_connection(plan.host, plan.port), plan.timeout)
            except (OSError, asyncio.TimeoutError):
                tally.fail("connect_errors")
                return False
            self.served = 0
        close = "Connection: close\r\n" if self.fresh else ""
        request = f"GET {path} HTTP/1.1\r\nHost: {plan.host}:{plan.port}\r\n{close}\r\n".encode()
        try:
            self.conn[1].write(request)
            status, headers, body = await asyncio.wait_for(_read_response(self.conn[0]),
                                                           max(0.001, plan.timeout - (time.monotonic() - begin)))
        except asyncio.TimeoutError:
            tally.fail("timeouts")
            return False
        except (OSError, asyncio.IncompleteReadError, ValueError):
            # On a reused connection the server may have closed it just as we wrote (idle timeout, a draining
            # worker): the request never reached the app, and HTTP clients retry it. Counted apart for that reason.
            tally.fail("dropped_reused" if self.served else "dropped_fresh")
            return False
        self.note(path, status, headers, body, begin)
        if self.fresh or headers.get("connection") == "close":
            await self.drop()
        return True

    def note(self, path: str, status: int, headers: dict[str, str], body: bytes, begin: float) -> None:
        tally = self.tally
        now = time.monotonic()
        tally.latencies.setdefault(path, []).append(now - begin)
        if 200 <= status < 400:
            tally.ok += 1
        else:
            tally.statuses[status] += 1
            if len(tally.failure_times) < _MAX_FAILURE_TIMES:
                tally.failure_times.append(now)
        match = _PID.search(body)
        pid = int(match.group(1)) if match else None
        worker_id = headers.get("x-worker-id")
        worker = f"worker {worker_id}" if worker_id else (f"pid {pid}" if pid else None)
        if worker:
            tally.workers[worker] += 1
            if self.served == 0:
                tally.connections[worker] += 1
        self.served += 1
        if self.on_answer is not None:
            try:
                self.on_answer(Answer(path, status, worker, pid, now))
            except Enough:
                self.stop.set()

    async def drop(self) -> None:
        if self.conn is not None:
            writer = self.conn[1]
            self.conn = None
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass  # reset by the server after its answer: the answer was already counted


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One whole response: status, headers (lower-case names and values), body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ", 2)[:2]
    headers = {name.strip().lower(): value.strip().lower()
               for name, _, value in (line.partition(":") for line in lines[1:] if line)}
    if version != "HTTP/1.1":
        headers["connection"] = "close"
    if "content-length" in headers:
        length = int(headers["content-length"])
        if length > _MAX_RESPONSE:
            raise ValueError("response too large")
        body = await reader.readexactly(length)
    elif headers.get("transfer-encoding") == "chunked":
        body = await read_chunked(reader)
    else:
        body = await reader.read(_MAX_RESPONSE)  # delimited by the end of the connection
        headers["connection"] = "close"
    return int(status), headers, body
