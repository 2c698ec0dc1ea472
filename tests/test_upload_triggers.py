"""Uploads start work: MinIO notifications and the bucket poller both end as one ObjectCreated.

Parsing uses MinIO's documented notification shape (fixtures); the poller runs against the real
SeaweedFS gateway, a real nats-server and a SQLite document store. No mocks.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest

from tests.helpers.bus import PrivateStream
from worldmill.contracts.base import is_identifier
from worldmill.contracts.envelope import wrap
from worldmill.contracts.objects import ObjectCreated
from worldmill.contracts.subjects import EVENTS
from worldmill.runtime.bus import Bus
from worldmill.runtime.docstore import DocumentStore
from worldmill.runtime.errors import InvalidInputError
from worldmill.runtime.notifications import object_created, object_created_event_id, parse_minio_event
from worldmill.runtime.poller import SEEN_KIND, BucketPoller, mark_new, seen_doc_id
from worldmill.runtime.servers import free_port
from worldmill.runtime.store import ObjectStore

FIXTURES = Path(__file__).parent / "fixtures"
PUT_FIXTURE = FIXTURES / "minio_put_event.json"
MULTIPART_FIXTURE = FIXTURES / "minio_multipart_event.json"
#: Space, non-ASCII, and characters with a meaning in URLs and in form encoding.
AWKWARD_NAME = "day 1/clipé +&?#%=(final).mp4"
NORMALISED = ("bucket", "key", "size", "etag", "content_type", "sha256")


def _bucket(store: ObjectStore) -> str:
    return str(store.test_bucket)  # type: ignore[attr-defined]


def _fixture(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def _normalised(event: ObjectCreated) -> dict[str, Any]:
    return {name: getattr(event, name) for name in NORMALISED}


def _minio_notification(
    bucket: str,
    key: str,
    size: int,
    etag: str,
    *,
    content_type: str,
    sha256: str | None = None,
    sequencer: str = "1814A2B3C4D5E6F7",
    event_name: str = "s3:ObjectCreated:Put",
) -> dict[str, Any]:
    """MinIO's notification for an object, built from the documented fixture (key form-encoded like Go's QueryEscape)."""
    doc = copy.deepcopy(_fixture(PUT_FIXTURE))
    doc["EventName"] = event_name
    doc["Key"] = f"{bucket}/{key}"
    record = doc["Records"][0]
    record["eventName"] = event_name
    record["s3"]["bucket"]["name"] = bucket
    record["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
    meta = {"content-type": content_type, **({"X-Amz-Meta-Sha256": sha256} if sha256 else {})}
    record["s3"]["object"] = {
        "key": quote_plus(key, safe=""),
        "size": size,
        "eTag": etag,
        "contentType": content_type,
        "userMetadata": meta,
        "sequencer": sequencer,
    }
    return doc


@pytest.fixture
async def docs(tmp_path: Path) -> AsyncIterator[DocumentStore]:
    """An open SQLite document store under tmp_path."""
    st = DocumentStore(f"sqlite:///{tmp_path / 'db' / 'poller.sqlite3'}")
    await st.open()
    try:
        yield st
    finally:
        await st.close()


async def _replayed(bus: Bus, bucket: str, prefix: str) -> list[tuple[str, str, ObjectCreated]]:
    """(envelope id, source, event) of every ObjectCreated in WM_EVENTS for this bucket and prefix."""
    out: list[tuple[str, str, ObjectCreated]] = []
    async for attrs, message in bus.replay(EVENTS.name, ObjectCreated.subject()):
        if isinstance(message, ObjectCreated) and message.bucket == bucket and message.key.startswith(prefix):
            out.append((attrs.id, attrs.source, message))
    return out


# -- 1. MinIO notifications -----------------------------------------------------------------


def test_put_fixture_parses_to_one_event_with_the_decoded_key() -> None:
    """A Put of a form-encoded key: '+' is a space, %C3%A9 is 'é', %2F is '/'; etag, sequencer, time kept."""
    events = parse_minio_event(PUT_FIXTURE.read_bytes())
    assert len(events) == 1
    ev = events[0]
    assert ev.key == "shoot/day 1/clipé.mp4"
    assert (ev.bucket, ev.size, ev.etag, ev.content_type) == (
        "wm-inputs",
        1234,
        "d41d8cd98f00b204e9800998ecf8427f",
        "video/mp4",
    )
    assert (ev.origin, ev.event_name, ev.sequencer, ev.sha256) == (
        "minio",
        "s3:ObjectCreated:Put",
        "1814A2B3C4D5E6F7",
        None,
    )
    assert ev.event_time == datetime(2026, 3, 14, 9, 26, 53, 589000, tzinfo=UTC)
    assert ev.entity_id() == "wm-inputs/shoot/day 1/clipé.mp4"


def test_multipart_fixture_keeps_the_part_count_etag_and_the_recorded_sha256() -> None:
    """CompleteMultipartUpload: the '-3' etag stays as is; a sha256 in user metadata is carried along."""
    (ev,) = parse_minio_event(MULTIPART_FIXTURE.read_text(encoding="utf-8"))
    assert ev.key == "big/take 2 (final).mov"
    assert ev.etag == "5791b24c3a6d8376ab415bc6ca5edba5-3"
    assert ev.event_name == "s3:ObjectCreated:CompleteMultipartUpload"
    assert (ev.size, ev.content_type, ev.sequencer) == (157286400, "video/quicktime", "1814A5C0FFEE0042")
    assert ev.sha256 == "8f4543075cf645895ce0f9343ea8f1334158b82ed2c2c1719403eb88defa8a5e"


def test_parse_accepts_bytes_text_and_mappings_and_strips_etag_quotes() -> None:
    """The three payload forms give the same events; a quoted eTag loses its quotes."""
    doc = _fixture(PUT_FIXTURE)
    from_bytes = parse_minio_event(PUT_FIXTURE.read_bytes())
    assert parse_minio_event(json.dumps(doc)) == from_bytes
    assert parse_minio_event(doc) == from_bytes
    doc["Records"][0]["s3"]["object"]["eTag"] = '"d41d8cd98f00b204e9800998ecf8427f"'
    assert parse_minio_event(doc)[0].etag == "d41d8cd98f00b204e9800998ecf8427f"


@pytest.mark.parametrize(
    "event_name",
    [
        "s3:ObjectCreated:Put",
        "s3:ObjectCreated:CompleteMultipartUpload",
        "s3:ObjectCreated:Copy",
        "s3:ObjectCreated:PostObject",
    ],
)
def test_every_create_event_name_is_accepted(event_name: str) -> None:
    """The four ways an object's bytes come to exist each give an event with that name."""
    doc = _minio_notification("wm-inputs", "a/b.mp4", 3, "abc", content_type="video/mp4", event_name=event_name)
    (ev,) = parse_minio_event(doc)
    assert (ev.event_name, ev.key, ev.origin) == (event_name, "a/b.mp4", "minio")


