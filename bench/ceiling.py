"""The in-process ceiling: what the app alone costs, called in a loop in one process, with no server at all.

    python bench/ceiling.py raw_wsgi:app wsgi 1.0 [/,/heavy]   # (the bench runs it in the servers' interpreter)

No server can answer faster than the app it calls, so a row of the app's own rate
puts every server's req/s in proportion: the server's share of the work is what is
left between its row and this one. One process calls the app over and over with
what a server would hand it for ``GET /`` (WSGI: a fresh environ, ``start_response``,
the body iterated and ``close()`` called; ASGI: a fresh scope, ``receive`` giving
the empty request body, ``send`` taking the start and body messages, all on one
event loop), first for a warm-up, then for the measured time. The rate is calls per
CPU second of that process (``time.process_time``), i.e. what one core does, so
another job on the machine lowers it less than it would a wall-clock rate. The
bench multiplies it by the number of workers: the ceiling of N workers on N free
cores. On the bench's 2 cores the load generator takes CPU too, so no server can
reach it there: compare the servers' fractions of it with each other.

The command-line entry runs in the servers' interpreter (bench/.venv), where the
frameworks are installed, and prints one JSON line; ``measure`` runs it from the
bench.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WARMUP_S = 0.2
_TIMEOUT_S = 60.0  # importing Flask on a loaded 2-core machine, plus the run itself

# What a server builds for "GET / HTTP/1.1" from 127.0.0.1 (PEP 3333's required keys and the CGI ones); copied
# for every call, since apps and frameworks may write into the environ they get.
_ENVIRON: dict[str, Any] = {
    "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/", "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_SOFTWARE": "bench-ceiling",
    "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "50000", "HTTP_HOST": "127.0.0.1:8000", "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http",
    "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
}
_SCOPE: dict[str, Any] = {
    "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1", "method": "GET",
    "scheme": "http", "path": "/", "raw_path": b"/", "query_string": b"", "root_path": "",
    "headers": [(b"host", b"127.0.0.1:8000")], "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
}


@dataclass(frozen=True)
class Ceiling:
    calls: int
    cpu_s: float  # CPU time of the measuring process over those calls

    @property
    def per_core(self) -> float:
        """Calls per CPU second: what one core does with the app alone."""
        return self.calls / self.cpu_s if self.cpu_s else 0.0


def measure(python: str, target: str, interface: str, duration: float, *, cwd: Path,
            env: dict[str, str], paths: tuple[str, ...] = ("/",)) -> Ceiling:
    """Run this file in ``python`` (the servers' interpreter) on ``target``, the calls cycling over ``paths`` (a
    mix such as 9 x "/" and 1 x "/heavy" is measured as the load sends it); RuntimeError if it fails."""
    argv = [python, str(Path(__file__).resolve()), target, interface, str(duration), ",".join(paths)]
    out = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=_TIMEOUT_S + duration,
                         check=False, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise RuntimeError(f"in-process ceiling of {target} failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return Ceiling(int(data["calls"]), float(data["cpu_s"]))


# The loop itself, in the servers' interpreter.


def _load(target: str) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def wsgi_call(app: Callable[..., Any], paths: tuple[str, ...]) -> Callable[[], None]:
    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        return _discard

    environs = [dict(_ENVIRON, PATH_INFO=path) for path in paths]
    turn = itertools.cycle(environs)

    def call() -> None:
        environ = dict(next(turn))
        environ["wsgi.input"] = io.BytesIO(b"")
        body = app(environ, start_response)
        try:
            for _ in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    return call


def _discard(data: bytes) -> None:
    pass


async def _asgi_loop(app: Callable[..., Any], duration: float, paths: tuple[str, ...]) -> tuple[int, float]:
    request = {"type": "http.request", "body": b"", "more_body": False}
    turn = itertools.cycle([dict(_SCOPE, path=path, raw_path=path.encode()) for path in paths])

    async def receive() -> dict[str, Any]:
        return request

    async def send(message: dict[str, Any]) -> None:
        pass

    async def run_for(seconds: float) -> tuple[int, float]:
        calls, cpu, deadline = 0, time.process_time(), time.monotonic() + seconds
        while time.monotonic() < deadline:
            for _ in range(100):  # the clock read every 100 calls: its cost stays out of the rate
                await app(dict(next(turn)), receive, send)
            calls += 100
        return calls, time.process_time() - cpu

    await run_for(WARMUP_S)
    return await run_for(duration)


def _wsgi_loop(call: Callable[[], None], duration: float) -> tuple[int, float]:
    def run_for(seconds: float) -> tuple[int, float]:
        calls, cpu, deadline = 0, time.process_time(), time.monotonic() + seconds
        while time.monotonic() < deadline:
            for _ in range(100):
                call()
            calls += 100
        return calls, time.process_time() - cpu

    run_for(WARMUP_S)
    return run_for(duration)


def main(argv: list[str]) -> int:
    target, interface, duration = argv[0], argv[1], float(argv[2])
    paths = tuple(argv[3].split(",")) if len(argv) > 3 else ("/",)
    app = _load(target)
    if interface == "wsgi":
        calls, cpu_s = _wsgi_loop(wsgi_call(app, paths), duration)
    else:
        calls, cpu_s = asyncio.run(_asgi_loop(app, duration, paths))
    print(json.dumps({"calls": calls, "cpu_s": cpu_s}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
