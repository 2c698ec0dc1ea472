"""The runtime bus against a real nats-server: streams, consumers, publish dedup."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.helpers.bus import PrivateStream
from worldmill.contracts.envelope import Envelope, wrap
from worldmill.contracts.objects import ObjectCreated
from worldmill.contracts.subjects import ALL_STREAMS, EVENTS, ConsumerSpec
from worldmill.runtime.bus import Bus, encode
from worldmill.runtime.errors import BusError, BusUnavailableError, InvalidInputError
from worldmill.runtime.servers import NatsEndpoint, free_port


def _event(key: str = "a.mp4") -> ObjectCreated:
    return ObjectCreated(bucket="wm-inputs", key=key, size=1, etag="e", origin="api", event_time=datetime.now(UTC))


async def test_ensure_streams_is_idempotent(bus: Bus) -> None:
    """Ensuring the streams twice leaves exactly one of each with the configured retention."""
    await bus.ensure_streams(ALL_STREAMS)
    await bus.ensure_streams(ALL_STREAMS)
    names = await bus.js.streams_info()
    mine = [s for s in names if s.config.name in {spec.name for spec in ALL_STREAMS}]
    assert len(mine) == len(ALL_STREAMS)
    info = await bus.js.stream_info("WM_JOBS")
    assert str(info.config.retention).lower().endswith("workqueue")


async def test_changing_a_streams_retention_is_refused_with_a_reason(bus: Bus, test_stream: PrivateStream) -> None:
    """Retention cannot change on an existing stream: the error names the stream and the fix."""
    changed = test_stream.spec.model_copy(update={"retention": "workqueue"})
    with pytest.raises(BusError, match=rf"stream {test_stream.spec.name}: exists with retention"):
        await bus.ensure_stream(changed)


async def test_editable_stream_settings_are_updated(bus: Bus, test_stream: PrivateStream) -> None:
    """A changed max age is applied to the existing stream."""
    await bus.ensure_stream(test_stream.spec.model_copy(update={"max_age_s": 7200.0}))
    info = await bus.js.stream_info(test_stream.spec.name)
    assert info.config.max_age == 7200.0


async def test_publishing_the_same_event_id_twice_stores_it_once(bus: Bus, test_stream: PrivateStream) -> None:
    """The second publish of an id is reported as a duplicate and the stream holds one message."""
    env = wrap(_event(), source="/t", event_id="same-id-1")
    first = await bus.publish(env, subject=test_stream.subject())
    second = await bus.publish(env, subject=test_stream.subject())
    assert not first.duplicate
    assert second.duplicate
    info = await bus.js.stream_info(test_stream.spec.name)
    assert info.state.messages == 1


async def test_publish_goes_to_the_messages_subject_with_dedup_and_type_headers(bus: Bus) -> None:
    """emit() publishes on wm.evt.object.created with Nats-Msg-Id = envelope id."""
    env = await bus.emit(_event("h.mp4"), source="/t")
    sub = await bus.js.pull_subscribe(ObjectCreated.subject(), durable=None, stream=EVENTS.name)
    found = None
    for _ in range(20):
        for m in await sub.fetch(100, timeout=2):
            if (m.headers or {}).get("Nats-Msg-Id") == env.id:
                found = m
        if found:
            break
    await sub.unsubscribe()
    assert found is not None
    assert found.subject == "wm.evt.object.created"
    assert found.headers is not None and found.headers["ce-type"] == "io.worldmill.object.created.v1"
    assert found.data == encode(env)


async def test_an_oversized_envelope_is_refused_before_sending(bus: Bus, test_stream: PrivateStream) -> None:
    """Envelopes over the size limit are refused with advice to store the data as an object."""
    attrs = wrap(_event(), source="/t").model_dump(exclude={"data"})
    env = Envelope(**attrs, data={"blob": "x" * 300_000})
    with pytest.raises(InvalidInputError, match="store large data as an object"):
        await bus.publish(env, subject=test_stream.subject())


async def test_ensure_consumer_is_idempotent_and_refuses_a_new_filter(bus: Bus, test_stream: PrivateStream) -> None:
    """The same consumer spec twice is fine; a different filter on the same durable is refused."""
    spec = ConsumerSpec(durable="c-idem", stream=test_stream.spec.name, filter_subject=test_stream.subject("a"))
    await bus.ensure_consumer(spec)
    await bus.ensure_consumer(spec.model_copy(update={"ack_wait_s": 45.0}))
    info = await bus.js.consumer_info(test_stream.spec.name, "c-idem")
    assert info.config.ack_wait == 45.0
    with pytest.raises(BusError, match="delete it to change the filter"):
        await bus.ensure_consumer(spec.model_copy(update={"filter_subject": test_stream.subject("b")}))


async def test_connecting_to_nothing_fails_clearly_and_quickly() -> None:
    """A bus pointed at a closed port raises BusUnavailableError naming the URL."""
    url = f"nats://127.0.0.1:{free_port()}"
    bus = Bus(url, name="t", connect_timeout_s=1.0)
    with pytest.raises(BusUnavailableError, match=url):
        await bus.connect()


async def test_server_version_is_recent_enough(bus: Bus, nats: NatsEndpoint) -> None:
    """The pinned nats-server is at least 2.10 (features we rely on are ignored by 2.9)."""
    assert bus.server_version() >= (2, 10, 0)


def test_stream_specs_keep_dedup_window_within_max_age() -> None:
    """JetStream refuses a duplicate window longer than max age; our specs respect that."""
    for spec in ALL_STREAMS:
        assert spec.duplicate_window_s <= spec.max_age_s