@pytest.mark.parametrize(
    "event_name",
    [
        "s3:ObjectRemoved:Delete",
        "s3:ObjectRemoved:DeleteMarkerCreated",
        "s3:ObjectAccessed:Get",
        "s3:ObjectAccessed:Head",
        "s3:ObjectCreated:PutTagging",
        "s3:ObjectCreated:PutRetention",
    ],
)
def test_other_event_names_give_no_event(event_name: str) -> None:
    """Deletes, reads and metadata-only 'created' events (tagging, retention) start no work."""
    doc = _minio_notification("wm-inputs", "a/b.mp4", 3, "abc", content_type="video/mp4", event_name=event_name)
    assert parse_minio_event(doc) == []


def test_records_without_object_and_directory_markers_give_no_event_but_others_in_the_batch_do() -> None:
    """Only the record that names a real object becomes an event; an empty Records list gives none."""
    good = _fixture(PUT_FIXTURE)["Records"][0]
    no_object = copy.deepcopy(good)
    del no_object["s3"]["object"]
    marker = copy.deepcopy(good)
    marker["s3"]["object"]["key"] = "shoot%2Fday+2%2F"
    deleted = copy.deepcopy(good)
    deleted["eventName"] = "s3:ObjectRemoved:Delete"
    events = parse_minio_event({"Records": [no_object, marker, deleted, good]})
    assert [e.key for e in events] == ["shoot/day 1/clipé.mp4"]
    assert parse_minio_event({"EventName": "s3:ObjectCreated:Put", "Records": []}) == []


