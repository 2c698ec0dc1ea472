"""The catalog database: migrated by Alembic at start-up, written only by applying events.

SQLite (a file under the data folder) is the default; PostgreSQL is used the same way through its
URL. Writes happen in one transaction per batch of events (the live consumer's group commit, a
rebuild's chunks) or per event: the event id and every change it makes commit together, so a crash
in between leaves neither.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection, Engine

from worldmill.catalog.apply import apply_changes, mark_applied
from worldmill.catalog.projection import changes_for
from worldmill.catalog.tables import ALL_TABLES
from worldmill.contracts.base import Message
from worldmill.contracts.envelope import EnvelopeAttributes
from worldmill.runtime.sql import describe, make_engine, run_sql

T = TypeVar("T")
MIGRATIONS = Path(__file__).parent / "migrations"

Event = tuple[EnvelopeAttributes, Message]


def alembic_config(conn: Connection) -> Config:
    """An Alembic configuration that runs the catalog's migrations on ``conn``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def _migrate(engine: Engine) -> None:
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")


def _apply(engine: Engine, events: Sequence[Event]) -> list[bool]:
    applied: list[bool] = []
    with engine.begin() as conn:
        for attrs, message in events:
            new = mark_applied(conn, attrs)
            if new:
                apply_changes(conn, changes_for(attrs, message))
            applied.append(new)
    return applied


def _reset(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in ALL_TABLES:
            conn.execute(sa.delete(table))


class CatalogDatabase:
    """The read model's database. Construction does no I/O; :meth:`open` connects and migrates."""

    def __init__(self, url: str) -> None:
        self.url = sa.make_url(url)
        self._engine: Engine | None = None

    def __repr__(self) -> str:
        return f"CatalogDatabase({describe(self.url)!r})"

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.url.get_backend_name()

    async def open(self) -> None:
        """Connect and upgrade the schema to the newest migration (idempotent)."""
        if self._engine is None:
            self._engine = make_engine(self.url)
            await self.run("migrate", _migrate)

    async def close(self) -> None:
        """Release every connection."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()

    async def run(self, what: str, fn: Callable[[Engine], T]) -> T:
        """``fn(engine)`` in a worker thread."""
        return await run_sql(self._engine, f"{self!r}: {what}", fn)

    async def read(self, what: str, fn: Callable[[Connection], T]) -> T:
        """``fn(connection)`` in a read transaction, in a worker thread."""

        def go(engine: Engine) -> T:
            with engine.connect() as conn:
                return fn(conn)

        return await self.run(what, go)

    async def apply(self, attrs: EnvelopeAttributes, message: Message) -> bool:
        """Apply one event; False when it had been applied already."""
        return (await self.apply_batch([(attrs, message)]))[0]

    async def apply_many(self, events: Sequence[Event]) -> int:
        """Apply events in one transaction, in order; returns how many were new."""
        return sum(await self.apply_batch(events))

    async def apply_batch(self, events: Sequence[Event]) -> list[bool]:
        """Apply events in one transaction, in order; per event, whether it was new. If any event fails,
        the transaction is rolled back and nothing of the batch is applied."""
        return await self.run("apply", lambda e: _apply(e, events))

    async def reset(self) -> None:
        """Empty every read-model table (the first step of a rebuild)."""
        await self.run("reset", _reset)
