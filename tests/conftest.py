"""Shared fixtures: real servers on free loopback ports, stopped by PID at the end.

* ``nats`` (session): a nats-server with JetStream and a file store under a temp folder.
* ``s3`` (session): SeaweedFS ``weed mini`` with random credentials; it checks signatures.
* ``bus`` (function): a connected runtime ``Bus`` with worldmill's streams ensured.
* ``store`` (function): an ``ObjectStore`` on a fresh bucket of its own.
* ``test_stream`` (function): a private limits stream ``T_<id>`` on subjects ``t<id>.>``, so
  tests never see each other's messages.
* ``postgres`` (session): a PostgreSQL server (``initdb`` + ``pg_ctl``, trust auth); yields its
  SQLAlchemy URL. It fails (never skips) when the binaries or the ``postgres`` user are missing.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers.bus import PrivateStream, private_stream
from worldmill.contracts.subjects import ALL_STREAMS
from worldmill.runtime.bus import Bus
from worldmill.runtime.servers import (
    NatsEndpoint,
    S3Endpoint,
    ServerStartError,
    start_nats,
    start_postgres,
    start_seaweedfs,
)
from worldmill.runtime.store import ObjectStore

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsEndpoint]:
    """A real nats-server with JetStream for each test module (it starts in about 0.1 s).

    Not one for the whole session: services share durable consumers and the GPU job queue, so a
    leftover of one module (a job still queued, a request still being retried) was taken by another
    module's runner or service and broke tests that count what they made (CI failed on it twice).
    """
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
    stream = await private_stream(bus)
    try:
        yield stream
    finally:
        await bus.js.delete_stream(stream.spec.name)


@pytest.fixture
async def store(s3: S3Endpoint) -> ObjectStore:
    """An object store with a fresh bucket of its own (its name in ``store.test_bucket``)."""
    st = ObjectStore(s3.url, s3.access_key, s3.secret_key, part_size=5 * 1024 * 1024)
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    await st.ensure_buckets([bucket])
    st.test_bucket = bucket  # type: ignore[attr-defined]
    return st


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server (trust auth, fsync off); yields its SQLAlchemy URL.

    initdb refuses to run as root, so as root the cluster is owned by and run as ``postgres``.
    """
    try:
        server = start_postgres(fsync=False)
    except ServerStartError as exc:
        pytest.fail(f"postgres fixture: {exc} (install PostgreSQL server binaries; CI has them)")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database per test: a SQLite file, or a new PostgreSQL database (both run)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'docs.sqlite3'}"
        return
    server: str = request.getfixturevalue("postgres")
    name = f"t_{uuid.uuid4().hex}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield server.rsplit("/", 1)[0] + f"/{name}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