def _without(path: tuple[str, ...]) -> dict[str, Any]:
    doc = _fixture(PUT_FIXTURE)
    node = doc["Records"][0]
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    return doc


def _with_size(size: object) -> dict[str, Any]:
    doc = _fixture(PUT_FIXTURE)
    doc["Records"][0]["s3"]["object"]["size"] = size
    return doc


def _with_key(key: object) -> dict[str, Any]:
    doc = _fixture(PUT_FIXTURE)
    doc["Records"][0]["s3"]["object"]["key"] = key
    return doc


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param(b"{not json", "payload", id="not-json"),
        pytest.param(b"\xff\xfe{}", "payload", id="not-utf8"),
        pytest.param("[1, 2]", "payload", id="not-an-object"),
        pytest.param({"EventName": "s3:ObjectCreated:Put"}, "Records", id="no-records"),
        pytest.param({"Records": {"0": {}}}, "Records", id="records-not-a-list"),
        pytest.param({"Records": ["x"]}, "Records[0]", id="record-not-an-object"),
        pytest.param(_without(("s3",)), "Records[0].s3", id="no-s3"),
        pytest.param(_without(("s3", "bucket", "name")), "Records[0].s3.bucket.name", id="no-bucket-name"),
        pytest.param(_without(("s3", "bucket")), "Records[0].s3.bucket.name", id="no-bucket"),
        pytest.param(_without(("s3", "object", "key")), "Records[0].s3.object.key", id="no-object-key"),
        pytest.param(_with_key(""), "Records[0].s3.object.key", id="empty-object-key"),
        pytest.param(_with_key("clip%FF.mp4"), "Records[0].s3.object.key", id="key-not-utf8"),
        pytest.param(_with_size(-1), "Records[0].s3.object.size", id="negative-size"),
        pytest.param(_with_size("12"), "Records[0].s3.object.size", id="size-not-int"),
        pytest.param(_without(("s3", "object", "size")), "Records[0].s3.object.size", id="no-size"),
        pytest.param(_without(("eventTime",)), "Records[0].eventTime", id="no-event-time"),
    ],
)
def test_malformed_payloads_raise_invalid_input_naming_the_field(payload: Any, field: str) -> None:
    """Malformed notifications are refused with InvalidInputError whose field says where."""
    with pytest.raises(InvalidInputError) as info:
        parse_minio_event(payload)
    assert info.value.field == field
    assert info.value.rule


def test_event_id_is_deterministic_identifier_safe_and_distinguishes_uploads() -> None:
    """Same upload -> same id; another etag, sequencer, key or bucket -> another id."""
    base = object_created_event_id("wm-inputs", "a/b c.mp4", "abc", "SEQ1")
    assert base == object_created_event_id("wm-inputs", "a/b c.mp4", '"abc"', "SEQ1")
    assert is_identifier(base) and base.startswith("obj-") and len(base) == 44
    others = {
        object_created_event_id("wm-inputs", "a/b c.mp4", "abd", "SEQ1"),
        object_created_event_id("wm-inputs", "a/b c.mp4", "abc", "SEQ2"),
        object_created_event_id("wm-inputs", "a/b c.mp4", "abc", None),
        object_created_event_id("wm-inputs", "a/b c.mp3", "abc", "SEQ1"),
        object_created_event_id("wm-other", "a/b c.mp4", "abc", "SEQ1"),
        # separators inside the parts cannot make two uploads collide
        object_created_event_id("wm-inputs", "a/b c.mp4abc", "", "SEQ1"),
    }
    assert base not in others and len(others) == 6


