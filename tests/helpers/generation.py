"""Helpers for generation tests: specs from a small manifest, apps on the real servers, waiting."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient
from pydantic import SecretStr

from worldmill.contracts.envelope import wrap
from worldmill.contracts.prompts import PromptCreated, PromptSpec
from worldmill.generate.app import create_app as create_generate_app
from worldmill.generate.settings import GenerateSettings
from worldmill.gpu_runner.app import create_app as create_runner_app
from worldmill.gpu_runner.settings import RunnerSettings
from worldmill.prompt.expand import check_text
from worldmill.runtime.bus import Bus
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint

AUTH = {"Authorization": "Bearer tok"}


def specs(
    name: str,
    *,
    durations: tuple[float, ...] = (5, 10, 30),
    resolution: str = "64x48",
    model: str = "synthetic",
    fps: int = 24,
    scenarios: int = 1,
) -> list[PromptSpec]:
    """Specs of a small manifest (expanded by the prompt service's own pure code)."""
    doc = {
        "name": name,
        "defaults": {"model": model, "fps": fps, "resolution": resolution, "steps": 4},
        "durations": list(durations),
        "series": [
            {
                "id": "C",
                "scenarios": [
                    {"id": f"C{i:02d}", "prompt": f"scene {i}: a parcel at a door"} for i in range(1, scenarios + 1)
                ],
            }
        ],
    }
    expansion = check_text(yaml.safe_dump(doc), now=datetime.now(UTC))
    assert expansion.ok, expansion.problems
    return expansion.specs


async def announce(bus: Bus, items: list[PromptSpec]) -> None:
    """Publish prompt.created for each spec, as the prompt service would."""
    for spec in items:
        await bus.publish(
            wrap(PromptCreated(spec=spec), source="/test", event_id=f"prompt.created-{spec.prompt_id}-v{spec.version}")
        )


def settings(nats: NatsEndpoint, s3: S3Endpoint, tmp: Path, service: str) -> dict[str, Any]:
    """Settings fields pointing a service at the test servers."""
    return dict(
        service=service,
        nats_url=nats.url,
        s3_endpoint=s3.url,
        s3_access_key=SecretStr(s3.access_key),
        s3_secret_key=SecretStr(s3.secret_key),
        api_tokens=(SecretStr("tok"),),
        database_url=f"sqlite:///{tmp / f'{service}.sqlite3'}",
    )


def generate_client(
    nats: NatsEndpoint, s3: S3Endpoint, tmp: Path, *, backends: tuple[str, ...] = ("synthetic",)
) -> TestClient:
    """The generate service app (use as a context manager).

    It plans for ``backends``: by default the synthetic stand-in, as the runners of these tests are
    (the local stack does the same); ``("diffusers", "synthetic")`` is the production default.
    """
    fields = settings(nats, s3, tmp, "generate")
    return TestClient(create_generate_app(GenerateSettings(**fields, backends=backends)))


def runner_client(nats: NatsEndpoint, s3: S3Endpoint, tmp: Path, **extra: Any) -> TestClient:
    """A GPU runner app with the synthetic backend (use as a context manager)."""
    fields = {**settings(nats, s3, tmp, "gpu-runner"), "backend": "synthetic", **extra}
    return TestClient(create_runner_app(RunnerSettings(**fields)))


def wait_runs(
    client: TestClient,
    request_id: str,
    count: int,
    timeout_s: float = 120.0,
    final: tuple[str, ...] = ("ready", "failed", "canceled", "lost"),
) -> list[dict[str, Any]]:
    """Poll GET /runs until ``count`` runs of the request are in a final state."""
    deadline = time.monotonic() + timeout_s
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = client.get("/runs", params={"request_id": request_id, "limit": 500}, headers=AUTH).json()["items"]
        if len(runs) == count and all(r["state"] in final for r in runs):
            return runs
        time.sleep(0.2)
    raise AssertionError(f"runs not final within {timeout_s} s: {[(r['run_id'], r['state']) for r in runs]}")
