"""CI's door check: build the sdist and the wheel, check them, then serve the sample apps from the installed wheel.

    python3 .ci/wheel_check.py [SOURCE_TREE]

What a user who installs the wheel gets must work without the clone beside it. So this script:

1. builds the sdist and, from that sdist, the wheel (``python -m build``; ``build`` and ``twine`` go into a
   throwaway virtual environment), and checks both with ``twine check --strict``;
2. reads the wheel: every package of the source tree is in it (the package list in pyproject.toml is kept by
   hand, because setuptools' discovery cannot map ``adapters/`` to ``clusterrun.adapters``), with every module
   and ``py.typed``, and nothing else at the top (no tests/, bench/ or sample_apps/); its version, the sdist's
   and the wheel file name's all equal ``clusterrun/_version.py``'s; it ships the compiled core: an extension
   for each module setup.py compiles, beside its source, and their shared library;
3. installs the wheel with its flask and starlette extras into a fresh virtual environment, copies
   sample_apps/flask_app.py and sample_apps/starlette_app.py to a temporary folder and, from there (where
   nothing of the clone is importable), starts ``clusterrun APP --workers 2`` on 127.0.0.1, waits for its
   ready line, GETs ``/`` and checks the answer carries the integration's ``X-Worker-Id`` header naming the
   worker that answered, and that the WSGI app's worker said it serves on the compiled engine; then stops it
   with SIGTERM and reaps it by pid (exit code 0, no worker left);
4. builds the wheel again from the sdist with ``CLUSTERRUN_PURE_PYTHON=1``: the pure-Python fallback is a
   wheel for any Python 3 (``py3-none-any``) with no extension in it.

Standard library only, so that it runs on the bare ``python3`` that runs .ci/run. Everything it starts is
stopped and reaped in ``finally``; the temporary folder is removed.
"""

from __future__ import annotations

import ast
import contextlib
import email.parser
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME = "clusterrun"
# The subpackages the wheel must hold whatever the source tree says (issue 23's layout); the check also
# derives the full list from the source tree, so that a package added later and missed in pyproject.toml fails.
REQUIRED_PACKAGES = [
    "clusterrun", "clusterrun.config", "clusterrun.host", "clusterrun.wire", "clusterrun.primary",
    "clusterrun.worker", "clusterrun.ops", "clusterrun.ctl", "clusterrun.adapters", "clusterrun.adapters.engine",
    "clusterrun.adapters.stack",
]
# Source folders and the package name each is installed as (pyproject.toml's package-dir).
SOURCE_ROOTS = {"clusterrun": "clusterrun", "adapters": "clusterrun.adapters"}
# APP argument, the interface the ready line must report, the sample file.
SAMPLES = [("flask_app:app", "wsgi", "flask_app.py"), ("starlette_app:app", "asgi", "starlette_app.py")]
INSTALL_TIMEOUT = 300.0  # seconds for one pip install or build: a bound for a stuck index, not an expected time
# The engine's line in a WSGI worker's log, as a wheel built with a compiler serves (setup.py).
COMPILED_ENGINE = re.compile(r"serving with the inline WSGI engine \(httptools, compiled\)$")
SERVE_TIMEOUT = 30.0  # seconds for any awaited state of a running cluster (the tests' DEADLINE)
STARTED = time.monotonic()


class CheckFailed(Exception):
    """One check failed: the message says which and shows what was seen."""


def say(message: str) -> None:
    print(f"wheel-check [{time.monotonic() - STARTED:5.1f}s] {message}", flush=True)


