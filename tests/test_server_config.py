"""Server configuration: flags over environment over file over defaults; every bad value named with its source."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contextfold import ConfigurationError
from contextfold.server._config import CONFIG_ENV, Limits, ModelRoute, ServerConfig, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    assert load_config(env={}) == ServerConfig()
    assert ServerConfig().limits == Limits()


def test_every_field_from_the_environment() -> None:
    env = {
        "CONTEXTFOLD_HOST": "0.0.0.0",
        "CONTEXTFOLD_PORT": "9000",
        "CONTEXTFOLD_DB": "postgresql://u:p@localhost/cf",
        "CONTEXTFOLD_UPSTREAM": "http://localhost:8000/v1",
        "CONTEXTFOLD_UPSTREAM_API_KEY": "sk-up",
        "CONTEXTFOLD_MODEL": "qwen",
        "CONTEXTFOLD_CONTEXT_WINDOW": "32768",
        "CONTEXTFOLD_QUEUE_TURNS": "yes",
        "CONTEXTFOLD_COMPACT_THRESHOLD": "0.9",
        "CONTEXTFOLD_COMPACT_TARGET": "0.4",
        "CONTEXTFOLD_LOG_FORMAT": "JSON",
        "CONTEXTFOLD_LOG_LEVEL": "Debug",
        "CONTEXTFOLD_LEASE_TTL": "12.5",
        "CONTEXTFOLD_MAX_BODY_BYTES": "1024",
        "CONTEXTFOLD_MAX_ITEMS_PER_REQUEST": "7",
    }
    config = load_config(env=env)
    assert config == ServerConfig(
        host="0.0.0.0",
        port=9000,
        db="postgresql://u:p@localhost/cf",
        upstream="http://localhost:8000/v1",
        upstream_api_key="sk-up",
        model="qwen",
        context_window=32768,
        queue_turns=True,
        compact_threshold=0.9,
        compact_target=0.4,
        log_format="json",
        log_level="debug",
        lease_ttl=12.5,
        limits=Limits(max_body_bytes=1024, max_items_per_request=7),
    )


def test_the_file_with_limits_and_routes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
port = 8500
queue_turns = true
compact_threshold = 0.75
[limits]
max_tool_output_bytes = 2048
[[models]]
name = "local"
provider = "openai-chat"
model = "Qwen/Qwen3-8B"
base_url = "http://localhost:8000/v1"
context_window = 32768
[[models]]
name = "claude"
provider = "anthropic"
api_key_env = "ANTHROPIC_API_KEY"
options = { timeout = 30 }
[[models]]
name = "work"
provider = "azure"
options = { resource = "acme", deployment = "gpt4o-prod", api_version = "2025-03-01-preview" }
""",
    )
    config = load_config(env={}, config_file=path)
    assert (config.port, config.queue_turns, config.compact_threshold) == (8500, True, 0.75)
    assert config.limits == Limits(max_tool_output_bytes=2048)
    local, claude, work = config.routes
    assert local == ModelRoute(
        "local", "openai-chat", model="Qwen/Qwen3-8B", base_url="http://localhost:8000/v1", context_window=32768
    )
    assert local.upstream_model == "Qwen/Qwen3-8B"
    assert claude.upstream_model == "claude"
    assert (claude.api_key_env, dict(claude.options)) == ("ANTHROPIC_API_KEY", {"timeout": "30.0"})
    assert dict(work.options) == {"resource": "acme", "deployment": "gpt4o-prod", "api_version": "2025-03-01-preview"}
    with pytest.raises(TypeError):
        work.options["deployment"] = "other"  # type: ignore[index]  # proves the mapping is read-only


