"""A QA regeneration makes another video: a new seed, recorded in the plan, the provenance and the lineage.

Pure tests first (the seed function, plans, run ids, the request QA sends, the catalog's lineage
edges), then the whole loop on the real servers (nats-server, SeaweedFS) with the synthetic backend,
whose frames come from the seed: a spec whose first video fails QA for a regenerable reason is made
again with another seed, and the second video differs and passes.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.helpers.generation import AUTH, announce, generate_client, runner_client, specs, wait_runs
from tests.helpers.generation import settings as service_settings
from tests.helpers.polling import wait_for
from worldmill.catalog.app import create_app as create_catalog_app
from worldmill.catalog.projection import Edge, changes_for
from worldmill.contracts.augment import ControlSpec
from worldmill.contracts.backends import builtin_backends
from worldmill.contracts.base import ObjectRef
from worldmill.contracts.cards import ControlType, GenerationMode, ModelCard, builtin_cards
from worldmill.contracts.envelope import EnvelopeAttributes, wrap
from worldmill.contracts.generation import (
    GenerationRequested,
    GenerationSubmission,
    Provenance,
    Regeneration,
    RunUpdated,
    VideoReady,
)
from worldmill.contracts.prompts import PromptSpec, SamplingParams
from worldmill.contracts.qa import Finding, Severity
from worldmill.contracts.subjects import EVENTS, event_subject
from worldmill.generate.planning import SEED_MODULUS, SEED_WINDOW, plan_generation, regeneration_seed
from worldmill.generate.runs import job_id_for, new_run, run_id_for
from worldmill.qa.app import create_app as create_qa_app
from worldmill.qa.fingerprint import hamming
from worldmill.qa.measure import analyze
from worldmill.qa.policy import RegenerationPolicy, failed_checks
from worldmill.runtime.bus import Bus
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint
from worldmill.runtime.settings import RuntimeSettings
from worldmill.runtime.store import ObjectStore

NOW = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
CARDS = builtin_cards()
PROPS = settings(max_examples=300, deadline=None)
SEEDS = st.integers(min_value=0, max_value=SEED_MODULUS - 1)
INPUT = ObjectRef(bucket="wm-inputs", key="clips/dock.mp4", size=1234, sha256="ab" * 32, content_type="video/mp4")


def make_spec(
    card: ModelCard, *, seed: int = 1234, duration_s: float = 5.0, fps: float = 24.0, **over: Any
) -> PromptSpec:
    """A valid text2world spec for ``card``; keyword arguments override fields."""
    fields: dict[str, Any] = {
        "prompt_id": "C01-5s-v0",
        "version": 1,
        "scenario": "loading dock at night",
        "variant": 0,
        "duration_s": duration_s,
        "fps": fps,
        "target_frames": round(duration_s * fps),
        "seed": seed,
        "resolution": card.native_resolution,
        "model": card.id,
        "mode": GenerationMode.TEXT2WORLD,
        "prompt": "A forklift crosses an empty loading dock under sodium lights.",
        "sampling": SamplingParams(guidance=card.default_guidance, steps=card.default_steps),
        "created_at": NOW,
    }
    fields.update(over)
    return PromptSpec(**fields)


REGEN = Regeneration(number=1, replaces="asset-0123456789abcdef01234567-a1", failed_checks=("seams", "static"))


# -------------------------------------------------------------------------------- the seed function


@PROPS
@given(seed=SEEDS, chunks=st.integers(min_value=1, max_value=SEED_WINDOW))
def test_no_regeneration_seed_collides_with_the_original_or_another_regeneration(seed: int, chunks: int) -> None:
    """For regenerations 1–20 of any spec: 32-bit seeds whose chunk seeds never meet the original's or each other's."""
    windows = [{(regeneration_seed(seed, n) + i) % SEED_MODULUS for i in range(chunks)} for n in range(21)]
    assert windows[0] == {(seed + i) % SEED_MODULUS for i in range(chunks)}  # regeneration 0 is the spec itself
    for n in range(1, 21):
        r = regeneration_seed(seed, n)
        assert 0 <= r < SEED_MODULUS and r == regeneration_seed(seed, n)  # 32-bit, and the same on every call
        assert r != (seed + 1) % SEED_MODULUS
        for m in range(n):
            assert windows[n].isdisjoint(windows[m]), (seed, n, m)


def test_regeneration_seeds_are_spread_over_the_whole_seed_space() -> None:
    """Neighbouring specs and successive regenerations land far apart; the top bits are evenly used."""
    firsts = [regeneration_seed(seed, 1) for seed in range(1, 4097)]
    assert len(set(firsts)) == len(firsts)
    buckets = [0] * 16
    for r in firsts:
        buckets[r >> 28] += 1
    assert min(buckets) > 4096 / 16 * 0.7 and max(buckets) < 4096 / 16 * 1.3, buckets
    gaps = [abs(regeneration_seed(1234, n + 1) - regeneration_seed(1234, n)) for n in range(1, 50)]
    assert min(gaps) > 2**20  # never "the next seed"
    with pytest.raises(ValueError, match="≥ 0"):
        regeneration_seed(1234, -1)


# ------------------------------------------------------------------------------------------- plans


def test_a_regeneration_plan_is_reseeded_and_says_so() -> None:
    """Every chunk seed moves to the regeneration's seed; a 'seed' adaptation names the regeneration and the reason."""
    predict = CARDS["cosmos-predict2.5-2b"]
    spec = make_spec(predict, duration_s=30.0)
    original = plan_generation(spec, predict, plan_id="plan-a")
    again = plan_generation(spec, predict, plan_id="plan-b", regeneration=REGEN)
    reseed = regeneration_seed(spec.seed, 1)
    assert [c.seed for c in original.chunks] == [spec.seed + i for i in range(6)]
    assert [c.seed for c in again.chunks] == [(reseed + i) % SEED_MODULUS for i in range(6)]
    assert {c.seed for c in again.chunks}.isdisjoint(c.seed for c in original.chunks)
    assert again.regeneration == REGEN and original.regeneration is None
    [seed_change] = [a for a in again.adaptations if a.field == "seed"]
    assert seed_change.requested == str(spec.seed) and seed_change.delivered.startswith(f"{reseed} ")
    assert "regeneration 1 of asset-0123456789abcdef01234567-a1 after seams, static" in seed_change.reason
    assert [a.field for a in again.adaptations] == ["seed", "fps"]  # the fps conversion is still recorded
    # Everything but the seeds, the plan id, the regeneration and its adaptation is the original plan.
    same = {"plan_id", "chunks", "adaptations", "regeneration"}
    assert again.model_dump(exclude=same) == original.model_dump(exclude=same)
    # The same request planned again (a redelivery) gets the same seed; a plan without one has no field.
    assert plan_generation(spec, predict, plan_id="plan-b", regeneration=REGEN) == again
    assert "regeneration" not in original.model_dump(mode="json")


