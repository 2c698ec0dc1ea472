"""One error shape on every service, and an OpenAPI document that lists every status (issue #16 item 5).

A probe app on the service base, run on the real test servers, raises each kind of error a route
can: FastAPI's request validation, ``InvalidInputError``, ``HTTPException(422, "text")`` and
``HTTPException(422, [dicts])``, a body that is not even UTF-8, a 404 and a 409. Every 422 must
parse as the one ``ValidationErrorBody``, every other error as ``ErrorBody``; the document must
reference them and list 401 on every protected route. The fuzz harness itself must fail on a
route that answers a status its document does not list.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, HTTPException, Query
from fastapi.testclient import TestClient
from pydantic import BaseModel, SecretStr

from worldmill.contracts.http_errors import ErrorBody, ValidationErrorBody, ValidationProblem
from worldmill.runtime.errors import InvalidInputError
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint
from worldmill.runtime.service import create_service_app, error_responses
from worldmill.runtime.settings import RuntimeSettings

AUTH = {"Authorization": "Bearer tok"}


class Thing(BaseModel):
    size: int
    name: str


def _settings(nats: NatsEndpoint, s3: S3Endpoint) -> RuntimeSettings:
    return RuntimeSettings(
        service="probe",
        nats_url=nats.url,
        s3_endpoint=s3.url,
        s3_access_key=SecretStr(s3.access_key),
        s3_secret_key=SecretStr(s3.secret_key),
        api_tokens=(SecretStr("tok"),),
    )


def _router(*, document_404: bool = True) -> APIRouter:
    router = APIRouter()

    @router.post("/things", status_code=201)
    async def create(body: Thing, limit: Annotated[int, Query(ge=1, le=10)] = 1) -> dict[str, int]:
        return {"size": body.size}

    @router.get("/invalid")
    async def invalid() -> None:
        raise InvalidInputError("prefix.bucket", "must name an existing bucket")

    @router.get("/manifest-422")
    async def manifest_422() -> None:
        raise InvalidInputError.of(
            [
                ValidationProblem(loc=["series.0.fps"], msg="not a frame rate", type="fps", line=3, column=7),
                ValidationProblem(loc=["series.1"], msg="duplicate id", type="unique"),
            ],
            manifest="demo",
            sha256="ab" * 32,
        )

    @router.get("/located-422")
    async def located_422() -> None:
        try:
            raise InvalidInputError("hints.0", "is not an image")
        except InvalidInputError as exc:
            raise exc.located("body") from exc

    @router.get("/text-422")
    async def text_422() -> None:
        raise HTTPException(422, "cursor is not one this service wrote")

    @router.get("/list-422")
    async def list_422() -> None:
        raise HTTPException(422, [{"loc": ["query", "limit"], "msg": "too big"}])

    @router.get("/things/{thing_id}", responses=error_responses(404) if document_404 else None)
    async def get(thing_id: str) -> dict[str, str]:
        raise HTTPException(404, f"thing {thing_id!r} does not exist")

    @router.post("/things/{thing_id}/close", responses=error_responses(404, 409, s409="closed already"))
    async def close(thing_id: str) -> None:
        raise HTTPException(409, f"thing {thing_id!r} is closed already")

    return router


@pytest.fixture
def client(nats: NatsEndpoint, s3: S3Endpoint) -> Iterator[TestClient]:
    app = create_service_app(_settings(nats, s3), title="probe", routers=[_router()])
    with TestClient(app) as c:
        yield c


def _problems(resp: Any) -> list[dict[str, Any]]:
    assert resp.status_code == 422, resp.text
    body = ValidationErrorBody.model_validate(resp.json())  # the one documented shape, extra keys refused
    return [p.model_dump(exclude_none=True) for p in body.detail]


def test_every_422_has_the_one_shape(client: TestClient) -> None:
    """Request validation, InvalidInputError, string and list HTTPException details: all ValidationErrorBody."""
    missing = _problems(client.post("/things", json={"size": "big"}, params={"limit": 99}, headers=AUTH))
    assert {(tuple(p["loc"]), p["type"]) for p in missing} == {
        (("body", "size"), "int_parsing"),
        (("body", "name"), "missing"),
        (("query", "limit"), "less_than_equal"),
    }
    assert _problems(client.get("/invalid", headers=AUTH)) == [
        {"loc": ["prefix", "bucket"], "msg": "must name an existing bucket", "type": "invalid"}
    ]
    assert _problems(client.get("/text-422", headers=AUTH)) == [
        {"loc": [], "msg": "cursor is not one this service wrote", "type": "invalid"}
    ]
    assert _problems(client.get("/list-422", headers=AUTH)) == [
        {"loc": ["query", "limit"], "msg": "too big", "type": "invalid"}
    ]
    assert _problems(client.get("/located-422", headers=AUTH)) == [
        {"loc": ["body", "hints", "0"], "msg": "is not an image", "type": "invalid"}
    ]


def test_an_invalid_input_error_with_many_problems_is_one_422_naming_the_manifest(client: TestClient) -> None:
    """InvalidInputError.of: every problem, with line and column, and the manifest's name and sha256."""
    resp = client.get("/manifest-422", headers=AUTH)
    assert resp.status_code == 422
    assert resp.json() == {
        "detail": [
            {"loc": ["series.0.fps"], "msg": "not a frame rate", "type": "fps", "line": 3, "column": 7},
            {"loc": ["series.1"], "msg": "duplicate id", "type": "unique"},
        ],
        "manifest": "demo",
        "sha256": "ab" * 32,
    }
    ValidationErrorBody.model_validate(resp.json())


