"""What a search asks for, checked, and the cursor that continues it. Pure: no SQL, no I/O.

Every text a person types is a value, never SQL: the query layer binds each one as a parameter, and
the text search escapes ``%``, ``_`` and the escape character itself so they match literally.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from pydantic import Field, model_validator

from worldmill.contracts.base import Contract
from worldmill.contracts.catalog import AssetKind, QaStatus
from worldmill.runtime.errors import InvalidInputError

MAX_PAGE = 500
DEFAULT_PAGE = 50
#: Longest free text accepted in one filter value.
MAX_TEXT = 500
LIKE_ESCAPE = "\\"


class AssetQuery(Contract):
    """Filters of ``GET /assets`` (all optional; tags must all be present)."""

    series: str | None = Field(default=None, max_length=MAX_TEXT)
    scenario: str | None = Field(default=None, max_length=MAX_TEXT)
    risk_level: str | None = Field(default=None, max_length=MAX_TEXT)
    model: str | None = Field(default=None, max_length=MAX_TEXT)
    manifest: str | None = Field(default=None, max_length=MAX_TEXT)
    qa_status: QaStatus | None = None
    kind: AssetKind | None = None
    tags: tuple[str, ...] = Field(default=(), max_length=20)
    q: str | None = Field(default=None, max_length=MAX_TEXT, description="Text in the prompt (case-insensitive).")
    min_duration: float | None = Field(default=None, ge=0)
    max_duration: float | None = Field(default=None, ge=0)
    created_from: datetime | None = None
    created_to: datetime | None = None
    min_rating: float | None = Field(default=None, ge=1, le=5)
    limit: int = Field(default=DEFAULT_PAGE, ge=1, le=MAX_PAGE)
    cursor: str | None = Field(default=None, max_length=400)

    @model_validator(mode="after")
    def _ranges(self) -> AssetQuery:
        if self.min_duration is not None and self.max_duration is not None and self.min_duration > self.max_duration:
            raise ValueError("min_duration must not be greater than max_duration")
        if self.created_from and self.created_to and self.created_from > self.created_to:
            raise ValueError("created_from must not be later than created_to")
        return self


def like_pattern(text: str) -> str:
    """``%text%`` with LIKE's wildcards in ``text`` escaped (they match themselves)."""
    escaped = text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", f"{LIKE_ESCAPE}%").replace("_", f"{LIKE_ESCAPE}_")
    return f"%{escaped.lower()}%"


def encode_cursor(created_at: datetime, asset_id: str) -> str:
    """An opaque cursor after (created_at, asset_id), the order of the results (newest first)."""
    raw = json.dumps([created_at.isoformat(), asset_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position a cursor stands for; a cursor we did not make is refused naming the field."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, asset_id = json.loads(raw)
        if not isinstance(asset_id, str) or not isinstance(when, str):
            raise TypeError("not a cursor")
        return datetime.fromisoformat(when), asset_id
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidInputError("cursor", "is not a cursor this service returned (pass next_cursor as it is)") from exc
