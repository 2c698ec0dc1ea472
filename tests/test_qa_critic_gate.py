"""The VLM critic can gate: a manifest (or the qa settings) makes Cosmos-Reason's critique a failing check.

The qa service runs on the real nats-server and SeaweedFS; the specs come from real manifests through
the prompt service's expansion and the generate service's planning, so the requirement travels as
it does in production (spec → plan → ``video.ready``). vLLM cannot run here: the critic is a respx
stand-in that answers per video (it finds the asset in the presigned URL it is sent) and keeps every
request. Other tests' videos may reach these qa apps through the shared ``qa-videos`` durable; the
stand-in answers those cleanly and the assertions look at this test's assets only.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import yaml
from fastapi.testclient import TestClient
from pydantic import ValidationError

from tests.helpers.generation import AUTH, settings
from tests.helpers.polling import wait_for
from tests.helpers.video import write_video
from worldmill.contracts.base import ObjectRef
from worldmill.contracts.cards import builtin_cards
from worldmill.contracts.envelope import MAX_ENVELOPE_BYTES, wrap
from worldmill.contracts.generation import GenerationRequested, Provenance, Timings, VideoReady
from worldmill.contracts.prompts import PromptSpec
from worldmill.contracts.qa import (
    CRITIC_MAX_RAW,
    CRITIC_RAW_LIMIT_BYTES,
    CriticRequirement,
    Finding,
    QaFailed,
    QaPassed,
    Severity,
)
from worldmill.contracts.subjects import EVENTS, event_subject
from worldmill.generate.planning import plan_generation
from worldmill.prompt.expand import check_text
from worldmill.qa.app import create_app
from worldmill.qa.critic_gate import CHECK, UNJUDGED, CriticDefaults, Gate, bounded, judged, resolve
from worldmill.qa.policy import RegenerationPolicy
from worldmill.qa.settings import QaSettings
from worldmill.runtime.bus import Bus
from worldmill.runtime.docstore import OutboxItem
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint
from worldmill.runtime.store import ObjectStore
from worldmill.runtime.vlm import CriticResult

BASE = "http://vllm.test:8000/v1"
MODEL = "nvidia/Cosmos-Reason1-7B"
CLEAN = ("No", "No", "No", "No")


# --------------------------------------------------------------------------------------------- helpers


def trial(answer: str, n: int = 0) -> str:
    """One trial's text as Cosmos-Reason writes it: reasoning, then the answer."""
    return (
        f"<think>\nTrial {n}: the parcel stays on the step, the light is steady.\n</think>\n\n<answer>{answer}</answer>"
    )


def completion(*contents: str) -> httpx.Response:
    """A vLLM chat completion with one choice per content."""
    return httpx.Response(
        200,
        json={
            "id": f"chatcmpl-{uuid.uuid4().hex[:8]}",
            "object": "chat.completion",
            "model": MODEL,
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": c}, "finish_reason": "stop"}
                for i, c in enumerate(contents)
            ],
            "usage": {"prompt_tokens": 2100, "completion_tokens": 300, "total_tokens": 2400},
        },
    )


def answers(*values: str) -> httpx.Response:
    """A completion whose trials answer ``values`` in order."""
    return completion(*(trial(v, i) for i, v in enumerate(values)))


class CriticStandIn:
    """A respx side effect standing in for vLLM: per asset, its answers in turn (the last one repeats).

    Videos it was not told about get clean answers. ``requests[asset]`` keeps each request body.
    """

    def __init__(self) -> None:
        self.script: dict[str, list[httpx.Response]] = {}
        self.requests: dict[str, list[dict[str, Any]]] = {}

    def answer(self, asset_id: str, *responses: httpx.Response) -> None:
        self.script[asset_id] = list(responses)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        url = body["messages"][1]["content"][0]["video_url"]["url"]
        asset = next((a for a in self.script if f"/{a}.mp4" in url), None)
        if asset is None:
            return answers(*CLEAN)
        seen = self.requests.setdefault(asset, [])
        seen.append(body)
        script = self.script[asset]
        return script[min(len(seen), len(script)) - 1]