def test_secrets_stay_out_of_the_repr() -> None:
    config = ServerConfig(upstream_api_key="sk-secret", routes=(ModelRoute("a", "anthropic", api_key="sk-ant"),))
    assert "sk-secret" not in repr(config)
    assert "sk-ant" not in repr(config)


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = 1111\nhost = "::1"\ndb = "file.db"\n')
    env = {"CONTEXTFOLD_PORT": "2222", "CONTEXTFOLD_DB": "env.db", CONFIG_ENV: str(path)}
    config = load_config({"port": 3333, "db": None}, env=env)
    assert (config.port, config.db, config.host) == (3333, "env.db", "::1")


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "flag": st.integers(1, 65_535),
            "env": st.integers(1, 65_535),
            "file": st.integers(1, 65_535),
        },
    )
)
def test_the_highest_source_wins(sources: dict[str, int]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "c.toml"
        path.write_text(f"port = {sources['file']}\n" if "file" in sources else "")
        env = {"CONTEXTFOLD_PORT": str(sources["env"])} if "env" in sources else {}
        config = load_config({"port": sources.get("flag")}, env=env, config_file=path)
    expected = sources.get("flag", sources.get("env", sources.get("file", ServerConfig().port)))
    assert config.port == expected


def test_the_config_file_is_found_by_flag_env_or_argument(tmp_path: Path) -> None:
    first, second = tmp_path / "a.toml", tmp_path / "b.toml"
    first.write_text("port = 1001\n")
    second.write_text("port = 1002\n")
    assert load_config({"config": str(first)}, env={CONFIG_ENV: str(second)}).port == 1001
    assert load_config(env={CONFIG_ENV: str(second)}).port == 1002
    assert load_config({"config": str(first)}, env={}, config_file=second).port == 1002


def test_an_empty_environment_variable_is_unset() -> None:
    assert load_config(env={"CONTEXTFOLD_UPSTREAM": "", "CONTEXTFOLD_PORT": ""}) == ServerConfig()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ({"port": "eighty"}, {}, "port must be an integer from 1 to 65535, got 'eighty' (from --port)"),
        ({}, {"CONTEXTFOLD_PORT": "70000"}, "got '70000' (from CONTEXTFOLD_PORT)"),
        ({}, {"CONTEXTFOLD_PORT": "²"}, "got '²' (from CONTEXTFOLD_PORT)"),
        ({"context_window": 0}, {}, "context_window must be a positive integer, got 0 (from --context-window)"),
        ({"compact_threshold": "1.5"}, {}, "compact_threshold must be a fraction of the budget above 0"),
        ({"compact_target": "nan"}, {}, "compact_target must be a fraction of the budget between 0 and 1"),
        ({"compact_target": 0.9}, {}, "compact_target 0.9 (from --compact-target) must be below compact_threshold"),
        ({"queue_turns": "maybe"}, {}, "queue_turns must be true or false"),
        ({"log_format": "xml"}, {}, "log_format must be one of text, json, got 'xml'"),
        ({}, {"CONTEXTFOLD_LOG_LEVEL": "loud"}, "log_level must be one of debug, info"),
        ({"upstream": "localhost:8000"}, {}, "upstream must be an http:// or https:// URL"),
        ({"host": " "}, {}, "host must be a non-empty string"),
        ({"lease_ttl": -1}, {}, "lease_ttl must be a positive number of seconds"),
        ({"max_body_bytes": "1k"}, {}, "max_body_bytes must be a positive integer, got '1k' (from --max-body-bytes)"),
        ({"model": "gpt-4o"}, {}, "the default model 'gpt-4o' (from --model) is not served"),
        ({"model": "two words"}, {}, "model must be a model name without spaces"),
        ({"prot": 1}, {}, "unknown configuration argument(s) prot"),
    ],
)
def test_bad_values_name_key_source_and_what_is_accepted(
    args: dict[str, object], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_config(args, env=env)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prot = 1\n", "server.toml:prot; known: host, port"),
        ("port = true\n", "port must be an integer from 1 to 65535, got True (from "),
        ("[limits]\nmax_body = 1\n", "server.toml:limits.max_body; known: max_body_bytes"),
        ("[[models]]\nname = 'x'\n", "has no 'provider'"),
        ("[[models]]\nname = 'x'\nprovider = 'openai'\n", "provider must be one of openai-chat, openai-responses"),
        ("[[models]]\nname = 'test'\nprovider = 'openai-chat'\n", "'test' is reserved for the built-in test model"),
        (
            "[[models]]\nname = 'a'\nprovider = 'gemini'\n[[models]]\nname = 'a'\nprovider = 'cohere'\n",
            "models[1].name 'a' is taken by another route",
        ),
        ("[[models]]\nname = 'a'\nprovider = 'azure'\n", "needs its endpoint: set base_url"),
        ("[[models]]\nname = 'a'\nprovider = 'anthropic'\napi_key = 'k'\napi_key_env = 'K'\n", "keep one"),
        ("[[models]]\nname = 'a'\nprovider = 'bedrock'\napi_key = 'k'\n", "takes no api_key: bedrock signs"),
        ("[[models]]\nname = 'a'\nprovider = 'test'\nbase_url = 'http://x'\n", "takes no base_url"),
        ("[[models]]\nname = 'a'\nprovider = 'gemini'\nurl = 'http://x'\n", "unknown key(s) url in"),
        ("[[models]]\nname = 'a'\nprovider = 'gemini'\noptions = { region = 'x' }\n", "unknown option"),
        ("[[models]]\nname = 'a'\nprovider = 'gemini'\ncontext_window = -5\n", "models[0].context_window"),
        ("models = 3\n", "models must be [[models]] tables"),
        ("limits = 3\n", "limits must be a [limits] table, got 3"),
        ("port = \n", "is not valid TOML"),
    ],
)
def test_bad_files_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigurationError) as caught:
        load_config(env={}, config_file=path)
    assert message in str(caught.value)


def test_a_missing_file_names_where_it_was_given(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"does not exist") as caught:
        load_config(env={CONFIG_ENV: str(tmp_path / "nope.toml")})
    assert CONFIG_ENV in str(caught.value)


def test_the_default_model_may_be_a_route_or_go_upstream(tmp_path: Path) -> None:
    path = write(tmp_path, "[[models]]\nname = 'local'\nprovider = 'openai-chat'\nbase_url = 'http://localhost:1'\n")
    assert load_config({"model": "local"}, env={}, config_file=path).model == "local"
    upstream = load_config({"model": "qwen", "upstream": "http://localhost:8000/v1"}, env={})
    assert upstream.model == "qwen"


_FIELDS = st.sampled_from(
    ["HOST", "PORT", "DB", "UPSTREAM", "MODEL", "CONTEXT_WINDOW", "QUEUE_TURNS", "COMPACT_THRESHOLD",
     "COMPACT_TARGET", "LOG_FORMAT", "LOG_LEVEL", "LEASE_TTL", "MAX_BODY_BYTES"]
)  # fmt: skip


@given(st.dictionaries(_FIELDS.map(lambda f: "CONTEXTFOLD_" + f), st.text(max_size=12), max_size=6))
def test_any_environment_gives_a_config_or_a_configuration_error(env: dict[str, str]) -> None:
    error: ConfigurationError | None = None
    try:
        config = load_config(env=env)
    except ConfigurationError as exc:
        error = exc
    if error is not None:  # every message says where the bad value came from
        assert "(from CONTEXTFOLD_" in str(error)
    else:
        assert 0 < config.compact_target < config.compact_threshold <= 1
        assert 1 <= config.port <= 65_535
