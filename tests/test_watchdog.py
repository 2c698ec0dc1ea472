"""The work-loop watchdog: pure rules on a hand-driven clock, then /readyz and /healthz of a real service."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from tests.helpers.bus import PrivateStream
from tests.helpers.polling import wait_for
from tests.test_consumer import _event
from worldmill.contracts.envelope import wrap
from worldmill.contracts.objects import ObjectCreated
from worldmill.contracts.subjects import ConsumerSpec
from worldmill.runtime.bus import Bus
from worldmill.runtime.consumer import Consumer, Delivery
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint
from worldmill.runtime.service import ServiceContext, create_service_app
from worldmill.runtime.settings import RuntimeSettings
from worldmill.runtime.watchdog import Watchdog


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_loop_holding_work_that_settles_nothing_is_stalled_since_it_took_the_work(clock: Clock) -> None:
    dog = Watchdog("q", clock=clock)
    clock.now += 500  # idle for long: not a stall while it keeps going round
    dog.beat()
    assert dog.stall().seconds == 0
    dog.hold(2)
    clock.now += 40
    stall = dog.stall()
    assert stall.seconds == 40 and "holds 2 message(s)" in stall.reason
    dog.progressed()  # one settled
    dog.hold(1)
    clock.now += 5
    assert dog.stall().seconds == 5


def test_a_loop_that_stops_going_round_is_stalled(clock: Clock) -> None:
    dog = Watchdog("q", clock=clock)
    clock.now += 90
    stall = dog.stall()
    assert stall.seconds == 90 and "has not pulled" in stall.reason


def test_work_waiting_on_the_server_that_nobody_takes_is_a_stall_from_when_it_was_first_seen(clock: Clock) -> None:
    dog = Watchdog("q", clock=clock)
    clock.now += 300  # an old last progress must not count: the backlog is new
    dog.beat()
    assert dog.stall(waiting=3).seconds == 0
    clock.now += 20
    dog.beat()
    stall = dog.stall(waiting=3)
    assert stall.seconds == 20 and "3 message(s) wait" in stall.reason
    dog.progressed()  # it took and settled one: the backlog clock starts again when next seen
    clock.now += 1
    dog.beat()
    assert dog.stall(waiting=2).seconds == 0
    clock.now += 5
    dog.beat()
    assert dog.stall(waiting=2).seconds == 5
    assert dog.stall(waiting=0).seconds == 0


async def test_check_asks_the_backlog_and_treats_an_unanswered_question_as_unknown(clock: Clock) -> None:
    async def down() -> int:
        raise ConnectionError("nats is down")

    async def three() -> int:
        return 3

    dog = Watchdog("q", backlog=down, clock=clock)
    clock.now += 10
    dog.beat()
    assert (await dog.check()).seconds == 0
    dog.backlog = three
    await dog.check()
    clock.now += 7
    dog.beat()
    assert (await dog.check()).seconds == 7


# -- the service's health routes ---------------------------------------------------------------------


def _settings(nats: NatsEndpoint, s3: S3Endpoint, **kw: object) -> RuntimeSettings:
    base: dict[str, object] = dict(
        service="stall-probe",
        nats_url=nats.url,
        s3_endpoint=s3.url,
        s3_access_key=SecretStr(s3.access_key),
        s3_secret_key=SecretStr(s3.secret_key),
        api_tokens=(SecretStr("t"),),
        stall_ready_s=1.0,
        stall_live_s=2.5,
    )
    base.update(kw)
    return RuntimeSettings(**base)  # type: ignore[arg-type]


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Opened by the test to let the stuck handler finish."""
    g = threading.Event()
    yield g
    g.set()


async def test_a_consumer_stuck_on_a_message_is_reported_not_ready_then_not_live_then_recovers(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, test_stream: PrivateStream, gate: threading.Event
) -> None:
    """A handler that hangs: /readyz says which loop and why after stall_ready_s, /healthz fails after
    stall_live_s (so an orchestrator would restart it); once the handler returns both are fine again."""
    durable = f"stuck-{uuid.uuid4().hex[:6]}"
    spec = ConsumerSpec(durable=durable, stream=test_stream.spec.name, filter_subject=test_stream.subject(">"))

    async def stuck(d: Delivery) -> None:
        await asyncio.to_thread(gate.wait, 60)

    def consumers(ctx: ServiceContext) -> list[Consumer]:
        return [Consumer(ctx.bus, spec, stuck, accept=(ObjectCreated,))]

    app = create_service_app(_settings(nats, s3), title="stall-probe", consumers=consumers)
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
        await bus.publish(wrap(_event(1), source="/t"), subject=test_stream.subject())
        ready = await asyncio.to_thread(wait_for, lambda: client.get("/readyz"), lambda r: r.status_code == 503)
        assert ready.json()["checks"][f"loop:{durable}"].startswith("stalled: holds 1 message(s)")
        assert ready.json()["checks"]["nats"] == "ok" and ready.json()["checks"]["s3"] == "ok"
        live = await asyncio.to_thread(wait_for, lambda: client.get("/healthz"), lambda r: r.status_code == 503)
        assert live.json()["status"] == "stalled" and durable in live.json()["loops"]
        gate.set()
        await asyncio.to_thread(wait_for, lambda: client.get("/healthz"), lambda r: r.status_code == 200)
        again = await asyncio.to_thread(wait_for, lambda: client.get("/readyz"), lambda r: r.status_code == 200)
        assert again.json()["checks"][f"loop:{durable}"] == "ok"
        consumer = client.app.state.ctx.consumers[0]
        assert consumer.stats.acked == 1


async def test_a_consumer_loop_that_ended_fails_liveness_with_its_error(
    nats: NatsEndpoint, s3: S3Endpoint, bus: Bus, test_stream: PrivateStream
) -> None:
    """A loop that cannot run (its durable exists with another filter) ends: /healthz and /readyz say so."""
    durable = f"clash-{uuid.uuid4().hex[:6]}"
    await bus.ensure_consumer(
        ConsumerSpec(durable=durable, stream=test_stream.spec.name, filter_subject=test_stream.subject("a"))
    )
    spec = ConsumerSpec(durable=durable, stream=test_stream.spec.name, filter_subject=test_stream.subject("b"))

    async def handler(d: Delivery) -> None:
        return None

    def consumers(ctx: ServiceContext) -> list[Consumer]:
        return [Consumer(ctx.bus, spec, handler)]

    app = create_service_app(_settings(nats, s3, stall_live_s=600), title="clash", consumers=consumers)
    with TestClient(app) as client:
        live = await asyncio.to_thread(wait_for, lambda: client.get("/healthz"), lambda r: r.status_code == 503)
        ready = client.get("/readyz")
    reason = live.json()["loops"][f"consumer:{durable}"]
    assert reason.startswith("stopped: BusError") and "filter" in reason
    assert ready.status_code == 503 and ready.json()["checks"][f"loop:consumer:{durable}"] == reason
