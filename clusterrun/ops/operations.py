"""The control commands, as the primary answers them: info, status, reload, scale, stop, restart-worker.

Each takes the request (a JSON object) and returns the answer: ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``. Commands that take time (a rolling restart, a stop) start it and answer
at once; the client follows it through ``status`` (clusterrun.ctl.commands).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from clusterrun._version import __version__
from clusterrun.config.options import MAX_WORKERS
from clusterrun.host import listeners
from clusterrun.host.procstats import ProcSampler
from clusterrun.ops.status import started_at, worker_row

if TYPE_CHECKING:
    from clusterrun.primary.supervisor import Primary

Answer = dict[str, Any]

_SCALE_RE = re.compile(r"([+-]?)(\d{1,4})")


def _error(text: str) -> Answer:
    return {"ok": False, "error": text}


class Operations:
    def __init__(self, primary: Primary) -> None:
        self.primary = primary
        self.sampler = ProcSampler()

    def answer(self, request: dict[str, Any]) -> Answer:
        command = request["command"]
        handler = {
            "info": self.info, "status": self.status, "reload": self.reload, "scale": self.scale,
            "stop": self.stop, "restart-worker": self.restart_worker,
        }.get(command)
        if handler is None:
            return _error(f"unknown command {command!r}: info, status, reload, scale, stop or restart-worker")
        return handler(request)

    def info(self, request: dict[str, Any]) -> Answer:
        """The cluster in one line (clusterrun ls)."""
        primary, pool = self.primary, self.primary.pool
        now = primary.clock()
        scheme = "https" if primary.config.tls else "http"
        return {
            "ok": True, "name": primary.config.cluster_name, "pid": os.getpid(), "app": primary.config.app,
            "version": __version__, "policy": primary.policy.name,
            "binds": [listeners.describe(sock, scheme) for sock in primary.listeners],
            "started": started_at(primary.started, now), "uptime": round(now - primary.started, 3),
            "target": pool.target, "ready": sum(1 for w in pool.slots.values() if w.is_ready),
            "stopping": pool.stopping,
        }

    def status(self, request: dict[str, Any]) -> Answer:
        pool = self.primary.pool
        now = self.primary.clock()
        workers = sorted(pool.workers.values(), key=lambda w: (w.index, w.id))
        self.sampler.forget_except(w.pid for w in workers)
        rollout = pool.rollout
        return {
            **self.info(request),
            "restarts": sum(pool.throttle.crashes(index) for index in range(max(pool.target, len(pool.slots)))),
            "reload": {"id": rollout.reloads, "state": rollout.outcome, "reason": rollout.reason or None},
            "workers": [
                worker_row(w, now, self.sampler, pool.throttle.crashes(w.index), pool.last_exit.get(w.index, ""))
                for w in workers
            ],
        }

    def reload(self, request: dict[str, Any]) -> Answer:
        pool = self.primary.pool
        if pool.stopping:
            return _error("the cluster is stopping")
        if pool.rollout.active:
            return _error(f"a rolling restart (reload {pool.rollout.reloads}) is already running")
        self.primary.reload()
        return {"ok": True, "reload": pool.rollout.reloads}

    def scale(self, request: dict[str, Any]) -> Answer:
        value = str(request.get("workers", ""))
        match = _SCALE_RE.fullmatch(value)
        if match is None:
            return _error(f"bad worker count {value!r}: give N, +K or -K, e.g. 4 or +1")
        pool = self.primary.pool
        count = int(match[2])
        target = pool.target + count if match[1] == "+" else pool.target - count if match[1] == "-" else count
        if target < 1:
            return _error(f"cannot scale to {target} workers: at least 1 is needed")
        if target > MAX_WORKERS:
            return _error(f"cannot scale to {target} workers: one cluster runs at most {MAX_WORKERS}")
        if pool.stopping:
            return _error("the cluster is stopping")
        self.primary.scale(target)
        return {"ok": True, "target": pool.target}

    def stop(self, request: dict[str, Any]) -> Answer:
        timeout = request.get("timeout")
        if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool)
                                    or not 0 <= timeout <= 86400):
            return _error(f"bad timeout {timeout!r}: give seconds between 0 and 86400")
        self.primary.stop(None if timeout is None else float(timeout))
        return {"ok": True, "pid": os.getpid()}

    def restart_worker(self, request: dict[str, Any]) -> Answer:
        wanted = request.get("id")
        pool = self.primary.pool
        handle = next((w for w in pool.workers.values() if w.id == wanted), None)
        if handle is None or isinstance(wanted, bool):
            ids = ", ".join(str(w.id) for w in sorted(pool.workers.values(), key=lambda w: w.id))
            return _error(f"no worker with id {wanted!r}: the workers are {ids or 'none'}")
        if not handle.is_ready or pool.slots.get(handle.index) is not handle:
            return _error(f"worker {handle.id} is {handle.state.value}, not serving: nothing to restart")
        if pool.stopping:
            return _error("the cluster is stopping")
        pool.rollout.recycle(handle, "restart requested (clusterrun restart-worker)")
        return {"ok": True, "id": handle.id}
