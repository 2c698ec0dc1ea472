"""Upload notifications normalised into ``ObjectCreated``: MinIO's bucket events, and one builder.

MinIO publishes S3-compatible bucket notifications (``{"EventName", "Key", "Records": [...]}``)
to NATS; :func:`parse_minio_event` turns one into ``ObjectCreated`` events. The poller (for stores
that cannot push) builds the same event with :func:`object_created`, and both take their event id
from :func:`object_created_event_id`, so a notification repeated for the same upload becomes the
same id and JetStream's duplicate window drops the copy.

Pure functions: no I/O, nothing done at import time.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote_plus

from pydantic import ValidationError

from worldmill.contracts.objects import ObjectCreated
from worldmill.runtime.errors import InvalidInputError

#: S3 event names that mean "an object now exists with these bytes".
CREATED_EVENTS = frozenset(
    {
        "s3:ObjectCreated:Put",
        "s3:ObjectCreated:CompleteMultipartUpload",
        "s3:ObjectCreated:Copy",
        "s3:ObjectCreated:PostObject",
    }
)
PUT = "s3:ObjectCreated:Put"
MULTIPART = "s3:ObjectCreated:CompleteMultipartUpload"

_MULTIPART_ETAG = re.compile(r"-[0-9]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHA256_META = "x-amz-meta-sha256"

#: Where an ``ObjectCreated`` came from (the contract's ``origin``).
Origin = Literal["minio", "poller", "api", "worldmill"]
#: Contract field -> where it sits in a MinIO record, for error messages.
_S3_FIELD = {"bucket": "s3.bucket.name", "key": "s3.object.key", "size": "s3.object.size", "etag": "s3.object.eTag"}


def object_created_event_id(bucket: str, key: str, etag: str, sequencer: str | None) -> str:
    """A deterministic event id (an ``Identifier``) for one upload of one object.

    The same (bucket, key, etag, sequencer) always gives the same id, so a notification sent
    twice is stored once by JetStream. The parts are JSON-encoded before hashing, so no choice
    of separators inside a key can make two different uploads collide.
    """
    parts = json.dumps([bucket, key, normalise_etag(etag), sequencer or None], ensure_ascii=False)
    return "obj-" + hashlib.sha256(parts.encode()).hexdigest()[:40]


def normalise_etag(etag: str) -> str:
    """An etag without surrounding quotes or whitespace (S3 sends ``"abc"``, listings ``abc``)."""
    return etag.strip().strip('"')


def is_directory_marker(key: str) -> bool:
    """True for a "folder" placeholder key (``"a/b/"``): not an upload anyone should process."""
    return key.endswith("/")


def is_multipart_etag(etag: str) -> bool:
    """True when the etag has the ``<md5 of part md5s>-<parts>`` form of a multipart upload."""
    return bool(_MULTIPART_ETAG.search(normalise_etag(etag)))


def object_created(
    bucket: str,
    key: str,
    size: int,
    etag: str,
    *,
    origin: Origin,
    content_type: str | None = None,
    sha256: str | None = None,
    sequencer: str | None = None,
    event_name: str = PUT,
    event_time: datetime,
) -> ObjectCreated:
    """The one way both sources build ``ObjectCreated``: quotes off the etag, empty strings to None,
    a naive time read as UTC. Raises ``InvalidInputError`` naming the field the contract refuses."""
    try:
        return ObjectCreated(
            bucket=bucket,
            key=key,
            size=size,
            etag=normalise_etag(etag),
            content_type=content_type or None,
            sha256=sha256 if sha256 and _SHA256.match(sha256) else None,
            sequencer=sequencer or None,
            event_name=event_name,
            origin=origin,
            event_time=event_time if event_time.tzinfo is not None else event_time.replace(tzinfo=UTC),
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "event"
        raise InvalidInputError(field, err["msg"]) from exc


def parse_minio_event(payload: bytes | str | Mapping[str, Any]) -> list[ObjectCreated]:
    """The ``ObjectCreated`` events in one MinIO bucket notification (one per created record).

    Records of other events (deletes, accesses, ...), records without an object, and directory
    markers give no event. Malformed input raises ``InvalidInputError`` naming the field, e.g.
    ``Records[0].s3.bucket.name``. Keys arrive URL-encoded with ``+`` for space and are decoded.
    """
    doc = _load(payload)
    records = doc.get("Records")
    if not isinstance(records, list):
        raise InvalidInputError("Records", "must be a list of event records")
    events: list[ObjectCreated] = []
    for i, record in enumerate(records):
        event = _record(record, f"Records[{i}]")
        if event is not None:
            events.append(event)
    return events


def _load(payload: bytes | str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(payload, Mapping):
        return payload
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise InvalidInputError("payload", f"is not valid UTF-8 JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise InvalidInputError("payload", f"must be a JSON object, got {type(doc).__name__}")
    return doc


def _record(record: object, where: str) -> ObjectCreated | None:
    if not isinstance(record, Mapping):
        raise InvalidInputError(where, "must be an object")
    name = record.get("eventName")
    if not isinstance(name, str) or name not in CREATED_EVENTS:
        return None
    s3 = record.get("s3")
    if not isinstance(s3, Mapping):
        raise InvalidInputError(f"{where}.s3", "must be an object with bucket and object")
    obj = s3.get("object")
    if obj is None:
        return None
    if not isinstance(obj, Mapping):
        raise InvalidInputError(f"{where}.s3.object", "must be an object")
    bucket = s3.get("bucket")
    bucket_name = bucket.get("name") if isinstance(bucket, Mapping) else None
    if not isinstance(bucket_name, str) or not bucket_name:
        raise InvalidInputError(f"{where}.s3.bucket.name", "is required (a non-empty string)")
    raw_key = obj.get("key")
    if not isinstance(raw_key, str) or not raw_key:
        raise InvalidInputError(f"{where}.s3.object.key", "is required (a non-empty URL-encoded string)")
    try:
        key = unquote_plus(raw_key, errors="strict")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{where}.s3.object.key", f"is not URL-encoded UTF-8: {raw_key!r}") from exc
    if is_directory_marker(key):
        return None
    size = obj.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInputError(f"{where}.s3.object.size", f"must be an integer >= 0, got {size!r}")
    etag = obj.get("eTag", "")
    if not isinstance(etag, str):
        raise InvalidInputError(f"{where}.s3.object.eTag", "must be a string")
    sequencer = obj.get("sequencer")
    user_meta = obj.get("userMetadata")
    meta = {str(k).lower(): v for k, v in user_meta.items()} if isinstance(user_meta, Mapping) else {}
    content_type = obj.get("contentType") or meta.get("content-type")
    sha256 = meta.get(_SHA256_META)
    event_time = _time(record.get("eventTime"), f"{where}.eventTime")
    try:
        return object_created(
            bucket_name,
            key,
            size,
            etag,
            origin="minio",
            content_type=content_type if isinstance(content_type, str) else None,
            sha256=sha256 if isinstance(sha256, str) else None,
            sequencer=sequencer if isinstance(sequencer, str) else None,
            event_name=name,
            event_time=event_time,
        )
    except InvalidInputError as exc:
        raise InvalidInputError(f"{where}.{_S3_FIELD.get(exc.field, exc.field)}", exc.rule) from exc


def _time(value: object, field: str) -> datetime:
    if not isinstance(value, str):
        raise InvalidInputError(field, "is required (an ISO 8601 time)")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInputError(field, f"is not an ISO 8601 time: {value!r}") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
