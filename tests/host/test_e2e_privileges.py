"""--user and --group: the workers run as the user, the primary stays root; bad values are named.

The privilege drop itself needs root, and a Python that the user can read: the tests' own interpreter may
live in a private home folder (mode 0700), and tox's environments are private to their owner.
``_readable_python`` looks for an interpreter of the same version that the user can run, with this
environment's packages on PYTHONPATH, else with a readable copy of what clusterrun needs; without one the
test is skipped with the reason, and the check is the one in the README's "Deploying" section.
"""

from __future__ import annotations

import atexit
import functools
import grp
import os
import pwd
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from clusterrun.host import privileges

from helpers import FRESH, TEST_APPS, Cluster, assert_config_error, run_to_exit, wait_until

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs the tests to run as root")


def _nobody() -> tuple[pwd.struct_passwd, str]:
    user = pwd.getpwnam("nobody")
    return user, grp.getgrgid(user.pw_gid).gr_name  # nogroup on Debian, nobody on Fedora


@functools.cache
def _readable_python(user: pwd.struct_passwd) -> tuple[str, dict[str, str]] | None:
    """An interpreter and environment with which ``user`` can import clusterrun and the test apps; None: none.

    This environment's packages on PYTHONPATH first; where the user cannot read them (a tox environment is
    private to its owner, a venv may be in a private home), a copy of what clusterrun runs with.
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    paths = sysconfig.get_paths()
    pythons = (sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}")
    for site in ((paths["purelib"], paths["platlib"]), None):
        packages = site if site is not None else (str(_readable_copy()),)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(dict.fromkeys([*packages, str(TEST_APPS)]))}
        for python in pythons:
            try:
                probe = subprocess.run([python, "-c", "import clusterrun.worker.runtime, whoami_app"], env=env, cwd="/",
                                       user=user.pw_uid, group=user.pw_gid, extra_groups=[], capture_output=True,
                                       timeout=60)
            except OSError:
                continue  # not there, or not executable by the user
            if probe.returncode == 0:
                return python, env
    return None


def _readable_copy() -> Path:
    """clusterrun and the distributions it needs (its requirements, with the extras the test uses), copied into
    a folder anyone can read; removed when the tests end."""
    folder = Path(tempfile.mkdtemp(prefix="clusterrun-site-"))
    folder.chmod(0o755)
    atexit.register(shutil.rmtree, folder, True)
    # clusterrun itself from where it is imported: an editable install's files are a path hook, not a copy.
    import clusterrun.adapters

    shutil.copytree(Path(clusterrun.__file__).parent, folder / "clusterrun", ignore=_NO_CACHE)
    shutil.copytree(Path(clusterrun.adapters.__file__).parent, folder / "clusterrun" / "adapters", ignore=_NO_CACHE,
                    dirs_exist_ok=True)
    todo, seen = [Requirement("clusterrun[standard,metrics]")], set()
    while todo:
        wanted = todo.pop()
        try:
            dist = metadata.distribution(wanted.name)
        except metadata.PackageNotFoundError:
            continue  # an optional one that is not installed
        if dist.metadata["Name"].lower() in seen:
            continue
        seen.add(dist.metadata["Name"].lower())
        if wanted.name != "clusterrun":
            for file in dist.files or ():
                source = Path(str(dist.locate_file(file)))
                if file.parts[0] not in ("..", "__pycache__") and "__pycache__" not in file.parts and source.is_file():
                    (folder / file).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source, folder / file)
        for text in dist.requires or ():
            needed = Requirement(text)
            if needed.marker is None or any(needed.marker.evaluate({"extra": e}) for e in (*wanted.extras, "")):
                todo.append(needed)
    for entry in folder.rglob("*"):
        entry.chmod(0o755 if entry.is_dir() else 0o644)
    return folder


_NO_CACHE = shutil.ignore_patterns("__pycache__")


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A folder the user can enter (pytest's tmp_path is private to root): for the log files."""
    path = Path(tempfile.mkdtemp(prefix="clusterrun-user-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _status_ids(pid: int) -> dict[str, list[int]]:
    """The Uid, Gid (real, effective, saved, filesystem) and Groups lines of /proc/PID/status."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: [int(n) for n in rest.split()] for line in lines for key, _, rest in [line.partition(":")]
            if key in ("Uid", "Gid", "Groups")}


@ROOT_ONLY
@pytest.mark.parametrize("app", ["whoami_app:app", "whoami_app:asgi"])
def test_workers_run_as_the_user_while_the_primary_stays_root(app: str, public_dir: Path, tmp_path: Path) -> None:
    user, group = _nobody()
    found = _readable_python(user)
    if found is None:
        pytest.skip(f"no Python {sys.version_info.major}.{sys.version_info.minor} with clusterrun installed that "
                    f"{user.pw_name} can read (the tests' interpreter {sys.executable} is not)")
    python, env = found
    access = public_dir / "access.log"
    log = tmp_path / "clusterrun.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [python, "-m", "clusterrun", app, "--port", "0", "--workers", "1", "--user", user.pw_name,
             "--group", group, "--access-log", "--access-log-file", str(access), "--metrics", "127.0.0.1:0"],
            cwd=TEST_APPS, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    cluster = Cluster(proc, log)
    try:
        url = cluster.wait_ready()
        seen: dict[str, Any] = FRESH.get(url).json()
        assert (seen["uid"], seen["euid"], seen["gid"], seen["egid"]) == (user.pw_uid,) * 2 + (user.pw_gid,) * 2
        # The user's own supplementary groups (as su and systemd give them), none of root's.
        assert seen["groups"] == sorted(set(os.getgrouplist(user.pw_name, user.pw_gid))), seen
        worker = _status_ids(seen["pid"])
        assert worker["Uid"] == [user.pw_uid] * 4 and worker["Gid"] == [user.pw_gid] * 4, worker
        assert seen["pid"] in cluster.worker_pids()
        assert _status_ids(cluster.pid)["Uid"] == [0] * 4  # the primary keeps root
        assert seen["metrics_dir_writable"] is True  # the app's prometheus_client files, in the primary's folder

        # logrotate moves the access log away; SIGUSR1 reopens it in the primary (as root) and in the worker
        # (as the user): the worker's lines land in the new file, which belongs to the user.
        wait_until(lambda: access.exists() and access.stat().st_size > 0, "the first access line")
        assert (access.stat().st_uid, access.stat().st_gid) == (user.pw_uid, user.pw_gid)
        access.rename(public_dir / "access.log.1")
        cluster.signal(signal.SIGUSR1)
        cluster.wait_for_line(r"received SIGUSR1: reopening 1 log file")
        wait_until(lambda: FRESH.get(url + "/after-rotation").status_code == 200 and access.exists()
                   and "/after-rotation" in access.read_text(), "an access line in the reopened file")
        assert "cannot reopen" not in cluster.output()
        assert access.stat().st_uid == user.pw_uid
        cluster.signal(signal.SIGTERM)  # the primary stops the user's workers and cleans up as usual
        assert cluster.wait_exit() == 0, cluster.output()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_bad_user_and_group_values_are_named() -> None:
    assert_config_error(run_to_exit("whoami_app:app", "--user", "no-such-user-x", cwd=TEST_APPS), 2,
                        "unknown --user value 'no-such-user-x'", "no such user")
    assert_config_error(run_to_exit("whoami_app:app", "--user", "nobody", "--group", "no-such-group-x",
                                    cwd=TEST_APPS), 2, "unknown --group value 'no-such-group-x'")
    _user, group = _nobody()
    assert_config_error(run_to_exit("whoami_app:app", "--group", group, cwd=TEST_APPS), 2,
                        f"--group '{group}' needs --user")
    unnamed = next(uid for uid in range(40000, 50000) if not _known_uid(uid))
    assert_config_error(run_to_exit("whoami_app:app", "--user", str(unnamed), cwd=TEST_APPS), 2,
                        f"--user '{unnamed}' has no entry", "give --group too")
    from_env = run_to_exit("whoami_app:app", cwd=TEST_APPS, env={**os.environ, "CLUSTERRUN_USER": "no-such-user-x"})
    assert_config_error(from_env, 2, "unknown --user value 'no-such-user-x'", "environment variable CLUSTERRUN_USER")


def _known_uid(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def test_user_without_root_is_a_config_error() -> None:
    """Asking for another user while not root: exit 2 before anything starts (as root, the test runs the
    primary as nobody, with a Python nobody can read)."""
    if os.geteuid() != 0:
        result = run_to_exit("whoami_app:app", "--port", "0", "--user", "root", cwd=TEST_APPS)
    else:
        user, _group = _nobody()
        found = _readable_python(user)
        if found is None:
            pytest.skip(f"no Python that {user.pw_name} can read, to run the primary as that user")
        python, env = found
        result = subprocess.run([python, "-m", "clusterrun", "whoami_app:app", "--port", "0", "--user", "root"],
                                cwd=TEST_APPS, env=env, user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    runs_as = os.geteuid() or _nobody()[0].pw_uid
    assert_config_error(result, 2, "--user needs the primary to run as root", f"it runs as uid {runs_as}")


def test_the_ids_the_primary_has_already_need_no_root_and_the_group_defaults_to_the_users() -> None:
    """The same command works for a service already started as the user (systemd User=, a container)."""
    assert privileges.check(privileges.Target(os.geteuid(), os.getegid(), None)) is None
    user, _group = _nobody()
    assert privileges.resolve("nobody", "") == privileges.Target(user.pw_uid, user.pw_gid, "nobody")
    assert privileges.resolve(str(user.pw_uid), "") == privileges.Target(user.pw_uid, user.pw_gid, "nobody")
