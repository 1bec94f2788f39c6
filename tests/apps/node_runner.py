"""A runner on Node's Worker and Cluster calls: python node_runner.py APP WORKERS [EXTRA_OPTION=VALUE ...]

Before run() it calls setup_primary(env={"Y": "2"}, args=["--from-setup"]). It reports on stdout, one line
each: every "setup", "listening", "disconnect", "exit", "error" and "nworkers_changed" event, with what the
Worker says of itself there. A worker's message {"cmd": C, "id": N} makes it act on worker N: "kill"
(kill()), "kill9" (kill("SIGKILL")), "disconnect" (disconnect()), "fork-env" (fork(env={"X": "1"})),
"send-dead" (sends to the last worker that exited, which must fail).
"""

from __future__ import annotations

import sys
from typing import Any

from clusterrun import Cluster, MessageError, Worker

extra = dict(arg.split("=", 1) for arg in sys.argv[3:])
cluster = Cluster(sys.argv[1], workers=sys.argv[2], port=0, **extra)
exited: list[Worker] = []


def say(*words: object) -> None:
    print(*words, flush=True)


@cluster.on("setup")
def setup(settings: dict[str, Any]) -> None:
    say("setup", settings, "settings", cluster.settings)


@cluster.on("listening")
def listening(worker: Worker) -> None:
    say("listening", worker.id, "index", worker.index, "connected", worker.is_connected(), "dead", worker.is_dead(),
        "after", worker.exited_after_disconnect)


@cluster.on("disconnect")
def disconnect(worker: Worker) -> None:
    say("disconnect", worker.id, "connected", worker.is_connected())


@cluster.on("exit")
def exit_(worker: Worker, code: int | None, signal: str | None) -> None:
    process = worker.process
    say("exit", worker.id, "code", code, "signal", signal, "after", worker.exited_after_disconnect, "dead",
        worker.is_dead(), "process", process.pid == worker.pid, process.exitcode, process.signal)
    exited.append(worker)


@cluster.on("nworkers_changed")
def nworkers_changed(config: Any, new: int, old: int | None) -> None:
    say("nworkers", new, old)


@cluster.on("error")
def error(worker: Worker | None, exc: Exception) -> None:
    say("error", worker.id if worker else None, type(exc).__name__)


@cluster.on("message")
def message(sender: Worker, message: Any) -> None:
    cmd, worker = message["cmd"], cluster.workers[message["id"]]
    if cmd == "kill":
        worker.kill()
    elif cmd == "kill9":
        worker.kill("SIGKILL")
    elif cmd == "disconnect":
        worker.disconnect()
    elif cmd == "fork-env":
        new = cluster.fork(env={"X": "1"})
        say("forked", new.id if new else None)
    elif cmd == "send-dead":
        try:
            exited[-1].send({"late": True})
        except MessageError:
            say("send-dead raised MessageError")


cluster.setup_primary(env={"Y": "2"}, args=["--from-setup"])
sys.exit(cluster.run())
