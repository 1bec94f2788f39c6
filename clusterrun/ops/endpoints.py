"""What ops/ runs in the primary's one wait: the primary's own endpoints beside the app's listeners (the control
socket, the metrics and health endpoints), the status line systemd shows, the start banner that says where
all of them are, and the log files' rotation (--log-max-size).

The door (clusterrun.api) builds them and hands them to the Primary, which knows them only by the Protocol it
declares (clusterrun.primary.supervisor.Ops): ops/ sits above primary/. Each part takes what it reads.
"""

from __future__ import annotations

import logging
import selectors
import socket
from collections.abc import Callable, Sequence

from clusterrun._version import __version__
from clusterrun.config.options import Config
from clusterrun.host import listeners
from clusterrun.host.timers import Timers
from clusterrun.ops.control import ControlServer, Handler
from clusterrun.ops.metrics import MetricsServer, Probe
from clusterrun.ops.rotation import Rotation

logger = logging.getLogger("clusterrun")


class Endpoints:
    def __init__(
        self, config: Config, selector: selectors.BaseSelector, timers: Timers, commands: Handler, probe: Probe,
        status: Callable[[], str], app_metrics_dir: str | None,
    ) -> None:
        """``commands`` answers the control socket (clusterrun.ops.operations), ``probe`` is what /metrics and
        /readyz read, ``status`` the line for systemd (clusterrun.ops.status.StatusLine)."""
        self.config = config
        self.name = config.cluster_name
        self.metrics_url = ""
        self.health_url = ""
        self._status = status
        self.control = None if config.no_control else ControlServer(config.control, selector, timers, commands)
        self.metrics = None if config.metrics is None else MetricsServer(
            config.metrics, selector, timers, probe, app_metrics_dir)
        self.health = None if config.health is None else MetricsServer(
            config.health, selector, timers, probe, None, metrics=False)
        # --log-max-size: a timer in the same wait (the log files are the primary's to keep in bounds).
        self.rotation = Rotation.of(timers, config.log_max_size, config.log_keep, config.log_file,
                                    config.access_log_file)

    @property
    def control_path(self) -> str | None:
        return self.control.path if self.control is not None else None

    def open(self) -> None:
        """The control socket first: a second cluster of one name stops here (exit 2), before binding anything."""
        if self.control is not None:
            self.control.open(self.name)
        if self.metrics is not None:
            self.metrics_url = self.metrics.open()
        if self.health is not None:
            self.health_url = self.health.open()
        if self.rotation is not None:
            self.rotation.start()

    def announce(self, policy: str, sockets: Sequence[socket.socket]) -> None:
        """The primary's first lines: what runs, how many workers and why, where it listens and is steered."""
        config = self.config
        spec, source, target = config.workers_spec, config.workers_from, config.workers
        note = f"{source} {spec}" if source.startswith("--") else f"{source}={spec}"
        if spec == "auto" or spec.endswith("x"):
            note += f": {config.usable_cpus} usable CPU{'s' if config.usable_cpus > 1 else ''}"
        logger.info("clusterrun %s: %s with %d worker%s (%s), policy %s", __version__, config.app, target,
                    "" if target == 1 else "s", note, policy)
        if config.sources.get("max_memory", "").startswith("cgroup"):
            logger.info("%s -> --max-memory %d MiB per worker (a worker above it is replaced; give --max-memory to "
                        "choose)", config.sources["max_memory"], config.max_memory)
        for sock in sockets:
            logger.info("listening on %s%s", listeners.describe(sock, "https" if config.tls else "http"),
                        listeners.origin(sock))
        if self.control_path:
            logger.info("control socket %s: clusterrun status %s", self.control_path, self.name)
        if self.metrics_url:
            logger.info("metrics on %s/metrics (and /livez, /readyz)", self.metrics_url)
        if self.health_url:
            logger.info("health on %s/livez and /readyz", self.health_url)

    def close(self) -> None:
        for server in (self.control, self.metrics, self.health):
            if server is not None:
                server.close()
        if self.rotation is not None:
            self.rotation.stop()

    def status(self) -> str:
        """The line people read in systemctl status (sd_notify's STATUS=)."""
        return self._status()

    def filenos(self) -> list[int]:
        """What a forked worker must close: a worker holding them would keep them answering after the primary."""
        servers = (self.control, self.metrics, self.health)
        return [fd for server in servers if server is not None for fd in server.filenos()]
