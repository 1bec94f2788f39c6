"""--user and --group: every worker gives up root right after the fork; the primary stays root.

Why the primary keeps root (as gunicorn's arbiter does): it binds listeners, and not only at start — under
``--policy reuseport`` a slot added later (SIGTTIN, ``clusterrun scale``) gets a new SO_REUSEPORT socket on
the same port, which below 1024 needs root; it writes and removes ``--pid-file`` in a root-owned folder
such as /run; it reopens the log files on SIGUSR1 where root put them; it signals and reaps the workers; it
owns the control socket (0600, peers checked against its own uid and root) and the /metrics and health
listeners. The primary never runs a request: the workers do, and they run as the user.

What a worker does, in this order (gunicorn's order, two of its gaps closed):
1. the supplementary groups: the user's own from the group database (``initgroups``, as ``su`` and
   systemd's ``User=`` do), or none for a uid that has no name. gunicorn keeps root's supplementary
   groups unless ``--initgroups`` is given (its issue 1287), and then skips ``setgid`` (issue 2770);
2. ``setgid``: the group, by default the user's primary group (gunicorn's default is root's group);
3. ``setuid`` last, since once it is done nothing else may change; as root it sets the real, effective
   and saved ids, so the worker cannot get root back — checked, and a worker that could does not serve.

When: right after the fork, before the worker imports its serving modules and the app, as gunicorn does,
so that no code of the app runs as root (with ``--preload`` the primary imports the app, as root: the
price of sharing its memory). The app's files and the Python installation must be readable by the user.
The worker opens its log files just before it drops (the primary gives them to the user, so that a
worker can open them again after logrotate); the listening sockets are inherited, already bound.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clusterrun.errors import BootError, ConfigError


@dataclass(frozen=True)
class Target:
    """Who the workers become."""

    uid: int
    gid: int
    name: str | None  # the user's name, whose supplementary groups the workers take; None: a uid with no name

    def __str__(self) -> str:
        return f"uid {self.uid} ({self.name or 'no name'}), gid {self.gid}"


def _number(value: Any) -> int | None:
    text = str(value).strip()
    return int(text) if text.isdigit() else None


def _known(flag: str, kind: str, number: str, lookup: Callable[[str], object]) -> Callable[[Any], str]:
    """A parser of --user or --group: a name the system's database knows, or a number (known or not)."""

    def parse(value: Any) -> str:
        text = str(value).strip()
        if _number(text) is None:
            try:
                lookup(text)
            except KeyError:
                raise ConfigError(f"unknown {flag} value {value!r}: no such {kind} on this system; give an existing "
                                  f"{kind} name or a numeric {number}") from None
        return text

    return parse


parse_user = _known("--user", "user", "uid", pwd.getpwnam)
parse_group = _known("--group", "group", "gid", grp.getgrnam)


def resolve(user: str, group: str) -> Target | None:
    """The workers' ids from --user and --group (names already checked by the parsers); None: neither given."""
    if not user:
        if group:
            raise ConfigError(f"--group {group!r} needs --user: a worker that stays root keeps every privilege "
                              "whatever its group; give --user too")
        return None
    uid = _number(user)
    try:
        entry = pwd.getpwuid(uid) if uid is not None else pwd.getpwnam(user)
    except KeyError:
        entry = None  # a numeric uid with no name: allowed, as in a container image with no /etc/passwd line
    if group:
        gid = _number(group)
        gid = grp.getgrnam(group).gr_gid if gid is None else gid
    elif entry is not None:
        gid = entry.pw_gid
    else:
        raise ConfigError(f"--user {user!r} has no entry in the user database, so its group is unknown: give "
                          "--group too")
    return Target(entry.pw_uid if entry else int(user), gid, entry.pw_name if entry else None)


def check(target: Target | None) -> Target | None:
    """In the primary at start: whether the workers change ids (None: nothing to do); ConfigError if they cannot.

    Asking for the ids the primary already runs as needs no root: the same command works for a service that
    systemd (``User=``) or the container runtime already started as that user.
    """
    if target is None or (target.uid == os.geteuid() and target.gid == os.getegid()):
        return None
    if os.geteuid() != 0:
        raise ConfigError(f"--user needs the primary to run as root; it runs as uid {os.geteuid()}: start it as "
                          "root (it binds, then the workers become the user), or drop --user/--group and start "
                          "it as the user")
    return target


def give(path: str, target: Target | None) -> None:
    """Make a file or folder the primary created belong to the workers' user (log files, the metrics folder)."""
    if target is not None and os.geteuid() == 0:
        os.chown(path, target.uid, target.gid)


def drop(target: Target | None) -> None:
    """In a worker: become the target for good (supplementary groups, group, user); BootError if that fails."""
    if target is None:
        return
    try:
        if target.name is not None:
            os.initgroups(target.name, target.gid)
        else:
            os.setgroups([])
        os.setgid(target.gid)
        os.setuid(target.uid)
    except OSError as exc:
        raise BootError(f"the worker cannot become {target}: {exc}") from None
    if target.uid != 0:
        try:
            os.setuid(0)
        except OSError:
            pass  # as it must be: root cannot be had back
        else:
            raise BootError(f"the worker became {target} but could get root back: refusing to serve")
    _check_readable(target)


def _check_readable(target: Target) -> None:
    """Fail the boot in one line when the user cannot read Python itself: else the first lazy import would
    fail later with a puzzling ModuleNotFoundError (a virtualenv under a home folder of mode 0700 does that)."""
    needed = {"Python's standard library": os.path.dirname(os.__file__),
              "clusterrun": os.path.dirname(os.path.abspath(__file__))}
    for what, folder in needed.items():
        if not os.access(folder, os.R_OK | os.X_OK):  # os.access asks as the real uid: the user's now
            raise BootError(f"the worker, now {target}, cannot read {what} in {folder}: with --user, Python, "
                            "clusterrun and the app must be readable by that user; install them where it can "
                            "read them (not in a private home folder)")