def test_a_pipeline_plan_is_reseeded_with_one_seed() -> None:
    """diffusers Transfer seeds its generator once per video: the regeneration's seed, for every chunk."""
    transfer = CARDS["cosmos-transfer2.5-2b"]
    spec = make_spec(
        transfer,
        duration_s=241 / 30,
        fps=30.0,
        target_frames=241,
        mode=GenerationMode.TRANSFER,
        input=INPUT,
        controls=(ControlSpec(type=ControlType.EDGE),),
    )
    p = plan_generation(spec, transfer, plan_id="plan-t", backend=builtin_backends()["diffusers"], regeneration=REGEN)
    assert p.chunking == "pipeline" and len(p.chunks) > 1
    assert {c.seed for c in p.chunks} == {regeneration_seed(spec.seed, 1)}


def test_plans_are_limited_to_the_seed_window() -> None:
    """More chunks than a regeneration's seed window keeps apart cannot be asked for."""
    synthetic = CARDS["synthetic"]
    with pytest.raises(ValueError, match=f"between 1 and {SEED_WINDOW}"):
        plan_generation(make_spec(synthetic), synthetic, plan_id="p", max_chunks=SEED_WINDOW + 1)


# ----------------------------------------------------------------------------------- runs and requests


def test_a_regeneration_has_run_and_job_ids_of_its_own() -> None:
    """Another regeneration number is another run even under a reused request id; a repeat finds the same run."""
    assert run_id_for("req-1", "C01-5s-v0") == run_id_for("req-1", "C01-5s-v0", 0)  # ids without one: unchanged
    ids = {run_id_for("req-1", "C01-5s-v0", n) for n in range(4)}
    assert len(ids) == 4
    synthetic = CARDS["synthetic"]
    spec = make_spec(synthetic)
    plan = plan_generation(spec, synthetic, plan_id="plan-r", regeneration=REGEN)
    run = new_run(spec, plan, request_id="req-1", max_attempts=1, requested_by="qa:x", now=NOW)
    assert run.run_id == run_id_for("req-1", spec.prompt_id, 1) != run_id_for("req-1", spec.prompt_id)
    assert run.attempts[0].job_id == job_id_for(run.run_id, 1)


