"""The docs against the code: the generated settings page is fresh, every flag of `clusterrun --help` is on a page,
the README stays a short door (at most 250 lines) whose links lead somewhere, and the layout names every package.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType

from helpers import run_to_exit

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomli as tomllib


def generator() -> ModuleType:
    """docs/gen_settings.py, loaded by its path: docs/ is no package, and the test must use the script itself."""
    spec = importlib.util.spec_from_file_location("gen_settings", DOCS / "gen_settings.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pages() -> dict[str, str]:
    return {path.name: path.read_text(encoding="utf-8") for path in sorted(DOCS.glob("*.md"))}


def test_the_settings_page_is_what_the_option_table_gives() -> None:
    gen = generator()
    committed = (DOCS / "settings.md").read_text(encoding="utf-8")
    assert committed == gen.render(), f"docs/settings.md is stale: run `{gen.COMMAND}` and commit the page"


@functools.cache
def help_flags() -> frozenset[str]:
    """The long flags `clusterrun --help` lists, read from its option lines (wide, so that no line wraps)."""
    result = run_to_exit("--help", env={**os.environ, "COLUMNS": "1000"})
    assert result.returncode == 0, result.stderr
    flags: set[str] = set()
    for line in result.stdout.splitlines():
        match = re.match(r"  (-\S.*?)(?:\s{2,}|$)", line)  # "  -w N|auto|Kx, --workers N|auto|Kx   help"
        if match:
            flags.update(re.findall(r"--[a-z][a-z0-9-]*", match.group(1)))
    return frozenset(flags)


def test_every_long_flag_of_help_is_on_a_docs_page() -> None:
    flags = help_flags()
    assert {"--workers", "--bind", "--config", "--version", "--no-proxy-headers"} <= flags  # the reading works
    text = "\n".join(pages().values())
    missing = sorted(flag for flag in flags if not re.search(re.escape(flag) + r"(?![\w-])", text))
    assert not missing, f"flags of clusterrun --help on no page of docs/: {missing}"


def test_the_options_by_task_name_only_real_flags() -> None:
    # getting-started.md's table of options by task is written by hand: a flag renamed or removed must leave it.
    flags = help_flags()
    rows = [line for line in pages()["getting-started.md"].splitlines() if line.startswith("| `-")]
    assert len(rows) > 30
    named = {flag for row in rows for flag in re.findall(r"--[a-z][a-z0-9-]*", row.split(" | ")[0])}
    assert sorted(named - flags) == [], "getting-started.md names flags clusterrun --help does not list"


def test_the_readme_is_at_most_250_lines() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move the detail to a page of docs/"


def test_the_readmes_links_lead_to_files_that_exist() -> None:
    text = README.read_text(encoding="utf-8")
    targets = [target for target in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in target]
    assert any(target.startswith("docs/") for target in targets)
    for target in targets:
        path = target.split("#", 1)[0]
        assert path and (ROOT / path).exists(), f"README.md links to {target}, which is not in the repository"


def test_the_docs_pages_are_all_in_the_site_nav() -> None:
    # mkdocs --strict warns of a page left out of nav only when it builds; this says so without mkdocs.
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert sorted(name for name in pages() if name not in nav) == []


def test_the_layout_names_every_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = project["tool"]["setuptools"]["packages"]
    layout = pages()["contributing.md"]
    for package in packages:
        parts = package.split(".")
        folder = "/".join(parts[1:] if parts[:2] == ["clusterrun", "adapters"] else parts) + "/"
        assert f"`{folder}" in layout, f"docs/contributing.md's layout does not name {package} ({folder})"


def test_ci_runs_the_readmes_test_command_verbatim() -> None:
    # CI must run what a newcomer is told to run: the README's second set-up command, as written.
    text = README.read_text(encoding="utf-8")
    block = re.search(r"Run the tests[^\n]*\n+```\n(.+?)\n```", text, re.DOTALL)
    assert block, "README.md has no 'Run the tests' command block"
    command = block.group(1).strip()
    assert "tox" in command
    assert command in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
