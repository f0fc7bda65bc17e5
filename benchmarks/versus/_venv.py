"""The Python 3.12 virtual environments the other systems run in, created once and cached.

Llama Stack and the OpenHands SDK each get their own environment under `benchmarks/results/venvs/` (gitignored),
named after the exact requirements installed into it, so changing a pin builds a new one and a rerun reuses the
old. An environment counts as built only once `pip install` succeeded (a marker file holds what pip reports as
installed), so an interrupted install is started again rather than half used. Installing takes minutes; progress
goes to stderr and pip's own output to a log beside the environment.

Python 3.12 is found as `$CONTEXTFOLD_BENCH_PYTHON312`, else `python3.12` on the PATH, else pyenv's 3.12.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .._stores import RESULTS, progress

VENVS = RESULTS / "venvs"


@dataclass(frozen=True)
class Env:
    """One environment: a name, what `pip install` gets, and the distributions whose versions the tables report."""

    name: str
    requirements: tuple[str, ...]
    report: tuple[str, ...]

    @property
    def path(self) -> Path:
        digest = hashlib.sha256("\n".join(self.requirements).encode()).hexdigest()[:10]
        return VENVS / f"{self.name}-{digest}"

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


LLAMA_STACK = Env(
    "llama-stack",
    # `mcp` 2 removed names llama-stack 0.7.3 imports at startup. Its Responses provider needs a vector_io provider,
    # and the vector_io helpers import chardet and pypdf, which `pip install llama-stack` does not bring
    # (`llama stack list-deps` lists them among the distribution's extras).
    ("llama-stack==0.7.3", "mcp<2", "chardet==7.7.0", "pypdf==7.1.0"),
    ("llama-stack", "llama-stack-api", "mcp", "openai", "fastapi", "uvicorn", "aiosqlite", "sqlalchemy", "tiktoken"),
)
OPENHANDS = Env(
    "openhands",
    # 1.58.1 and 1.58.2 require certifi>=2026.10.19, which PyPI does not serve yet; 1.58.0 is the newest that installs.
    ("openhands-sdk==1.58.0",),
    ("openhands-sdk", "pydantic", "litellm"),
)


TIKTOKEN_LITELLM = "litellm==1.105.3"
"""A wheel that ships tiktoken's cl100k_base encoding file (litellm bundles it for offline use)."""
CL100K_CACHE_NAME = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
"""tiktoken's cache file name for cl100k_base (the SHA-1 of its download URL); tiktoken checks the content's hash."""


def python312() -> str:
    """A Python 3.12 interpreter to build the environments with, or a clear error saying how to provide one."""
    candidates = [os.environ.get("CONTEXTFOLD_BENCH_PYTHON312"), shutil.which("python3.12")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += [str(p) for p in sorted(pyenv_root.glob("versions/3.12*/bin/python3"), reverse=True)]
    for candidate in candidates:
        if candidate and _is_312(candidate):
            return candidate
    raise RuntimeError(
        "the side-by-side benchmarks need Python 3.12 for Llama Stack and the OpenHands SDK: install it "
        "(e.g. `pyenv install 3.12`) or set CONTEXTFOLD_BENCH_PYTHON312 to its interpreter"
    )


def _is_312(candidate: str) -> bool:
    """Whether `candidate` runs and is 3.12 (a pyenv shim exists even where it cannot run that version)."""
    try:
        done = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return False
    return done.stdout.strip() == "True"


def ensure(env: Env) -> Path:
    """The environment's python, installing it first if it is not built yet."""
    marker = env.path / "installed.json"
    if marker.exists():
        return env.python
    if env.path.exists():
        shutil.rmtree(env.path)  # a previous install that did not finish
    VENVS.mkdir(parents=True, exist_ok=True)
    progress(f"creating {env.path.name} (Python 3.12): pip install {' '.join(env.requirements)} (a few minutes)")
    subprocess.run([python312(), "-m", "venv", str(env.path)], check=True)
    log = env.path / "pip.log"
    with log.open("w") as out:
        done = subprocess.run(
            [str(env.python), "-m", "pip", "install", "--disable-pip-version-check", *env.requirements],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0:
        tail = "".join(line for line in log.read_text().splitlines(keepends=True)[-15:] if "WARNING" not in line)
        raise RuntimeError(f"pip install {' '.join(env.requirements)} failed (full log: {log}):\n{tail}")
    marker.write_text(json.dumps(versions(env), indent=1) + "\n")
    return env.python


def versions(env: Env) -> dict[str, str]:
    """Installed versions of the distributions `env` reports (and the interpreter's)."""
    script = (
        "import importlib.metadata as m, json, platform, sys\n"
        "out = {'python': platform.python_version()}\n"
        "for name in sys.argv[1:]:\n"
        "    try: out[name] = m.version(name)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([str(env.python), "-c", script, *env.report], capture_output=True, text=True, check=True)
    result: dict[str, str] = json.loads(done.stdout)
    return result


def installed(env: Env) -> str:
    """`llama-stack 0.7.3, mcp 1.26.0, …`: what the tables' notes say was measured."""
    return ", ".join(f"{name} {version}" for name, version in versions(env).items())


def tiktoken_cache() -> Path:
    """A `TIKTOKEN_CACHE_DIR` holding cl100k_base, which Llama Stack's vector_io provider loads at startup.

    tiktoken would download it from outside the package registries, which this benchmark must not need; the same
    file ships inside the litellm wheel on PyPI, so it is taken from there once (the wheel is not installed).
    """
    cache = VENVS / "tiktoken"
    if (cache / CL100K_CACHE_NAME).exists():
        return cache
    python = ensure(LLAMA_STACK)
    wheels = VENVS / "wheels"
    progress(f"fetching tiktoken's cl100k_base from the {TIKTOKEN_LITELLM} wheel")
    command = [str(python), "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(wheels)]
    done = subprocess.run([*command, TIKTOKEN_LITELLM], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"pip download {TIKTOKEN_LITELLM} failed:\n{done.stderr[-2000:]}")
    (wheel,) = wheels.glob("litellm-*.whl")
    member = f"litellm/litellm_core_utils/tokenizers/{CL100K_CACHE_NAME}"
    cache.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        (cache / CL100K_CACHE_NAME).write_bytes(archive.read(member))
    wheel.unlink()
    return cache


# The compaction proxies of `versus proxies`, each in its own environment (their dependencies differ: ctxkeeper is
# the standard library only, context-guardian FastAPI, cliffcompaction Starlette, LiteLLM's proxy a great deal).
CTXKEEPER = Env("ctxkeeper", ("ctxkeeper==1.2.0",), ("ctxkeeper",))
CONTEXT_GUARDIAN = Env(
    "context-guardian", ("context-guardian==0.12.0",), ("context-guardian", "fastapi", "uvicorn", "httpx")
)
CLIFFCOMPACTION = Env(
    "cliffcompaction", ("cliffcompaction==0.1.0",), ("cliffcompaction", "starlette", "uvicorn", "httpx")
)
LITELLM = Env(
    "litellm-proxy",
    # 1.105.3, the release the tiktoken file above comes from (and older than 1.107.0, a compromised upload).
    ("litellm[proxy]==1.105.3",),
    ("litellm", "fastapi", "uvicorn", "httpx", "openai"),
)
