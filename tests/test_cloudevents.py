"""Plain CloudEvents 1.0, as another system's CloudEvents SDK writes them, are taken as they are.

The events are made with the `cloudevents` package (the CNCF Python SDK) and its JSON format,
published with raw nats-py onto a real nats-server and consumed by the runtime's ``Consumer``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from pydantic import ValidationError

from tests.helpers.bus import PrivateStream, dead_letters, run_until
from worldmill.contracts.envelope import Envelope
from worldmill.contracts.objects import ObjectCreated
from worldmill.contracts.subjects import ConsumerSpec
from worldmill.runtime.bus import Bus
from worldmill.runtime.consumer import Consumer, Delivery
from worldmill.runtime.decode import Undeliverable, parse

TYPE = ObjectCreated.ce_type()


def _data(n: int = 1) -> dict[str, object]:
    return {
        "bucket": "wm-inputs",
        "key": f"shots/{n}.mp4",
        "size": 1000 + n,
        "etag": f"etag-{n}",
        "origin": "api",
        "event_time": datetime(2026, 12, 4, tzinfo=UTC).isoformat(),
    }


def _sdk_event(attributes: dict[str, object], data: dict[str, object]) -> bytes:
    """Structured-mode JSON exactly as the CloudEvents SDK writes it."""
    return JSONFormat().write(CloudEvent(attributes=attributes, data=data))


def test_an_sdk_event_gets_our_extensions_derived() -> None:
    raw = _sdk_event({"type": TYPE, "source": "/vendor/recorder", "id": "rec-42"}, _data())
    assert b"correlationid" not in raw and b"schemaversion" not in raw  # a plain CloudEvent
    envelope, message = parse(raw, frozenset({TYPE}))
    assert isinstance(message, ObjectCreated) and message.key == "shots/1.mp4"
    assert envelope.correlationid == "rec-42"  # a new flow starts at the foreign event
    assert envelope.schemaversion == 1
    assert envelope.causationid is None


def test_content_type_parameters_and_extensions_are_kept() -> None:
    attrs = {
        "type": TYPE,
        "source": "/vendor/recorder",
        "id": "rec-43",
        "datacontenttype": "application/json; charset=utf-8",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "partitionkey": "camera-7",
        "sequence": 12,
        "replay": True,
    }
    envelope, _ = parse(_sdk_event(attrs, _data(2)), None)
    assert envelope.datacontenttype == "application/json"
    assert envelope.model_extra == {
        "traceparent": attrs["traceparent"],
        "partitionkey": "camera-7",
        "sequence": 12,
        "replay": True,
    }
    # Passed on when the event is written again.
    again = json.loads(envelope.model_dump_json())
    assert again["traceparent"] == attrs["traceparent"] and again["partitionkey"] == "camera-7"


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"Trace-Parent": "x"}, "'Trace-Parent': not an attribute of a worldmill event"),
        ({"averyveryverylongextensionname": "x"}, "1-20 lower-case letters or digits"),
        ({"region": {"nested": 1}}, "region: an extension attribute is a string"),
        ({"region": "x" * 3000}, "at most 2048 characters"),
        ({"schemaversion": 2}, "schemaversion 2 must equal the version in type"),
    ],
)
def test_attributes_that_break_the_spec_are_refused_with_the_name(extra: dict[str, object], says: str) -> None:
    raw = json.loads(_sdk_event({"type": TYPE, "source": "/v", "id": "e1"}, _data()))
    with pytest.raises(ValidationError, match=says.replace("(", r"\(").replace(")", r"\)")):
        Envelope.model_validate(raw | extra)


def test_binary_data_is_refused_with_the_reason() -> None:
    raw = json.loads(_sdk_event({"type": TYPE, "source": "/v", "id": "e2"}, _data()))
    raw.pop("data")
    raw["data_base64"] = "AAEC"
    with pytest.raises(Undeliverable) as caught:
        parse(json.dumps(raw).encode(), None)
    assert caught.value.reason == "invalid_envelope"
    assert "data_base64: binary data is not accepted" in caught.value.error


async def test_a_consumer_takes_sdk_events_published_with_raw_nats(bus: Bus, test_stream: PrivateStream) -> None:
    """Three SDK events (one with a bad extension) on a real stream: two handled, one dead-lettered with why."""
    subject = test_stream.subject()
    good = [_sdk_event({"type": TYPE, "source": "/vendor/recorder", "id": f"rec-{n}"}, _data(n)) for n in (1, 2)]
    bad = json.loads(_sdk_event({"type": TYPE, "source": "/vendor/recorder", "id": "rec-bad"}, _data(3)))
    bad["Bad_Name"] = "x"
    await bus.js.publish(subject, good[0])
    await bus.js.publish(subject, json.dumps(bad).encode())
    await bus.js.publish(subject, good[1])
    seen: list[Delivery] = []

    async def handler(d: Delivery) -> None:
        seen.append(d)

    spec = ConsumerSpec(
        durable="foreign", stream=test_stream.spec.name, filter_subject=f"{test_stream.prefix}.>", max_deliver=3
    )
    consumer = Consumer(bus, spec, handler, accept=(ObjectCreated,))
    await run_until(consumer, lambda: consumer.stats.acked == 2 and consumer.stats.dead_lettered == 1)
    assert [(d.envelope.id, d.envelope.correlationid) for d in seen] == [("rec-1", "rec-1"), ("rec-2", "rec-2")]
    assert [d.message.key for d in seen if isinstance(d.message, ObjectCreated)] == ["shots/1.mp4", "shots/2.mp4"]
    (letter,) = await dead_letters(bus, "foreign", 1)
    assert letter.reason == "invalid_envelope" and "Bad_Name" in letter.error