def test_a_regeneration_replacing_an_asset_is_for_one_spec() -> None:
    """The request names the asset it replaces, so it is for that asset's spec; unset, it is left out of the wire."""
    with pytest.raises(ValidationError, match="exactly one prompt id"):
        GenerationRequested(request_id="r", prompt_ids=("a", "b"), regeneration=REGEN)
    with pytest.raises(ValidationError, match="exactly one prompt id"):
        GenerationSubmission(prompt_ids=("a", "b"), regeneration=REGEN)
    assert GenerationRequested(request_id="r", prompt_ids=("a", "b"), regeneration=Regeneration(number=2))
    assert "regeneration" not in GenerationRequested(request_id="r", prompt_ids=("a",)).model_dump(mode="json")


def test_qa_numbers_each_regeneration_and_names_what_failed() -> None:
    """Regeneration n+1 after n failed videos, above the failed video's own number; only error findings count."""
    findings = [
        Finding(check="static", passed=False, severity=Severity.ERROR),
        Finding(check="seams", passed=False, severity=Severity.ERROR),
        Finding(check="static", passed=False, severity=Severity.ERROR),
        Finding(check="identical", passed=False, severity=Severity.WARNING),
        Finding(check="frames", passed=True, severity=Severity.ERROR),
    ]
    assert failed_checks(findings) == ("seams", "static")
    assert RegenerationPolicy.number(0) == 1 and RegenerationPolicy.number(2) == 3
    assert RegenerationPolicy.number(0, previous=1) == 2  # a regeneration's regeneration, whatever was counted


def test_the_catalog_links_a_failed_asset_to_the_request_that_replaces_it() -> None:
    """generation.requested and run.updated of a regeneration both give the edge asset → request (regenerated_by)."""
    synthetic = CARDS["synthetic"]
    spec = make_spec(synthetic)
    plan = plan_generation(spec, synthetic, plan_id="plan-r", regeneration=REGEN)
    run = new_run(spec, plan, request_id="regen-x", max_attempts=1, requested_by="qa:x", now=NOW)
    request = GenerationRequested(request_id="regen-x", prompt_ids=(spec.prompt_id,), regeneration=REGEN)
    edge = Edge("asset", str(REGEN.replaces), "request", "regen-x", "regenerated_by")
    for message in (request, RunUpdated(run=run, version=1)):
        attrs = EnvelopeAttributes(
            id="e1", source="/t", type=message.ce_type(), time=NOW, correlationid="c1", schemaversion=1
        )
        assert edge in changes_for(attrs, message)
    plain = GenerationRequested(request_id="req-y", prompt_ids=(spec.prompt_id,))
    attrs = EnvelopeAttributes(
        id="e2", source="/t", type=plain.ce_type(), time=NOW, correlationid="c2", schemaversion=1
    )
    assert not [c for c in changes_for(attrs, plain) if isinstance(c, Edge)]


# ----------------------------------------------------------------------------- on the real servers