@pytest.fixture
def critic() -> Iterator[CriticStandIn]:
    """The stand-in, mounted on ``BASE`` for the test's duration."""
    stand_in = CriticStandIn()
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        mock.post("/chat/completions").mock(side_effect=stand_in)
        yield stand_in


@contextmanager
def qa_app(nats: NatsEndpoint, s3: S3Endpoint, tmp: Path, **qa: Any) -> Iterator[TestClient]:
    """The qa service app with these ``QaSettings`` fields (no regeneration unless asked)."""
    fields = {"max_regenerations": 0, **qa}
    with TestClient(create_app(QaSettings(**settings(nats, s3, tmp, "qa"), **fields))) as client:
        yield client


def manifest_specs(
    name: str, scenarios: dict[str, dict[str, Any] | None], qa: dict[str, Any] | None = None
) -> dict[str, PromptSpec]:
    """One 5 s spec per scenario of a small manifest (scenario id → its ``qa``), expanded for real."""
    doc: dict[str, Any] = {
        "name": name,
        "defaults": {"model": "synthetic", "fps": 24, "resolution": "64x48", "steps": 4},
        "durations": [5],
        "series": [
            {
                "id": "C",
                "scenarios": [
                    {"id": sid, "prompt": f"scene {sid}: a parcel at a door", **({"qa": sqa} if sqa else {})}
                    for sid, sqa in scenarios.items()
                ],
            }
        ],
    }
    if qa is not None:
        doc["qa"] = qa
    expansion = check_text(yaml.safe_dump(doc), now=datetime.now(UTC))
    assert expansion.ok, expansion.problems
    return {s.scenario: s for s in expansion.specs}


async def deliver(bus: Bus, store: ObjectStore, tmp: Path, spec: PromptSpec, seed: int) -> tuple[VideoReady, Path]:
    """A real video of ``spec`` in the store, announced with the plan the generate service makes of it."""
    asset_id = f"asset-{spec.prompt_id}"
    path = write_video(tmp / f"{asset_id}.mp4", width=64, height=48, fps=24, frames=spec.target_frames, seed=seed)
    ref = await store.put_file(store.test_bucket, f"videos/{asset_id}.mp4", path, content_type="video/mp4")  # type: ignore[attr-defined]
    plan = plan_generation(spec, builtin_cards()[spec.model], plan_id=f"plan-{asset_id}")
    now = datetime.now(UTC)
    ready = VideoReady(
        asset_id=asset_id,
        run_id=f"run-{asset_id}",
        prompt_id=spec.prompt_id,
        attempt=1,
        video=ref,
        plan=plan,
        provenance=Provenance(
            backend="synthetic",
            model=spec.model,
            checkpoint="none",
            plan=plan,
            prompt=spec.prompt,
            sampling=plan.sampling,
            seeds=(spec.seed,),
            code_version="test",
            device="cpu",
            runner="r1",
            timings=Timings(load_s=0, fetch_s=0, infer_s=1, encode_s=0, upload_s=0),
            started_at=now,
            finished_at=now,
        ),
    )
    await bus.publish(wrap(ready, source="/test"))
    return ready, path


def verdict_of(qa: TestClient, asset_id: str) -> dict[str, Any]:
    """The stored verdict of an asset, once there is one."""
    resp = wait_for(lambda: qa.get(f"/qa/{asset_id}", headers=AUTH), lambda r: r.status_code == 200, timeout_s=60)
    body: dict[str, Any] = resp.json()
    return body


def finding(verdict: dict[str, Any], check: str) -> dict[str, Any]:
    """The verdict's finding of ``check`` (exactly one)."""
    [found] = [f for f in verdict["findings"] if f["check"] == check]
    return found


def errors(verdict: dict[str, Any]) -> list[str]:
    """The checks that fail the verdict."""
    return [f["check"] for f in verdict["findings"] if not f["passed"] and f["severity"] == "error"]


async def events_about(bus: Bus, fact: str, asset_id: str) -> list[Any]:
    """Messages of ``wm.evt.<fact>`` about ``asset_id`` (its verdicts, or regenerations it asked for)."""
    out = []
    async for _, m in bus.replay(EVENTS.name, event_subject(fact)):
        if getattr(m, "asset_id", None) == asset_id or getattr(m, "requested_by", None) == f"qa:{asset_id}":
            out.append(m)
    return out


