"""Load generators: wrk when it is installed, else a bounded asyncio client from the standard library.

Both return the same ``LoadResult`` so that the tables do not care which one ran;
the report says which one it was, because their absolute numbers differ a lot
(the Python client saturates long before any of the servers does).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass

# Requests are small and every app answers 13 bytes: 64 KiB is far more than any answer, so a
# response past it means something is wrong, and the Python client counts it as an error.
_MAX_RESPONSE = 64 * 1024
_REQUEST_TIMEOUT = 10.0


@dataclass(frozen=True)
class LoadResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # every kind: connect, read, write, timeout, non-2xx
    requests: int
    read_errors: int = 0  # of ``errors``: the connection ended while an answer was awaited (wrk's "read")


@dataclass(frozen=True)
class LoadSpec:
    url: str
    duration: float
    connections: int
    close: bool  # True: "Connection: close", a new connection per request
    headers: tuple[str, ...] = ()  # more request header lines, "Name: value" (a conditional request, say)


class LoadGenerator:
    name = "abstract"

    def describe(self, spec: LoadSpec) -> str:
        raise NotImplementedError

    def run(self, spec: LoadSpec) -> LoadResult:
        raise NotImplementedError


# wrk


class Wrk(LoadGenerator):
    name = "wrk"

    def __init__(self, path: str) -> None:
        self.path = path

    def version(self) -> str:
        # wrk -v prints its banner and usage, then exits 1: only the first line is wanted.
        out = subprocess.run([self.path, "-v"], capture_output=True, text=True, timeout=10, check=False)
        lines = (out.stdout or out.stderr).splitlines()
        return lines[0].split(" Copyright")[0].strip() if lines else "wrk (unknown version)"

    def argv(self, spec: LoadSpec) -> list[str]:
        # wrk takes whole seconds only; durations under a second are rounded up to one.
        seconds = max(1, round(spec.duration))
        argv = [self.path, "-t1", f"-c{spec.connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
        if spec.close:
            argv += ["-H", "Connection: close"]
        for line in spec.headers:
            argv += ["-H", line]
        return [*argv, spec.url]

    def describe(self, spec: LoadSpec) -> str:
        return " ".join(self.argv(spec))

    def run(self, spec: LoadSpec) -> LoadResult:
        argv = self.argv(spec)
        out = subprocess.run(argv, capture_output=True, text=True, timeout=spec.duration + 60, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
        return parse_wrk(out.stdout)


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"unexpected wrk duration {text!r}")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def parse_wrk(output: str) -> LoadResult:
    """Requests/sec, the 50% and 99% latency lines, and every kind of error wrk counts."""

    def find(pattern: str) -> re.Match[str] | None:
        return re.search(pattern, output, re.MULTILINE)

    rps = find(r"^Requests/sec:\s+([\d.]+)")
    p50 = find(r"^\s+50%\s+(\S+)")
    p99 = find(r"^\s+99%\s+(\S+)")
    total = find(r"^\s+(\d+) requests in")
    if not (rps and p50 and p99 and total):
        raise ValueError(f"could not parse wrk output:\n{output}")
    errors = read_errors = 0
    socket_errors = find(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
        read_errors = int(socket_errors.group(2))
    non_2xx = find(r"Non-2xx or 3xx responses: (\d+)")
    if non_2xx:
        errors += int(non_2xx.group(1))
    return LoadResult(float(rps.group(1)), _duration_ms(p50.group(1)), _duration_ms(p99.group(1)), errors,
                      int(total.group(1)), read_errors)


# The fallback: asyncio, one task per connection, each sending a request and reading the whole answer.


class PythonClient(LoadGenerator):
    name = "python"

    def describe(self, spec: LoadSpec) -> str:
        mode = "Connection: close" if spec.close else "keep-alive"
        return f"python asyncio client, {spec.connections} connections, {spec.duration:g}s, {mode}"

    def run(self, spec: LoadSpec) -> LoadResult:
        return asyncio.run(_run_python(spec))


@dataclass
class _Tally:
    latencies: list[float]
    errors: int = 0


def _split_url(url: str) -> tuple[str, int, str]:
    match = re.fullmatch(r"http://([^:/]+):(\d+)(/.*)?", url)
    if not match:
        raise ValueError(f"the Python client speaks plain http://host:port only, not {url!r}")
    return match.group(1), int(match.group(2)), match.group(3) or "/"


async def _run_python(spec: LoadSpec) -> LoadResult:
    host, port, path = _split_url(spec.url)
    header = "".join(f"{line}\r\n" for line in (*(("Connection: close",) if spec.close else ()), *spec.headers))
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{header}\r\n".encode()
    tally = _Tally([])
    started = time.monotonic()
    deadline = started + spec.duration
    loops = (_connection_loop(host, port, request, spec.close, deadline, tally) for _ in range(spec.connections))
    await asyncio.gather(*loops)
    elapsed = time.monotonic() - started
    if not tally.latencies:
        return LoadResult(0.0, 0.0, 0.0, tally.errors, 0)
    cuts = statistics.quantiles(tally.latencies, n=100, method="inclusive")
    return LoadResult(len(tally.latencies) / elapsed, cuts[49] * 1000, cuts[98] * 1000, tally.errors,
                      len(tally.latencies))


async def _connection_loop(
    host: str, port: int, request: bytes, close: bool, deadline: float, tally: _Tally
) -> None:
    """Requests one after another on one connection, reconnecting whenever the server (or we) close it."""
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while time.monotonic() < deadline:
        begin = time.monotonic()
        try:
            if conn is None:
                conn = await asyncio.wait_for(asyncio.open_connection(host, port), _REQUEST_TIMEOUT)
            conn[1].write(request)
            status, keep = await asyncio.wait_for(_read_response(conn[0]), _REQUEST_TIMEOUT)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            tally.errors += 1
            await _close(conn)
            conn = None
            continue
        tally.latencies.append(time.monotonic() - begin)
        if not 200 <= status < 400:
            tally.errors += 1
        if close or not keep:
            await _close(conn)
            conn = None
    await _close(conn)


async def _close(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
    if conn is not None:
        conn[1].close()
        try:
            await conn[1].wait_closed()
        except OSError:
            pass  # reset by the server after its answer: the answer was already counted


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response whole; return its status and whether the connection may be reused."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ", 2)[:2]
    headers = {name.strip().lower(): value.strip().lower()
               for name, _, value in (line.partition(":") for line in lines[1:] if line)}
    keep = headers.get("connection") != "close" and version == "HTTP/1.1"
    if "content-length" in headers:
        length = int(headers["content-length"])
        if length > _MAX_RESPONSE:
            raise ValueError("response too large")
        await reader.readexactly(length)
    elif headers.get("transfer-encoding") == "chunked":
        await read_chunked(reader)
    else:
        await reader.read(_MAX_RESPONSE)  # delimited by the end of the connection
        keep = False
    return int(status), keep


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    """A chunked body, capped at _MAX_RESPONSE (shared with the tagged client)."""
    chunks: list[bytes] = []
    received = 0
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        received += size
        if received > _MAX_RESPONSE:
            raise ValueError("response too large")
        chunks.append((await reader.readexactly(size + 2))[:size])  # the chunk and its CRLF
        if size == 0:  # the last chunk; its CRLF ends the body (no server here sends trailers)
            return b"".join(chunks)


def pick(choice: str) -> tuple[LoadGenerator, str]:
    """The load generator for ``--client`` (auto, wrk or python), and a note saying why it was chosen."""
    wrk = shutil.which("wrk")
    if choice == "wrk" and not wrk:
        raise SystemExit("--client wrk: wrk is not on PATH")
    if choice in ("auto", "wrk") and wrk:
        client = Wrk(wrk)
        return client, client.version()
    note = "forced by --client python" if choice == "python" else "wrk not found on PATH"
    return PythonClient(), f"python asyncio fallback client ({note}); its numbers are not comparable to wrk's"