def _verdict(qa: TestClient, asset_id: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        resp = qa.get(f"/qa/{asset_id}", headers=AUTH)
        if resp.status_code == 200:
            body: dict[str, Any] = resp.json()
            return body
        time.sleep(0.2)
    raise AssertionError(f"no verdict for {asset_id}")


def _errors(verdict: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["check"]: f for f in verdict["findings"] if not f["passed"] and f["severity"] == "error"}


def _generate(gen: TestClient, prompt_id: str) -> dict[str, Any]:
    for _ in range(50):  # prompt.created may not have reached the generate service yet
        resp = gen.post("/generations", json={"prompt_ids": [prompt_id]}, headers=AUTH)
        if resp.status_code == 202:
            break
        time.sleep(0.1)
    [run] = wait_runs(gen, resp.json()["request_id"], 1)
    assert run["state"] == "ready", run
    return run


async def _ready(bus: Bus, asset_id: str) -> VideoReady:
    [ready] = [
        m
        async for _, m in bus.replay(EVENTS.name, event_subject("video.ready"))
        if isinstance(m, VideoReady) and m.asset_id == asset_id
    ]
    return ready


async def _fingerprint(store: ObjectStore, video: dict[str, Any]) -> tuple[int, ...]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.mp4"
        await store.download(video["bucket"], video["key"], path)
        fp = analyze(path).fingerprint
    assert fp is not None and len(fp.hashes) > 4
    return fp.hashes


@pytest.fixture
def catalog(nats: NatsEndpoint, s3: S3Endpoint, tmp_path: Path) -> Iterator[TestClient]:
    """The catalog app on the real servers (started first: it sees every event of the test)."""
    with TestClient(create_catalog_app(RuntimeSettings(**service_settings(nats, s3, tmp_path, "catalog")))) as c:
        yield c


async def test_a_failed_video_is_regenerated_with_another_seed_and_the_new_video_differs(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, tmp_path: Path, catalog: TestClient
) -> None:
    """docs/background.md#security-cameras again: two scenarios given one seed make one video twice; the copy fails QA and is made anew.

    The second scenario's video is byte-identical to the first's (the synthetic backend draws from the
    seed), so QA fails it (identical, copy_of: regenerable) and asks for regeneration 1. The generate
    service plans it with ``regeneration_seed`` — with the spec's own seed the runner would make the
    same bytes, fail again, and the spec would never get its video. The new video differs (sha256 and
    fingerprint), passes, and its plan, provenance and catalog lineage say it is a regeneration of the
    failed asset. Last, a "regeneration" made by a backend that ignores the seed is reported as a copy.
    """
    name = f"rg-{uuid.uuid4().hex[:8]}"
    first, second = specs(name, durations=(5,), scenarios=2)
    second = second.model_copy(update={"seed": first.seed})  # one seed for both: the same video
    await announce(bus, [first, second])
    store = ObjectStore(s3.url, s3.access_key, s3.secret_key)
    qa_settings = RuntimeSettings(**service_settings(nats, s3, tmp_path, "qa"))
    with (
        TestClient(create_qa_app(qa_settings)) as qa,
        generate_client(nats, s3, tmp_path) as gen,
        runner_client(nats, s3, tmp_path),
    ):
        original = _generate(gen, first.prompt_id)
        assert _errors(_verdict(qa, original["asset_id"])) == {}
        failed = _generate(gen, second.prompt_id)
        assert failed["video"]["sha256"] == original["video"]["sha256"]
        failed_verdict = _verdict(qa, failed["asset_id"])
        assert {"identical", "copy_of"} <= set(_errors(failed_verdict))

        # QA asked for a new video of the failed one's spec (request regen-<asset>), and got one.
        request_id = f"regen-{failed['asset_id']}"
        [again] = wait_runs(gen, request_id, 1)
        assert again["state"] == "ready", again

        # Another video: other bytes, another picture; it passes, with nothing reported as a copy.
        assert again["video"]["sha256"] != failed["video"]["sha256"]
        before, after = await _fingerprint(store, failed["video"]), await _fingerprint(store, again["video"])
        distance = sum(hamming(a, b) for a, b in zip(before, after, strict=False)) / min(len(before), len(after))
        assert distance > 16, distance  # re-encodings of one picture are 0–4 bits apart, other scenes 25–40
        verdict = _verdict(qa, again["asset_id"])
        assert _errors(verdict) == {}, _errors(verdict)
        findings = {f["check"]: f for f in verdict["findings"]}
        assert findings["identical"]["passed"] and findings["copy_of"]["passed"]

        # It was regeneration 1 of the failed asset, asked for after what it failed.
        regeneration = again["plan"]["regeneration"]
        assert regeneration["number"] == 1 and regeneration["replaces"] == failed["asset_id"]
        assert {"identical", "copy_of"} <= set(regeneration["failed_checks"])
        assert again["requested_by"] == f"qa:{failed['asset_id']}"
        assert again["run_id"] != failed["run_id"] and again["asset_id"] != failed["asset_id"]

        # A new seed, recorded in the plan (chunk seeds, adaptation) and in the provenance.
        reseed = regeneration_seed(second.seed, 1)
        chunks = range(len(failed["plan"]["chunks"]))
        assert [c["seed"] for c in failed["plan"]["chunks"]] == [(second.seed + i) % SEED_MODULUS for i in chunks]
        assert [c["seed"] for c in again["plan"]["chunks"]] == [(reseed + i) % SEED_MODULUS for i in chunks]
        [seed_change] = [a for a in again["plan"]["adaptations"] if a["field"] == "seed"]
        assert seed_change["requested"] == str(second.seed) and seed_change["delivered"].startswith(str(reseed))
        assert f"regeneration 1 of {failed['asset_id']} after " in seed_change["reason"]
        ready = await _ready(bus, again["asset_id"])
        ref = ObjectRef.model_validate(again["provenance_ref"])
        stored = Provenance.model_validate_json(await store.get_bytes(ref.bucket, ref.key))
        for provenance in (ready.provenance, stored):  # in video.ready and in provenance.json
            assert provenance.seeds == tuple((reseed + i) % SEED_MODULUS for i in chunks)
            assert provenance.plan.regeneration is not None
            assert provenance.plan.regeneration.replaces == failed["asset_id"]

        # The same request again (a redelivery, a retrying client) finds that run: same id, same seeds.
        repeat = {"prompt_ids": [second.prompt_id], "request_id": request_id, "regeneration": regeneration}
        resp = gen.post("/generations", json=repeat, headers=AUTH)
        assert resp.status_code == 202, resp.text
        [found] = resp.json()["runs"]
        assert found["run_id"] == again["run_id"] and found["plan"]["chunks"] == again["plan"]["chunks"]

        # The catalog: the new asset's plan names the asset it replaces, and its lineage reaches it.
        def detail() -> dict[str, Any]:
            resp = catalog.get(f"/assets/{again['asset_id']}", headers=AUTH)
            body: dict[str, Any] = resp.json() if resp.status_code == 200 else {}
            return body

        shown = wait_for(detail, lambda d: bool(d) and d.get("plan") is not None and d.get("lineage_edges"))
        assert shown["plan"]["regeneration"]["replaces"] == failed["asset_id"]
        edges = {(e["parent_id"], e["relation"], e["child_id"]) for e in shown["lineage_edges"]}
        assert (failed["asset_id"], "regenerated_by", request_id) in edges
        assert (request_id, "requested", again["run_id"]) in edges

        # A backend that ignores the seed would deliver the failed bytes again: reported, and failed.
        seedless = ready.model_copy(
            update={
                "asset_id": f"asset-seedless-{name}",
                "run_id": f"run-seedless-{name}",
                "video": ObjectRef.model_validate(failed["video"]),
            }
        )
        await bus.publish(wrap(seedless, source="/test"))
        copied = _verdict(qa, seedless.asset_id)
        errors = _errors(copied)
        assert "identical" in errors and original["asset_id"] in errors["identical"]["message"]
        assert "copy_of" in errors and original["asset_id"] in errors["copy_of"]["message"]

        # Seed ignored, and the only earlier picture is the spec's own: reported as a copy of that rendition.
        rerun = ready.model_copy(update={"asset_id": f"asset-rerun-{name}", "run_id": f"run-rerun-{name}"})
        await bus.publish(wrap(rerun, source="/test"))
        same = {f["check"]: f for f in _verdict(qa, rerun.asset_id)["findings"]}
        for check in ("identical", "copy_of"):
            assert same[check]["passed"] is False and same[check]["severity"] == "warning", same[check]
            assert again["asset_id"] in same[check]["message"] and "same spec" in same[check]["message"]