def test_a_body_that_is_not_utf8_json_is_a_422_not_a_400(client: TestClient) -> None:
    """Found by fuzzing: FastAPI answered 400 {"detail": "There was an error parsing the body"}, undocumented."""
    resp = client.post("/things", content=b"=(\xff\xfe", headers={**AUTH, "Content-Type": "application/json"})
    assert _problems(resp) == [{"loc": ["body"], "msg": "the body is not valid UTF-8 JSON", "type": "json_invalid"}]


def test_other_errors_are_error_bodies_with_their_headers(client: TestClient) -> None:
    """401 (with its challenge), 404 and 409 are {detail: str}."""
    for resp, code in (
        (client.get("/things/x"), 401),
        (client.get("/things/x", headers=AUTH), 404),
        (client.post("/things/x/close", headers=AUTH), 409),
    ):
        assert resp.status_code == code
        assert ErrorBody.model_validate(resp.json()).detail
    assert client.get("/things/x").headers["www-authenticate"] == "Bearer"


def test_openapi_lists_every_status_with_the_documented_bodies(client: TestClient) -> None:
    """401 on every protected operation; 422 is ValidationErrorBody; FastAPI's HTTPValidationError is gone."""
    doc = client.get("/openapi.json", headers=AUTH).json()
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert set(schemas["ValidationErrorBody"]["required"]) == {"detail"}
    ref = {"$ref": "#/components/schemas/ValidationErrorBody"}
    error = {"$ref": "#/components/schemas/ErrorBody"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            if path in ("/healthz", "/readyz"):
                assert "401" not in responses and "503" in responses
                continue
            assert responses["401"]["content"]["application/json"]["schema"] == error, (method, path)
            if "422" in responses:
                assert responses["422"]["content"]["application/json"]["schema"] == ref, (method, path)
    assert "422" in doc["paths"]["/things"]["post"]["responses"]
    close = doc["paths"]["/things/{thing_id}/close"]["post"]["responses"]
    assert close["409"]["description"] == "closed already"
    assert close["404"]["content"]["application/json"]["schema"] == error


def test_the_fuzz_harness_fails_on_an_undocumented_status(nats: NatsEndpoint, s3: S3Endpoint) -> None:
    """The harness of test_fuzz_http catches what the issue found: a 404 the document does not list."""
    import schemathesis  # noqa: PLC0415
    from schemathesis.python.asgi import shutdown_lifespans  # noqa: PLC0415

    from tests.test_fuzz_http import CONFIG, fuzz  # noqa: PLC0415

    app = create_service_app(_settings(nats, s3), title="probe", routers=[_router(document_404=False)])
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG, headers=AUTH)
        with pytest.raises(AssertionError) as failed:
            fuzz(schema)
    finally:
        shutdown_lifespans()
    assert "GET /things/{thing_id}" in str(failed.value) and "Undocumented status code" in str(failed.value)


def test_bodies_over_the_limit_get_413_naming_it_and_the_document_says_so(nats: NatsEndpoint, s3: S3Endpoint) -> None:
    """Declared (Content-Length) or chunked: refused before the route runs; a body under the limit is served."""
    settings = _settings(nats, s3).model_copy(update={"http_max_body_bytes": 2048})
    app = create_service_app(settings, title="probe", routers=[_router()])
    big = {"size": 1, "name": "x" * 5000}
    with TestClient(app) as c:
        declared = c.post("/things", json=big, headers=AUTH)

        def chunks() -> Iterator[bytes]:
            text = json.dumps(big).encode()
            for i in range(0, len(text), 1000):
                yield text[i : i + 1000]

        chunked = c.post("/things", content=chunks(), headers={**AUTH, "content-type": "application/json"})
        small_chunked = c.post(
            "/things",
            content=iter([b'{"size": 3, ', b'"name": "ok"}']),
            headers={**AUTH, "content-type": "application/json"},
        )
        fits = c.post("/things", json={"size": 2, "name": "ok"}, headers=AUTH)
        doc = c.get("/openapi.json", headers=AUTH).json()
    for resp in (declared, chunked):
        assert resp.status_code == 413, resp.text
        body = ErrorBody.model_validate(resp.json())
        assert "the limit is 2048 bytes (WM_HTTP_MAX_BODY_BYTES)" in body.detail
    assert "is 50" in declared.json()["detail"] and "chunked" in chunked.json()["detail"]
    assert (fits.status_code, fits.json()) == (201, {"size": 2})
    assert (small_chunked.status_code, small_chunked.json()) == (201, {"size": 3})
    assert "413" in doc["paths"]["/things"]["post"]["responses"]
    assert "413" not in doc["paths"]["/invalid"]["get"]["responses"]  # no body, no limit to document
