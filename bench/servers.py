"""The apps and the servers under test, and the exact command line each server gets.

Every server runs the same app file from bench/apps, with the same number of
worker processes, on 127.0.0.1, with access logs off (the default everywhere
except where a flag says so explicitly). Each one is otherwise left at its own
defaults: the point is what a user gets from the command they would type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Interface = Literal["asgi", "wsgi"]


@dataclass(frozen=True)
class App:
    key: str  # used on the command line (--apps) and in file names
    title: str
    target: str  # module:attribute, importable from bench/apps
    interface: Interface
    requires: tuple[str, ...] = ()  # distributions the app imports
    body: bytes = b"Hello, world!"


APPS: tuple[App, ...] = (
    App("asgi", "raw ASGI hello", "raw_asgi:app", "asgi"),
    App("starlette", "Starlette hello", "starlette_hello:app", "asgi", ("starlette",)),
    App("fastapi", "FastAPI hello", "fastapi_hello:app", "asgi", ("fastapi",),
        b'{"message":"Hello, world!","count":1}'),
    App("wsgi", "raw WSGI hello", "raw_wsgi:app", "wsgi"),
    App("flask", "Flask hello", "flask_hello:app", "wsgi", ("flask",)),
)


@dataclass(frozen=True)
class Target:
    """Everything a command line depends on."""

    python: str
    app: App
    port: int
    workers: int
    uvloop: bool  # installed in the servers' interpreter (hypercorn needs to be told)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


Command = Callable[[Target], list[str]]


@dataclass(frozen=True)
class Server:
    key: str  # used on the command line (--servers) and in the JSON
    family: str  # --servers FAMILY selects every variant of it
    title: str
    interfaces: frozenset[str]
    requires: tuple[str, ...]
    command: Command
    load: bool = True  # False: started for memory and start-up time only
    modes: frozenset[str] = frozenset({"keep-alive", "close"})  # the loads it is measured under
    # It closes each connection after its answer without saying "Connection: close": wrk then counts one read
    # error per answer, which is not a failure (run.measure_modes takes them off).
    closes_unannounced: bool = False


def _clusterrun(policy: str, *extra: str, control: bool = False) -> Command:
    """``control=False`` adds ``--no-control``: the cluster's name defaults to the app's module, and a second
    cluster of one name (another bench or test run on the machine, by the same user) would exit 2."""

    def command(t: Target) -> list[str]:
        argv = [t.python, "-m", "clusterrun", t.app.target, "--workers", str(t.workers), "--bind", t.address,
                "--policy", policy, "--interface", t.app.interface, *([] if control else ["--no-control"])]
        if t.app.interface == "wsgi":
            argv += ["--threads", "1"]  # inline: the app on the event loop, gunicorn-sync semantics
        return [*argv, *extra]

    return command


def _uvicorn(t: Target) -> list[str]:
    interface = "asgi3" if t.app.interface == "asgi" else "wsgi"
    return [t.python, "-m", "uvicorn", t.app.target, "--workers", str(t.workers), "--host", "127.0.0.1",
            "--port", str(t.port), "--interface", interface, "--no-access-log"]


def _gunicorn(*worker: str) -> Command:
    def command(t: Target) -> list[str]:
        # gunicorn writes no access log unless --access-logfile is given.
        return [t.python, "-m", "gunicorn", t.app.target, "--workers", str(t.workers), "--bind", t.address,
                *worker]

    return command


def _granian(t: Target) -> list[str]:
    return [t.python, "-m", "granian", "--interface", t.app.interface, "--workers", str(t.workers),
            "--host", "127.0.0.1", "--port", str(t.port), "--no-access-log", t.app.target]


def _hypercorn(t: Target) -> list[str]:
    # hypercorn writes no access log unless --access-logfile is given. Its default worker class is plain
    # asyncio; the others here use uvloop when it is installed, so hypercorn is given it too.
    worker = ["--worker-class", "uvloop"] if t.uvloop else []
    return [t.python, "-m", "hypercorn", f"{t.app.interface}:{t.app.target}", "--workers", str(t.workers),
            "--bind", t.address, *worker]


def _uwsgi(socket_option: str) -> Command:
    """uWSGI on one of its two HTTP sockets, neither of which serves both loads (checked on 2.0.30):

    * --http11-socket keeps a connection when the app sets Content-Length (every bench app does), and also
      when the client asks "Connection: close": it neither closes nor says it will, so wrk's close load would
      go on over the same connection and measure keep-alive. It serves the keep-alive load only.
    * --http-socket closes the connection after every answer (--http-keepalive belongs to the --http router
      and changes nothing there), without a "Connection: close" header. It serves the close load only.
    """

    def command(t: Target) -> list[str]:
        # The pyuwsgi wheel has no ``python -m`` entry point: its ``uwsgi`` script sits next to the interpreter.
        # --die-on-term: before 2.1, SIGTERM makes uWSGI reload ("brutal reload"), not exit; the bench stops
        # every server with SIGTERM. --need-app: exit when the app does not import, instead of serving 500s.
        # No request log (--disable-logging), as for the other servers.
        return [str(Path(t.python).with_name("uwsgi")), socket_option, t.address, "--processes", str(t.workers),
                "--master", "--module", t.app.target, "--need-app", "--die-on-term", "--disable-logging"]

    return command


BOTH = frozenset({"asgi", "wsgi"})
ASGI = frozenset({"asgi"})
WSGI = frozenset({"wsgi"})


def clusterrun_server(policy: str) -> Server:
    """clusterrun with ``--policy policy``, WSGI inline; its key is ``clusterrun-POLICY``."""
    return Server(f"clusterrun-{policy}", "clusterrun", f"clusterrun {policy}", BOTH, ("clusterrun",),
                  _clusterrun(policy))


SERVERS: tuple[Server, ...] = (
    clusterrun_server("rr"),
    clusterrun_server("shared"),
    # Issue 25: the same cluster on uvicorn's HTTP protocol instead of clusterrun's own (adapters/stack/http1.py).
    Server("clusterrun-rr-uvicorn", "clusterrun", "clusterrun rr --http uvicorn", ASGI, ("clusterrun",),
           _clusterrun("rr", "--http", "uvicorn")),
    Server("uvicorn", "uvicorn", "uvicorn --workers", BOTH, ("uvicorn",), _uvicorn),
    Server("gunicorn-sync", "gunicorn", "gunicorn sync", WSGI, ("gunicorn",), _gunicorn("--worker-class", "sync")),
    Server("gunicorn-gthread", "gunicorn", "gunicorn gthread 4", WSGI, ("gunicorn",),
           _gunicorn("--worker-class", "gthread", "--threads", "4")),
    Server("gunicorn-uvicorn", "gunicorn", "gunicorn + UvicornWorker", ASGI, ("gunicorn", "uvicorn-worker"),
           _gunicorn("--worker-class", "uvicorn_worker.UvicornWorker")),
    Server("granian", "granian", "granian", BOTH, ("granian",), _granian),
    Server("hypercorn", "hypercorn", "hypercorn", BOTH, ("hypercorn",), _hypercorn),
    Server("uwsgi", "uwsgi", "uWSGI", WSGI, ("pyuwsgi",), _uwsgi("--http11-socket"),
           modes=frozenset({"keep-alive"})),
    Server("uwsgi-close", "uwsgi", "uWSGI http-socket", WSGI, ("pyuwsgi",), _uwsgi("--http-socket"),
           modes=frozenset({"close"}), closes_unannounced=True),
)

# Only when `clusterrun --help` lists --preload: the app imported once in the primary, shared copy-on-write.
PRELOAD = Server("clusterrun-rr-preload", "clusterrun", "clusterrun rr --preload", BOTH, ("clusterrun",),
                 _clusterrun("rr", "--preload"), load=False)

ISSUE3_BASELINE = "clusterrun-rr"  # issue 3's targets were set for rr, the default then


def with_default(catalogue: tuple[Server, ...], policy: str) -> tuple[Server, ...]:
    """The catalogue, and clusterrun on its default policy first among clusterrun's servers when the catalogue has
    no server for it (the ratio columns and issue 24's targets divide by that server's figures)."""
    if any(s.key == f"clusterrun-{policy}" for s in catalogue):
        return catalogue
    return (clusterrun_server(policy), *catalogue)


def select(keys: str | None, catalogue: tuple[Server, ...]) -> tuple[Server, ...]:
    """``--servers a,b``: each word names a server key or a whole family."""
    if not keys:
        return catalogue
    wanted = {word.strip() for word in keys.split(",") if word.strip()}
    known = {s.key for s in catalogue} | {s.family for s in catalogue}
    unknown = wanted - known
    if unknown:
        raise SystemExit(f"--servers: unknown {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    return tuple(s for s in catalogue if s.key in wanted or s.family in wanted)


def select_apps(keys: str | None) -> tuple[App, ...]:
    if not keys:
        return APPS
    wanted = {word.strip() for word in keys.split(",") if word.strip()}
    unknown = wanted - {a.key for a in APPS}
    if unknown:
        raise SystemExit(f"--apps: unknown {', '.join(sorted(unknown))}; known: {', '.join(a.key for a in APPS)}")
    return tuple(a for a in APPS if a.key in wanted)