def run(*command: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run a command to its end (bounded); its output, or CheckFailed with that output."""
    args = [str(part) for part in command]
    try:
        done = subprocess.run(
            args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=INSTALL_TIMEOUT, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CheckFailed(f"{' '.join(args)}: no end within {INSTALL_TIMEOUT:.0f}s\n{exc.output or ''}") from exc
    if done.returncode != 0:
        raise CheckFailed(f"{' '.join(args)}: exit code {done.returncode}\n{done.stdout}")
    return done.stdout


def clean_env(tmp: Path) -> dict[str, str]:
    """The environment for what runs from the fresh venv: nothing that points back at the clone or steers it."""
    env = {
        key: value for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "WEB_CONCURRENCY"}
        and not key.startswith("CLUSTERRUN_")
    }
    # TMPDIR: the cluster's control socket goes in the temporary folder, apart from any other cluster of the
    # machine serving an app of the same name.
    env.update(PYTHONUNBUFFERED="1", TMPDIR=str(tmp))
    return env


def source_version(root: Path) -> str:
    """``__version__`` as clusterrun/_version.py writes it, read without importing the clone."""
    tree = ast.parse((root / "clusterrun" / "_version.py").read_text())
    for node in tree.body:
        if (isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            return node.value.value
    raise CheckFailed("clusterrun/_version.py assigns no string __version__")


def source_modules(root: Path) -> tuple[set[str], set[str]]:
    """The packages of the source tree and the files the wheel must hold for them, as installed paths."""
    packages: set[str] = set()
    files: set[str] = set()
    for folder, package in SOURCE_ROOTS.items():
        base = root / folder
        for init in base.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            relative = init.parent.relative_to(base).parts
            name = ".".join([package, *relative])
            packages.add(name)
            for module in init.parent.glob("*.py"):
                files.add("/".join([*name.split("."), module.name]))
    return packages, files


def hot_modules(root: Path) -> list[str]:
    """setup.py's HOT: the installed paths of the modules it compiles, read without running it."""
    tree = ast.parse((root / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["HOT"]:
            return [ast.literal_eval(item) for item in node.value.elts]  # type: ignore[attr-defined]
    raise CheckFailed("setup.py assigns no HOT list")


def check_compiled(names: set[str], root: Path) -> int:
    """The compiled core is in the wheel: each hot module's extension beside its source, and the shared library."""
    extensions = [name for name in names if name.endswith(".so")]
    wanted = [*(path.removesuffix(".py") for path in hot_modules(root)), "clusterrun/adapters/engine/_core__mypyc"]
    lacking = [module for module in wanted if not any(so.startswith(module + ".") for so in extensions)]
    if lacking:
        raise CheckFailed(f"wheel lacks the compiled core's extensions for {lacking}; it holds {sorted(extensions)}")
    return len(extensions)


def check_wheel(wheel: Path, sdist: Path, version: str, root: Path) -> None:
    if not wheel.name.startswith(f"{NAME}-{version}-"):
        raise CheckFailed(f"wheel {wheel.name}: its name does not carry version {version}")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = email.parser.Parser().parsestr(archive.read(f"{NAME}-{version}.dist-info/METADATA").decode())
    if metadata["Version"] != version:
        raise CheckFailed(f"wheel metadata version {metadata['Version']}, clusterrun/_version.py {version}")
    extras = set(metadata.get_all("Provides-Extra") or [])
    if not {"flask", "starlette"} <= extras:
        raise CheckFailed(f"wheel metadata lacks the flask or starlette extra: {sorted(extras)}")

    tops = {name.split("/", 1)[0] for name in names}
    stray = tops - {NAME, f"{NAME}-{version}.dist-info"}
    if stray:
        raise CheckFailed(f"wheel holds more than the package at its top: {sorted(stray)}")
    compiled = sorted(name for name in names if "__pycache__" in name or name.endswith(".pyc"))
    if compiled:
        raise CheckFailed(f"wheel holds compiled files: {compiled[:5]}")

    packages, files = source_modules(root)
    missing_required = set(REQUIRED_PACKAGES) - packages
    if missing_required:
        raise CheckFailed(f"source tree lacks packages: {sorted(missing_required)}")
    absent = sorted(
        name for name in packages if "/".join([*name.split("."), "__init__.py"]) not in names
    )
    if absent:
        raise CheckFailed(f"wheel lacks packages (add them to pyproject.toml's packages list): {absent}")
    missing = sorted(files - names)
    if missing:
        raise CheckFailed(f"wheel lacks modules: {missing}")
    extensions = check_compiled(names, root)
    if f"{NAME}/py.typed" not in names:
        raise CheckFailed("wheel lacks clusterrun/py.typed")
    if f"{NAME}-{version}.dist-info/licenses/LICENSE" not in names:
        raise CheckFailed("wheel lacks the licence file (LICENSE, in its dist-info/licenses/)")

    with tarfile.open(sdist) as archive:
        member = archive.extractfile(f"{NAME}-{version}/PKG-INFO")
        if member is None:
            raise CheckFailed(f"sdist {sdist.name} holds no PKG-INFO")
        sdist_version = email.parser.Parser().parsestr(member.read().decode())["Version"]
    if sdist_version != version:
        raise CheckFailed(f"sdist metadata version {sdist_version}, clusterrun/_version.py {version}")
    say(f"wheel: version {version}, {len(packages)} packages, {len(files)} modules, {extensions} compiled "
        "extensions, py.typed, LICENSE, nothing else")


def build(work: Path, root: Path) -> tuple[Path, Path]:
    """Build the sdist and the wheel into work/dist, and twine-check both; their paths."""
    tools = work / "tools"
    run(sys.executable, "-m", "venv", tools)
    run(tools / "bin" / "pip", "install", "--quiet", "build", "twine")
    say("build and twine installed in a throwaway venv")
    dist = work / "dist"
    # Without --sdist/--wheel, build makes the sdist and then the wheel from the unpacked sdist: a file the
    # sdist leaves out is missing from the wheel too, and the checks below see it.
    run(tools / "bin" / "python", "-m", "build", "--outdir", dist, root)
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        raise CheckFailed(f"expected one wheel and one sdist in dist/, found {[p.name for p in dist.iterdir()]}")
    say(f"built {sdists[0].name} and {wheels[0].name}")
    run(tools / "bin" / "twine", "check", "--strict", wheels[0], sdists[0])
    say("twine check --strict: passed")
    return wheels[0], sdists[0]


def build_pure(work: Path, sdist: Path) -> None:
    """The fallback: the wheel built from the sdist with CLUSTERRUN_PURE_PYTHON=1 holds no extension."""
    out = work / "dist-pure"
    env = {**os.environ, "CLUSTERRUN_PURE_PYTHON": "1"}
    run(work / "tools" / "bin" / "python", "-m", "build", "--wheel", "--outdir", out, sdist, env=env)
    wheels = sorted(out.glob("*.whl"))
    if len(wheels) != 1 or not wheels[0].name.endswith("-py3-none-any.whl"):
        raise CheckFailed(f"CLUSTERRUN_PURE_PYTHON=1 built {[p.name for p in out.iterdir()]}, not one py3-none-any wheel")
    with zipfile.ZipFile(wheels[0]) as archive:
        extensions = [name for name in archive.namelist() if name.endswith(".so")]
    if extensions:
        raise CheckFailed(f"the pure-Python wheel holds extensions: {extensions}")
    say(f"CLUSTERRUN_PURE_PYTHON=1: {wheels[0].name}, no extension")


def install(work: Path, root: Path, wheel: Path, version: str, env: dict[str, str]) -> tuple[Path, Path]:
    """Install the wheel with its extras into a fresh venv and copy the samples out; (venv bin, app folder)."""
    venv = work / "venv"
    run(sys.executable, "-m", "venv", venv)
    bin_dir = venv / "bin"
    run(bin_dir / "pip", "install", "--quiet", f"{wheel}[flask,starlette]", env=env)
    say("wheel installed with [flask,starlette] in a fresh venv")
    apps = work / "apps"
    apps.mkdir()
    for _, _, sample in SAMPLES:
        shutil.copy(root / "sample_apps" / sample, apps / sample)

    # From the app folder, the package and both integrations must come from the venv, not from the clone.
    probe = (
        "import json, clusterrun, clusterrun.adapters.flask, clusterrun.adapters.starlette\n"
        "print(json.dumps([m.__file__ for m in (clusterrun, clusterrun.adapters.flask, "
        "clusterrun.adapters.starlette)]))"
    )
    paths = json.loads(run(bin_dir / "python", "-c", probe, cwd=apps, env=env))
    for path in paths:
        if not Path(path).resolve().is_relative_to(venv.resolve()):
            raise CheckFailed(f"{path} was imported from outside the fresh venv")
    said = run(bin_dir / "clusterrun", "--version", cwd=apps, env=env).strip()
    if said != f"{NAME} {version}":
        raise CheckFailed(f"clusterrun --version says {said!r}, the package version is {version}")
    say(f"imported from the venv: {', '.join(Path(p).name for p in paths)}; --version: {said}")
    return bin_dir, apps


def read_lines(stream: Iterator[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def serve(bin_dir: Path, apps: Path, app: str, interface: str, env: dict[str, str]) -> None:
    """Start ``clusterrun APP --workers 2``, GET it, stop it with SIGTERM and reap it by pid."""
    proc = subprocess.Popen(
        [str(bin_dir / "clusterrun"), app, "--workers", "2", "--bind", "127.0.0.1:0"], cwd=apps, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group: the finally below can kill a worker left behind too
    )
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=read_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()
    seen: list[str] = []
    clean = False  # stopped by SIGTERM with exit code 0 and no worker left

    def wait_for(pattern: str) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + SERVE_TIMEOUT
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise CheckFailed(f"{app}: no {pattern!r} within {SERVE_TIMEOUT:.0f}s:\n" + "\n".join(seen)) from None
            if line is None:
                raise CheckFailed(f"{app}: output ended before {pattern!r}:\n" + "\n".join(seen))
            seen.append(line)
            if match := regex.search(line):
                return match

    try:
        url = wait_for(r"listening on (http://127\.0\.0\.1:\d+)").group(1)
        ready = wait_for(rf"ready: 2 workers serving {re.escape(app)} \((\w+)\), pids ([\d, ]+)$")
        if ready.group(1) != interface:
            raise CheckFailed(f"{app}: served as {ready.group(1)}, expected {interface}")
        pids = {int(pid) for pid in ready.group(2).split(",")}

        try:
            with urllib.request.urlopen(url + "/", timeout=SERVE_TIMEOUT) as response:
                status, header, body = response.status, response.headers.get("X-Worker-Id"), json.load(response)
        except (OSError, ValueError) as exc:  # refused, reset, an error status, or a body that is not JSON
            raise CheckFailed(f"{app}: GET {url}/ failed: {exc!r}\n" + "\n".join(seen)) from exc
        worker = body.get("worker") or {}
        # The header is written only by the integration (clusterrun.adapters.flask or .starlette), and the body's
        # worker is what it put on g.worker or request.state.worker: both must name the worker that answered.
        if status != 200 or header is None or str(worker.get("id")) != header or body.get("pid") not in pids \
                or worker.get("pid") != body.get("pid"):
            raise CheckFailed(f"{app}: GET / answered {status}, X-Worker-Id {header!r}, body {body}")
        if interface == "wsgi" and not any(COMPILED_ENGINE.search(line) for line in seen):
            wait_for(COMPILED_ENGINE.pattern)  # said by worker 1 before it served, maybe after the ready line
        say(f"{app}: {ready.group(1)} on {url}, GET / from worker {header} (pid {body['pid']})")

        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(SERVE_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"{app}: no exit within {SERVE_TIMEOUT:.0f}s of SIGTERM:\n" + "\n".join(seen)) from None
        if code != 0:
            raise CheckFailed(f"{app}: exit code {code} after SIGTERM:\n" + "\n".join(seen))
        # The primary reaps its workers before it exits: none may be left.
        left = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
        if left:
            raise CheckFailed(f"{app}: workers {left} outlived the primary")
        say(f"{app}: stopped by SIGTERM, exit code 0, workers reaped")
        clean = True
    finally:
        if not clean:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(SERVE_TIMEOUT)
        reader.join(SERVE_TIMEOUT)  # the output ends once the primary and its workers are gone
        proc.stdout.close()


def main(argv: list[str]) -> int:
    root = Path(argv[1]).resolve() if len(argv) > 1 else ROOT
    version = source_version(root)
    work = Path(tempfile.mkdtemp(prefix="clusterrun-wheel-"))
    try:
        tmp = work / "tmp"
        tmp.mkdir()
        env = clean_env(tmp)
        wheel, sdist = build(work, root)
        check_wheel(wheel, sdist, version, root)
        bin_dir, apps = install(work, root, wheel, version, env)
        for app, interface, _ in SAMPLES:
            serve(bin_dir, apps, app, interface, env)
        build_pure(work, sdist)
    except CheckFailed as exc:
        print(f"wheel-check FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
