"""An open-loop load client: requests start on a fixed schedule, whether or not the earlier ones have finished.

A closed-loop client (wrk, the Python fallback, the tagged client) sends its next
request when the previous answer arrives: when the server stalls, the client
stalls with it and sends less, so the stall shows in few samples (coordinated
omission). Real users arrive at their own rate. Here request i starts at
``start + i / rate`` on a new connection (``Connection: close``), and its latency
runs from that scheduled time, not from when the client got round to sending it:
a request the client itself started late still counts its wait.

Bounded: the number of requests is fixed by the rate and the duration, every
request has a timeout (its connect included), and answers are capped at 64 KiB.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

_MAX_RESPONSE = 64 * 1024
_LEAD_S = 0.05  # between creating the schedule and its first request: the loop is running by then


@dataclass(frozen=True)
class Schedule:
    host: str
    port: int
    rate: float  # requests per second
    duration: float  # seconds of arrivals; the run lasts until the last answer or its timeout
    paths: tuple[str, ...] = ("/",)  # request i gets paths[i % len(paths)]
    timeout: float = 10.0  # per request, from its scheduled start

    @property
    def requests(self) -> int:
        return max(1, round(self.rate * self.duration))


@dataclass
class Outcome:
    latencies: dict[str, list[float]] = field(default_factory=dict)  # seconds from the scheduled start, by path
    errors: Counter[str] = field(default_factory=Counter)  # by kind: connect, dropped, timeout, status NNN
    scheduled: int = 0
    max_lag_s: float = 0.0  # the latest the client itself started a request after its scheduled time
    elapsed: float = 0.0  # first scheduled start to the last answer

    @property
    def answered(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    def percentiles(self, path: str | None = None) -> tuple[float, float] | None:
        """(p50, p99) in milliseconds, over one path or all of them; None with fewer than 2 answers."""
        values = self.latencies.get(path, []) if path else [v for vs in self.latencies.values() for v in vs]
        if len(values) < 2:
            return None
        cuts = statistics.quantiles(values, n=100, method="inclusive")
        return cuts[49] * 1000, cuts[98] * 1000


def run(schedule: Schedule) -> Outcome:
    return asyncio.run(drive(schedule))


async def drive(schedule: Schedule) -> Outcome:
    outcome = Outcome(scheduled=schedule.requests)
    paths = itertools.cycle(schedule.paths)
    start = time.monotonic() + _LEAD_S
    tasks = []
    for i in range(schedule.requests):
        due = start + i / schedule.rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        outcome.max_lag_s = max(outcome.max_lag_s, time.monotonic() - due)
        tasks.append(asyncio.create_task(_one(schedule, next(paths), due, outcome)))
    await asyncio.gather(*tasks)
    outcome.elapsed = time.monotonic() - start
    return outcome


async def _one(schedule: Schedule, path: str, due: float, outcome: Outcome) -> None:
    try:
        status = await asyncio.wait_for(_request(schedule, path), max(0.001, schedule.timeout - (time.monotonic()
                                                                                                  - due)))
    except asyncio.TimeoutError:
        outcome.errors["timeout"] += 1
        return
    except ConnectionRefusedError:
        outcome.errors["connect"] += 1
        return
    except (OSError, asyncio.IncompleteReadError, ValueError):
        outcome.errors["dropped"] += 1  # connected, no whole answer
        return
    if 200 <= status < 400:
        outcome.latencies.setdefault(path, []).append(time.monotonic() - due)
    else:
        outcome.errors[f"status {status}"] += 1


async def _request(schedule: Schedule, path: str) -> int:
    reader, writer = await asyncio.open_connection(schedule.host, schedule.port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {schedule.host}:{schedule.port}\r\nConnection: close\r\n\r\n"
                     .encode())
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = next((int(value) for name, _, value in (line.partition(":") for line in lines[1:])
                       if name.strip().lower() == "content-length"), None)
        if length is None:
            await reader.read(_MAX_RESPONSE)  # delimited by the end of the connection
        elif length > _MAX_RESPONSE:
            raise ValueError("response too large")
        else:
            await reader.readexactly(length)
        return status
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass  # reset by the server after its answer: the answer was already read
