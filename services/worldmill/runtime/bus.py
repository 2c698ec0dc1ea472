"""NATS JetStream access: connect, ensure streams and durable consumers, publish with dedup ids.

Publishing puts a contract in its CloudEvents envelope, sends it as structured JSON on the
message's subject with ``Nats-Msg-Id`` = envelope id, so a republish inside the stream's
duplicate window is stored once. Consuming lives in ``worldmill.runtime.consumer``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.errors import NoServersError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError, ServiceUnavailableError

from worldmill.contracts.base import Message
from worldmill.contracts.envelope import (
    MAX_ENVELOPE_BYTES,
    AnyEnvelope,
    EnvelopeAttributes,
    wrap,
)
from worldmill.contracts.registry import message_class
from worldmill.contracts.subjects import ALL_STREAMS, ConsumerSpec, StreamSpec
from worldmill.runtime.decode import Undeliverable, parse
from worldmill.runtime.errors import BusError, BusPermissionError, BusUnavailableError, InvalidInputError
from worldmill.runtime.logs import get_logger
from worldmill.runtime.nats_auth import inbox_prefix
from worldmill.runtime.outage import Outage

log = get_logger(__name__)

_RETENTION = {
    "limits": RetentionPolicy.LIMITS,
    "workqueue": RetentionPolicy.WORK_QUEUE,
    "interest": RetentionPolicy.INTEREST,
}

#: Publish failures that mean "NATS is not there right now" (closed, reconnecting with a full buffer,
#: no answer, JetStream not started yet): retrying later helps.
_UNAVAILABLE = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    ServiceUnavailableError,
)

#: Oldest server we accept: consumers with several filter subjects and other 2.10 features are
#: silently ignored by 2.9, so refusing it is safer than half-working.
MIN_SERVER_VERSION = (2, 10, 0)


@dataclass(frozen=True)
class Published:
    """Result of a publish: where it landed and whether JetStream dropped it as a duplicate."""

    stream: str
    sequence: int
    duplicate: bool
    envelope_id: str


def encode(envelope: AnyEnvelope) -> bytes:
    """The wire form of an envelope (structured-mode CloudEvents JSON)."""
    return envelope.model_dump_json(exclude_none=True).encode()


def headers_for(envelope: EnvelopeAttributes) -> dict[str, str]:
    """NATS headers: the dedup id, and the type so a consumer can validate in one pass.

    The body is a structured-mode CloudEvent (the only mode of the released NATS binding, 1.0.2),
    so no content-type header is needed to tell modes apart.
    """
    return {"Nats-Msg-Id": envelope.id, "ce-type": envelope.type}


def stream_config(spec: StreamSpec, replicas: int = 1) -> StreamConfig:
    """nats-py config for a stream spec, with ``replicas`` copies (3 on a cluster, 1 on one server)."""
    return StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=_RETENTION[spec.retention],
        max_age=spec.max_age_s,
        duplicate_window=spec.duplicate_window_s,
        max_msg_size=spec.max_msg_size,
        storage=StorageType.FILE,
        description=spec.description,
        num_replicas=replicas,
    )


def consumer_config(spec: ConsumerSpec) -> ConsumerConfig:
    """nats-py config for a durable pull consumer. Delivery limits are enforced by our loop."""
    return ConsumerConfig(
        durable_name=spec.durable,
        description=spec.description or None,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=spec.ack_wait_s,
        max_deliver=-1,
        max_ack_pending=spec.max_ack_pending,
        filter_subject=spec.filter_subject,
    )


class Bus:
    """One NATS connection with its JetStream context. Cheap to construct; ``connect`` does I/O.

    Once connected it reconnects by itself, without limit, every ``reconnect_wait_s``; publishes
    made meanwhile are buffered (up to nats-py's 2 MiB) or fail with ``BusUnavailableError``.
    ``outage`` follows the connection (one log line when it drops, one with the duration when it is back).
    """

    def __init__(
        self,
        url: str,
        *,
        name: str,
        token: str | None = None,
        user: str | None = None,
        password: str | None = None,
        connect_timeout_s: float = 10.0,
        reconnect_wait_s: float = 0.5,
        stream_replicas: int = 1,
    ) -> None:
        self.url = url
        #: Every server given (``WM_NATS_URL`` may list a cluster's nodes, comma-separated): the client
        #: connects to one and, when it goes, reconnects to another.
        self.servers = [u.strip() for u in url.split(",") if u.strip()]
        self.stream_replicas = stream_replicas
        self.name = name
        self._token = token
        #: The NATS user (``contracts.permissions``: one per service) and its password; None: no login.
        self.user = user
        self._password = password
        #: Subjects the server refused this connection to publish on, with its words (newest last).
        self._denied: dict[str, str] = {}
        #: The server answered "Authorization Violation" (wrong user, password or token).
        self._login_refused = False
        self._connect_timeout_s = connect_timeout_s
        self._reconnect_wait_s = reconnect_wait_s
        self.outage = Outage("nats")
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None

    @property
    def nc(self) -> NatsClient:
        """The connected client."""
        if self._nc is None:
            raise BusUnavailableError("bus: not connected (call connect() first)")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context."""
        if self._js is None:
            raise BusUnavailableError("bus: not connected (call connect() first)")
        return self._js

    @property
    def connected(self) -> bool:
        """True while the connection is up."""
        return self._nc is not None and self._nc.is_connected

    async def connect(self) -> None:
        """Connect, retrying until ``connect_timeout_s``; then check the server's version."""
        try:
            # nats-py retries the first connection forever when reconnects are unlimited, so the
            # whole attempt is bounded here; once connected, reconnects go on without limit.
            self._nc = await asyncio.wait_for(
                nats.connect(
                    servers=self.servers,
                    name=self.name,
                    token=self._token,
                    user=self.user,
                    password=self._password,
                    # A user's replies come on its own prefix, the only one it may subscribe to.
                    inbox_prefix=inbox_prefix(self.user) if self.user else "_INBOX",
                    connect_timeout=2,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=self._reconnect_wait_s,
                    allow_reconnect=True,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnect,
                    reconnected_cb=self._on_reconnect,
                ),
                timeout=self._connect_timeout_s,
            )
        except (TimeoutError, NoServersError, OSError, nats.errors.Error) as exc:
            if self._login_refused or isinstance(exc, nats.errors.AuthorizationError):
                raise BusPermissionError(
                    f"bus: NATS at {self.url} refused the login of user {self.user or '(none)'} "
                    "(check WM_NATS_USER and WM_NATS_PASSWORD, or WM_NATS_TOKEN)"
                ) from exc
            raise BusUnavailableError(
                f"bus: cannot reach NATS at {self.url} within {self._connect_timeout_s:g} s ({exc!r})"
            ) from exc
        self._js = self.nc.jetstream()
        version = self.server_version()
        if version < MIN_SERVER_VERSION:
            await self.close()
            raise BusError(
                f"bus: nats-server {'.'.join(map(str, version))} at {self.url} is too old; "
                f"worldmill needs >= {'.'.join(map(str, MIN_SERVER_VERSION))}"
            )

    async def _on_disconnect(self) -> None:
        if self._nc is not None and not self._nc.is_closed:  # a close on purpose is no outage
            self.outage.failed(f"disconnected from {self.url}")

    async def _on_reconnect(self) -> None:
        self.outage.ok()

    async def pending(self, stream: str, durable: str) -> int:
        """Messages of a durable consumer not delivered to anyone yet (for the watchdog)."""
        info = await self.js.consumer_info(stream, durable)
        return int(info.num_pending or 0)

    def server_version(self) -> tuple[int, int, int]:
        """The connected server's version."""
        v = self.nc.connected_server_version
        return (v.major, v.minor, v.patch)

    async def close(self) -> None:
        """Drain (flush pending publishes, finish subscriptions) and close."""
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            try:
                await nc.drain()
            except (TimeoutError, nats.errors.Error, OSError):
                await nc.close()

    async def ensure_streams(self, specs: tuple[StreamSpec, ...] = ALL_STREAMS) -> None:
        """Create each stream, or update it when its editable settings changed. Idempotent."""
        for spec in specs:
            await self.ensure_stream(spec)

    async def ensure_stream(self, spec: StreamSpec) -> None:
        """Create or update one stream; refuse to change what JetStream cannot change."""
        wanted = stream_config(spec, self.stream_replicas)
        try:
            info = await self.js.stream_info(spec.name)
        except NotFoundError:
            await self.js.add_stream(config=wanted)
            log.info("stream.created", stream=spec.name, subjects=list(spec.subjects), replicas=self.stream_replicas)
            return
        have = info.config
        if have.retention != wanted.retention:
            raise BusError(
                f"stream {spec.name}: exists with retention {have.retention}, wanted {wanted.retention}; "
                "retention cannot change, delete the stream to recreate it"
            )
        if (
            sorted(have.subjects or []) != sorted(wanted.subjects or [])
            or have.max_age != wanted.max_age
            or have.duplicate_window != wanted.duplicate_window
            or have.max_msg_size != wanted.max_msg_size
            or (have.description or "") != (wanted.description or "")
            or (have.num_replicas or 1) != (wanted.num_replicas or 1)
        ):
            await self.js.update_stream(config=wanted)  # JetStream scales a stream's replicas up or down in place
            log.info("stream.updated", stream=spec.name, replicas=wanted.num_replicas)

    async def ensure_consumer(self, spec: ConsumerSpec) -> None:
        """Create the durable pull consumer, or update its editable settings. Idempotent."""
        wanted = consumer_config(spec)
        try:
            info = await self.js.consumer_info(spec.stream, spec.durable)
        except NotFoundError:
            await self.js.add_consumer(spec.stream, config=wanted)
            log.info("consumer.created", stream=spec.stream, consumer=spec.durable)
            return
        have = info.config
        if have.filter_subject != wanted.filter_subject:
            raise BusError(
                f"consumer {spec.durable} on {spec.stream}: exists with filter {have.filter_subject!r}, "
                f"wanted {wanted.filter_subject!r}; delete it to change the filter"
            )
        if (
            have.ack_wait != wanted.ack_wait
            or have.max_ack_pending != wanted.max_ack_pending
            or (have.description or None) != wanted.description
        ):
            await self.js.add_consumer(spec.stream, config=wanted)
            log.info("consumer.updated", stream=spec.stream, consumer=spec.durable)

    async def publish(self, envelope: AnyEnvelope, *, subject: str | None = None) -> Published:
        """Publish an envelope on its message's subject (or ``subject``) with its id as dedup id."""
        payload = encode(envelope)
        if len(payload) > MAX_ENVELOPE_BYTES:
            raise InvalidInputError(
                "envelope",
                f"is {len(payload)} bytes, over the {MAX_ENVELOPE_BYTES}-byte limit; "
                "store large data as an object and send its reference",
            )
        target = subject or _subject_of(envelope)
        try:
            ack = await self.js.publish(target, payload, headers=headers_for(envelope))
        except _UNAVAILABLE as exc:
            self._raise_if_denied(target)
            raise BusUnavailableError(f"bus: publish to {target} failed ({exc!r})") from exc
        return Published(stream=ack.stream, sequence=ack.seq, duplicate=bool(ack.duplicate), envelope_id=envelope.id)

    async def publish_raw(self, subject: str, payload: bytes, headers: dict[str, str]) -> Published:
        """Publish bytes encoded earlier (an outbox row) with their headers, as ``publish`` would."""
        try:
            ack = await self.js.publish(subject, payload, headers=headers)
        except _UNAVAILABLE as exc:
            self._raise_if_denied(subject)
            raise BusUnavailableError(f"bus: publish to {subject} failed ({exc!r})") from exc
        return Published(
            stream=ack.stream,
            sequence=ack.seq,
            duplicate=bool(ack.duplicate),
            envelope_id=headers.get("Nats-Msg-Id", ""),
        )

    async def emit(
        self,
        message: Message,
        *,
        source: str,
        event_id: str | None = None,
        cause: EnvelopeAttributes | None = None,
    ) -> AnyEnvelope:
        """Wrap and publish a message; returns the envelope that was sent."""
        envelope = wrap(
            message,
            source=source,
            event_id=event_id,
            correlation_id=cause.correlationid if cause else None,
            causation_id=cause.id if cause else None,
        )
        await self.publish(envelope)
        return envelope

    async def replay(
        self, stream: str, subject: str, *, batch: int = 256, timeout_s: float = 5.0
    ) -> AsyncIterator[tuple[EnvelopeAttributes, Message]]:
        """Every valid message stored now on ``subject`` in ``stream``, oldest first.

        Reads through a short-lived ephemeral consumer and stops at the end of the stream as it
        was when the replay started; messages that do not decode are skipped (their consumers
        dead-letter them). Used to rebuild views from the event log.
        """
        config = ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, inactive_threshold=60.0
        )
        sub = await self.js.pull_subscribe(subject, durable=None, stream=stream, config=config)
        try:
            remaining = (await sub.consumer_info()).num_pending or 0
            while remaining > 0:
                try:
                    msgs = await sub.fetch(min(batch, remaining), timeout=timeout_s)
                except TimeoutError:  # nats-py raises its own subclass and plain asyncio timeouts
                    break
                for msg in msgs:
                    remaining -= 1
                    await msg.ack()
                    decoded = _decode_quietly(msg.data, (msg.headers or {}).get("ce-type"))
                    if decoded is not None:
                        yield decoded
        finally:
            await sub.unsubscribe()

    async def follow(self, stream: str, subject: str) -> AsyncIterator[tuple[EnvelopeAttributes, Message]]:
        """Valid messages published on ``subject`` from now on, until the caller stops iterating."""
        config = ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.NEW, inactive_threshold=60.0
        )
        sub = await self.js.pull_subscribe(subject, durable=None, stream=stream, config=config)
        try:
            while True:
                try:
                    msgs = await sub.fetch(64, timeout=0.5)
                except TimeoutError:  # nats-py raises its own subclass and plain asyncio timeouts
                    continue
                for msg in msgs:
                    await msg.ack()
                    decoded = _decode_quietly(msg.data, (msg.headers or {}).get("ce-type"))
                    if decoded is not None:
                        yield decoded
        finally:
            await sub.unsubscribe()

    async def _on_error(self, exc: Exception) -> None:
        text = str(exc)
        if "permissions violation" in text.lower():
            # 'Permissions Violation for Publish to "wm.job.gpu"' (nats-py lower-cases it): the server drops
            # the message and the publish waits for an ack that never comes; remember why, so it can say so.
            subject = text.rsplit('"', 2)[-2] if text.count('"') >= 2 else ""
            self._denied[subject.lower()] = text.removeprefix("nats: ")
            log.error("nats.permission_denied", user=self.user, subject=subject, error=text)
            return
        if "authorization violation" in text.lower():
            self._login_refused = True
        log.debug("nats.error", error=repr(exc))

    def _raise_if_denied(self, subject: str) -> None:
        """After a failed publish: ``BusPermissionError`` if the server refused this subject to our user."""
        reason = self._denied.pop(subject.lower(), None)
        if reason is not None:
            raise BusPermissionError(
                f"bus: NATS refused to let user {self.user or '(none)'} publish on {subject} ({reason}); "
                "the grants are in worldmill.contracts.permissions"
            )

    async def jetstream_info(self) -> dict[str, Any]:
        """Account-level JetStream information (raises if JetStream is off)."""
        info = await self.js.account_info()
        return {"streams": info.streams, "consumers": info.consumers, "storage": info.storage}


def _decode_quietly(data: bytes, type_hint: str | None) -> tuple[EnvelopeAttributes, Message] | None:
    try:
        return parse(data, None, type_hint)
    except Undeliverable:
        return None


def _subject_of(envelope: EnvelopeAttributes) -> str:
    return message_class(envelope.type).subject()