# --------------------------------------------------------------------------------------------- the service


async def test_a_fail_gate_fails_a_video_under_its_threshold_and_stores_what_was_asked_and_answered(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, store: ObjectStore, tmp_path: Path, critic: CriticStandIn
) -> None:
    """gate fail, threshold 0.75: 2 of 4 clean answers fail the video (regenerated); 3 of 4 pass. Both store the record."""
    name = f"cg-{uuid.uuid4().hex[:8]}"
    gate = {"critic": {"gate": "fail", "kind": "anomaly", "threshold": 0.75}}
    specs = manifest_specs(name, {"C01": None, "C02": None}, qa=gate)
    low, high = f"asset-{specs['C01'].prompt_id}", f"asset-{specs['C02'].prompt_id}"
    critic.answer(low, answers("Yes", "No", "Yes", "No"))
    critic.answer(high, answers("No", "No", "Yes", "No"))
    with qa_app(nats, s3, tmp_path, vlm_base_url=BASE, vlm_fps=2.0, max_regenerations=1) as qa:
        _, low_file = await deliver(bus, store, tmp_path, specs["C01"], seed=11)
        await deliver(bus, store, tmp_path, specs["C02"], seed=12)
        failed, passed = verdict_of(qa, low), verdict_of(qa, high)

    assert errors(failed) == [CHECK]
    f = finding(failed, CHECK)
    assert (f["passed"], f["severity"], f["measured"], f["expected"]) == (False, "error", 0.5, 0.75)
    [sent] = critic.requests[low]
    record = failed["critic"]
    system, user = sent["messages"]
    assert record["system_prompt"] == system["content"]
    assert record["question"] == user["content"][1]["text"]
    assert record["fps"] == sent["mm_processor_kwargs"]["fps"] == 2.0
    assert (record["model"], record["kind"], record["gate"], record["gate_from"]) == (MODEL, "anomaly", "fail", "spec")
    assert (record["threshold"], record["score"], record["trials"], record["valid_trials"]) == (0.75, 0.5, 4, 4)
    assert record["answers"] == ["Yes", "No", "Yes", "No"]
    assert record["raw"] == [trial(a, i) for i, a in enumerate(("Yes", "No", "Yes", "No"))]
    assert record["truncated"] is False and record["prompt_tokens"] == 2100
    # The critic was sent a working link to this very video.
    with urllib.request.urlopen(user["content"][0]["video_url"]["url"], timeout=10) as resp:  # noqa: S310
        assert hashlib.sha256(resp.read()).hexdigest() == hashlib.sha256(low_file.read_bytes()).hexdigest()

    assert errors(passed) == []
    g = finding(passed, CHECK)
    assert (g["passed"], g["severity"], g["measured"]) == (True, "error", 0.75)
    assert passed["critic"]["score"] == 0.75 and passed["critic"]["answers"] == ["No", "No", "Yes", "No"]

    # The events carry the record too, and the failure asks for a new attempt.
    [event] = await events_about(bus, "qa.failed", low)
    assert isinstance(event, QaFailed) and event.critic is not None
    assert event.critic.model_dump(mode="json") == record
    [regen] = await events_about(bus, "generation.requested", low)
    assert isinstance(regen, GenerationRequested) and regen.prompt_ids == (specs["C01"].prompt_id,)
    assert [type(m) for m in await events_about(bus, "qa.passed", high)] == [QaPassed]


async def test_without_a_spec_gate_the_settings_warn_and_the_verdict_passes(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, store: ObjectStore, tmp_path: Path, critic: CriticStandIn
) -> None:
    """No qa in the manifest, a critic configured: today's warning (threshold 0.5), recorded as from settings."""
    specs = manifest_specs(f"cg-{uuid.uuid4().hex[:8]}", {"C01": None})
    asset = f"asset-{specs['C01'].prompt_id}"
    critic.answer(asset, answers("Yes", "Yes", "Yes", "No"))
    with qa_app(nats, s3, tmp_path, vlm_base_url=BASE) as qa:
        await deliver(bus, store, tmp_path, specs["C01"], seed=21)
        verdict = verdict_of(qa, asset)
    assert specs["C01"].qa is None and "qa" not in specs["C01"].model_dump(mode="json")
    assert errors(verdict) == []
    f = finding(verdict, CHECK)
    assert (f["passed"], f["severity"], f["measured"], f["expected"]) == (False, "warning", 0.25, 0.5)
    assert (verdict["critic"]["gate"], verdict["critic"]["gate_from"]) == ("warn", "settings")
    assert verdict["critic"]["answers"] == ["Yes", "Yes", "Yes", "No"]


