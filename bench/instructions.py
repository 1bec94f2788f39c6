"""Instructions per request, counted by valgrind's callgrind: what a change to a hot path saves, on a noisy machine.

    python bench/instructions.py --app starlette --policy rr            # keep-alive and close, about a minute
    python bench/instructions.py --app fastapi --policy shared --modes close --requests 3000

CPU time per request on a shared machine moves 10-20% from run to run, which hides a change worth 5%. An
instruction count does not move: callgrind counts what the CPU was asked to do, whatever else the machine is
doing. It does not see the kernel's work, nor how fast the instructions ran (cache misses): read it beside
`run.py`'s CPU per request, not instead of it.

Method. clusterrun runs under callgrind with one worker (and its primary), from the servers' interpreter. One
client connection at a time sends 300 keep-alive requests and 300 requests on a connection each, as warm-up,
then ``--requests`` more in the mode measured, and the cluster is stopped: callgrind writes each process's total
when it exits. A run with the warm-up only is the base; (total - base) / requests is the figure, for the primary
(the hop of the primary-side policies) and for the worker. The runs go in parallel: counts do not depend on load.
Needs valgrind (Debian: ``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from servers import APPS, App

BENCH = Path(__file__).resolve().parent
WARM = 300
_TOTALS = re.compile(rb"^totals:\s+(\d+)", re.MULTILINE)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answer(sock: socket.socket) -> None:
    """Read one response with a Content-Length body (the bench apps all send one)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed before answering")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)


def _requests(port: int, count: int, mode: str) -> None:
    """``count`` GET requests one after another: on one connection (keep-alive) or a connection each (close)."""
    if mode == "keep-alive":
        with socket.create_connection(("127.0.0.1", port)) as sock:
            for _ in range(count):
                sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
                _answer(sock)
        return
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            _answer(sock)
            sock.recv(1)  # the server's close


def _counted(python: str, app: App, policy: str, mode: str, count: int, out: Path) -> dict[str, int]:
    """Run the cluster under callgrind; the warm-up, then ``count`` requests in ``mode``; each process's total."""
    port = _free_port()
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/%p.out", python, "-m", "clusterrun",
            app.target, "--workers", "1", "--bind", f"127.0.0.1:{port}", "--policy", policy, "--interface",
            app.interface, "--no-control"]
    if app.interface == "wsgi":
        argv += ["--threads", "1"]
    cluster = subprocess.Popen(argv, cwd=BENCH / "apps", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300  # an app's imports under callgrind take 10-60 s alone, more beside other runs
        while True:
            try:
                _requests(port, 1, "keep-alive")
                break
            except OSError:
                if cluster.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the cluster did not answer under callgrind ({' '.join(argv)})") from None
                time.sleep(0.5)
        _requests(port, WARM, "keep-alive")
        _requests(port, WARM, "close")
        _requests(port, count, mode)
    finally:
        cluster.send_signal(signal.SIGTERM)
        try:
            cluster.wait(timeout=300)  # callgrind writes its totals as each process exits: slow, not hung
        except subprocess.TimeoutExpired:
            cluster.kill()  # the primary (valgrind runs it in place); its worker gets SIGTERM from PDEATHSIG
            cluster.wait()
            raise
    totals = {}
    for path in out.glob("*.out"):
        found = _TOTALS.search(path.read_bytes())
        if found:
            totals[path.stem] = int(found.group(1))
    # The primary is the process valgrind started; the worker, its child (the other file).
    primary = str(cluster.pid)
    return {"primary": totals.get(primary, 0), "worker": sum(v for k, v in totals.items() if k != primary)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--app", default="starlette", choices=[a.key for a in APPS])
    parser.add_argument("--policy", default="rr", help="clusterrun's --policy (default rr, the default)")
    parser.add_argument("--modes", default="keep-alive,close", help="keep-alive, close, or both (the default)")
    parser.add_argument("--requests", type=int, default=1500, help="requests measured per mode (default 1500)")
    parser.add_argument("--python", default=sys.executable, help="the servers' interpreter (default: this one)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("bench/instructions.py needs valgrind (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    app = next(a for a in APPS if a.key == args.app)
    modes = [m for m in args.modes.split(",") if m]
    for mode in modes:
        if mode not in ("keep-alive", "close"):
            print(f"bad mode {mode!r}: keep-alive or close", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(len(modes) + 1) as pool:
        dirs = {name: Path(tmp, name) for name in ("base", *modes)}
        for folder in dirs.values():
            folder.mkdir()
        runs = {name: pool.submit(_counted, args.python, app, args.policy, name if name != "base" else "close",
                                  0 if name == "base" else args.requests, folder)
                for name, folder in dirs.items()}
        base = runs["base"].result()
        print(f"{app.title}, clusterrun --policy {args.policy}, 1 worker: instructions per request (callgrind), "
              f"{args.requests} requests after {WARM} + {WARM} of warm-up")
        print("| load | primary | worker | together |")
        print("| --- | ---: | ---: | ---: |")
        for mode in modes:
            got = runs[mode].result()
            primary = (got["primary"] - base["primary"]) / args.requests
            worker = (got["worker"] - base["worker"]) / args.requests
            print(f"| {mode} | {primary / 1000:,.1f}k | {worker / 1000:,.1f}k | {(primary + worker) / 1000:,.1f}k |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
