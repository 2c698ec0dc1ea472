"""The catalog's work: apply events, answer searches, take ratings and notes, rebuild from the stream.

Ratings, notes and exports are published as events first and then applied here with the same event
id, so the answer shows them at once, the consumer's later delivery of the same event changes
nothing, and a rebuild from the stream restores them. Every write of the read model from this
process (the consumer's events and these) goes through one ``IngestBatcher``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from worldmill.catalog import queries
from worldmill.catalog.database import CatalogDatabase, Event
from worldmill.catalog.deletion import asset_prefixes, plan_deletion, run_folder
from worldmill.catalog.hub import Hub, Update
from worldmill.catalog.ingest import IngestBatcher
from worldmill.catalog.projection import KEPT_TYPES
from worldmill.catalog.report import build_status
from worldmill.catalog.search import AssetQuery
from worldmill.catalog.verify import OWNED_PREFIXES, Stored, check_expected, expected_objects, find_orphans
from worldmill.contracts.base import Message, ObjectRef
from worldmill.contracts.catalog import (
    MAX_DELETED_OBJECTS,
    AssetDeleted,
    AssetDetail,
    AssetNoted,
    AssetPage,
    AssetRated,
    AssetSummary,
    CatalogCounts,
    DatasetExported,
    DeletedAsset,
    DeletionPlan,
    DeletionRequest,
    GenerationStatus,
    MediaLink,
    Note,
    NoteSubmission,
    QueueStatus,
    RatingSubmission,
    RunDeleted,
    RunStatus,
    VerifyProblem,
    VerifyReport,
    VerifyRequest,
)
from worldmill.contracts.envelope import EnvelopeAttributes, wrap
from worldmill.contracts.generation import JobCanceled, JobCompleted, JobFailed, JobProgress, RunUpdated, VideoReady
from worldmill.contracts.keys import ARTIFACTS_BUCKET
from worldmill.contracts.qa import Finding, QaFailed, QaPassed
from worldmill.contracts.subjects import EVENTS
from worldmill.runtime.bus import Bus
from worldmill.runtime.errors import InvalidInputError, ObjectNotFoundError
from worldmill.runtime.logs import get_logger
from worldmill.runtime.store import ObjectStore

log = get_logger(__name__)
LINK_TTL = timedelta(hours=12)
REBUILD_BATCH = 500
#: Samples per dataset.exported event (about 250 bytes each: far below the 256 KiB envelope limit).
EXPORT_PART = 400


class UnknownAssetError(InvalidInputError):
    """No asset with this id (404)."""

    def __init__(self, asset_id: str) -> None:
        super().__init__("asset_id", f"no asset {asset_id!r} in the catalog")


class UnknownManifestError(InvalidInputError):
    """No manifest with this name (404)."""

    def __init__(self, name: str) -> None:
        super().__init__("manifest", f"no manifest {name!r} in the catalog")


def _kept(message: Message) -> bool:
    return isinstance(message, KEPT_TYPES)


@dataclass
class CatalogService:
    """The read model and what is served from it."""

    db: CatalogDatabase
    store: ObjectStore | None = None
    bus: Bus | None = None
    source: str = "/worldmill/catalog"
    hub: Hub = field(default_factory=Hub)
    batcher: IngestBatcher = field(init=False)

    def __post_init__(self) -> None:
        self.batcher = IngestBatcher(self.db)

    # -- writing ------------------------------------------------------------------------------

    async def ingest(self, attrs: EnvelopeAttributes, message: Message) -> bool:
        """Apply one event (a repeat changes nothing) and tell the live streams. Concurrent calls share
        transactions (``IngestBatcher``); each returns once its event is committed."""
        if not _kept(message):
            return False
        applied = await self.batcher.apply(attrs, message)
        if applied and self.hub.subscribers:
            await self._announce(message)
        return applied

    async def _announce(self, message: Message) -> None:
        if isinstance(message, JobProgress | JobCompleted | JobFailed | JobCanceled):
            status = await self.db.read("progress", lambda c: queries.progress_of_job(c, message.run_id))
            if status:
                self.hub.publish(Update("progress", RunStatus(**status).model_dump(mode="json")))
        elif isinstance(message, RunUpdated):
            status = await self.db.read("run", lambda c: queries.run_by_id(c, message.run.run_id))
            if status:
                self.hub.publish(Update("run", RunStatus(**status).model_dump(mode="json")))
        elif isinstance(message, VideoReady | QaPassed | QaFailed):
            summary = await self.summary(message.asset_id)
            if summary is not None:
                self.hub.publish(Update("asset", summary.model_dump(mode="json")))

    async def _publish_and_apply(self, message: Message, event_id: str | None = None) -> None:
        envelope = wrap(message, source=self.source, event_id=event_id or f"{message.TYPE}-{secrets.token_hex(12)}")
        if self.bus is not None:
            await self.bus.publish(envelope)
        # Through the batcher like the consumer's events: one write transaction at a time in this process, so
        # this one never waits on a batch that waits on it (the consumer's copy of the same event id).
        await self.batcher.apply(envelope, message)

    async def rate(self, asset_id: str, body: RatingSubmission) -> AssetSummary:
        """Store a 1–5 rating (the rater's previous one is replaced)."""
        await self._require_asset(asset_id)
        await self._publish_and_apply(
            AssetRated(asset_id=asset_id, rating=body.rating, rater=body.rater, rated_at=datetime.now(UTC))
        )
        summary = await self.summary(asset_id)
        if summary is None:
            raise UnknownAssetError(asset_id)
        return summary

    async def note(self, asset_id: str, body: NoteSubmission) -> Note:
        """Add a note to an asset."""
        await self._require_asset(asset_id)
        message = AssetNoted(
            asset_id=asset_id,
            note_id=f"note-{secrets.token_hex(10)}",
            text=body.text,
            author=body.author,
            noted_at=datetime.now(UTC),
        )
        await self._publish_and_apply(message)
        return Note(note_id=message.note_id, text=message.text, author=message.author, noted_at=message.noted_at)

    async def record_export(self, export: DatasetExported) -> None:
        """Remember a finished export (its samples become the assets' lineage children).

        Announced in parts of at most ``EXPORT_PART`` samples (an event must stay well under the
        envelope limit), with event ids derived from the export id: posting the same export again
        changes nothing.
        """
        samples = export.samples
        parts = [samples[i : i + EXPORT_PART] for i in range(0, len(samples), EXPORT_PART)] or [()]
        for index, chunk in enumerate(parts):
            part = export.model_copy(update={"samples": chunk, "sample_count": len(samples), "part": index})
            await self._publish_and_apply(part, event_id=f"dataset.exported-{export.export_id}-p{index}")

    async def delete(self, request: DeletionRequest) -> DeletionPlan:
        """Delete assets, runs or specs' videos with their objects; the plan alone for a dry run.

        Nothing is deleted when an id is unknown or (unless forced) an export holds an asset: the
        plan says why. Objects go first, then ``asset.deleted`` / ``run.deleted`` are published and
        applied (event ids derived from the ids: asking again changes nothing more).
        """

        def read(conn: Any) -> tuple[list[Any], list[Any], set[str], dict[str, list[str]]]:
            runs = [*queries.runs_by_ids(conn, request.runs), *queries.runs_of(conn, request.prompts)]
            run_ids = [r["run_id"] for r in runs]
            assets = [
                *queries.assets_by_ids(conn, request.assets),
                *queries.assets_of_runs(conn, run_ids),
                *queries.assets_of(conn, request.prompts),
            ]
            known = queries.known_prompts(conn, request.prompts)
            return assets, runs, known, queries.exports_holding(conn, [a["asset_id"] for a in assets])

        assets, runs, known, exports = await self.db.read("deletion", read)
        plan = plan_deletion(request, assets=assets, runs=runs, prompts_known=known, exports=exports)
        if request.dry_run or plan.unknown or plan.blocked:
            return plan
        store = self.store
        if store is None:
            raise InvalidInputError("store", "the catalog has no object store to delete from")
        rows = {str(a["asset_id"]): a for a in assets}
        removed_total = 0
        done: list[DeletedAsset] = []
        now = datetime.now(UTC)
        for item in plan.assets:
            removed = await self._delete_objects(store, [*item.objects], asset_prefixes(rows[item.asset_id]))
            removed_total += len(removed)
            done.append(item.model_copy(update={"objects": tuple(removed)}))
            event = AssetDeleted(
                asset_id=item.asset_id,
                run_id=item.run_id,
                prompt_id=item.prompt_id,
                objects=tuple(removed[:MAX_DELETED_OBJECTS]),
                exports=item.exports,
                forced=bool(item.exports),
                reason=request.reason,
                requested_by=request.requested_by,
                deleted_at=now,
            )
            await self._publish_and_apply(event, event_id=f"asset.deleted-{item.asset_id}")
        by_run: dict[str, list[str]] = {}
        for item in plan.assets:
            if item.run_id:
                by_run.setdefault(item.run_id, []).append(item.asset_id)
        run_rows = {str(r["run_id"]): r for r in runs}
        for run_id in plan.runs:
            removed_total += len(await self._delete_objects(store, [], [run_folder(run_id)]))
            deleted_run = RunDeleted(
                run_id=run_id,
                prompt_id=run_rows[run_id].get("prompt_id"),
                asset_ids=tuple(by_run.get(run_id, ())),
                reason=request.reason,
                requested_by=request.requested_by,
                deleted_at=now,
            )
            await self._publish_and_apply(deleted_run, event_id=f"run.deleted-{run_id}")
        log.info("catalog.deleted", assets=len(done), runs=len(plan.runs), objects=removed_total)
        return plan.model_copy(update={"assets": tuple(done), "deleted": True, "objects_deleted": removed_total})

    async def verify(self, request: VerifyRequest) -> VerifyReport:
        """Compare every asset row's objects with the store, find orphans, and repair what ``fix`` can."""
        store = self.store
        if store is None:
            raise InvalidInputError("store", "the catalog has no object store to verify")

        def read(conn: Any) -> tuple[list[Any], dict[str, str]]:
            return queries.all_assets(conn), queries.all_run_ids(conn)

        rows, runs = await self.db.read("verify", read)
        expected = expected_objects(rows)
        stored: dict[str, Stored | None] = {}
        for e in expected:
            bucket, _, key = e.uri.removeprefix("s3://").partition("/")
            try:
                info = await store.stat(bucket, key)
            except ObjectNotFoundError:
                stored[e.uri] = None
            else:
                stored[e.uri] = Stored(size=info.size, sha256=info.sha256, last_modified=info.last_modified)
        listed = [
            (info.key, info.last_modified)
            for prefix in OWNED_PREFIXES
            for info in await store.list(ARTIFACTS_BUCKET, prefix)
        ]
        problems = check_expected(expected, stored)
        problems += find_orphans(
            listed,
            runs=set(runs),
            assets={str(r["asset_id"]) for r in rows},
            named={e.uri for e in expected},
            now=datetime.now(UTC),
            min_age=timedelta(seconds=request.min_orphan_age_s),
        )
        if request.fix:
            problems = [await self._repair(store, p, request.requested_by) for p in problems]
        fixed = sum(p.fixed for p in problems)
        log.info("catalog.verified", assets=len(rows), problems=len(problems), fixed=fixed)
        return VerifyReport(
            assets=len(rows),
            objects_checked=len(expected),
            objects_listed=len(listed),
            problems=tuple(problems),
            fixed=fixed,
        )

    async def _repair(self, store: ObjectStore, problem: VerifyProblem, requested_by: str) -> VerifyProblem:
        bucket, _, key = problem.uri.removeprefix("s3://").partition("/")
        if problem.kind == "orphan":
            await store.delete(bucket, key)
            return problem.model_copy(update={"fixed": True})
        if problem.repair and problem.asset_id:  # the video is missing or wrong: the asset goes
            plan = await self.delete(
                DeletionRequest(
                    assets=(problem.asset_id,),
                    reason=f"verify: {problem.kind} {problem.uri}"[:500],
                    requested_by=requested_by,
                )
            )
            if plan.blocked:
                return problem.model_copy(update={"repair": f"not deleted: exports {', '.join(plan.exports)} hold it"})
            return problem.model_copy(update={"fixed": plan.deleted})
        return problem

    @staticmethod
    async def _delete_objects(store: ObjectStore, uris: list[str], prefixes: list[tuple[str, str]]) -> list[str]:
        """Delete these objects and everything under these prefixes; the URIs of what was there."""
        listed = {
            f"s3://{bucket}/{info.key}" for bucket, prefix in prefixes for info in await store.list(bucket, prefix)
        }
        removed: list[str] = []
        for uri in dict.fromkeys([*uris, *sorted(listed)]):
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            # A listed object is there; one only named (a video outside the folders) is looked up first.
            if uri in listed or await store.exists(bucket, key):
                await store.delete(bucket, key)
                removed.append(uri)
        return removed

    async def _require_asset(self, asset_id: str) -> None:
        row = await self.db.read("asset", lambda c: queries.asset(c, asset_id))
        if row is None or row["video"] is None:
            raise UnknownAssetError(asset_id)

    async def rebuild(self) -> CatalogCounts:
        """Empty the read model and apply the whole event stream again, oldest first."""
        if self.bus is None:
            raise InvalidInputError("rebuild", "needs the event stream: this catalog has no bus")
        bus = self.bus
        await self.db.reset()
        batch: list[Event] = []
        async for attrs, message in bus.replay(EVENTS.name, f"{EVENTS.subjects[0]}"):
            if _kept(message):
                batch.append((attrs, message))
            if len(batch) >= REBUILD_BATCH:
                await self.db.apply_many(batch)
                batch = []
        if batch:
            await self.db.apply_many(batch)
        counts = await self.counts()
        log.info("catalog.rebuilt", **counts.model_dump())
        return counts

    # -- reading ------------------------------------------------------------------------------

    def _link(self, ref: Mapping[str, Any] | None) -> MediaLink | None:
        if not ref:
            return None
        obj = ObjectRef.model_validate(ref)
        if self.store is None:
            return MediaLink(ref=obj)
        url = self.store.presigned_url(obj.bucket, obj.key, expires=LINK_TTL)
        return MediaLink(ref=obj, url=url, expires_s=int(LINK_TTL.total_seconds()))

    def _summary(self, row: Mapping[str, Any], tags: tuple[str, ...]) -> AssetSummary:
        return AssetSummary(
            asset_id=row["asset_id"],
            kind=row["kind"],
            manifest=row["manifest"],
            prompt_id=row["prompt_id"],
            prompt_version=row["prompt_version"],
            run_id=row["run_id"],
            series=row["series"],
            scenario=row["scenario"],
            variant=row["variant"],
            risk_level=row["risk_level"],
            tags=tags,
            model=row["model"],
            duration_s=row["duration_s"],
            fps=row["fps"],
            frames=row["frames"],
            width=row["width"],
            height=row["height"],
            prompt=row["prompt"],
            qa_status=row["qa_status"],
            failed_checks=tuple(row["failed_checks"] or ()),
            rating=row["rating"],
            ratings=row["ratings"],
            created_at=queries.utc(row["created_at"]),
            video=self._link(row["video"]),
            screenshots=tuple(link for s in row["screenshots"] or () if (link := self._link(s)) is not None),
            contact_sheet=self._link(row["contact_sheet"]),
        )

    async def search(self, q: AssetQuery, *, count: bool = False) -> AssetPage:
        """One page of assets matching ``q``, with presigned links."""

        def read(conn: Any) -> tuple[list[Any], str | None, int | None, dict[tuple[str, int], tuple[str, ...]]]:
            rows, nxt, total = queries.search(conn, q, count=count)
            keys = [(r["prompt_id"], r["prompt_version"]) for r in rows if r["prompt_id"] and r["prompt_version"]]
            return rows, nxt, total, queries.tags_of(conn, keys)

        rows, nxt, total, tags = await self.db.read("search", read)
        items = tuple(self._summary(r, tags.get((r["prompt_id"], r["prompt_version"]), ())) for r in rows)
        return AssetPage(items=items, next_cursor=nxt, total=total)

    async def summary(self, asset_id: str) -> AssetSummary | None:
        """One asset as a gallery row, or None if its video is not known yet."""

        def read(conn: Any) -> tuple[Any, tuple[str, ...]]:
            row = queries.asset(conn, asset_id)
            if row is None or row["video"] is None:
                return None, ()
            key = (row["prompt_id"], row["prompt_version"])
            return row, queries.tags_of(conn, [key]).get(key, ()) if row["prompt_id"] else ()

        row, tags = await self.db.read("asset", read)
        return self._summary(row, tags) if row is not None else None

    async def detail(self, asset_id: str) -> AssetDetail:
        """Everything about one asset: findings, provenance, lineage, ratings, notes."""

        def read(conn: Any) -> dict[str, Any] | None:
            row = queries.asset(conn, asset_id)
            if row is None or row["video"] is None:
                return None
            key = (row["prompt_id"], row["prompt_version"])
            nodes, edges = queries.lineage(conn, "asset", asset_id)
            return {
                "row": row,
                "tags": queries.tags_of(conn, [key]).get(key, ()) if row["prompt_id"] else (),
                "nodes": nodes,
                "edges": edges,
                "ratings": queries.ratings_by_rater(conn, asset_id),
                "notes": queries.notes(conn, asset_id),
            }

        found = await self.db.read("detail", read)
        if found is None:
            raise UnknownAssetError(asset_id)
        row = found["row"]
        return AssetDetail(
            asset=self._summary(row, found["tags"]),
            findings=tuple(Finding.model_validate(f) for f in row["findings"] or ()),
            qa_attempt=row["qa_attempt"],
            checked_at=queries.utc(row["qa_checked_at"]),
            checker_version=row["checker_version"],
            provenance=row["provenance"],
            plan=row["plan"],
            request_id=row["request_id"],
            requested_by=row["requested_by"],
            lineage_nodes=tuple(found["nodes"]),
            lineage_edges=tuple(found["edges"]),
            ratings_by_rater=found["ratings"],
            notes=tuple(
                Note(note_id=n["note_id"], text=n["text"], author=n["author"], noted_at=queries.utc(n["noted_at"]))
                for n in found["notes"]
            ),
        )

    async def facets(self) -> dict[str, list[str]]:
        """Values for the gallery's filters."""
        return await self.db.read("facets", queries.facets)

    async def queue(self) -> QueueStatus:
        """Runs per state, and the runs not finished with their progress."""

        def read(conn: Any) -> QueueStatus:
            active = tuple(RunStatus(**r) for r in queries.active_runs(conn))
            return QueueStatus(counts=queries.run_counts(conn), active=active)

        return await self.db.read("queue", read)

    async def status(self, name: str, *, now: datetime | None = None) -> GenerationStatus:
        """The status report of one manifest."""

        def read(conn: Any) -> GenerationStatus:
            manifest = queries.manifest(conn, name)
            specs = queries.manifest_specs(conn, name)
            if manifest is None and not specs:
                raise UnknownManifestError(name)
            ids = [s["prompt_id"] for s in specs]
            return build_status(
                name,
                manifest["sha256"] if manifest else None,
                specs,
                queries.assets_of(conn, ids),
                queries.runs_of(conn, ids),
                now=now or datetime.now(UTC),
            )

        return await self.db.read("status", read)

    async def counts(self) -> CatalogCounts:
        """How many of each thing the catalog holds."""
        return CatalogCounts(**await self.db.read("counts", queries.counts))