async def test_the_manifest_and_its_scenarios_override_the_settings(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, store: ObjectStore, tmp_path: Path, critic: CriticStandIn
) -> None:
    """Settings warn/anomaly; the manifest asks fail/plausibility ≥ 4; one scenario turns it off, one to warn."""
    specs = manifest_specs(
        f"cg-{uuid.uuid4().hex[:8]}",
        {"C01": None, "C02": {"critic": {"gate": False}}, "C03": {"critic": {"gate": "warn"}}},  # False: YAML's off
        qa={"critic": {"gate": "fail", "kind": "plausibility", "threshold": 4}},
    )
    ids = {sid: f"asset-{s.prompt_id}" for sid, s in specs.items()}
    critic.answer(ids["C01"], answers("3", "4", "3", "3"))
    critic.answer(ids["C02"], answers("1", "1", "1", "1"))
    critic.answer(ids["C03"], answers("5", "3", "3", "3"))
    with qa_app(nats, s3, tmp_path, vlm_base_url=BASE, vlm_gate="warn", vlm_kind="anomaly", vlm_threshold=0.5) as qa:
        for seed, sid in enumerate(specs, start=31):
            await deliver(bus, store, tmp_path, specs[sid], seed=seed)
        failed, off, warned = (verdict_of(qa, ids[s]) for s in ("C01", "C02", "C03"))

    assert errors(failed) == [CHECK]
    f = finding(failed, CHECK)
    assert (f["measured"], f["expected"], f["severity"]) == (3.25, 4, "error")
    [sent] = critic.requests[ids["C01"]]
    assert "plausibility" in sent["messages"][1]["content"][1]["text"].lower()
    assert (failed["critic"]["kind"], failed["critic"]["gate_from"]) == ("plausibility", "spec")

    assert ids["C02"] not in critic.requests  # gate off: never asked
    assert off["critic"] is None and [x for x in off["findings"] if x["check"].startswith("vlm")] == []
    assert errors(off) == []

    assert errors(warned) == []
    w = finding(warned, CHECK)
    assert (w["passed"], w["severity"], w["measured"], w["expected"]) == (False, "warning", 3.5, 4)


async def test_a_fail_gate_without_a_critic_fails_saying_none_is_configured(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, store: ObjectStore, tmp_path: Path
) -> None:
    """No WM_QA_VLM_BASE_URL: a spec requiring the critic fails (not regenerated); one that does not is unchanged."""
    specs = manifest_specs(f"cg-{uuid.uuid4().hex[:8]}", {"C01": {"critic": {"gate": "fail"}}, "C02": None})
    required, plain = (f"asset-{specs[s].prompt_id}" for s in ("C01", "C02"))
    with qa_app(nats, s3, tmp_path, max_regenerations=1) as qa:
        await deliver(bus, store, tmp_path, specs["C01"], seed=41)
        await deliver(bus, store, tmp_path, specs["C02"], seed=42)
        failed, ok = verdict_of(qa, required), verdict_of(qa, plain)
    assert errors(failed) == [UNJUDGED]
    f = finding(failed, UNJUDGED)
    assert "requires the VLM critic but none is configured" in f["message"] and "WM_QA_VLM_BASE_URL" in f["message"]
    assert (failed["critic"]["gate"], failed["critic"]["model"], failed["critic"]["score"]) == ("fail", None, None)
    assert "none is configured" in failed["critic"]["error"]
    assert await events_about(bus, "generation.requested", required) == []  # a new video would not help
    assert errors(ok) == [] and ok["critic"] is None
    assert [x for x in ok["findings"] if x["check"].startswith("vlm")] == []


