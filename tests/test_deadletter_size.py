"""A message of any size a stream accepts is dead-lettered and never blocks a queue; letters name their consumer.

Streams take messages up to 1 MiB, envelopes 256 KiB. Before the fix a junk message too big for its
dead letter was never dead-lettered nor acked: the letter's publish was refused, the message came
back at the head of the queue forever and (on ``wm.job.gpu``) the runner's loop died on it. And a
dead letter's id did not name its consumer, so when two consumers gave up on one message the
second letter was dropped as a duplicate while its log said "dead-lettered".
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid

from tests.helpers.bus import PrivateStream, dead_letters, eventually, run_until
from tests.helpers.factories import synthetic_job
from tests.helpers.runner import outcomes, run_jobs
from tests.test_consumer import _event, _spec
from worldmill.contracts.deadletter import DeadLetter, dead_letter_id, payload_key
from worldmill.contracts.envelope import wrap
from worldmill.contracts.generation import GpuJob
from worldmill.contracts.keys import ALL_BUCKETS, ARTIFACTS_BUCKET
from worldmill.contracts.objects import ObjectCreated
from worldmill.contracts.subjects import DLQ, GPU_JOBS, dlq_subject
from worldmill.gpu_runner.backends import BackendConfig, SyntheticBackend
from worldmill.gpu_runner.cache import ModelCache
from worldmill.gpu_runner.worker import Runner
from worldmill.runtime.bus import Bus
from worldmill.runtime.consumer import Consumer, Delivery
from worldmill.runtime.dead_letters import fit_headers
from worldmill.runtime.servers import S3Endpoint, free_port
from worldmill.runtime.store import ObjectStore


def _gpu_job(tag: str, i: int) -> GpuJob:
    return synthetic_job(f"d{tag}-{i}", i, frames=12, steps=2, prompt="a parcel at a door")


async def _letter_for(bus: Bus, consumer: str, sha256: str) -> DeadLetter | None:
    """The dead letter of ``consumer`` whose payload has this sha256 (inline or as an object)."""
    async for _, m in bus.replay(DLQ.name, dlq_subject(consumer)):
        if isinstance(m, DeadLetter) and m.payload_ref is not None and m.payload_ref.sha256 == sha256:
            return m
    return None


async def test_a_300kib_junk_job_is_dead_lettered_and_later_gpu_jobs_still_complete(
    bus: Bus, store: ObjectStore
) -> None:
    """300 KiB of junk at the head of wm.job.gpu: dead-lettered with its bytes in the store; the jobs behind it run."""
    await store.ensure_buckets(ALL_BUCKETS)
    junk = os.urandom(300 * 1024)
    await bus.js.publish(GPU_JOBS.filter_subject, junk)
    tag = uuid.uuid4().hex[:6]
    jobs = [_gpu_job(tag, i) for i in range(2)]
    cache = ModelCache(lambda _: SyntheticBackend(BackendConfig()), budget_bytes=10**9)
    runner = Runner(bus, store, cache, name=f"junk-{tag}", window=2)
    events = await run_jobs(runner, cache, bus, jobs, timeout_s=120)
    assert outcomes(events) == {j.run_id: "JobCompleted" for j in jobs}
    digest = hashlib.sha256(junk).hexdigest()
    letter = await eventually(lambda: _letter_for(bus, GPU_JOBS.durable, digest), lambda x: x is not None)
    assert letter is not None, "the junk was not dead-lettered"
    assert letter.reason == "not_json" and letter.payload_encoding == "object" and letter.payload == ""
    assert letter.payload_size == len(junk) and letter.original_subject == GPU_JOBS.filter_subject
    ref = letter.payload_ref
    assert ref is not None and ref.key == payload_key(GPU_JOBS.durable, letter.stream, letter.stream_sequence)
    assert await store.get_bytes(ref.bucket, ref.key) == junk  # nothing accepted is lost


async def test_a_1mib_message_is_dead_lettered_through_the_store_and_termed(
    bus: Bus, test_stream: PrivateStream, store: ObjectStore
) -> None:
    """Close to the stream's 1 MiB limit, with a big header: the letter fits, the bytes are kept, the queue moves."""
    await store.ensure_buckets(ALL_BUCKETS)
    junk = os.urandom(1000 * 1024)
    subject = test_stream.subject()
    await bus.js.publish(subject, junk, headers={"x-note": "n" * 2000})
    good = wrap(_event(1), source="/t")
    await bus.publish(good, subject=subject)
    handled: list[str] = []

    async def handler(d: Delivery) -> None:
        handled.append(d.envelope.id)

    consumer = Consumer(bus, _spec(test_stream, "big"), handler, accept=(ObjectCreated,), store=store)
    await run_until(consumer, lambda: consumer.stats.acked == 1 and consumer.stats.dead_lettered == 1)
    assert handled == [good.id]
    [letter] = await dead_letters(bus, "big", 1)
    assert letter.payload_encoding == "object" and letter.payload_ref is not None
    assert letter.payload_ref.sha256 == hashlib.sha256(junk).hexdigest()
    assert letter.headers["x-note"] == "n" * 2000 and not letter.headers_truncated
    assert await store.get_bytes(ARTIFACTS_BUCKET, letter.payload_ref.key, max_bytes=2 * 1024 * 1024) == junk
    info = await bus.js.consumer_info(test_stream.spec.name, "big")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_while_the_payload_cannot_be_stored_the_message_steps_aside_and_others_flow(
    bus: Bus, test_stream: PrivateStream, s3: S3Endpoint, store: ObjectStore
) -> None:
    """Store unreachable: the big message is handed back with backoff (not termed, not lost) while the
    messages behind it are handled; once the store answers, it is dead-lettered with its bytes."""
    await store.ensure_buckets(ALL_BUCKETS)
    junk = os.urandom(400 * 1024)
    subject = test_stream.subject()
    await bus.js.publish(subject, junk)
    goods = [wrap(_event(n), source="/t") for n in range(3)]
    for env in goods:
        await bus.publish(env, subject=subject)
    handled: list[str] = []

    async def handler(d: Delivery) -> None:
        handled.append(d.envelope.id)

    nowhere = ObjectStore(f"http://127.0.0.1:{free_port()}", s3.access_key, s3.secret_key, retries=0)
    spec = _spec(test_stream, "aside", max_deliver=2, backoff_base_s=0.2, backoff_max_s=0.5)
    consumer = Consumer(bus, spec, handler, accept=(ObjectCreated,), store=nowhere)
    await run_until(consumer, lambda: len(handled) == 3 and consumer.stats.deferred >= 3)
    assert handled == [g.id for g in goods]
    assert consumer.stats.dead_lettered == 0  # deferred past its delivery limit, still not given up
    info = await bus.js.consumer_info(test_stream.spec.name, "aside")
    assert info.ack_floor.stream_seq == 0, "the big message (sequence 1) must not be settled without its letter"
    consumer.store = store  # the store is back
    await run_until(consumer, lambda: consumer.stats.dead_lettered == 1)
    [letter] = await dead_letters(bus, "aside", 1)
    assert letter.reason == "not_json" and letter.payload_ref is not None
    assert await store.get_bytes(ARTIFACTS_BUCKET, letter.payload_ref.key) == junk
    assert letter.deliveries > spec.max_deliver  # the reason stays the real one, not "max_deliveries"
    info = await eventually(
        lambda: bus.js.consumer_info(test_stream.spec.name, "aside"), lambda i: i.ack_floor.stream_seq == 4
    )
    assert info.ack_floor.stream_seq == 4