async def test_the_same_upload_notified_twice_is_stored_once(bus: Bus, test_stream: PrivateStream) -> None:
    """Two deliveries of one notification: same event id, and JetStream marks the second duplicate."""
    payload = PUT_FIXTURE.read_bytes()
    ids: list[str] = []
    published = []
    for _ in range(2):
        (event,) = parse_minio_event(payload)
        event_id = object_created_event_id(event.bucket, event.key, event.etag, event.sequencer)
        ids.append(event_id)
        envelope = wrap(event, source="/worldmill/minio", event_id=event_id)
        published.append(await bus.publish(envelope, subject=test_stream.subject("object")))
    assert ids[0] == ids[1]
    assert [p.duplicate for p in published] == [False, True]
    assert published[0].sequence == published[1].sequence
    assert published[1].envelope_id == ids[0]
    info = await bus.js.stream_info(test_stream.spec.name)
    assert info.state.messages == 1
    # A second upload of identical bytes (same etag) is a new notification: new sequencer, new id.
    again = _fixture(PUT_FIXTURE)
    again["Records"][0]["s3"]["object"]["sequencer"] = "1814A2B3C4D5E700"
    (reupload,) = parse_minio_event(again)
    assert object_created_event_id(reupload.bucket, reupload.key, reupload.etag, reupload.sequencer) != ids[0]


def test_object_created_builder_normalises_and_names_bad_fields() -> None:
    """The shared builder strips quotes, maps '' to None, reads naive times as UTC, names refused fields."""
    ev = object_created(
        "b", "k", 0, '"e"', origin="api", content_type="", sha256="not-a-digest", event_time=datetime(2026, 1, 1)
    )
    assert (ev.etag, ev.content_type, ev.sha256, ev.event_time.tzinfo) == ("e", None, None, UTC)
    with pytest.raises(InvalidInputError) as info:
        object_created("b", "k", -5, "e", origin="api", event_time=datetime.now(UTC))
    assert info.value.field == "size"


# -- 2. The poller's decision -----------------------------------------------------------------


def test_mark_new_returns_unseen_and_changed_keys_in_listing_order() -> None:
    """Unseen keys and keys whose etag changed are new; same etag (quoted or not) is not."""
    listed = [("a", "e1"), ("b", "e2"), ("c", '"e3"'), ("d", "e4")]
    seen = {"b": "e2", "c": "e3", "d": "old", "gone": "x"}
    assert mark_new(listed, seen) == ["a", "d"]
    assert mark_new([], seen) == []
    assert mark_new(listed, {}) == ["a", "b", "c", "d"]


def test_seen_doc_id_fits_the_document_store_for_any_key() -> None:
    """Short keys keep the readable '<bucket>/<key>' id; a 1000-byte key gets a fixed-size digest id."""
    assert seen_doc_id("wm-inputs", "a/b.mp4") == "wm-inputs/a/b.mp4"
    long_key = "é" * 500
    long_id = seen_doc_id("wm-inputs", long_key)
    assert len(long_id.encode()) <= 255 and long_id.startswith("wm-inputs/")
    assert long_id != seen_doc_id("wm-inputs", long_key + "x")


# -- 3. The poller against SeaweedFS, NATS and SQLite ------------------------------------------


