"""The service base: auth on every route but health, readiness, consumers wired, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends, Request
from fastapi.testclient import TestClient
from pydantic import SecretStr

from tests.conftest import REPO
from tests.helpers.bus import eventually
from worldmill.contracts.envelope import wrap
from worldmill.contracts.objects import ObjectCreated
from worldmill.contracts.subjects import StreamSpec
from worldmill.runtime.bus import Bus
from worldmill.runtime.consumer import Consumer
from worldmill.runtime.errors import InvalidInputError
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint, free_port, wait_for_port
from worldmill.runtime.service import ServiceContext, create_service_app, provided, service_of
from worldmill.runtime.settings import RuntimeSettings


def _settings(nats: NatsEndpoint, s3: S3Endpoint, **kw: object) -> RuntimeSettings:
    base: dict[str, object] = dict(
        service="probe",
        nats_url=nats.url,
        s3_endpoint=s3.url,
        s3_access_key=SecretStr(s3.access_key),
        s3_secret_key=SecretStr(s3.secret_key),
        api_tokens=(SecretStr("tok-1"), SecretStr("tok-2")),
    )
    base.update(kw)
    return RuntimeSettings(**base)  # type: ignore[arg-type]


def _app(settings: RuntimeSettings, *, bootstrap: bool = True) -> TestClient:
    router = APIRouter()

    @router.get("/things")
    async def things() -> dict[str, bool]:
        return {"ok": True}

    @router.post("/bad")
    async def bad() -> None:
        raise InvalidInputError("manifest.fps", "must be a frame rate some model supports (16, 24)")

    return TestClient(create_service_app(settings, title="probe", routers=[router], bootstrap=bootstrap))


@pytest.fixture
def client(nats: NatsEndpoint, s3: S3Endpoint) -> Iterator[TestClient]:
    """The probe app with its lifespan running against the real servers."""
    with _app(_settings(nats, s3)) as c:
        yield c


def test_health_endpoints_need_no_token_and_report_ready(client: TestClient) -> None:
    """/healthz and /readyz answer without a token; readiness checks NATS and S3 for real."""
    assert client.get("/healthz").json() == {"status": "ok", "service": "probe"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"nats": "ok", "s3": "ok"}


def test_every_other_route_needs_a_valid_bearer_token(client: TestClient) -> None:
    """No token, a wrong token or another scheme gets 401 with a clear message; a listed token passes."""
    none = client.get("/things")
    assert none.status_code == 401
    assert "missing bearer token" in none.json()["detail"]
    assert none.headers["www-authenticate"] == "Bearer"
    wrong = client.get("/things", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid bearer token"
    basic = client.get("/things", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert basic.status_code == 401
    for token in ("tok-1", "tok-2"):
        assert client.get("/things", headers={"Authorization": f"Bearer {token}"}).json() == {"ok": True}


def test_a_read_only_token_reads_and_is_refused_what_changes_state(nats: NatsEndpoint, s3: S3Endpoint) -> None:
    """WM_API_READ_TOKENS may GET but gets 403 naming the scope on a POST; an operate token may do both."""
    with _app(_settings(nats, s3, api_tokens=(SecretStr("op"),), api_read_tokens=(SecretStr("ro"),))) as c:
        assert c.get("/things", headers={"Authorization": "Bearer ro"}).json() == {"ok": True}
        refused = c.post("/bad", headers={"Authorization": "Bearer ro"})
        assert refused.status_code == 403
        assert "may only read" in refused.json()["detail"] and "WM_API_TOKENS" in refused.json()["detail"]
        assert c.post("/bad", headers={"Authorization": "Bearer op"}).status_code == 422  # past the guard
        assert c.get("/things", headers={"Authorization": "Bearer wrong"}).status_code == 401
        doc = c.get("/openapi.json", headers={"Authorization": "Bearer ro"}).json()
    assert "403" in doc["paths"]["/bad"]["post"]["responses"]
    assert "403" not in doc["paths"]["/things"]["get"]["responses"]


def test_openapi_is_served_behind_the_token(client: TestClient) -> None:
    """The OpenAPI document is a route like the others: 401 without a token, the schema with one."""
    assert client.get("/openapi.json").status_code == 401
    doc = client.get("/openapi.json", headers={"Authorization": "Bearer tok-1"}).json()
    assert "/things" in doc["paths"]
    assert client.get("/docs", headers={"Authorization": "Bearer tok-1"}).status_code == 200


def test_invalid_input_is_a_422_naming_the_field_and_rule(client: TestClient) -> None:
    """InvalidInputError raised by a route becomes HTTP 422 with the field path and the rule."""
    resp = client.post("/bad", headers={"Authorization": "Bearer tok-1"})
    assert resp.status_code == 422
    assert resp.json() == {
        "detail": [
            {"loc": ["manifest", "fps"], "msg": "must be a frame rate some model supports (16, 24)", "type": "invalid"}
        ]
    }


def test_no_configured_token_refuses_everything_and_says_how_to_fix_it(nats: NatsEndpoint, s3: S3Endpoint) -> None:
    """A service started without tokens fails closed, naming the variable to set."""
    with _app(_settings(nats, s3, api_tokens=())) as c:
        resp = c.get("/things", headers={"Authorization": "Bearer anything"})
    assert resp.status_code == 401
    assert "WM_PROBE_API_TOKENS" in resp.json()["detail"]


def test_readiness_fails_when_s3_refuses_the_credentials(nats: NatsEndpoint, s3: S3Endpoint) -> None:
    """Wrong S3 secret: /readyz answers 503 and says S3 refused the signature."""
    with _app(_settings(nats, s3, s3_secret_key=SecretStr("wrong")), bootstrap=False) as c:
        resp = c.get("/readyz")
    assert resp.status_code == 503
    assert "SignatureDoesNotMatch" in resp.json()["checks"]["s3"]


async def test_sigterm_drains_the_message_in_hand_before_exit(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, tmp_path: Path
) -> None:
    """A real service process gets SIGTERM mid-message: it finishes and acks it, then exits.

    uvicorn re-raises the signal after its graceful shutdown, so the exit status is -SIGTERM.
    """
    tag = uuid.uuid4().hex[:8]
    stream = StreamSpec(
        name=f"PROBE_{tag.upper()}",
        subjects=(f"probe{tag}.>",),
        retention="workqueue",
        max_age_s=3600,
        duplicate_window_s=60,
        description="probe jobs",
    )
    await bus.ensure_stream(stream)
    port = free_port()
    env = {
        **os.environ,
        "WM_PROBE_NATS_URL": nats.url,
        "WM_PROBE_S3_ENDPOINT": s3.url,
        "WM_PROBE_S3_ACCESS_KEY": s3.access_key,
        "WM_PROBE_S3_SECRET_KEY": s3.secret_key,
        "WM_PROBE_API_TOKENS": "t",
        "WM_PROBE_HTTP_PORT": str(port),
        "PROBE_STREAM": stream.name,
        "PROBE_SUBJECT": f"probe{tag}.>",
        "PROBE_DIR": str(tmp_path),
        "PROBE_WORK_S": "2",
    }
    proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.probe_service"], cwd=REPO, env=env)
    try:
        wait_for_port(port, 30, proc)
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        env_msg = wrap(
            ObjectCreated(
                bucket="wm-inputs", key="x.mp4", size=1, etag="e", origin="api", event_time=datetime.now(UTC)
            ),
            source="/t",
        )
        await bus.publish(env_msg, subject=f"probe{tag}.job")
        started = tmp_path / f"started-{env_msg.id}"
        deadline = time.monotonic() + 20
        while not started.exists():
            assert time.monotonic() < deadline, "the service never took the message"
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code in (0, -signal.SIGTERM)
    assert (tmp_path / f"done-{env_msg.id}").read_text() == "1"
    info = await eventually(lambda: bus.js.stream_info(stream.name), lambda i: i.state.messages == 0)
    assert info.state.messages == 0, "the work-queue message was not acked before exit"
    await bus.js.delete_stream(stream.name)


def _connections(nats: NatsEndpoint, name: str) -> list[dict[str, object]]:
    """The server's open client connections named ``name`` (its monitoring endpoint, /connz)."""
    conns = httpx.get(f"{nats.monitor_url}/connz", params={"limit": 1024}, timeout=5).json().get("connections") or []
    return [c for c in conns if c.get("name") == name]