async def test_two_consumers_giving_up_on_one_message_each_keep_their_dead_letter(
    bus: Bus, test_stream: PrivateStream
) -> None:
    """Two durables refuse the same event: two letters (ids name the consumer), none dropped as a duplicate."""
    await bus.publish(wrap(_event(5), source="/t"), subject=test_stream.subject())
    durables = [f"refuse-{uuid.uuid4().hex[:6]}" for _ in range(2)]

    async def handler(d: Delivery) -> None:
        raise AssertionError("must not run")

    for picky in [Consumer(bus, _spec(test_stream, d), handler, accept=()) for d in durables]:
        await run_until(picky, lambda c=picky: c.stats.dead_lettered == 1)
    first, second = [await dead_letters(bus, d, 1) for d in durables]
    assert [len(first), len(second)] == [1, 1], "a consumer's dead letter was dropped as a duplicate"
    assert (first[0].consumer, second[0].consumer) == tuple(durables)
    assert first[0].stream_sequence == second[0].stream_sequence
    assert first[0].reason == second[0].reason == "unexpected_type"


def test_letter_headers_are_kept_when_they_fit_and_cut_when_they_do_not() -> None:
    small = {"ce-type": "io.worldmill.x.v1", "Nats-Msg-Id": "abc"}
    assert fit_headers(small, 1024) == (small, False)
    big = {f"h{i}": "v" * 5000 for i in range(100)}
    kept, cut = fit_headers(big, 8 * 1024)
    assert cut and all(len(v) <= 256 for v in kept.values())
    assert 0 < len(kept) < len(big)
    assert len(json.dumps(kept)) <= 8 * 1024


def test_dead_letter_ids_and_payload_keys_name_the_consumer_and_the_position() -> None:
    assert dead_letter_id("qa-videos", "WM_EVENTS", 42) != dead_letter_id("catalog", "WM_EVENTS", 42)
    assert dead_letter_id("catalog", "WM_EVENTS", 42) != dead_letter_id("catalog", "WM_EVENTS", 43)
    assert payload_key("gpu-runner", "WM_JOBS", 7) == "deadletters/gpu-runner/WM_JOBS/7.bin"
