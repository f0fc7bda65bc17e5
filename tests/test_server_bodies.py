"""`POST /v1/responses`' body, decoded by msgspec (`_schemas.decode_create`) past FastAPI, beside its documented
pydantic model (`_documented.ResponseCreate`, what /openapi.json shows and what words the errors): for every JSON
body, msgspec takes it as the same values pydantic would, or leaves it to pydantic, which takes it (its lax rules) or
refuses it naming what is wrong; over HTTP no body is a 500. And the hot routes keep the edge's behaviours."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contextfold._errors import InvalidRequestError
from contextfold.server import ServerConfig
from contextfold.server.responses import _documented as documented
from contextfold.server.responses._schemas import MAX_JSON_DEPTH, ResponseCreate, decode_create

from .server_fixtures import Served, check_error, serving

FIELDS = tuple(ResponseCreate.__struct_fields__)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)
# values that are near what each field takes, so that generated bodies pass as often as they fail
plausible = st.one_of(
    json_values,
    st.sampled_from(["auto", "none", "required", "disabled", "test", "5", "true", "1.5", ""]),
    st.integers(min_value=-2, max_value=40),
    st.floats(min_value=-1, max_value=3),
    st.builds(lambda i: {"id": i}, st.text(max_size=5)),
    st.lists(st.builds(lambda t: {"type": "compaction", "threshold": t}, st.floats(0, 1) | st.just("x")), max_size=2),
    st.dictionaries(st.text(max_size=70), st.text(max_size=3), max_size=18),
    st.lists(st.sampled_from(["file_search_call.results", "x", {"type": "g"}]), max_size=3),
)
bodies = st.dictionaries(st.sampled_from([*FIELDS, "unknown", "extra"]), plausible, max_size=6)


def _pydantic(raw: bytes) -> documented.ResponseCreate | None:
    """What FastAPI makes of the body (its JSON reading, then the model), or None when it refuses it."""
    try:
        return documented.ResponseCreate.model_validate(json.loads(raw))
    except (pydantic.ValidationError, InvalidRequestError):
        return None


@settings(max_examples=400, deadline=None)
@given(bodies)
def test_msgspec_takes_a_body_as_pydantic_does_or_leaves_it_to_pydantic(body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    fast = decode_create(raw)
    model = _pydantic(raw)
    if fast is not None:
        assert model is not None, body  # never laxer than the documented model
        assert msgspec.json.encode(fast) == msgspec.json.encode(model.decoded()), body  # the same values, 1 not 1.0
    # what msgspec leaves is pydantic's to take (its lax rules: "5" for 5) or refuse, naming the field


def test_the_struct_and_the_documented_model_have_the_same_fields_and_defaults() -> None:
    assert tuple(documented.ResponseCreate.model_fields) == FIELDS
    assert documented.ResponseCreate().decoded() == ResponseCreate()


def test_a_body_too_deep_is_left_to_the_model_even_in_a_field_msgspec_skips() -> None:
    deep: Any = "x"
    for _ in range(MAX_JSON_DEPTH + 1):
        deep = [deep]
    assert decode_create(json.dumps({"input": "hi", "unknown": deep}).encode()) is None
    assert _pydantic(json.dumps({"input": "hi", "unknown": deep}).encode()) is None
    shallow = {"input": "hi", "unknown": [[{"a": [1]}]] * 40}  # many brackets, none deep
    assert decode_create(json.dumps(shallow).encode()) == ResponseCreate(input="hi")


def test_openapi_documents_the_same_request_body(served: Served) -> None:
    document = served.app.openapi()
    operation = document["paths"]["/v1/responses"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ResponseCreate"}
    component = document["components"]["schemas"]["ResponseCreate"]
    assert tuple(component["properties"]) == FIELDS
    assert component["properties"]["max_output_tokens"]["anyOf"][0] == {"type": "integer", "minimum": 1}
    assert document["components"]["schemas"]["ConversationRef"]["required"] == ["id"]
    assert "CompactionSetting" in document["components"]["schemas"]


async def test_the_served_openapi_document_is_the_apps(served: Served) -> None:
    reply = await served.http.get("/openapi.json")
    assert reply.status_code == 200
    assert reply.json()["paths"]["/v1/responses"]["post"] == served.app.openapi()["paths"]["/v1/responses"]["post"]


bad_bodies = st.dictionaries(st.sampled_from(FIELDS), json_values | plausible, min_size=1, max_size=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bad_bodies)
async def test_no_body_is_a_500_and_a_refusal_names_what_is_wrong(served: Served, body: dict[str, Any]) -> None:
    # store off and no conversation named: a body that is taken runs a turn on the test model, and leaves nothing
    reply = await served.http.post("/v1/responses", json={**body, "model": "test", "stream": False, "store": False})
    assert reply.status_code in (200, 400, 404, 413), reply.text
    if reply.status_code != 200:
        message = check_error(reply, reply.status_code)
        param = reply.json()["error"]["param"]
        # a field named, or a message that says where ("input: ...", "the request body: ...")
        assert param is None or param.split(".")[0].split("[")[0] in FIELDS, reply.text
        assert param is not None or message, reply.text


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"input": "x", "max_output_tokens": 1.5}', "max_output_tokens"),
        (b'{"input": "x", "conversation": {"name": "c"}}', "conversation"),
        (b'{"input": "x", "metadata": {"k": 1}}', "metadata.k"),
        (b'{"input": "x", "stream": null}', "stream"),
    ],
)
async def test_a_body_msgspec_refuses_gets_the_models_400(served: Served, body: bytes, param: str) -> None:
    reply = await served.http.post("/v1/responses", content=body, headers={"content-type": "application/json"})
    assert check_error(reply, 400, param=param)


async def test_a_body_only_pydantics_lax_rules_take_is_served(served: Served) -> None:
    body = {"model": "test", "input": "hi", "max_output_tokens": "50", "stream": "false"}
    reply = await served.http.post("/v1/responses", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["max_output_tokens"] == 50


async def test_not_json_is_refused_as_before(served: Served) -> None:
    reply = await served.http.post(
        "/v1/responses", content=b'{"input": "x"', headers={"content-type": "application/json"}
    )
    assert "not valid JSON" in check_error(reply, 400, code="invalid_json")
    reply = await served.http.post("/v1/responses", content=b'{"input": "x"}', headers={"content-type": "text/plain"})
    check_error(reply, 400)


async def test_a_hot_route_checks_the_key_and_counts_its_requests(tmp_path: Path) -> None:
    async with serving(ServerConfig(db=str(tmp_path / "k.db"))) as served:
        await served.app.state.server.store.keys.create(tenant="acme")
        for path in ("/v1/responses", "/v1/chat/completions"):
            reply = await served.http.post(path, json={"model": "test", "input": "hi"})
            check_error(reply, 401, code="invalid_api_key")
        metrics = (await served.http.get("/metrics")).text
    assert 'route="/v1/responses",status="401"' in metrics
    assert 'route="/v1/chat/completions",status="401"' in metrics


async def test_an_over_limit_body_on_a_hot_route_closes_the_connection(tmp_path: Path) -> None:
    from contextfold.server import Limits

    config = ServerConfig(db=str(tmp_path / "l.db"), limits=Limits(max_body_bytes=1_000))
    async with serving(config) as served:

        async def chunks() -> Any:  # no Content-Length: the limit is met while the body streams in
            for _ in range(5):
                yield b" " * 400

        reply = await served.http.post("/v1/responses", content=chunks(), headers={"content-type": "application/json"})
        assert "max_body_bytes" in check_error(reply, 413, code="payload_too_large")
        assert reply.headers["connection"] == "close"
        assert isinstance(reply, httpx.Response)
