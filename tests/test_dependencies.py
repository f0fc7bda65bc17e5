"""What the code imports is what pyproject.toml declares: `pip install .` gives a working CLI and server.

A third-party module that only arrives as a dependency of a dependency (httpx through cohere, pydantic through
fastapi) works in the development environment and breaks a plain install the day that dependency changes; so every
module a file imports must be declared by the distribution set that file runs with: the core dependencies for
everything but the provider adapters, the adapter's extra for those, the dev extra for the tests.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from contextfold import models

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "contextfold"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return _normalise(match.group())


def _normalise(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _declared(extra: str | None) -> set[str]:
    """The distributions installing the core (extra None) or `contextfold[extra]` brings, self-references expanded."""
    requirements = PYPROJECT["dependencies"] if extra is None else PYPROJECT["optional-dependencies"][extra]
    names = set() if extra is None else _declared(None)
    for requirement in requirements:
        if requirement.startswith("contextfold["):
            for inner in requirement[len("contextfold[") : requirement.index("]")].split(","):
                names |= _declared(inner.strip())
        else:
            names.add(_name(requirement))
    return names


def _imports(path: Path) -> Iterator[str]:
    """The top-level third-party modules a file imports (stdlib and contextfold's own left out)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        for module in modules:
            top = module.split(".")[0]
            if top not in sys.stdlib_module_names and top not in {"contextfold", "tests", "benchmarks"}:
                yield top


_OPTIONAL = {
    "_tracing.py": "otel",
    "runtime/_mcp.py": "mcp",
    "runtime/_ingest.py": "pdf",
    "store/_knowledge_vectors.py": "embeddings",
}
"""Source files that import an optional package (lazily, failing with a message naming their extra)."""

_LOADED_BY_OTHERS = {"psycopg-binary", "httptools", "python-multipart"}
"""Declared, never imported by us: psycopg loads its binary build, uvicorn its parser, starlette the upload parser."""


def _extra_of(path: Path) -> str | None:
    """The extra a source file needs: a provider adapter's (and its helpers', `_bedrock_render`), an optional
    feature's (`_OPTIONAL`), or none."""
    if (optional := _OPTIONAL.get(path.relative_to(SRC).as_posix())) is not None:
        return optional
    if path.parent != SRC / "models":
        return None
    for module, extra in models._ADAPTERS.values():
        if extra and (path.stem == module or path.stem.startswith(f"{module}_")):
            return extra
    return None


_DISTRIBUTIONS = importlib.metadata.packages_distributions()


def _undeclared(files: list[Path], extra_of: dict[Path, str | None]) -> list[str]:
    wrong = []
    for path in files:
        allowed = _declared(extra_of[path])
        for module in _imports(path):
            providers = {_normalise(d) for d in _DISTRIBUTIONS.get(module, [])}
            if not providers & allowed:
                extra = extra_of[path]
                where = "the dependencies" if extra is None else f"the {extra!r} extra"
                wrong.append(f"{path.relative_to(ROOT)} imports {module} ({sorted(providers)}), not in {where}")
    return wrong


def test_every_module_the_source_imports_is_declared_where_the_file_runs() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert _undeclared(files, {path: _extra_of(path) for path in files}) == []


def test_every_module_the_tests_import_is_in_the_dev_extra() -> None:
    # tests/sdk_clients/ runs in the SDK venv, from its own requirements.txt (see scripts/sdk-venv.sh)
    files = sorted(p for p in (ROOT / "tests").rglob("*.py") if "sdk_clients" not in p.parts)
    assert _undeclared(files, dict.fromkeys(files, "dev")) == []


def test_every_declared_dependency_is_imported_by_the_code_that_needs_it() -> None:
    """The other direction: a core dependency nothing imports is weight on every install (or a stale name)."""
    files = sorted(SRC.rglob("*.py"))
    imported: dict[str | None, set[str]] = {}
    for path in files:
        for module in _imports(path):
            imported.setdefault(_extra_of(path), set()).update(_normalise(d) for d in _DISTRIBUTIONS.get(module, []))
    assert {_name(r) for r in PYPROJECT["dependencies"]} - imported[None] - _LOADED_BY_OTHERS == set()
    for extra in ("anthropic", "gemini", "cohere", "bedrock"):
        own = {_name(r) for r in PYPROJECT["optional-dependencies"][extra]}
        assert own - imported.get(extra, set()) == set(), extra


@pytest.mark.parametrize(
    ("adapter", "sdk", "extra"),
    [
        ("AnthropicModel", "anthropic", "anthropic"),
        ("GeminiProvider", "google", "gemini"),
        ("CohereModel", "cohere", "cohere"),
        ("BedrockProvider", "boto3", "bedrock"),
    ],
)
def test_an_adapter_whose_sdk_is_missing_names_the_extra_to_install(adapter: str, sdk: str, extra: str) -> None:
    # a real interpreter where the SDK cannot be imported (None in sys.modules fails `import`), as after `pip install .`
    code = f"import sys; sys.modules[{sdk!r}] = None\nfrom contextfold.models import {adapter}"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, check=False)
    assert run.returncode == 1
    assert f"ImportError: {adapter} needs the {extra!r} extra: pip install 'contextfold[{extra}]'" in run.stderr