async def test_an_unreachable_critic_under_a_fail_gate_is_retried_not_judged(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, store: ObjectStore, tmp_path: Path, critic: CriticStandIn
) -> None:
    """A 503 under gate fail leaves no verdict: the message comes back and is judged once the critic answers.

    Under the settings' warn gate the same 503 gives a passing "not judged" at once, without a retry.
    """
    specs = manifest_specs(f"cg-{uuid.uuid4().hex[:8]}", {"C01": {"critic": {"gate": "fail"}}, "C02": None})
    gated, warned = (f"asset-{specs[s].prompt_id}" for s in ("C01", "C02"))
    down = httpx.Response(503, json={"object": "error", "message": "engine warming up"})
    critic.answer(gated, down, answers(*CLEAN))
    critic.answer(warned, down)
    with qa_app(nats, s3, tmp_path, vlm_base_url=BASE, vlm_max_retries=0) as qa:
        await deliver(bus, store, tmp_path, specs["C01"], seed=51)
        await deliver(bus, store, tmp_path, specs["C02"], seed=52)
        judged_later, not_judged = verdict_of(qa, gated), verdict_of(qa, warned)
    # A verdict after the first call would have stopped the redelivery before the critic was asked again.
    assert len(critic.requests[gated]) == 2
    assert errors(judged_later) == [] and finding(judged_later, CHECK)["passed"] is True
    assert judged_later["critic"]["answers"] == list(CLEAN) and judged_later["critic"]["error"] is None
    assert [type(m) for m in await events_about(bus, "qa.passed", gated)] == [QaPassed]

    assert len(critic.requests[warned]) == 1
    u = finding(not_judged, UNJUDGED)
    assert (u["passed"], u["severity"]) == (True, "info") and "engine warming up" in u["message"]
    assert errors(not_judged) == [] and "engine warming up" in not_judged["critic"]["error"]


async def test_malformed_answers_under_a_fail_gate_fail_with_the_reason_and_the_texts(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, store: ObjectStore, tmp_path: Path, critic: CriticStandIn
) -> None:
    """No trial with a valid <answer>: the video fails 'vlm_critic_unjudged', the texts kept (the long one cut)."""
    specs = manifest_specs(f"cg-{uuid.uuid4().hex[:8]}", {"C01": {"critic": {"gate": "fail"}}})
    asset = f"asset-{specs['C01'].prompt_id}"
    texts = ("The video looks fine.", "<answer>maybe</answer>", "é" * 5000)
    critic.answer(asset, completion(*texts))
    with qa_app(nats, s3, tmp_path, vlm_base_url=BASE, vlm_trials=3) as qa:
        await deliver(bus, store, tmp_path, specs["C01"], seed=61)
        verdict = verdict_of(qa, asset)
    assert errors(verdict) == [UNJUDGED]
    assert "malformed answer" in finding(verdict, UNJUDGED)["message"]
    record = verdict["critic"]
    assert (record["trials"], record["valid_trials"], record["score"], record["answers"]) == (3, 0, None, [])
    assert record["raw"][:2] == list(texts[:2]) and record["raw_bytes"] == [len(t.encode()) for t in texts]
    assert record["truncated"] is True and texts[2].startswith(record["raw"][2])
    assert 0 < len(record["raw"][2].encode()) <= CRITIC_RAW_LIMIT_BYTES
    assert record["system_prompt"] and record["question"] and "malformed" in record["error"]


# --------------------------------------------------------------------------------------------- pure rules


@pytest.mark.parametrize(
    ("requested", "configured", "expected"),
    [
        (None, True, Gate("warn", "anomaly", 0.5, "settings")),
        (None, False, None),
        (CriticRequirement(gate="warn"), False, Gate("warn", "anomaly", 0.5, "spec")),
        (CriticRequirement(gate="off"), True, None),
        (CriticRequirement(gate="fail", kind="anomaly", threshold=0.9), True, Gate("fail", "anomaly", 0.9, "spec")),
        # another kind than the settings' never inherits the settings' threshold
        (CriticRequirement(gate="fail", kind="plausibility"), True, Gate("fail", "plausibility", 3.0, "spec")),
        (CriticRequirement(kind="plausibility", threshold=4.5), True, Gate("warn", "plausibility", 4.5, "settings")),
    ],
)
def test_the_gate_is_the_specs_over_the_settings(
    requested: CriticRequirement | None, configured: bool, expected: Gate | None
) -> None:
    """resolve(): the spec's keys win; unset ones come from the settings; without a critic only a spec asks."""
    assert resolve(CriticDefaults("warn", "anomaly", 0.5), requested, configured=configured) == expected


