"""Hostile messages into every consumer (issue #16): each is dead-lettered with its reason, nothing blocks.

Every service runs on the real test servers with its real consumers (prompt, upsample, generate,
augment, qa, catalog, and the GPU runner's job queue). Hypothesis draws batches of messages another
system could publish with raw nats-py — bytes that are not JSON, JSON that is not an object or not an
envelope, envelopes of unknown types, known types with data that breaks the schema, and payloads far
over the envelope limit (up to the stream's 1 MiB) — and each is published on a subject of each
consumer's filter. Checked for every consumer whose filter takes the subject: one dead letter per
message with a reason of its kind (found by stream position, so the session's other traffic does not
count), nothing left pending or unacked, the loop still running, and a valid event published after
the batch still acked.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.generation import runner_client
from tests.helpers.generation import settings as service_settings
from worldmill.augment.app import create_app as create_augment_app
from worldmill.augment.settings import AugmentSettings
from worldmill.catalog.app import create_app as create_catalog_app
from worldmill.contracts.deadletter import DeadLetter
from worldmill.contracts.envelope import wrap
from worldmill.contracts.generation import VideoReady
from worldmill.contracts.objects import ObjectCreated
from worldmill.contracts.subjects import DLQ, GPU_JOBS, S3_NOTIFICATIONS, ConsumerSpec, dlq_subject
from worldmill.generate.app import create_app as create_generate_app
from worldmill.generate.settings import GenerateSettings
from worldmill.prompt.app import create_app as create_prompt_app
from worldmill.qa.app import create_app as create_qa_app
from worldmill.runtime.bus import Bus
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint, start_nats
from worldmill.runtime.settings import RuntimeSettings
from worldmill.upsample.app import create_app as create_upsample_app
from worldmill.upsample.settings import UpsampleSettings

pytestmark = pytest.mark.slow

#: The reasons each kind of hostile message is dead-lettered with by a consumer of envelopes.
REASONS: dict[str, frozenset[str]] = {
    "binary": frozenset({"not_json"}),
    "json_scalar": frozenset({"invalid_envelope"}),
    "not_envelope": frozenset({"invalid_envelope"}),
    "unknown_type": frozenset({"unknown_type"}),
    "bad_data": frozenset({"invalid_data", "unexpected_type"}),
    "oversized": frozenset({"not_json"}),
}
#: MinIO's raw notifications are foreign JSON read by their own decoder: whatever it cannot read is invalid data.
RAW_REASONS = frozenset({"invalid_data"})


@dataclass(frozen=True)
class Hostile:
    kind: str
    payload: bytes


def _envelope(kind: str, data: Any, *, ce_type: str) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"fuzz-{uuid.uuid4().hex}", "source": "/hostile", "type": ce_type, "data": data}


scalars = st.one_of(st.integers(), st.text(max_size=30), st.booleans(), st.none(), st.floats(allow_nan=False))
HOSTILE = st.one_of(
    st.binary(max_size=300).filter(lambda b: not _is_json(b)).map(lambda b: Hostile("binary", b)),
    st.one_of(scalars, st.lists(scalars, max_size=5)).map(lambda v: Hostile("json_scalar", json.dumps(v).encode())),
    st.dictionaries(st.text(max_size=12), scalars, max_size=6)
    .filter(lambda d: "specversion" not in d)
    .map(lambda d: Hostile("not_envelope", json.dumps(d).encode())),
    st.from_regex(r"[a-z]{3,12}", fullmatch=True).map(
        lambda name: Hostile(
            "unknown_type",
            json.dumps(_envelope("u", {"x": 1}, ce_type=f"io.worldmill.fuzz_{name}.v1")).encode(),
        )
    ),
    st.dictionaries(st.sampled_from(["junk", "zz", "__proto__"]), scalars, min_size=1, max_size=3).map(
        lambda d: Hostile("bad_data", json.dumps(_envelope("b", d, ce_type=VideoReady.ce_type())).encode())
    ),
    st.integers(min_value=300 * 1024, max_value=900 * 1024).map(
        lambda n: Hostile("oversized", b'{"specversion": "1.0", "data": "' + b"A" * n)
    ),
)


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return False
    return True


def _batches() -> list[list[Hostile]]:
    """Hypothesis's batches, drawn deterministically (the same ones on every run)."""
    out: list[list[Hostile]] = []

    @settings(max_examples=3, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(HOSTILE, min_size=6, max_size=10))
    def collect(batch: list[Hostile]) -> None:
        out.append(batch)

    collect()
    kinds = {h.kind for batch in out for h in batch}
    assert kinds == set(REASONS), f"the batches miss kinds: {set(REASONS) - kinds}"
    return out


