"""The primary's own endpoints, beside the app's listeners: the control socket and the metrics endpoint."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from clusterrun.ops.control import ControlServer
from clusterrun.ops.metrics import MetricsServer
from clusterrun.ops.operations import Operations

if TYPE_CHECKING:
    from clusterrun.primary.supervisor import Primary

logger = logging.getLogger("clusterrun")


class Endpoints:
    def __init__(self, primary: Primary, app_metrics_dir: str | None) -> None:
        config = primary.config
        self.name = config.cluster_name
        self.metrics_url = ""
        self.health_url = ""
        self.control = None if config.no_control else ControlServer(
            config.control, primary.selector, primary.timers,
            Operations(primary).answer)
        self.metrics = None if config.metrics is None else MetricsServer(
            config.metrics, primary.selector, primary.timers, primary, app_metrics_dir)
        self.health = None if config.health is None else MetricsServer(
            config.health, primary.selector, primary.timers, primary, None, metrics=False)

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

    def announce(self) -> None:
        """The start banner's last lines (the primary's): where the cluster is steered and watched."""
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

    def filenos(self) -> list[int]:
        """What a forked worker must close: a worker holding them would keep them answering after the primary."""
        servers = (self.control, self.metrics, self.health)
        return [fd for server in servers if server is not None for fd in server.filenos()]