def test_settings_refuse_a_bad_gate_kind_or_threshold_naming_the_field(
    nats: NatsEndpoint, s3: S3Endpoint, tmp_path: Path
) -> None:
    """WM_QA_VLM_GATE/_KIND/_THRESHOLD are checked: the error names the field and the rule."""
    base = {**settings(nats, s3, tmp_path, "qa"), "vlm_base_url": BASE}
    cases = [
        ({"vlm_gate": "block"}, "vlm_gate", "'off', 'warn' or 'fail'"),
        ({"vlm_kind": "vibes"}, "vlm_kind", "'anomaly' or 'plausibility'"),
        ({"vlm_threshold": 3.0}, "vlm_threshold", "outside 0–1 for kind anomaly"),
        ({"vlm_kind": "plausibility", "vlm_threshold": 0.5}, "vlm_threshold", "outside 1–5 for kind plausibility"),
        ({"vlm_base_url": None, "vlm_gate": "fail"}, "vlm_gate", "needs a critic"),
    ]
    for extra, field, rule in cases:
        with pytest.raises(ValidationError) as caught:
            QaSettings(**{**base, **extra})
        [err] = caught.value.errors()
        assert err["loc"] == (field,) and rule in err["msg"], (extra, err)
    assert QaSettings(**base, vlm_kind="plausibility").critic_threshold == 3.0
    assert QaSettings(**base, vlm_gate="fail", vlm_threshold=0.8).critic_threshold == 0.8


def test_a_critic_failure_is_regenerable_an_unjudged_video_is_not() -> None:
    """The policy asks for a new run for a failed score, never for a video nobody could judge."""
    policy = RegenerationPolicy()
    assert policy.wants([Finding(check=CHECK, passed=False, severity=Severity.ERROR)], done=0)
    assert not policy.wants([Finding(check=UNJUDGED, passed=False, severity=Severity.ERROR)], done=0)
    assert not policy.wants([Finding(check=CHECK, passed=False, severity=Severity.WARNING)], done=0)


def test_a_verdict_with_sixteen_huge_answers_still_fits_its_envelope() -> None:
    """Raw texts are cut to the limit as JSON (escapes counted), so the verdict event stays under 256 KiB."""
    raw = tuple(('\x01"é\n' * 40_000) + f"<answer>No</answer>{i}" for i in range(20))
    result = CriticResult(
        kind="anomaly",
        score=1.0,
        answers=("No",) * 20,
        trials=20,
        valid_trials=20,
        prompt_tokens=None,
        model=MODEL,
        raw=raw,
        system_prompt="s",
        question="q",
        fps=4.0,
    )
    finding_, record = judged(Gate("fail", "anomaly", 0.5, "settings"), result)
    assert len(record.raw) == CRITIC_MAX_RAW and record.truncated
    assert record.raw_bytes == tuple(len(t.encode()) for t in raw[:CRITIC_MAX_RAW])
    assert all(len(json.dumps(t, ensure_ascii=False).encode()) - 2 <= CRITIC_RAW_LIMIT_BYTES for t in record.raw)
    assert all(raw[0].startswith(t) and len(t) > 100 for t in record.raw)
    ref = ObjectRef(bucket="wm-artifacts", key="a/v.mp4", size=1, sha256="0" * 64, content_type="video/mp4")
    verdict = QaPassed(
        asset_id="a", video=ref, findings=(finding_,), checked_at=datetime.now(UTC), checker_version="t", critic=record
    )
    assert len(OutboxItem.of(verdict, source="/t", event_id="e").payload) <= MAX_ENVELOPE_BYTES
    assert bounded(("short",)) == {"raw": ("short",), "raw_bytes": (5,), "truncated": False}
