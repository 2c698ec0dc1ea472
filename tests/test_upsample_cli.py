"""``worldmill upsample`` against the real prompt and upsample services over HTTP (respx for vLLM only)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import respx
import typer
from typer.testing import CliRunner, Result

from tests.helpers.serve import serve
from tests.test_upsample_service import BASE, answers, manifest, settings
from worldmill.prompt.app import create_app as create_prompt_app
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint, free_port
from worldmill.runtime.settings import RuntimeSettings
from worldmill.upsample.app import create_app as create_upsample_app
from worldmill.upsample.cli import upsample
from worldmill.upsample.settings import UpsampleSettings


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(upsample)
    app.command("version")(lambda: None)  # a second command keeps `upsample` a named sub-command
    return app


def _run(args: list[str], env: dict[str, str]) -> Result:
    return CliRunner().invoke(_app(), ["upsample", *args], env={"COLUMNS": "200", **env})


@pytest.fixture
def vllm() -> respx.MockRouter:
    """respx for the vLLM host; the services on 127.0.0.1 are reached for real."""
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        mock.post(f"{BASE}/chat/completions").mock(side_effect=answers)
        yield mock


def test_upsample_a_manifest_then_again_from_the_cache(
    nats: NatsEndpoint, s3: S3Endpoint, tmp_path: Path, vllm: respx.MockRouter
) -> None:
    """--manifest submits and rewrites every spec (exit 0, a table of results); a rerun is served from the cache."""
    path = tmp_path / "m.yaml"
    path.write_text(manifest(f"cli-{uuid.uuid4().hex[:8]}", upsample=False, scenarios=3))
    up_settings = UpsampleSettings(**settings(nats, s3, tmp_path, "upsample"), base_url=BASE, backoff_base_s=0.001)
    prompts_app = create_prompt_app(RuntimeSettings(**settings(nats, s3, tmp_path, "prompt")))
    with serve(prompts_app) as prompt_url, serve(create_upsample_app(up_settings)) as upsample_url:
        env = {"WM_PROMPT_URL": prompt_url, "WM_UPSAMPLE_URL": upsample_url, "WM_API_TOKEN": "tok"}
        first = _run(["--manifest", str(path)], env)
        calls = sum(1 for c in vllm.calls if c.request.url.host == "vllm.test")
        ids = [line.split()[1] for line in first.output.splitlines() if "│ done" in line]
        again = _run(ids, env)
    assert first.exit_code == 0, first.output
    assert "3 prompt(s) queued for mistralai/Pixtral-12B-2409" in first.output
    assert len(ids) == 3 and all("-C0" in i for i in ids)
    assert calls == 3
    assert again.exit_code == 0, again.output
    assert again.output.count("│ yes") == 3  # cached
    assert sum(1 for c in vllm.calls if c.request.url.host == "vllm.test") == 3


def test_without_a_server_the_cli_says_upsampling_is_unavailable(
    nats: NatsEndpoint, s3: S3Endpoint, tmp_path: Path
) -> None:
    """Exit 1 and the reason (how to configure a server); nothing queued."""
    up_settings = UpsampleSettings(**settings(nats, s3, tmp_path, "upsample"))
    with serve(create_upsample_app(up_settings)) as upsample_url:
        result = _run(["some-prompt"], {"WM_UPSAMPLE_URL": upsample_url, "WM_API_TOKEN": "tok"})
    assert result.exit_code == 1
    assert "unavailable" in result.output and "WM_UPSAMPLE_BASE_URL" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give PROMPT_IDS or --manifest NAME|FILE"),
        (["p1", "--hint", "bucket/key"], "s3://BUCKET/KEY"),
        (["--manifest", "/no/such/file.yaml"], "cannot read"),
    ],
    ids=["nothing", "bad-hint", "missing-manifest"],
)
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    """Bad command lines are refused before any service is called."""
    result = _run(args, {"WM_UPSAMPLE_URL": "http://127.0.0.1:9", "WM_PROMPT_URL": "http://127.0.0.1:9"})
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_service_that_is_not_running_is_a_clear_failure() -> None:
    """Nothing listens on the port: exit 1 naming the service and its URL, not a traceback."""
    result = _run(["p1"], {"WM_UPSAMPLE_URL": f"http://127.0.0.1:{free_port()}"})
    assert result.exit_code == 1
    assert "cannot reach the upsample service" in result.output
