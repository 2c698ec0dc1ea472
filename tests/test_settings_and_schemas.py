"""Settings layering and the exported JSON Schemas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO
from worldmill.cli.main import app
from worldmill.cli.schema_commands import differences, render
from worldmill.runtime.settings import RuntimeSettings, service_prefix

SCHEMAS = REPO / "contracts" / "schemas"


def test_service_prefix_overrides_the_shared_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """WM_PROMPT_* beats WM_*, which beats the default; other services keep the shared value."""
    monkeypatch.setenv("WM_NATS_URL", "nats://shared:4222")
    monkeypatch.setenv("WM_PROMPT_NATS_URL", "nats://prompt-only:4222")
    monkeypatch.setenv("WM_S3_SECRET_KEY", "s3cr3t")
    prompt = RuntimeSettings.for_service("prompt")
    qa = RuntimeSettings.for_service("qa")
    assert prompt.nats_url == "nats://prompt-only:4222"
    assert qa.nats_url == "nats://shared:4222"
    assert prompt.service == "prompt"
    assert prompt.s3_secret_key is not None and prompt.s3_secret_key.get_secret_value() == "s3cr3t"
    assert service_prefix("gpu-runner") == "WM_GPU_RUNNER_"


def test_secrets_never_show_in_reprs_or_dumps(monkeypatch: pytest.MonkeyPatch) -> None:
    """SecretStr keeps secrets out of repr() and of a JSON dump."""
    monkeypatch.setenv("WM_S3_SECRET_KEY", "very-secret-value")
    monkeypatch.setenv("WM_API_TOKENS", "tok-a, tok-b")
    s = RuntimeSettings.for_service("catalog")
    assert "very-secret-value" not in repr(s)
    assert "tok-a" not in s.model_dump_json()
    assert [t.get_secret_value() for t in s.api_tokens] == ["tok-a", "tok-b"]


def test_exported_schemas_match_the_contracts() -> None:
    """contracts/schemas is up to date: regenerate with `worldmill schemas export` after a change."""
    assert differences(SCHEMAS) == []


def test_a_changed_contract_is_detected(tmp_path: Path) -> None:
    """Editing, deleting or adding a schema file is reported as out of date (and the CLI exits 1)."""
    for name, text in render().items():
        (tmp_path / name).write_text(text)
    assert differences(tmp_path) == []
    doc = json.loads((tmp_path / "prompt.created.v1.json").read_text())
    doc["properties"]["surprise"] = {"type": "string"}
    (tmp_path / "prompt.created.v1.json").write_text(json.dumps(doc))
    (tmp_path / "video.ready.v1.json").unlink()
    (tmp_path / "gone.v1.json").write_text("{}")
    assert differences(tmp_path) == [
        "missing video.ready.v1.json",
        "stale gone.v1.json (no such contract any more)",
        "changed prompt.created.v1.json",
    ]
    result = CliRunner().invoke(app, ["schemas", "check", "--dir", str(tmp_path)])
    assert result.exit_code == 1


def test_message_schemas_name_their_type_and_subject() -> None:
    """Each exported message schema carries its CloudEvents type, subject and kind."""
    doc = json.loads((SCHEMAS / "gpu.v1.json").read_text())
    assert doc["x-worldmill-type"] == "io.worldmill.gpu.v1"
    assert doc["x-worldmill-subject"] == "wm.job.gpu"
    assert doc["x-worldmill-kind"] == "job"
