"""The apps file's [[apps]] tables as config/sources.py reads them, and a one-app file read as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterrun.config.sources import read_file
from clusterrun.errors import ConfigError


def test_one_app_reads_as_it_always_did(tmp_path: Path) -> None:
    found = read_file(str(_write(tmp_path, 'app = "env_app:app"\nworkers = 3\n')), None)
    assert found is not None
    assert (found.app, dict(found.values), found.apps) == ("env_app:app", {"workers": 3}, ())


def test_apps_tables_carry_options_cwd_env_and_named_envs(tmp_path: Path) -> None:
    found = read_file(str(_write(tmp_path, """
[[apps]]
name = "api"
app = "env_app:app"
cwd = "sub"
max-requests = 5
env = {A = "1", B = 2}
[apps.env_production]
A = "prod"
""")), None)
    assert found is not None
    (api,) = found.apps
    assert (api.name, api.app, api.cwd) == ("api", "env_app:app", str(tmp_path / "sub"))
    assert dict(api.values) == {"max_requests": 5}
    assert api.environment("") == {"A": "1", "B": "2"}
    assert api.environment("production") == {"A": "prod", "B": "2"}
    assert api.environment("staging") == {"A": "1", "B": "2"}  # no such table: its env, as PM2


@pytest.mark.parametrize(("text", "expected"), [
    ('[[apps]]\nname = "a"\napp = "m:a"\nport = 9001\n[[apps]]\nname = "a"\napp = "m:b"\nport = 9002\n',
     "two apps are named 'a'"),
    ('[[apps]]\nname = "a"\napp = "m:a"\nport = 9001\n[[apps]]\nname = "b"\napp = "m:b"\nbind = "127.0.0.1:9001"\n',
     "apps 'a' and 'b' in clusterrun.toml both listen on 127.0.0.1:9001"),
    ('[[apps]]\nname = "a"\napp = "m:a"\n[[apps]]\nname = "b"\napp = "m:b"\n',
     "both listen on 127.0.0.1:8000"),
    ('[[apps]]\napp = "m:a"\n', "has no name"),
    ('[[apps]]\nname = "a"\n', "app 'a' in clusterrun.toml [[apps]] 'a' has no app"),
    ('[[apps]]\nname = "a"\napp = "m:a"\nworkerz = 2\n', "unknown key 'workerz'"),
    ('[[apps]]\nname = "a"\napp = "m:a"\npid-file = "x.pid"\n', "is set by clusterrun start"),
    ('[[apps]]\nname = "a"\napp = "m:a"\nno-control = true\n', "key 'no-control' in clusterrun.toml [[apps]] 'a'"),
    ('[[apps]]\nname = "a"\napp = "m:a"\nenv = {A = [1]}\n', "bad clusterrun.toml [[apps]] 'a' env value 'A'"),
    ('apps = "x"\n', "write each app as an [[apps]] table"),
])
def test_a_bad_apps_table_is_refused_with_the_fix(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        read_file(str(_write(tmp_path, text)), None)
    assert expected in str(raised.value)


def test_two_apps_on_port_0_do_not_collide(tmp_path: Path) -> None:
    found = read_file(str(_write(tmp_path, '[[apps]]\nname = "a"\napp = "m:a"\nport = 0\n'
                                           '[[apps]]\nname = "b"\napp = "m:b"\nport = 0\n')), None)
    assert found is not None and [app.name for app in found.apps] == ["a", "b"]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "clusterrun.toml"
    path.write_text(text)
    return path
