"""Serve a WSGI app on the inline engine alone (no primary): ``python engine_runner.py MODULE:APP [OPTIONS]``.

For tests/adapters/engine/test_engine.py: binds 127.0.0.1:0 (or takes connections passed over a Unix socket with
``--adopt``), prints ``listening on http://HOST:PORT`` and serves until SIGTERM, which prints ``draining``, drains
with ``--linger`` seconds and prints ``drained`` before exiting. ``--limit-request-body N`` and
``--timeout-keep-alive S`` as the CLI's.
"""

from __future__ import annotations

import argparse
import array
import importlib
import logging
import signal
import socket
import sys

from clusterrun.adapters.engine.reactor import SelectorLoop
from clusterrun.adapters.engine.server import WSGIEngine
from clusterrun.adapters.engine.settings import EngineSettings
from clusterrun.adapters.limits import Limits


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("app")
    parser.add_argument("--limit-request-body", type=int, default=0)
    parser.add_argument("--timeout-keep-alive", type=float, default=5.0)
    parser.add_argument("--head-timeout", type=float, default=10.0)
    parser.add_argument("--linger", type=float, default=0.0)
    parser.add_argument("--adopt", help="a Unix socket path: serve connections passed over it")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stdout)
    module, _, name = args.app.partition(":")
    app = getattr(importlib.import_module(module), name)
    loop = SelectorLoop()
    closes = [0]
    settings = EngineSettings(limits=Limits(body=args.limit_request_body, head_timeout=args.head_timeout),
                              keep_alive=args.timeout_keep_alive, extra_environ={"clusterrun.worker": None},
                              on_close=lambda n: closes.__setitem__(0, closes[0] + n))
    engine = WSGIEngine(loop, app, settings)
    listener = socket.create_server(("127.0.0.1", 0))
    if args.adopt:
        channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        channel.connect(args.adopt)
        loop.add_reader(channel.fileno(), _adopt_passed, channel, engine)
    else:
        engine.listen(listener)
    host, port = listener.getsockname()
    print(f"listening on http://{host}:{port}", flush=True)
    stopping: list[bool] = []
    done: list[bool] = []

    def stop() -> None:
        if not stopping:
            stopping.append(True)
            print("draining", flush=True)
            engine.drain(args.linger, lambda: done.append(True))

    loop.add_signal_handler(signal.SIGTERM, stop)
    loop.run_until(lambda: bool(done))
    print(f"drained: {engine.total_requests} requests, {closes[0]} closes", flush=True)
    loop.close()
    return 0


def _adopt_passed(channel: socket.socket, engine: WSGIEngine) -> None:
    fds = array.array("i")
    data, ancdata, _flags, _addr = channel.recvmsg(1, socket.CMSG_SPACE(fds.itemsize * 16))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    for fd in fds:
        engine.adopt(socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fileno=fd))
    if not data:
        engine.loop.remove_reader(channel.fileno())


if __name__ == "__main__":
    sys.exit(main())
