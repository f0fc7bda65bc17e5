"""The provider table (`models/_specs.py`): it covers every adapter, each row builds its adapter, and the server's
config, registry and doctor read it (a provider's options, keys and forwarding come from its row)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

import contextfold.models as models
from contextfold import ConfigurationError
from contextfold.models import StreamingModel
from contextfold.models._specs import SPECS, Route
from contextfold.server._config import FORWARDABLE, PROVIDERS, load_config


def _adapters() -> set[type[StreamingModel]]:
    for info in pkgutil.iter_modules(models.__path__):
        importlib.import_module(f"{models.__name__}.{info.name}")
    found: set[type[StreamingModel]] = set()
    todo = [StreamingModel]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith(models.__name__):
                found.add(sub)
            todo.append(sub)
    return found


async def test_every_adapter_has_a_row_that_builds_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")  # bedrock signs with the environment's credentials
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    built: set[type[object]] = set()
    for spec in SPECS.values():
        if spec.build is None:
            continue
        options = {"region": "eu-west-1", "deployment": "d", "resource": "r"}
        provider, model = spec.build(Route("key", "http://127.0.0.1:9/v1", 5.0, options, "some-model"))
        try:
            assert model.name == "some-model"
            built.add(type(model))
        finally:
            await provider.aclose()
    scripted = {cls for cls in _adapters() if cls.__module__.endswith("_scripted")}
    assert _adapters() - scripted <= built


def test_the_config_reads_the_table(tmp_path: Path) -> None:
    assert tuple(SPECS) == PROVIDERS
    assert set(FORWARDABLE) == {name for name, spec in SPECS.items() if spec.forwardable}
    for name, spec in SPECS.items():
        if spec.keyless is None or name == "test":
            continue
        path = tmp_path / f"{name}.toml"
        path.write_text(f'[[models]]\nname = "m"\nprovider = "{name}"\nmodel = "x"\napi_key = "k"\n')
        with pytest.raises(ConfigurationError, match=f"takes no api_key: {spec.keyless}"):
            load_config({}, {}, path)
    path = tmp_path / "options.toml"
    path.write_text('[[models]]\nname = "m"\nprovider = "gemini"\nmodel = "x"\noptions = {region = "a"}\n')
    with pytest.raises(ConfigurationError, match=r"accepted: timeout, first_byte_timeout, turn_timeout$"):
        load_config({}, {}, path)