def _open_after(nats: NatsEndpoint, name: str, wait_s: float = 3.0) -> list[dict[str, object]]:
    """The connections still open once a close (if any) had ``wait_s`` to reach the server."""
    deadline = time.monotonic() + wait_s
    while (open_ := _connections(nats, name)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return open_


def test_a_failing_on_startup_closes_what_the_start_opened(nats: NatsEndpoint, s3: S3Endpoint, tmp_path: Path) -> None:
    """on_startup raises after opening something: the start fails, its resource, the database and the NATS
    connection are closed (before the exit stack, the connection stayed open for good)."""
    name = f"leak-{uuid.uuid4().hex[:8]}"
    settings = _settings(nats, s3, service=name, database_url=f"sqlite:///{tmp_path / 'docs.db'}")
    closed: list[str] = []

    async def startup(ctx: ServiceContext) -> None:
        assert _connections(nats, name), "the bus is connected before on_startup"

        async def close_it() -> None:
            closed.append("resource")

        ctx.resources.push_async_callback(close_it)
        raise RuntimeError("cannot start")

    app = create_service_app(settings, title="probe", on_startup=startup, documents=True)
    with pytest.raises(RuntimeError, match="cannot start"), TestClient(app):
        pass
    assert closed == ["resource"]
    ctx = app.state.ctx
    assert ctx.stop.is_set() and not ctx.bus.connected
    assert ctx.docs_ is not None and ctx.docs_._engine is None  # the database closed too
    assert _open_after(nats, name) == []


def test_failing_consumers_close_the_started_ones_and_the_connection(nats: NatsEndpoint, s3: S3Endpoint) -> None:
    """A consumer factory that raises: nothing keeps running, the connection is closed."""
    name = f"leak-{uuid.uuid4().hex[:8]}"

    def consumers(ctx: ServiceContext) -> list[Consumer]:
        raise ValueError("bad consumer spec")

    app = create_service_app(_settings(nats, s3, service=name), title="probe", consumers=consumers)
    with pytest.raises(ValueError, match="bad consumer spec"), TestClient(app):
        pass
    assert not app.state.ctx.bus.connected
    assert _open_after(nats, name) == []


class Counter:
    """A service's state, as its on_startup returns it (module level: routes' annotations are resolved here)."""

    def __init__(self) -> None:
        self.hits = 0


def test_on_startup_returns_the_typed_state_routes_and_consumers_read(nats: NatsEndpoint, s3: S3Endpoint) -> None:
    """What on_startup returns is ctx.service: routes get it with provided(<class>), a wrong class is refused."""

    seen: list[object] = []
    router = APIRouter()

    @router.get("/hits")
    async def hits(counter: Annotated[Counter, Depends(provided(Counter))]) -> dict[str, int]:
        counter.hits += 1
        return {"hits": counter.hits}

    @router.get("/wrong")
    async def wrong(request: Request) -> None:
        service_of(request, str)

    async def startup(ctx: ServiceContext[Counter]) -> Counter:
        return Counter()

    def consumers(ctx: ServiceContext[Counter]) -> list[Consumer]:
        seen.append(ctx.service)
        return []

    app = create_service_app(
        _settings(nats, s3), title="probe", routers=[router], on_startup=startup, consumers=consumers
    )
    with TestClient(app, raise_server_exceptions=False) as c:
        auth = {"Authorization": "Bearer tok-1"}
        assert [c.get("/hits", headers=auth).json() for _ in range(2)] == [{"hits": 1}, {"hits": 2}]
        assert c.get("/wrong", headers=auth).status_code == 500
        assert seen == [app.state.ctx.service]