def _matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` one token, ``>`` the rest."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def _concrete(pattern: str) -> str:
    return ".".join("fuzz" if t == "*" else ("fuzz.hostile" if t == ">" else t) for t in pattern.split("."))


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsEndpoint]:
    """A nats-server for this module alone: the session's shared consumers may hold other tests' leftovers
    (still being retried), which would keep them from ever being empty here."""
    proc, endpoint = start_nats(tmp_path_factory.mktemp("hostile-nats"))
    try:
        yield endpoint
    finally:
        proc.stop()


@pytest.fixture
async def own_bus(own_nats: NatsEndpoint) -> AsyncIterator[Bus]:
    bus = Bus(own_nats.url, name="hostile")
    await bus.connect()
    try:
        yield bus
    finally:
        await bus.close()


@pytest.fixture(scope="module")
def services(own_nats: NatsEndpoint, s3: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Any]]:
    """Every service app running (with its consumers), and the GPU runner, on this module's nats-server."""
    nats = own_nats

    def fields(service: str) -> dict[str, Any]:
        folder: Path = tmp_path_factory.mktemp(f"hostile-{service}")
        return service_settings(nats, s3, folder, service)

    apps = [
        create_prompt_app(RuntimeSettings(**fields("prompt"))),
        create_upsample_app(UpsampleSettings(**{**fields("upsample"), "base_url": None})),
        create_generate_app(GenerateSettings(**{**fields("generate"), "backends": ("synthetic",)})),
        create_augment_app(AugmentSettings(**{**fields("augment"), "poll": False})),
        create_qa_app(RuntimeSettings(**fields("qa"))),
        create_catalog_app(RuntimeSettings(**fields("catalog"))),
    ]
    with ExitStack() as stack:
        clients = [stack.enter_context(TestClient(app)) for app in apps]
        clients.append(stack.enter_context(runner_client(nats, s3, tmp_path_factory.mktemp("hostile-runner"))))
        yield clients


def _consumers(clients: list[TestClient]) -> list[tuple[ConsumerSpec, Any]]:
    """(spec, stats-or-None) of every consumer the apps run; the runner's job queue has no Consumer stats."""
    out: list[tuple[ConsumerSpec, Any]] = []
    for client in clients:
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        out += [(c.spec, c) for c in ctx.consumers]
    out.append((GPU_JOBS, None))
    return out


async def test_every_consumer_dead_letters_hostile_messages_and_goes_on(
    services: list[TestClient], own_bus: Bus
) -> None:
    bus = own_bus
    consumers = _consumers(services)
    subjects = sorted({_concrete(spec.filter_subject) for spec, _ in consumers})
    assert len(consumers) >= 8, [s.durable for s, _ in consumers]
    published: dict[tuple[str, int], tuple[str, Hostile]] = {}
    for batch in _batches():
        for hostile in batch:
            for subject in subjects:
                ack = await bus.js.publish(subject, hostile.payload)
                published[(ack.stream, ack.seq)] = (subject, hostile)
    # A valid event after the batches: every consumer of object.created must still ack it.
    good = ObjectCreated(
        bucket="wm-exports", key=f"fuzz/{uuid.uuid4().hex}.txt", size=1, etag="e", origin="api",
        event_time=datetime.now(UTC),
    )  # fmt: skip
    good_ack = await bus.publish(wrap(good, source="/fuzz"))
    expected = {
        spec.durable: {
            pos
            for pos, (subject, _) in published.items()
            if pos[0] == spec.stream and _matches(spec.filter_subject, subject)
        }
        for spec, _ in consumers
    }
    letters = await _letters_of(bus, expected, timeout_s=120)
    for spec, _ in consumers:
        got = letters[spec.durable]
        assert set(got) == expected[spec.durable], (spec.durable, len(got), len(expected[spec.durable]))
        for pos, letter in got.items():
            kind = published[pos][1].kind
            allowed = RAW_REASONS if spec.stream == S3_NOTIFICATIONS.name else REASONS[kind]
            assert letter.reason in allowed, (spec.durable, kind, letter.reason, letter.error[:200])
            if kind == "oversized":  # too big for the letter: kept as an object, referenced
                assert letter.payload_encoding == "object" and letter.payload_ref is not None
    for spec, consumer in consumers:
        info = await _settled(bus, spec)
        assert info.num_pending == 0 and info.num_ack_pending == 0, (spec.durable, info)
        if _matches(spec.filter_subject, good.subject()):
            assert info.ack_floor.stream_seq >= good_ack.sequence, (spec.durable, "the good event after the batch")
        if consumer is not None:
            assert consumer.stats.dead_lettered >= len(expected[spec.durable])
    for client in services:  # every loop still running
        assert client.get("/healthz").status_code == 200


async def _letters_of(bus: Bus, expected: dict[str, set[tuple[str, int]]], timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    found: dict[str, dict[tuple[str, int], DeadLetter]] = {d: {} for d in expected}
    while time.monotonic() < deadline:
        for durable, want in expected.items():
            if len(found[durable]) >= len(want):
                continue
            async for _, m in bus.replay(DLQ.name, dlq_subject(durable)):
                if isinstance(m, DeadLetter) and (m.stream, m.stream_sequence) in want:
                    found[durable][(m.stream, m.stream_sequence)] = m
        if all(len(found[d]) >= len(w) for d, w in expected.items()):
            break
        await asyncio.sleep(0.5)
    return found


async def _settled(bus: Bus, spec: ConsumerSpec, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        info = await bus.js.consumer_info(spec.stream, spec.durable)
        if (info.num_pending == 0 and info.num_ack_pending == 0) or time.monotonic() > deadline:
            return info
        await asyncio.sleep(0.3)