async def test_poller_and_minio_give_the_same_event_and_the_poller_never_repeats_itself(
    store: ObjectStore, bus: Bus, docs: DocumentStore, tmp_path: Path
) -> None:
    """THE KEY TEST: a real upload under an awkward key, seen once by the poller and once as a MinIO notification.

    Both sources agree on the normalised fields; polls after the first emit nothing, a new poller
    on the same database resumes without repeats, and an overwrite is emitted again with its new etag.
    """
    bucket = _bucket(store)
    prefix = f"p-{uuid.uuid4().hex[:8]}/"
    key = prefix + AWKWARD_NAME
    ref = await store.put_bytes(bucket, key, b"first take", content_type="video/mp4")

    poller = BucketPoller(store, docs, bus, bucket, prefix=prefix)
    first = await poller.poll_once()
    assert len(first) == 1
    ev = first[0]
    assert (ev.origin, ev.bucket, ev.key, ev.size, ev.content_type) == ("poller", bucket, key, 10, "video/mp4")
    assert ev.etag == ref.etag and not ev.etag.startswith('"')
    assert ev.sha256 == ref.sha256 and ev.sequencer is None
    assert ev.event_name == "s3:ObjectCreated:Put"

    # It is in WM_EVENTS, under the deterministic id the MinIO path gives when sequencer is None.
    stored = await _replayed(bus, bucket, prefix)
    assert [(eid, src, e) for eid, src, e in stored] == [
        (object_created_event_id(bucket, key, ev.etag, None), "/worldmill/poller", ev)
    ]

    # MinIO's notification for the same object normalises to the same facts.
    info = await store.stat(bucket, key)
    notification = _minio_notification(
        bucket, key, info.size, info.etag, content_type=info.content_type, sha256=info.sha256
    )
    assert "%2F" in notification["Records"][0]["s3"]["object"]["key"]
    assert "+" in notification["Records"][0]["s3"]["object"]["key"]  # the space
    (from_minio,) = parse_minio_event(json.dumps(notification).encode())
    assert from_minio.origin == "minio" and from_minio.sequencer == "1814A2B3C4D5E6F7"
    assert _normalised(from_minio) == _normalised(ev)
    assert from_minio.model_dump(exclude={"origin", "event_time", "sequencer", "event_name"}) == ev.model_dump(
        exclude={"origin", "event_time", "sequencer", "event_name"}
    )

    # Polling again finds nothing new, and publishes nothing more.
    assert await poller.poll_once() == []
    assert len(await _replayed(bus, bucket, prefix)) == 1

    # A new poller on a new connection to the same database resumes: still nothing.
    reopened = DocumentStore(str(docs.url))
    await reopened.open()
    try:
        assert await BucketPoller(store, reopened, bus, bucket, prefix=prefix).poll_once() == []

        # Overwritten with other bytes: emitted again, with the new etag, as version 2 of its state.
        ref2 = await store.put_bytes(bucket, key, b"second, longer take", content_type="video/mp4")
        assert ref2.etag is not None and ref2.etag != ref.etag
        again = await BucketPoller(store, reopened, bus, bucket, prefix=prefix).poll_once()
        assert [(e.key, e.etag, e.size, e.sha256) for e in again] == [(key, ref2.etag, 19, ref2.sha256)]
        seen = await reopened.history(SEEN_KIND, seen_doc_id(bucket, key))
        assert [(d.version, d.content_hash) for d in seen] == [(1, ref.etag), (2, ref2.etag)]
    finally:
        await reopened.close()

    stored = await _replayed(bus, bucket, prefix)
    assert [e.etag for _, _, e in stored] == [ref.etag, ref2.etag]
    assert stored[1][0] == object_created_event_id(bucket, key, ref2.etag, None)
    assert await poller.poll_once() == []  # the first poller sees the overwrite as already recorded
    assert await docs.pending_outbox() == []


