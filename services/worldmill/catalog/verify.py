"""Does the catalog agree with the object store? (pure): ``worldmill verify``'s comparison.

Three disagreements:

* **missing**: an object an asset row names (video, screenshot, contact sheet) is not stored;
* **mismatch**: it is stored but its size or recorded sha256 differs from the row's;
* **orphan**: an object under ``runs/<run>/`` or ``qa/<asset>/`` of the artifacts bucket whose run
  or asset the catalog does not know, older than the minimum age (a runner may still be uploading
  what the catalog has not heard of yet).

What a fix does: an orphan is deleted; an asset whose *video* is missing or wrong is deleted from
the catalog (``asset.deleted``: its spec shows as missing and ``generate --missing`` makes it
again); a missing or wrong screenshot is only reported (QA makes screenshots with the verdict).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from worldmill.contracts.catalog import VerifyProblem
from worldmill.contracts.keys import ARTIFACTS_BUCKET

Row = Mapping[str, Any]
#: The folders of the artifacts bucket whose objects belong to a run or an asset.
OWNED_PREFIXES = ("runs/", "qa/")


@dataclass(frozen=True)
class Expected:
    """An object an asset row names, with what the row says about it."""

    uri: str
    asset_id: str
    role: str
    size: int | None
    sha256: str | None


@dataclass(frozen=True)
class Stored:
    """What the store says about an object (``None`` sha256: not recorded)."""

    size: int
    sha256: str | None
    last_modified: datetime | None


def _ref(ref: Any, asset_id: str, role: str) -> Expected | None:
    if not (isinstance(ref, Mapping) and ref.get("bucket") and ref.get("key")):
        return None
    return Expected(f"s3://{ref['bucket']}/{ref['key']}", asset_id, role, ref.get("size"), ref.get("sha256"))


def expected_objects(rows: Iterable[Row]) -> list[Expected]:
    """Every object the asset rows name (the video first for each asset)."""
    out: list[Expected] = []
    for row in rows:
        asset_id = str(row["asset_id"])
        refs = [("video", row.get("video")), ("contact sheet", row.get("contact_sheet"))]
        refs += [("screenshot", s) for s in row.get("screenshots") or []]
        out += [e for role, ref in refs if (e := _ref(ref, asset_id, role)) is not None]
    return out


def check_expected(expected: Iterable[Expected], stored: Mapping[str, Stored | None]) -> list[VerifyProblem]:
    """missing and mismatch problems of the named objects (``stored[uri]`` None: not there)."""
    problems: list[VerifyProblem] = []
    for e in expected:
        found = stored.get(e.uri)
        repair = "asset deleted from the catalog (regenerate it)" if e.role == "video" else ""
        if found is None:
            problems.append(
                VerifyProblem(
                    kind="missing", uri=e.uri, asset_id=e.asset_id, detail=f"{e.role} not stored", repair=repair
                )
            )
            continue
        wrong = []
        if e.size is not None and found.size != e.size:
            wrong.append(f"size {found.size} ≠ {e.size}")
        if e.sha256 and found.sha256 and found.sha256 != e.sha256:
            wrong.append(f"sha256 {found.sha256[:12]}… ≠ {e.sha256[:12]}…")
        if wrong:
            problems.append(
                VerifyProblem(
                    kind="mismatch",
                    uri=e.uri,
                    asset_id=e.asset_id,
                    detail=f"{e.role}: {', '.join(wrong)}",
                    repair=repair,
                )
            )
    return problems


def owner_of(key: str) -> tuple[str, str] | None:
    """``("run", id)`` for ``runs/<id>/…``, ``("asset", id)`` for ``qa/<id>/…``; None for other keys."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] == "runs":
        return "run", parts[1]
    if len(parts) >= 3 and parts[0] == "qa":
        return "asset", parts[1]
    return None


def find_orphans(
    listed: Iterable[tuple[str, datetime | None]],
    *,
    runs: set[str],
    assets: set[str],
    named: set[str],
    now: datetime,
    min_age: timedelta,
) -> list[VerifyProblem]:
    """Objects (``(key, last_modified)`` of the artifacts bucket) no run or asset of the catalog owns."""
    problems: list[VerifyProblem] = []
    for key, modified in listed:
        uri = f"s3://{ARTIFACTS_BUCKET}/{key}"
        owner = owner_of(key)
        if owner is None or uri in named:
            continue
        kind, owner_id = owner
        if (kind == "run" and owner_id in runs) or (kind == "asset" and owner_id in assets):
            continue
        if modified is not None and now - modified < min_age:
            continue
        problems.append(
            VerifyProblem(
                kind="orphan", uri=uri, detail=f"no {kind} {owner_id} in the catalog", repair="object deleted"
            )
        )
    return problems
