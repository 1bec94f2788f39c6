"""Every error clusterrun raises, as one tree.

The library raises; only the CLI turns an error into a one-line message and
the process exit code carried by its class::

    ClusterrunError (exit 1)          anything unexpected inside clusterrun
    ├── ConfigError (exit 2)          a bad option, value or command line
    │   └── BindError (exit 2)        a listener that cannot be opened
    ├── BootError (exit 3)            the app failed to start in a worker
    ├── RestartLimitError (exit 4)    every slot died too often; none is left
    ├── ChannelError (exit 1)         a malformed frame on a worker channel
    ├── StateError (exit 1)           a worker moved between states in a way no worker does (a bug)
    ├── ControlError (exit 1)         a control command failed: no such cluster, refused, aborted
    └── MessageError (exit 1)         a message that is not JSON, too large, or sent outside a worker
"""

from __future__ import annotations


class ClusterrunError(Exception):
    """Base of every clusterrun error; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class ConfigError(ClusterrunError):
    """An option has a bad value; the message names the value and the fix."""

    exit_code = 2


class BindError(ConfigError):
    """A listener could not be bound (port in use, bad address, permissions)."""


class BootError(ClusterrunError):
    """The app could not be loaded or started in a worker."""

    exit_code = 3


class RestartLimitError(ClusterrunError):
    """Every slot exceeded its restart limit, so no worker is left."""

    exit_code = 4


class ChannelError(ClusterrunError):
    """A frame on a primary/worker channel was malformed or too large."""


class StateError(ClusterrunError):
    """A worker was moved between states in a way the state machine does not allow: a bug in the primary."""


class ControlError(ClusterrunError):
    """A control command (clusterrun status, reload, scale, stop, ...) could not be done; the message says why."""


class MessageError(ClusterrunError, ValueError):
    """A cluster message was refused at the sender (not JSON, too large, no channel)."""


EXIT_OK = 0
EXIT_ERROR = ClusterrunError.exit_code
EXIT_CONFIG = ConfigError.exit_code
EXIT_BOOT = BootError.exit_code
EXIT_RESTART_LIMIT = RestartLimitError.exit_code
