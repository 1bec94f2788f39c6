"""``clusterrun startup [systemd] [--install]``: a systemd unit that runs ``clusterrun resurrect`` at boot, as PM2's
``pm2 startup``.

The unit runs as the invoking user (under ``sudo``, the user who ran sudo), with its ``CLUSTERRUN_HOME`` and a
PATH that starts with the folder of the clusterrun in use. ``resurrect`` starts the saved apps in the background
and returns once they serve, so the unit is ``Type=oneshot`` with ``RemainAfterExit=yes``: there is no one main
process (each app has its own primary), and the unit stays active while they run; ``clusterrun stop all`` stops
them. Printed, it is the system unit (``User=``, for /etc/systemd/system/); ``--install`` writes it there when run
as root, else (and with ``--user``) a user unit (the user's own systemd, no ``User=``) under
``$XDG_CONFIG_HOME/systemd/user/``, and prints the ``systemctl`` commands that enable it, without running them.

Exit codes: 0 printed or written; 1 the unit could not be written; 2 bad usage (an init system other than
systemd).
"""

from __future__ import annotations

import argparse
import os
import pwd
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clusterrun.ctl.text import CommandParser
from clusterrun.errors import EXIT_CONFIG, EXIT_ERROR

TIMEOUT_START = 300  # seconds resurrect may take to have every app serving
TIMEOUT_STOP = 120  # seconds `stop all` may take: each app's drain (--graceful-timeout, default 30) and more


@dataclass(frozen=True)
class Target:
    """Whom the unit runs as and where: the user, their clusterrun home, the command, and where it goes."""

    user: str
    home: str
    command: str  # the clusterrun in use, as the unit runs it
    path: str  # the PATH the apps get
    system: bool  # a system unit (root installs it) or the user's own

    @property
    def unit_name(self) -> str:
        return f"clusterrun-{self.user}.service" if self.system else "clusterrun.service"

    def unit_path(self) -> Path:
        if self.system:
            return Path("/etc/systemd/system") / self.unit_name
        config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(config) / "systemd" / "user" / self.unit_name


def _quoted(text: str) -> str:
    """A word of a unit file: quoted when it holds a space, a quote or a backslash (systemd.syntax)."""
    if not any(c in text for c in " \t\"'\\"):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def target(system: bool) -> Target:
    """The invoking user (sudo's, when root runs this under sudo) and the clusterrun this process is."""
    account = pwd.getpwuid(os.getuid())
    sudo_user = os.environ.get("SUDO_USER", "")
    if os.getuid() == 0 and sudo_user:
        account = pwd.getpwnam(sudo_user)
    home = os.environ.get("CLUSTERRUN_HOME") or os.path.join(account.pw_dir, ".clusterrun")
    folder = os.path.dirname(sys.executable)
    script = os.path.join(folder, "clusterrun")
    command = _quoted(script) if os.access(script, os.X_OK) else f"{_quoted(sys.executable)} -m clusterrun"
    path = ":".join(dict.fromkeys([folder, "/usr/local/bin", "/usr/bin", "/bin"]))
    return Target(account.pw_name, os.path.abspath(home), command, path, system)


def unit_text(to: Target) -> str:
    lines = [
        f"# Written by clusterrun startup: runs `clusterrun resurrect` at boot as {to.user}, which starts the apps",
        "# `clusterrun save` recorded; `clusterrun stop all` stops them.",
        "[Unit]",
        f"Description=clusterrun: the saved apps of {to.user}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        *([f"User={to.user}"] if to.system else []),
        f"Environment={_quoted('CLUSTERRUN_HOME=' + to.home)}",
        f"Environment={_quoted('PATH=' + to.path)}",
        f"ExecStart={to.command} resurrect",
        f"ExecStop={to.command} stop all",
        f"TimeoutStartSec={TIMEOUT_START}",
        f"TimeoutStopSec={TIMEOUT_STOP}",
        "",
        "[Install]",
        f"WantedBy={'multi-user.target' if to.system else 'default.target'}",
    ]
    return "\n".join(lines) + "\n"


def enable_commands(to: Target) -> list[str]:
    if to.system:
        return ["systemctl daemon-reload", f"systemctl enable {to.unit_name}"]
    # A user's own systemd runs at boot only for a user who lingers.
    return ["systemctl --user daemon-reload", f"systemctl --user enable {to.unit_name}",
            f"loginctl enable-linger {to.user}"]


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="clusterrun startup", description="A systemd unit that runs clusterrun resurrect at "
                     "boot as you (pm2 startup).")
    parser.add_argument("init", metavar="INIT", nargs="?", default="systemd", help="the init system: systemd (the "
                        "only one supported)")
    parser.add_argument("--install", action="store_true", help="write the unit (/etc/systemd/system/ as root, else "
                        "a user unit under $XDG_CONFIG_HOME/systemd/user/) and print how to enable it")
    parser.add_argument("--user", action="store_true", help="a user unit (your own systemd; it needs loginctl "
                        "enable-linger to start at boot), also when printed or installed as root")
    return parser


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    if args.init != "systemd":
        print(f"clusterrun startup: error: init system {args.init!r} is not supported; clusterrun startup systemd "
              "writes a systemd unit (launchd, upstart and others: run clusterrun resurrect from their boot hook)",
              file=sys.stderr)
        return EXIT_CONFIG
    to = target(system=not args.user and (os.getuid() == 0 or not args.install))
    text = unit_text(to)
    if not args.install:
        print(f"# save as {to.unit_path()} (or run clusterrun startup systemd --install)")
        print(text, end="")
        return 0
    where = to.unit_path()
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text(text)
    except OSError as exc:
        print(f"clusterrun startup: error: cannot write {where} ({exc.strerror}); run it as root for a system unit, "
              "or print the unit and save it yourself", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {where}; to start it at boot, run:")
    for command in enable_commands(to):
        print(f"  {command}")
    print("(first save what runs: clusterrun save)")
    return 0
