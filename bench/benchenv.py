"""The interpreter the servers run in: bench/.venv with every peer installed, or the current one (--no-install).

The venv is created with the interpreter running this script, so both report the
same Python. pip runs only when the wanted set changed (a stamp file holds a hash
of the package list and of pyproject.toml): a second run starts at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

PURE_ENV = "CLUSTERRUN_PURE_PYTHON"  # setup.py: build the engine as pure Python
PEERS = ("gunicorn", "uvicorn", "uvicorn-worker", "granian", "hypercorn", "pyuwsgi", "flask", "starlette", "fastapi",
         "httpx")
# Distributions whose versions go in the report header (uvloop and httptools decide the event loop and parser).
REPORTED = ("clusterrun", "uvicorn", "gunicorn", "uvicorn-worker", "granian", "hypercorn", "pyuwsgi", "flask",
            "starlette", "fastapi", "pydantic", "uvloop", "httptools", "prometheus_client")


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(venv: Path, repo: Path, *, peers: tuple[str, ...] = PEERS, pure: bool = False,
                interpreter: str = sys.executable) -> Path:
    """Create ``venv`` with ``interpreter`` if needed and install ``peers`` and clusterrun into it; its python.
    ``pure``: clusterrun built with ``CLUSTERRUN_PURE_PYTHON=1``, its engine not compiled (setup.py).

    clusterrun is installed as a wheel would install it, afresh from the checkout on every run, not editable:
    an editable install imports the package through setuptools' finder, which measured 20-30 ms slower to
    start than the installed wheel on 2026-12-07 (`import clusterrun` plus uvicorn's stack), and start-up is
    one of the figures here."""
    python = venv_python(venv)
    if not python.exists():
        print(f"bench: creating {venv} with {interpreter}", file=sys.stderr, flush=True)
        subprocess.run([interpreter, "-m", "venv", str(venv)], check=True)
    wanted = [*peers, f"{repo}[standard,metrics,http2]"]  # metrics: the metrics section runs --metrics; http2: h2
    stamp = venv / ".bench-installed"
    digest = hashlib.sha256(json.dumps(wanted).encode() + (repo / "pyproject.toml").read_bytes()).hexdigest()
    if not (stamp.exists() and stamp.read_text().strip() == digest):
        print(f"bench: pip install {' '.join(wanted)}", file=sys.stderr, flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *wanted], check=True)
        stamp.write_text(digest + "\n")
    # The dependencies stay; clusterrun itself is the checkout as it is now.
    env = {k: v for k, v in os.environ.items() if k != PURE_ENV}
    if pure:
        env[PURE_ENV] = "1"
    build = "pure Python" if pure else "compiled where a C compiler is"
    print(f"bench: pip install --force-reinstall --no-deps {repo} ({build})", file=sys.stderr, flush=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps", str(repo)],
                   check=True, env=env)
    return python


_PROBE = """
import importlib.metadata, json, sys
found = {}
for name in sys.argv[1:]:
    try:
        found[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        found[name] = None
print(json.dumps({"python": sys.version.split()[0], "versions": found}))
"""


def probe(python: str, names: tuple[str, ...], cwd: Path) -> tuple[str, dict[str, str | None]]:
    """The Python version of ``python`` and the installed version (or None) of each distribution.

    Run from ``cwd``, the servers' directory: from the repository root, the clusterrun.egg-info of a
    development checkout would pass for an installed clusterrun."""
    out = subprocess.run([python, "-c", _PROBE, *names], capture_output=True, text=True, check=True, timeout=60,
                         cwd=cwd)
    data = json.loads(out.stdout)
    return data["python"], data["versions"]


def clusterrun_has(python: str, flag: str, cwd: Path) -> bool:
    """Whether this clusterrun's --help lists ``flag`` (options are added while the benchmark is in use)."""
    out = subprocess.run([python, "-m", "clusterrun", "--help"], capture_output=True, text=True, timeout=60,
                         check=False, cwd=cwd)
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", out.stdout) is not None


# The policy a user gets without --policy: the option table's Config default, read from the clusterrun the servers
# run (not written here: it may change, as it did when issue 24 asked for a new default).
_DEFAULT_POLICY = """
import dataclasses
from clusterrun.config.options import Config
print(next(f.default for f in dataclasses.fields(Config) if f.name == "policy"))
"""


def default_policy(python: str, cwd: Path) -> str:
    """clusterrun's default --policy in ``python``'s clusterrun; raises RuntimeError when it cannot be read."""
    out = subprocess.run([python, "-c", _DEFAULT_POLICY], capture_output=True, text=True, timeout=60, check=False,
                         cwd=cwd)
    policy = out.stdout.strip()
    if out.returncode != 0 or not re.fullmatch(r"[a-z][a-z-]*", policy):
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"cannot read clusterrun's default policy from {python}: {tail}")
    return policy
