"""Shared fixtures: real servers on free loopback ports, stopped by PID at the end.

* ``nats`` (session): a nats-server with JetStream and a file store under a temp folder.
* ``s3`` (session): SeaweedFS ``weed mini`` with random credentials; it checks signatures.
* ``bus`` (function): a connected runtime ``Bus`` with worldmill's streams ensured.
* ``store`` (function): an ``ObjectStore`` on a fresh bucket of its own.
* ``test_stream`` (function): a private limits stream ``T_<id>`` on subjects ``t<id>.>``, so
  tests never see each other's messages.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.helpers.bus import PrivateStream
from worldmill.contracts.subjects import ALL_STREAMS, StreamSpec
from worldmill.runtime.bus import Bus
from worldmill.runtime.servers import NatsEndpoint, S3Endpoint, start_nats, start_seaweedfs
from worldmill.runtime.store import ObjectStore

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsEndpoint]:
    """A real nats-server with JetStream for the whole session."""
    proc, endpoint = start_nats(tmp_path_factory.mktemp("nats"))
    try:
        yield endpoint
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """A real SeaweedFS S3 gateway (signatures checked) for the whole session."""
    proc, endpoint = start_seaweedfs(
        tmp_path_factory.mktemp("seaweedfs"),
        access_key=f"test{secrets.token_hex(4)}",
        secret_key=secrets.token_urlsafe(24),
    )
    try:
        yield endpoint
    finally:
        proc.stop()


@pytest.fixture
async def bus(nats: NatsEndpoint) -> AsyncIterator[Bus]:
    """A connected bus with worldmill's streams in place."""
    b = Bus(nats.url, name="test")
    await b.connect()
    await b.ensure_streams(ALL_STREAMS)
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def test_stream(bus: Bus) -> AsyncIterator[PrivateStream]:
    """A private limits stream, deleted after the test."""
    tag = uuid.uuid4().hex[:10]
    spec = StreamSpec(name=f"T_{tag.upper()}", subjects=(f"t{tag}.>",), retention="limits",
                      max_age_s=3600, duplicate_window_s=120, description="test stream")
    await bus.ensure_stream(spec)
    try:
        yield PrivateStream(spec=spec, prefix=f"t{tag}")
    finally:
        await bus.js.delete_stream(spec.name)


@pytest.fixture
async def store(s3: S3Endpoint) -> ObjectStore:
    """An object store with a fresh bucket of its own (its name in ``store.test_bucket``)."""
    st = ObjectStore(s3.url, s3.access_key, s3.secret_key, part_size=5 * 1024 * 1024)
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    await st.ensure_buckets([bucket])
    st.test_bucket = bucket  # type: ignore[attr-defined]
    return st
