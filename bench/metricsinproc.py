"""What ``--metrics`` adds to each request, measured in one process with no server and no socket.

    python bench/metricsinproc.py ROUNDS SECONDS   # run by the metrics section, in the servers' interpreter

With ``--metrics`` a worker wraps its app (``clusterrun.worker.serving.observed``: the
status and the duration of each response into ``clusterrun.wire.requeststats``); off,
the app is served unwrapped. The wrapper does the same work whatever the app (a
WSGI app is served as ASGI through the bridge, and the wrapper sits outside it),
so it is measured around the cheapest app, bench/apps' raw ASGI hello: the app
alone and the app wrapped, in alternating rounds on one event loop, each a CPU
rate (ceiling.py's loop). The difference of the medians is the CPU the metrics
add per request, free of the load generator and of other jobs' noise that the
served measurement has on a shared 2-core machine.

This reaches into clusterrun's internals on purpose (the wrapper is not public):
if they move, it prints why and the section reports the in-process figure as
missing.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import statistics
import sys

from ceiling import _asgi_loop


async def alternate(rounds: int, seconds: float) -> dict[str, list[float]]:
    # By name: these run in the servers' interpreter, from bench/apps (the type checker sees neither there).
    app = importlib.import_module("raw_asgi").app
    stats = importlib.import_module("clusterrun.wire.requeststats").RequestStats()
    wrapped = importlib.import_module("clusterrun.worker.serving").observed(app, stats, None)
    found: dict[str, list[float]] = {"plain": [], "observed": []}
    for r in range(rounds):
        pairs = (("plain", app), ("observed", wrapped))
        for name, candidate in pairs if r % 2 == 0 else tuple(reversed(pairs)):
            calls, cpu_s = await _asgi_loop(candidate, seconds, ("/",))
            found[name].append(cpu_s / calls * 1e6)
    return found


def main(argv: list[str]) -> int:
    rounds, seconds = int(argv[0]), float(argv[1])
    try:
        found = asyncio.run(alternate(rounds, seconds))
    except (ImportError, TypeError, AttributeError) as exc:
        print(json.dumps({"error": f"clusterrun's metrics wrapper not found: {type(exc).__name__}: {exc}"}))
        return 0
    plain, wrapped = statistics.median(found["plain"]), statistics.median(found["observed"])
    print(json.dumps({"plain_us": plain, "observed_us": wrapped, "added_us": wrapped - plain, "rounds": found}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
