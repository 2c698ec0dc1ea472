"""Fuzzing every service's HTTP API from its own OpenAPI document (schemathesis, issue #16).

Each service's app runs on the real test servers (nats-server, SeaweedFS, its SQLite database) and is
reached in-process through schemathesis's ASGI transport, which starts the app's lifespan once. The
document is fetched from the app's ``/openapi.json`` (with the token), so what is fuzzed is what a
client generated from it would see. Every operation gets positive and negative examples, bounded and
derandomized so a CI run is reproducible, and every answer goes through schemathesis's standard checks:

* ``not_a_server_error``: no 5xx, except a documented 503 (upsampling without a server);
* ``status_code_conformance``: every status answered is in the operation's document;
* ``content_type_conformance`` and ``response_schema_conformance``: the body is what the document says
  (one 422 shape, ``ValidationErrorBody``; every other error ``ErrorBody``);
* ``ignored_auth``: the same request without a token, and with a wrong one, is refused with 401.

Excluded, with the reason: the catalog's ``GET /progress/stream`` (server-sent events: it never ends,
there is no response body to check against a schema; its auth is tested in test_catalog_gallery).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.generation.modes import GenerationMode
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers.generation import settings as service_settings
from worldmill.augment.app import create_app as create_augment_app
from worldmill.augment.settings import AugmentSettings
from worldmill.catalog.app import create_app as create_catalog_app
from worldmill.generate.app import create_app as create_generate_app
from worldmill.generate.settings import GenerateSettings
from worldmill.prompt.app import create_app as create_prompt_app
from worldmill.qa.app import create_app as create_qa_app
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint
from worldmill.runtime.settings import RuntimeSettings
from worldmill.upsample.app import create_app as create_upsample_app
from worldmill.upsample.settings import UpsampleSettings

pytestmark = pytest.mark.slow

AUTH = {"Authorization": "Bearer tok"}
#: Examples per operation (positive and negative together); WM_FUZZ_EXAMPLES raises it for a deeper local run.
EXAMPLES = int(os.environ.get("WM_FUZZ_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    ignored_auth,
]
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


@pytest.fixture(scope="module", autouse=True)
def _stop_apps() -> Iterator[None]:
    """End every app's lifespan (consumers, connections) while the servers are still up."""
    yield
    shutdown_lifespans()


#: Documented 5xx answers that are not server errors: the operation says the dependency is unavailable.
UNAVAILABLE_ALLOWED = {
    "POST /upsample": "503 when no upsampling server is configured (documented)",
}
CONFIG = SchemathesisConfig.from_dict(
    {
        "operations": [
            {
                "include-name": label,
                "checks": {"not_a_server_error": {"expected-statuses": ["2XX", "3XX", "4XX", "503"]}},
            }
            for label in UNAVAILABLE_ALLOWED
        ]
    }
)


def _schema(app: Any) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG, headers=AUTH)


def _fields(nats: NatsEndpoint, s3: S3Endpoint, tmp: pytest.TempPathFactory, service: str) -> dict[str, Any]:
    folder: Path = tmp.mktemp(f"fuzz-{service}")
    return service_settings(nats, s3, folder, service)


@pytest.fixture(scope="module")
def prompt_api(nats: NatsEndpoint, s3: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _schema(create_prompt_app(RuntimeSettings(**_fields(nats, s3, tmp_path_factory, "prompt"))))


@pytest.fixture(scope="module")
def upsample_api(nats: NatsEndpoint, s3: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Any:
    # No vLLM server: POST /upsample answers its documented 503.
    fields = {**_fields(nats, s3, tmp_path_factory, "upsample"), "base_url": None}
    return _schema(create_upsample_app(UpsampleSettings(**fields)))


@pytest.fixture(scope="module")
def generate_api(nats: NatsEndpoint, s3: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Any:
    fields = {**_fields(nats, s3, tmp_path_factory, "generate"), "backends": ("synthetic",)}
    return _schema(create_generate_app(GenerateSettings(**fields)))


@pytest.fixture(scope="module")
def augment_api(nats: NatsEndpoint, s3: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Any:
    fields = {**_fields(nats, s3, tmp_path_factory, "augment"), "poll": False}
    return _schema(create_augment_app(AugmentSettings(**fields)))


@pytest.fixture(scope="module")
def qa_api(nats: NatsEndpoint, s3: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _schema(create_qa_app(RuntimeSettings(**_fields(nats, s3, tmp_path_factory, "qa"))))


@pytest.fixture(scope="module")
def catalog_api(nats: NatsEndpoint, s3: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _schema(create_catalog_app(RuntimeSettings(**_fields(nats, s3, tmp_path_factory, "catalog"))))


#: Operations not fuzzed, each with its reason.
EXCLUDED = {
    "GET /progress/stream": "server-sent events: the stream never ends and has no body schema to check",
}


def fuzz(schema: Any) -> None:
    """Every operation of the document: positive and negative examples, the standard checks; all failures listed."""
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "the document lists no operations"
    for operation in operations:
        if operation.label in EXCLUDED:
            continue
        cases = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
        )

        @FUZZ
        @given(case=cases)
        def check(case: Any) -> None:
            case.call_and_validate(headers=AUTH, checks=CHECKS)

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis reports its failures as a group
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


def test_prompt_api(prompt_api: Any) -> None:
    fuzz(prompt_api)


def test_upsample_api(upsample_api: Any) -> None:
    fuzz(upsample_api)


def test_generate_api(generate_api: Any) -> None:
    fuzz(generate_api)


def test_augment_api(augment_api: Any) -> None:
    fuzz(augment_api)


def test_qa_api(qa_api: Any) -> None:
    fuzz(qa_api)


def test_catalog_api(catalog_api: Any) -> None:
    fuzz(catalog_api)
