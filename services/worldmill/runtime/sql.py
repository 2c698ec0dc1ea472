"""SQL engines for the services' own databases: SQLite (embedded default) or PostgreSQL.

One place decides how an engine is made (SQLite: a file, WAL, a busy timeout; PostgreSQL: a connect
timeout and pre-ping) and how a driver's connection errors become :class:`DatabaseUnavailableError`
(transient: the caller retries). Calls run the sync engine in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from worldmill.runtime.errors import InvalidInputError, TransientError

T = TypeVar("T")


class DatabaseUnavailableError(TransientError):
    """The database cannot be reached right now (or the file cannot be opened)."""


def describe(url: sa.URL) -> str:
    """The URL without its password, for logs and errors."""
    return url.render_as_string(hide_password=True)


def make_engine(url: str | sa.URL) -> Engine:
    """An engine for ``url``; no connection is opened yet. SQLite needs a file path."""
    url = sa.make_url(url)
    sqlite = url.get_backend_name() == "sqlite"
    args: dict[str, Any] = {}
    if sqlite:
        db = url.database or ""
        if db in ("", ":memory:") or db.startswith("file:"):
            raise InvalidInputError("database_url", "SQLite needs a file path (in-memory is not supported)")
        try:
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseUnavailableError(f"{describe(url)}: cannot create its folder ({exc})") from exc
    elif url.get_backend_name() == "postgresql":
        args["connect_timeout"] = 5
    engine = sa.create_engine(url, pool_pre_ping=not sqlite, connect_args=args)
    if sqlite:
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


async def run_sql(engine: Engine | None, what: str, fn: Callable[[Engine], T]) -> T:
    """``fn(engine)`` in a worker thread; connection failures become :class:`DatabaseUnavailableError`."""
    if engine is None:
        raise DatabaseUnavailableError(f"{what}: the database is not open (call open() first)")
    try:
        return await asyncio.to_thread(fn, engine)
    except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError, sa_exc.TimeoutError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise DatabaseUnavailableError(f"{describe(engine.url)}: {what} failed: {reason}") from exc


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