async def test_zero_byte_objects_are_emitted_and_directory_markers_are_not(
    store: ObjectStore, bus: Bus, docs: DocumentStore
) -> None:
    """An empty object is an upload like any other (the consumer judges it); a 'folder/' marker is not."""
    bucket = _bucket(store)
    prefix = f"z-{uuid.uuid4().hex[:8]}/"
    empty = await store.put_bytes(bucket, f"{prefix}empty.mp4", b"", content_type="video/mp4")
    await store.put_bytes(bucket, f"{prefix}folder/", b"")
    events = await BucketPoller(store, docs, bus, bucket, prefix=prefix).poll_once()
    assert [(e.key, e.size, e.etag) for e in events] == [(f"{prefix}empty.mp4", 0, empty.etag)]
    assert [e.size for _, _, e in await _replayed(bus, bucket, prefix)] == [0]


async def test_a_prefix_limits_what_is_listed_and_pages_cover_everything(
    store: ObjectStore, bus: Bus, docs: DocumentStore
) -> None:
    """Only keys under the prefix are emitted; a small page size still reaches every object, in key order."""
    bucket = _bucket(store)
    run = uuid.uuid4().hex[:8]
    inside = [f"in-{run}/clip {i:02d}.mp4" for i in range(7)]
    for key in [*inside, f"out-{run}/clip.mp4", f"in-{run}x/clip.mp4"]:
        await store.put_bytes(bucket, key, key.encode(), content_type="video/mp4")
    poller = BucketPoller(store, docs, bus, bucket, prefix=f"in-{run}/", page_size=3)
    events = await poller.poll_once()
    assert [e.key for e in events] == inside
    assert {e.key for _, _, e in await _replayed(bus, bucket, f"in-{run}")} == set(inside)
    assert await poller.poll_once() == []
    # The other prefix is still unseen by a poller watching it.
    other = await BucketPoller(store, docs, bus, bucket, prefix=f"out-{run}/").poll_once()
    assert [e.key for e in other] == [f"out-{run}/clip.mp4"]


async def test_a_multipart_upload_keeps_seaweedfs_part_count_etag(
    store: ObjectStore, bus: Bus, docs: DocumentStore, tmp_path: Path
) -> None:
    """A two-part upload's etag is '<md5>-2' on SeaweedFS; the poller reports it as CompleteMultipartUpload."""
    bucket = _bucket(store)
    prefix = f"m-{uuid.uuid4().hex[:8]}/"
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x07" * (6 * 1024 * 1024))
    ref = await store.put_file(bucket, f"{prefix}big file.bin", big)
    (ev,) = await BucketPoller(store, docs, bus, bucket, prefix=prefix).poll_once()
    assert ev.etag == ref.etag and ev.etag.endswith("-2")
    assert ev.event_name == "s3:ObjectCreated:CompleteMultipartUpload"
    assert (ev.size, ev.sha256) == (6 * 1024 * 1024, ref.sha256)


async def test_without_a_bus_events_wait_in_the_outbox_and_go_out_once(
    store: ObjectStore, bus: Bus, docs: DocumentStore
) -> None:
    """With no bus the seen state and event commit together and wait; a later poll with a bus sends them."""
    bucket = _bucket(store)
    prefix = f"o-{uuid.uuid4().hex[:8]}/"
    await store.put_bytes(bucket, f"{prefix}a.mp4", b"a")
    events = await BucketPoller(store, docs, None, bucket, prefix=prefix).poll_once()
    assert [e.key for e in events] == [f"{prefix}a.mp4"]
    pending = await docs.pending_outbox()
    assert [r.subject for r in pending] == [ObjectCreated.subject()]
    assert pending[0].headers["Nats-Msg-Id"] == object_created_event_id(bucket, f"{prefix}a.mp4", events[0].etag, None)
    assert await _replayed(bus, bucket, prefix) == []

    assert await BucketPoller(store, docs, bus, bucket, prefix=prefix).poll_once() == []  # nothing new...
    assert await docs.pending_outbox() == []  # ...but the waiting event was flushed
    assert [e.key for _, _, e in await _replayed(bus, bucket, prefix)] == [f"{prefix}a.mp4"]


