"""The consume loop against a real nats-server: every outcome decides ack, nak or dead letter."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.helpers.bus import PrivateStream, dead_letters, run_until
from worldmill.contracts.envelope import wrap
from worldmill.contracts.objects import ObjectCreated
from worldmill.contracts.subjects import ConsumerSpec
from worldmill.runtime.admission import backoff_delay
from worldmill.runtime.bus import Bus, encode
from worldmill.runtime.consumer import Consumer, Delivery
from worldmill.runtime.errors import InvalidInputError
from worldmill.runtime.servers import NatsEndpoint


def _event(n: int = 0) -> ObjectCreated:
    return ObjectCreated(
        bucket="wm-inputs", key=f"v/{n}.mp4", size=n, etag=f"e{n}", origin="api", event_time=datetime.now(UTC)
    )


def _spec(stream: PrivateStream, durable: str, **kw: object) -> ConsumerSpec:
    base: dict[str, object] = dict(
        durable=durable,
        stream=stream.spec.name,
        filter_subject=f"{stream.prefix}.>",
        ack_wait_s=5.0,
        max_deliver=3,
        backoff_base_s=0.2,
        backoff_max_s=2.0,
    )
    base.update(kw)
    return ConsumerSpec(**base)  # type: ignore[arg-type]


async def _publish(bus: Bus, stream: PrivateStream, n: int = 0) -> str:
    env = wrap(_event(n), source="/test")
    await bus.publish(env, subject=stream.subject())
    return env.id


async def test_a_handled_message_is_acked_once(bus: Bus, test_stream: PrivateStream) -> None:
    """Success acks: the handler sees the typed message once and nothing is left pending."""
    seen: list[Delivery] = []

    async def handler(d: Delivery) -> None:
        seen.append(d)

    eid = await _publish(bus, test_stream, 7)
    consumer = Consumer(bus, _spec(test_stream, "ok"), handler, accept=(ObjectCreated,))
    await run_until(consumer, lambda: consumer.stats.acked == 1)
    assert [d.envelope.id for d in seen] == [eid]
    assert isinstance(seen[0].message, ObjectCreated) and seen[0].message.size == 7
    info = await bus.js.consumer_info(test_stream.spec.name, "ok")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_invalid_messages_are_dead_lettered_with_reasons_and_the_consumer_keeps_going(
    bus: Bus, test_stream: PrivateStream
) -> None:
    """Not JSON, not an envelope, unknown type, bad data, unexpected type: each dead-lettered; valid ones still run."""
    good = wrap(_event(1), source="/t")
    bad_data = json.loads(encode(good))
    bad_data["data"]["size"] = "huge"
    unknown = json.loads(encode(good)) | {"type": "io.worldmill.nope.v1", "id": "u1"}
    subject = test_stream.subject()
    await bus.js.publish(subject, b"\xff\xfe not json")
    await bus.js.publish(subject, b'{"hello": "world"}')
    await bus.js.publish(subject, json.dumps(unknown).encode(), headers={"ce-type": "io.worldmill.nope.v1"})
    await bus.js.publish(subject, json.dumps(bad_data | {"id": "b1"}).encode(), headers={"ce-type": good.type})
    other = wrap(_event(2), source="/t")
    await bus.publish(good, subject=subject)
    handled: list[str] = []

    async def handler(d: Delivery) -> None:
        handled.append(d.envelope.id)

    consumer = Consumer(bus, _spec(test_stream, "strict"), handler, accept=(ObjectCreated,))
    await run_until(consumer, lambda: consumer.stats.acked == 1 and consumer.stats.dead_lettered == 4)
    assert handled == [good.id]
    letters = await dead_letters(bus, "strict", 4)
    assert [x.reason for x in letters] == ["not_json", "invalid_envelope", "unknown_type", "invalid_data"]
    assert letters[0].payload_encoding == "base64"
    assert "data.size" in letters[3].error
    assert letters[1].payload == '{"hello": "world"}'
    # A consumer that only takes other types dead-letters a valid message as unexpected.
    await bus.publish(other, subject=subject)
    picky = Consumer(bus, _spec(test_stream, "picky", filter_subject=subject), handler, accept=())
    await run_until(picky, lambda: picky.stats.dead_lettered >= 6)
    assert (await dead_letters(bus, "picky", 6))[-1].reason == "unexpected_type"


async def test_transient_failures_are_retried_with_backoff_then_succeed(bus: Bus, test_stream: PrivateStream) -> None:
    """Two failures then success: three deliveries, spaced by at least the doubling backoff."""
    times: list[tuple[int, float]] = []

    async def flaky(d: Delivery) -> None:
        times.append((d.num_delivered, time.monotonic()))
        if d.num_delivered < 3:
            raise ConnectionError("storage hiccup")

    await _publish(bus, test_stream)
    spec = _spec(test_stream, "flaky", max_deliver=5)
    consumer = Consumer(bus, spec, flaky)
    await run_until(consumer, lambda: consumer.stats.acked == 1)
    assert [n for n, _ in times] == [1, 2, 3]
    assert times[1][1] - times[0][1] >= backoff_delay(spec, 1) * 0.9
    assert times[2][1] - times[1][1] >= backoff_delay(spec, 2) * 0.9
    assert consumer.stats.nacked == 2


async def test_a_message_failing_every_delivery_is_dead_lettered_not_lost(bus: Bus, test_stream: PrivateStream) -> None:
    """After max deliveries the message goes to the DLQ with the last error; the stream keeps it no longer pending."""

    async def broken(d: Delivery) -> None:
        raise RuntimeError(f"bug on delivery {d.num_delivered}")

    eid = await _publish(bus, test_stream)
    consumer = Consumer(bus, _spec(test_stream, "broken", max_deliver=3), broken)
    await run_until(consumer, lambda: consumer.stats.dead_lettered == 1)
    [letter] = await dead_letters(bus, "broken", 1)
    assert letter.reason == "max_deliveries"
    assert letter.deliveries == 3
    assert letter.original_id == eid
    assert "bug on delivery 3" in letter.error
    info = await bus.js.consumer_info(test_stream.spec.name, "broken")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_a_permanent_error_is_dead_lettered_at_once(bus: Bus, test_stream: PrivateStream) -> None:
    """A PermanentError is not retried: one delivery, one dead letter naming the field and rule."""
    calls = 0

    async def refuse(d: Delivery) -> None:
        nonlocal calls
        calls += 1
        raise InvalidInputError("spec.fps", "must be one of 16, 24")

    await _publish(bus, test_stream)
    consumer = Consumer(bus, _spec(test_stream, "refuse"), refuse)
    await run_until(consumer, lambda: consumer.stats.dead_lettered == 1)
    [letter] = await dead_letters(bus, "refuse", 1)
    assert calls == 1
    assert letter.reason == "permanent_error"
    assert "spec.fps: must be one of 16, 24" in letter.error


async def test_a_long_handler_that_heartbeats_is_not_redelivered(bus: Bus, test_stream: PrivateStream) -> None:
    """With ack_wait 1 s, a 3.5 s handler is delivered once: in_progress keeps it."""
    deliveries: list[int] = []

    async def slow(d: Delivery) -> None:
        deliveries.append(d.num_delivered)
        await asyncio.sleep(3.5)

    await _publish(bus, test_stream)
    consumer = Consumer(bus, _spec(test_stream, "slow", ack_wait_s=1.0), slow, concurrency=2)
    await run_until(consumer, lambda: consumer.stats.acked == 1)
    assert deliveries == [1]
    assert consumer.stats.heartbeats >= 3
    info = await bus.js.consumer_info(test_stream.spec.name, "slow")
    assert info.num_redelivered == 0


async def test_a_worker_killed_mid_message_gets_it_redelivered(
    bus: Bus, test_stream: PrivateStream, nats: NatsEndpoint, tmp_path: Path
) -> None:
    """SIGKILL a worker holding a message: after ack_wait another worker receives it (delivery 2)."""
    marker = tmp_path / "started"
    eid = await _publish(bus, test_stream)
    spec = _spec(test_stream, "shared", ack_wait_s=1.5)
    await bus.ensure_consumer(spec)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.helpers.stuck_worker",
            nats.url,
            spec.stream,
            spec.durable,
            spec.filter_subject,
            str(spec.ack_wait_s),
            str(marker),
        ],
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 20
        while not marker.exists():
            assert time.monotonic() < deadline, "worker never got the message"
            assert proc.poll() is None, "worker exited"
            await asyncio.sleep(0.05)
        assert marker.read_text() == f"{eid} 1"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    got: list[Delivery] = []

    async def handler(d: Delivery) -> None:
        got.append(d)

    consumer = Consumer(bus, spec, handler)
    await run_until(consumer, lambda: consumer.stats.acked == 1)
    assert [(d.envelope.id, d.num_delivered) for d in got] == [(eid, 2)]


async def test_a_message_that_keeps_crashing_workers_is_dead_lettered_without_running(
    bus: Bus, test_stream: PrivateStream
) -> None:
    """Delivered more times than max_deliver without an answer: dead-lettered before the handler runs."""
    spec = _spec(test_stream, "poison", ack_wait_s=0.5, max_deliver=1)
    await bus.ensure_consumer(spec)
    await _publish(bus, test_stream)
    # A "worker" takes the message and dies without answering.
    sub = await bus.js.pull_subscribe_bind(spec.durable, stream=spec.stream)
    [taken] = await sub.fetch(1, timeout=5)
    assert taken.metadata.num_delivered == 1
    await sub.unsubscribe()
    await asyncio.sleep(0.8)
    calls = 0

    async def handler(d: Delivery) -> None:
        nonlocal calls
        calls += 1

    consumer = Consumer(bus, spec, handler)
    await run_until(consumer, lambda: consumer.stats.dead_lettered == 1)
    [letter] = await dead_letters(bus, "poison", 1)
    assert calls == 0
    assert letter.reason == "max_deliveries" and letter.deliveries == 2


async def test_stopping_drains_the_message_in_hand_and_returns_the_rest(bus: Bus, test_stream: PrivateStream) -> None:
    """Stop during a handler: it finishes and is acked; fetched but unstarted messages are handed back."""
    for i in range(3):
        await _publish(bus, test_stream, i)
    started = asyncio.Event()
    finished: list[int] = []

    async def handler(d: Delivery) -> None:
        assert isinstance(d.message, ObjectCreated)
        started.set()
        await asyncio.sleep(0.5)
        finished.append(d.message.size)

    stop = asyncio.Event()
    consumer = Consumer(bus, _spec(test_stream, "drain"), handler, prefetch=3)
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.wait_for(started.wait(), 10)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert finished == [0]
    assert consumer.stats.acked == 1
    rest: list[int] = []

    async def collect(d: Delivery) -> None:
        assert isinstance(d.message, ObjectCreated)
        rest.append(d.message.size)

    # Handed back at once (nak), not left to time out: well before the 5 s ack wait.
    t0 = time.monotonic()
    again = Consumer(bus, _spec(test_stream, "drain"), collect)
    await run_until(again, lambda: len(rest) == 2)
    assert sorted(rest) == [1, 2]
    assert time.monotonic() - t0 < 4.0


@pytest.mark.parametrize(("n", "expected"), [(1, 0.2), (2, 0.4), (3, 0.8), (10, 2.0)])
def test_backoff_doubles_and_is_capped(tmp_path: Path, n: int, expected: float) -> None:
    """Nak delays: base × 2^(n-1), never above the cap."""
    spec = ConsumerSpec(durable="xx", stream="S", filter_subject="s.x", backoff_base_s=0.2, backoff_max_s=2.0)
    assert backoff_delay(spec, n) == pytest.approx(expected)


async def test_log_lines_inside_a_handler_carry_the_message_ids_as_json(
    bus: Bus, test_stream: PrivateStream, capfd: pytest.CaptureFixture[str]
) -> None:
    """With JSON logging, a line logged by a handler has consumer, event_id and correlation_id."""
    import structlog  # noqa: PLC0415

    from worldmill.runtime.logs import configure_logging  # noqa: PLC0415

    configure_logging("INFO", json=True, service="probe")
    try:
        handler_log = structlog.stdlib.get_logger("test.handler")

        async def handler(d: Delivery) -> None:
            handler_log.info("work.done", size=7)

        env = wrap(_event(7), source="/t", correlation_id="flow-42")
        await bus.publish(env, subject=test_stream.subject())
        consumer = Consumer(bus, _spec(test_stream, "logged"), handler)
        await run_until(consumer, lambda: consumer.stats.acked == 1)
    finally:
        structlog.reset_defaults()
    lines = [json.loads(x) for x in capfd.readouterr().err.splitlines() if x.startswith("{")]
    [line] = [x for x in lines if x.get("event") == "work.done"]
    assert line["event_id"] == env.id
    assert line["correlation_id"] == "flow-42"
    assert line["consumer"] == "logged"
    assert line["service"] == "probe" and line["level"] == "info" and line["size"] == 7


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("$JS.ACK.WM_JOBS.gpu-runner.3.1042.77.1795293522000000000.5", (3, 1042)),
        ("$JS.ACK.hub.ACCHASH.WM_JOBS.gpu-runner.2.99.12.1795293522000000000.0.rnd", (2, 99)),
    ],
)
def test_delivery_counts_read_both_ack_subject_layouts(reply: str, expected: tuple[int, int]) -> None:
    """Delivery count and stream sequence come from the v1 and v2 JetStream ack subjects alike."""
    from nats.aio.msg import Msg  # noqa: PLC0415

    from worldmill.runtime.admission import delivery_counts  # noqa: PLC0415

    msg = Msg(_client=None, subject="s", reply=reply, data=b"", headers=None)  # type: ignore[arg-type]
    assert delivery_counts(msg) == expected
    assert (msg.metadata.num_delivered, msg.metadata.sequence.stream) == expected


def test_json_error_logs_carry_no_local_variables(capfd: pytest.CaptureFixture[str]) -> None:
    """An exception logged as JSON has its frames but not their locals (they may hold secrets)."""
    import structlog  # noqa: PLC0415

    from worldmill.runtime.logs import configure_logging  # noqa: PLC0415

    configure_logging("INFO", json=True)
    try:
        secret = "Bearer super-secret-token"  # noqa: F841 - a local the log must not show
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            structlog.stdlib.get_logger("t").exception("failed")
    finally:
        structlog.reset_defaults()
    out = capfd.readouterr().err
    assert "boom" in out and "RuntimeError" in out
    assert "super-secret-token" not in out
