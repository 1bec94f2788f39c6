"""What one new connection costs the inline WSGI engine, in process: no load generator sharing the cores.

    python bench/engine_conn.py [--connections N] [--rounds R] [--app raw_wsgi:app]

Each round opens N client connections to a listener the engine serves, sends each its request (``Connection:
close``), then lets the engine's loop run until it answered them all: accept, read, parse, the app, the
response, the close. The clients read nothing meanwhile (loopback's buffers hold the answers). The CPU time of
that stretch (the engine's thread, user and system) divided by N is the cost of one connection, printed as the
median and the quartiles over the rounds. The engine's own thread is the only one running then, so the
number does not drift with what else the machine does as req/s does; it still includes the kernel's work for
the server's side of each connection.
"""

from __future__ import annotations

import argparse
import importlib
import resource
import socket
import statistics
import sys
import time
from pathlib import Path

from clusterrun.adapters.engine.reactor import SelectorLoop
from clusterrun.adapters.engine.server import WSGIEngine

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def one_round(loop: SelectorLoop, engine: WSGIEngine, address: tuple[str, int], count: int) -> float:
    """Microseconds of this thread's CPU per connection for ``count`` connections."""
    clients = []
    for _ in range(count):
        client = socket.create_connection(address)
        client.sendall(REQUEST)
        clients.append(client)
    goal = engine.total_requests + count
    started = time.thread_time()
    loop.run_until(lambda: engine.total_requests >= goal)
    spent = time.thread_time() - started
    for client in clients:
        client.close()
    return spent / count * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--app", default="raw_wsgi:app", help="MODULE:ATTR of bench/apps")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent / "apps"))
    module, _, name = args.app.partition(":")
    app = getattr(importlib.import_module(module), name)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * args.connections + 64  # both ends of every connection live in this process
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    loop = SelectorLoop()
    engine = WSGIEngine(loop, app)
    with socket.create_server(("127.0.0.1", 0), backlog=args.connections) as listener:
        engine.listen(listener)
        address = listener.getsockname()
        one_round(loop, engine, address, min(500, args.connections))  # warm-up
        costs = sorted(one_round(loop, engine, address, args.connections) for _ in range(args.rounds))
        engine.close_listeners()
    loop.close()
    quartiles = statistics.quantiles(costs, n=4)
    print(f"{args.app}: {statistics.median(costs):.1f} us of CPU per new connection (quartiles "
          f"{quartiles[0]:.1f}-{quartiles[2]:.1f}; {args.rounds} rounds of {args.connections})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