async def test_run_emits_then_stops_and_survives_an_unreachable_store(
    store: ObjectStore, bus: Bus, docs: DocumentStore, s3: Any
) -> None:
    """run() polls until stop is set; an unreachable store only logs warnings, it never raises."""
    bucket = _bucket(store)
    prefix = f"r-{uuid.uuid4().hex[:8]}/"
    await store.put_bytes(bucket, f"{prefix}a.mp4", b"a")
    stop = asyncio.Event()
    task = asyncio.create_task(BucketPoller(store, docs, bus, bucket, prefix=prefix).run(stop, interval_s=0.05))
    for _ in range(200):
        if await _replayed(bus, bucket, prefix):
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert [e.key for _, _, e in await _replayed(bus, bucket, prefix)] == [f"{prefix}a.mp4"]

    dead = ObjectStore(f"http://127.0.0.1:{free_port()}", s3.access_key, s3.secret_key, timeout_s=1.0)
    stop = asyncio.Event()
    task = asyncio.create_task(BucketPoller(dead, docs, bus, bucket, prefix=prefix).run(stop, interval_s=0.05))
    await asyncio.sleep(0.5)
    assert not task.done()  # still polling despite the failures
    stop.set()
    await asyncio.wait_for(task, 20)
    assert task.exception() is None


def test_constructor_refuses_page_sizes_the_document_store_cannot_query() -> None:
    """page_size is bounded by DocumentStore.find's limit (1..1000); construction does no I/O."""
    st = ObjectStore("http://127.0.0.1:9", "k", "s")
    docs = DocumentStore("sqlite:////nonexistent/never-opened.sqlite3")
    for bad in (0, 1001):
        with pytest.raises(InvalidInputError) as info:
            BucketPoller(st, docs, None, "wm-inputs", page_size=bad)
        assert info.value.field == "page_size"
    assert BucketPoller(st, docs, None, "wm-inputs").page_size == 1000


async def test_two_pollers_racing_on_one_database_emit_each_object_once(
    store: ObjectStore, bus: Bus, docs: DocumentStore
) -> None:
    """Concurrent polls: the seen-state versions conflict for the loser, so every object is emitted exactly once."""
    bucket = _bucket(store)
    prefix = f"c-{uuid.uuid4().hex[:8]}/"
    keys = [f"{prefix}{i}.mp4" for i in range(5)]
    for key in keys:
        await store.put_bytes(bucket, key, key.encode())
    pollers = [BucketPoller(store, docs, bus, bucket, prefix=prefix, page_size=2) for _ in range(3)]
    results = await asyncio.gather(*(p.poll_once() for p in pollers))
    assert sorted(e.key for events in results for e in events) == keys
    assert sorted(e.key for _, _, e in await _replayed(bus, bucket, prefix)) == keys


async def test_a_key_longer_than_the_document_id_limit_is_tracked_by_digest(
    store: ObjectStore, bus: Bus, docs: DocumentStore
) -> None:
    """A 700-byte key (over the 255-byte doc id limit) is emitted once and remembered like any other."""
    bucket = _bucket(store)
    prefix = f"l-{uuid.uuid4().hex[:8]}/"
    key = prefix + "/".join(["segment-" + "x" * 90] * 7) + ".mp4"
    assert len(key.encode()) > 255
    await store.put_bytes(bucket, key, b"long")
    poller = BucketPoller(store, docs, bus, bucket, prefix=prefix)
    assert [e.key for e in await poller.poll_once()] == [key]
    assert await poller.poll_once() == []
    doc = await docs.get(SEEN_KIND, seen_doc_id(bucket, key))
    assert doc is not None and doc.body["key"] == key and doc.doc_id != f"{bucket}/{key}"
