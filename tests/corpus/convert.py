"""Bring gunicorn's request corpus (its tests/requests) into tests/corpus/gunicorn, expectations as JSON.

Usage: python tests/corpus/convert.py GUNICORN_CHECKOUT

gunicorn writes each expectation as a small Python file beside its raw request (``NAME.http``): ``request =``
a dict (or a list of dicts, one per pipelined request) for a valid file, or the exception class gunicorn raises
for an invalid one, and sometimes ``cfg.set(NAME, VALUE)`` lines for the options the case needs. This script
never runs those files: it reads them with ``ast`` and accepts only literals, the calls ``uri("...")`` and
``cfg.set(...)``, and the bare names of gunicorn's exceptions. The ``.http`` files are copied as they are
(their format: line breaks are not data; ``\\r\\n``, ``\\n``, ``\\t``, ``\\0`` and ``\\xHH`` are escapes; see
tests/adapters/test_corpus.py). The corpus is gunicorn's, MIT-licensed: its LICENSE is copied beside it.
"""

from __future__ import annotations

import ast
import json
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent / "gunicorn"


_METHODS = ("decode", "encode", "replace")  # a literal's own methods, as gunicorn's 099 and obs-fold files use


def _value(node: ast.expr, names: dict[str, Any]) -> Any:
    """A literal, ``uri("...")`` as its raw text, a name assigned before, or a literal's decode/encode/replace
    with literal arguments; anything else is refused."""
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "uri":
        (arg,) = node.args
        return {"uri": ast.literal_eval(arg)}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _METHODS:
        receiver = _value(node.func.value, names)
        assert isinstance(receiver, (str, bytes)), ast.dump(node)
        return getattr(receiver, node.func.attr)(*(ast.literal_eval(arg) for arg in node.args))
    if isinstance(node, ast.Dict):
        return {ast.literal_eval(k): _value(v, names) for k, v in zip(node.keys, node.values, strict=True)
                if k is not None}
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_value(item, names) for item in node.elts]
    return ast.literal_eval(node)


def _jsonable(value: Any) -> Any:
    """bytes as ``{"bytes": latin-1 text}``, the rest as it is."""
    if isinstance(value, bytes):
        return {"bytes": value.decode("latin-1")}
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    return value


def expectation(source: str) -> dict[str, Any]:
    """What one expectation file says: ``request`` (dicts, or the exception's name) and ``cfg`` (name: value)."""
    result: dict[str, Any] = {"cfg": {}}
    names: dict[str, Any] = {}  # req1 = {...}; request = [req1, req2]
    for statement in ast.parse(source).body:
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(statement, ast.Assign):
            (target,) = statement.targets
            assert isinstance(target, ast.Name), ast.dump(statement)
            if target.id == "cfg":
                continue  # cfg = Config(): the options follow as cfg.set calls
            node = statement.value
            if target.id != "request":
                names[target.id] = _value(node, names)
            elif isinstance(node, ast.Name) and node.id not in names:
                result["error"] = node.id  # the exception gunicorn raises
            else:
                value = _value(node, names)
                result["requests"] = _jsonable(value if isinstance(value, list) else [value])
            continue
        call = statement.value if isinstance(statement, ast.Expr) else None
        if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "set"
                and isinstance(call.func.value, ast.Name) and call.func.value.id == "cfg"):
            name, value = (ast.literal_eval(arg) for arg in call.args)
            result["cfg"][name] = value
            continue
        raise ValueError(f"unexpected statement: {ast.dump(statement)}")
    return result


def main(checkout: Path) -> None:
    for kind in ("valid", "invalid"):
        source, target = checkout / "tests" / "requests" / kind, HERE / kind
        target.mkdir(parents=True, exist_ok=True)
        expectations = {}
        for http in sorted(source.glob("*.http")):
            shutil.copyfile(http, target / http.name)
            expectations[http.stem] = expectation(http.with_suffix(".py").read_text())
        (target / "expectations.json").write_text(json.dumps(expectations, indent=1, sort_keys=True) + "\n")
    shutil.copyfile(checkout / "LICENSE", HERE / "LICENSE")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
