"""``clusterrun logs NAME|all [--lines N] [--follow] [--worker ID] [--err|--out]``: the apps' log files, as PM2's.

An app started in the background writes its stdout to ``$CLUSTERRUN_HOME/logs/NAME-out.log`` and its stderr, where
clusterrun's own lines go, to ``NAME-error.log``. This prints the last N lines of each (default 15, as PM2), the
out log's then the error log's, each line after its app's name (``shop | ...``); ``--follow`` then prints what
is appended until Ctrl-C, across a rotation: a file that shrinks (--log-max-size truncated it) is read again from
its start, a file replaced under its name (logrotate's ``create``) is finished, then the new one is read.

``--worker ID`` keeps the lines of that worker: clusterrun's lines carry ``[worker ID index I pid P]`` (in JSON,
``"worker": {"id": ID, ...}``). What the app prints has no such tag, so ``--worker`` shows none of it; an app's
``logging`` through clusterrun's handlers (or a print of ``clusterrun.current_worker().id``) can be found again.

Exit codes: 0 done (Ctrl-C included, with --follow); 1 no logs for that name (the one line lists the names with
logs); 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from clusterrun.ctl.text import CommandParser
from clusterrun.errors import EXIT_ERROR
from clusterrun.host.statehome import state_home

KINDS = (("out", "-out.log"), ("err", "-error.log"))
DEFAULT_LINES = 15
FOLLOW_POLL = 0.2  # seconds between two looks at the files while following
_TAGGED = re.compile(rb"\[worker (\d+) index \d+ pid \d+\]")
_BLOCK = 64 * 1024
_MARK = 64  # bytes before the read position remembered to see a truncate-and-regrow between two looks


def known_apps(folder: Path) -> list[str]:
    """The names with a log file in ``folder``, sorted."""
    if not folder.is_dir():
        return []
    names = {entry.name[: -len(suffix)] for entry in folder.iterdir() for _kind, suffix in KINDS
             if entry.name.endswith(suffix) and len(entry.name) > len(suffix)}
    return sorted(names)


def worker_of(line: bytes) -> int | None:
    """The worker id a log line names, or None (the primary's lines, what the app printed)."""
    match = _TAGGED.search(line)
    if match is not None:
        return int(match.group(1))
    if line.startswith(b"{"):
        try:
            worker = json.loads(line).get("worker")
        except (ValueError, AttributeError):
            return None
        if isinstance(worker, dict) and isinstance(worker.get("id"), int):
            return int(worker["id"])
    return None


def last_lines(path: Path, count: int, worker: int | None, end: int | None = None) -> list[bytes]:
    """The last ``count`` lines of ``path`` (of ``worker``'s, with one) before ``end`` (default: its end), from its
    rotated copy too when it holds fewer (``FILE.1``, --log-max-size)."""
    if count <= 0:
        return []
    found = _tail(path, count, worker, end)
    if len(found) < count:
        found = _tail(Path(f"{path}.1"), count - len(found), worker) + found
    return found


def _tail(path: Path, count: int, worker: int | None, end: int | None = None) -> list[bytes]:
    """Read ``path`` backwards from ``end``, a block at a time, until ``count`` kept lines are found or its start
    is."""
    try:
        file = open(path, "rb")
    except OSError:
        return []
    with file:
        end = min(file.seek(0, os.SEEK_END), end if end is not None else 1 << 62)
        kept: list[bytes] = []
        rest = b""
        while end > 0 and len(kept) < count:
            start = max(0, end - _BLOCK)
            file.seek(start)
            chunk = file.read(end - start) + rest
            end = start
            lines = chunk.split(b"\n")
            rest = lines.pop(0) if start > 0 else b""  # the first may continue in the block before
            kept[:0] = [line for line in lines if line and (worker is None or worker_of(line) == worker)]
        return kept[-count:]


@dataclass
class Followed:
    """One file being followed: where its read stopped, and what it read last (to see a truncate-and-regrow)."""

    name: str
    path: Path
    file: IO[bytes] | None = None
    inode: int = 0
    mark: bytes = b""
    partial: bytes = b""

    def open_at_end(self) -> None:
        try:
            self.file = open(self.path, "rb")
        except OSError:
            return
        self.inode = os.fstat(self.file.fileno()).st_ino
        self._remember(self.file.seek(0, os.SEEK_END))

    def _remember(self, position: int) -> None:
        assert self.file is not None
        start = max(0, position - _MARK)
        self.mark = os.pread(self.file.fileno(), position - start, start)

    def new_lines(self) -> list[bytes]:
        """The whole lines appended since the last call."""
        if self.file is None:
            self.open_from_start()
            if self.file is None:
                return []
        lines = self._read()
        try:
            inode = os.stat(self.path).st_ino
        except OSError:
            return lines
        if inode != self.inode:  # replaced under its name: the old one is finished, the new one read whole
            assert self.file is not None
            self.file.close()
            self.file, self.partial, self.mark = open(self.path, "rb"), b"", b""
            self.inode = os.fstat(self.file.fileno()).st_ino
            lines += self._read()
        return lines

    def open_from_start(self) -> None:
        """A file that did not exist when following began: read from its start once it does."""
        try:
            self.file = open(self.path, "rb")
        except OSError:
            return
        self.inode = os.fstat(self.file.fileno()).st_ino

    def _read(self) -> list[bytes]:
        file = self.file
        assert file is not None
        position, size = file.tell(), os.fstat(file.fileno()).st_size
        if size < position or (0 < len(self.mark) <= position
                               and os.pread(file.fileno(), len(self.mark), position - len(self.mark)) != self.mark):
            file.seek(0)  # truncated (rotated), perhaps written again past where the read stopped
            self.partial = b""
        data = file.read()
        if not data:
            return []
        self._remember(file.tell())
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        return [line for line in lines if line]


def _files(folder: Path, names: list[str], kinds: list[str]) -> Iterator[tuple[str, Path]]:
    for name in names:
        for kind, suffix in KINDS:
            if kind in kinds:
                yield name, folder / f"{name}{suffix}"


def _write(out: IO[bytes], name: str, width: int, lines: list[bytes], worker: int | None) -> None:
    tag = f"{name:<{width}} | ".encode()
    out.write(b"".join(tag + line + b"\n" for line in lines if worker is None or worker_of(line) == worker))


def follow(folder: Path, followed: dict[Path, Followed], kinds: list[str], worker: int | None,
           every_app: bool) -> None:
    """Print what is appended to the files until interrupted; with ``every_app``, apps whose logs appear later
    too."""
    out = sys.stdout.buffer
    while True:
        if every_app:
            for name, path in _files(folder, known_apps(folder), kinds):
                followed.setdefault(path, Followed(name, path))
        width = max(len(entry.name) for entry in followed.values())
        for entry in followed.values():
            _write(out, entry.name, width, entry.new_lines(), worker)
        out.flush()
        time.sleep(FOLLOW_POLL)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="clusterrun logs", description="The last lines of an app's logs, from "
                     "$CLUSTERRUN_HOME/logs (default ~/.clusterrun/logs), each after its app's name.")
    parser.add_argument("name", metavar="NAME|all", nargs="?", default="all", help="the app's name, or all (the "
                        "default, as pm2 logs): every app with logs there")
    parser.add_argument("--lines", type=int, default=DEFAULT_LINES, metavar="N", help="the last N lines of each "
                        f"file; default {DEFAULT_LINES}")
    parser.add_argument("--follow", "-f", action="store_true", help="then print new lines until Ctrl-C")
    parser.add_argument("--worker", type=int, metavar="ID", help="only the lines of the worker with this id "
                        "(clusterrun status shows them; what the app printed carries no id and is left out)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--err", action="store_true", help="the error log only (clusterrun's lines, the app's stderr)")
    which.add_argument("--out", action="store_true", help="the out log only (the app's stdout, access lines)")
    return parser


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    folder = Path(state_home()) / "logs"
    known = known_apps(folder)
    names = known if args.name == "all" else [args.name]
    if not names or (args.name not in known and args.name != "all"):
        listed = f"the apps with logs: {', '.join(known)}" if known else "no app has logs there yet (clusterrun " \
            "start writes them)"
        what = "no logs" if args.name == "all" else f"no logs for {args.name!r}"
        print(f"clusterrun logs: error: {what} in {folder}; {listed}", file=sys.stderr)
        return EXIT_ERROR
    kinds = ["err"] if args.err else ["out"] if args.out else ["out", "err"]
    width = max(map(len, names))
    out = sys.stdout.buffer
    # Following starts where the last lines end: a line written in between is printed once, not lost or twice.
    followed = {path: Followed(name, path) for name, path in _files(folder, names, kinds)} if args.follow else {}
    for entry in followed.values():
        entry.open_at_end()
    try:
        for name, path in _files(folder, names, kinds):
            if args.lines > 0:
                out.write(f"{path} (last {args.lines} lines):\n".encode())
                start = followed.get(path)
                end = start.file.tell() if start is not None and start.file is not None else None
                _write(out, name, width, last_lines(path, args.lines, args.worker, end), None)
        out.flush()
        if args.follow:
            follow(folder, followed, kinds, args.worker, args.name == "all")
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how --follow ends
    except BrokenPipeError:  # | head: the reader had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
