"""The catalog's HTTP API (token required): search, detail, ratings, notes, runs, reports, exports."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from worldmill.catalog.search import DEFAULT_PAGE, MAX_PAGE, MAX_TEXT, AssetQuery
from worldmill.catalog.service import CatalogService, UnknownAssetError, UnknownManifestError
from worldmill.contracts.catalog import (
    AssetDetail,
    AssetPage,
    AssetSummary,
    CatalogCounts,
    DeletionPlan,
    DeletionRequest,
    ExportRecordRequest,
    GenerationStatus,
    Note,
    NoteSubmission,
    QueueStatus,
    RatingSubmission,
    VerifyReport,
    VerifyRequest,
)
from worldmill.runtime.errors import InvalidInputError
from worldmill.runtime.service import error_responses, service_of

router = APIRouter()
KEEPALIVE_S = 15.0

Text = Annotated[str | None, Query(max_length=MAX_TEXT)]


def _service(request: Request) -> CatalogService:
    return service_of(request, CatalogService)


def _not_found(exc: UnknownAssetError | UnknownManifestError) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, exc.rule)


@router.get("/assets", response_model=AssetPage, tags=["assets"])
async def search_assets(
    request: Request,
    series: Text = None,
    scenario: Text = None,
    risk_level: Text = None,
    model: Text = None,
    manifest: Text = None,
    qa_status: Literal["pending", "passed", "failed"] | None = None,
    kind: Literal["video", "augmentation"] | None = None,
    tag: Annotated[list[str] | None, Query(max_length=20, description="Repeat for several (all must match).")] = None,
    q: Annotated[str | None, Query(max_length=MAX_TEXT, description="Text in the prompt.")] = None,
    min_duration: Annotated[float | None, Query(ge=0)] = None,
    max_duration: Annotated[float | None, Query(ge=0)] = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    min_rating: Annotated[float | None, Query(ge=1, le=5)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    count: bool = False,
) -> AssetPage:
    """Assets with a video, newest first, filtered; follow ``next_cursor`` for the next page."""
    try:
        query = AssetQuery(
            series=series,
            scenario=scenario,
            risk_level=risk_level,
            model=model,
            manifest=manifest,
            qa_status=qa_status,
            kind=kind,
            tags=tuple(tag or ()),
            q=q,
            min_duration=min_duration,
            max_duration=max_duration,
            created_from=created_from,
            created_to=created_to,
            min_rating=min_rating,
            limit=limit,
            cursor=cursor,
        )
    except ValidationError as exc:
        raise InvalidInputError.from_errors(exc.errors(), within=("query",)) from exc
    return await _service(request).search(query, count=count)


@router.get("/assets/{asset_id}", response_model=AssetDetail, tags=["assets"], responses=error_responses(404))
async def asset_detail(request: Request, asset_id: str) -> AssetDetail:
    """One asset: findings, provenance, lineage, ratings and notes, with presigned links."""
    try:
        return await _service(request).detail(asset_id)
    except UnknownAssetError as exc:
        raise _not_found(exc) from exc


@router.put("/assets/{asset_id}/rating", response_model=AssetSummary, tags=["assets"], responses=error_responses(404))
async def rate_asset(request: Request, asset_id: str, body: RatingSubmission) -> AssetSummary:
    """Rate an asset 1–5 (a rater's new rating replaces their previous one)."""
    try:
        return await _service(request).rate(asset_id, body)
    except UnknownAssetError as exc:
        raise _not_found(exc) from exc


@router.post(
    "/assets/{asset_id}/notes", response_model=Note, status_code=201, tags=["assets"], responses=error_responses(404)
)
async def add_note(request: Request, asset_id: str, body: NoteSubmission) -> Note:
    """Write a note on an asset."""
    try:
        return await _service(request).note(asset_id, body)
    except UnknownAssetError as exc:
        raise _not_found(exc) from exc


@router.get("/facets", tags=["assets"])
async def facets(request: Request) -> dict[str, list[str]]:
    """The values each filter can take."""
    return await _service(request).facets()


@router.get("/runs/status", response_model=QueueStatus, tags=["runs"])
async def run_status(request: Request) -> QueueStatus:
    """Runs per state and the active runs with their progress."""
    return await _service(request).queue()


@router.get(
    "/manifests/{name}/status", response_model=GenerationStatus, tags=["reports"], responses=error_responses(404)
)
async def manifest_status(request: Request, name: str) -> GenerationStatus:
    """``generation_status.json`` of a manifest: what exists, passed, failed, is missing or in flight."""
    try:
        return await _service(request).status(name)
    except UnknownManifestError as exc:
        raise _not_found(exc) from exc


@router.get("/stats", response_model=CatalogCounts, tags=["catalog"])
async def stats(request: Request) -> CatalogCounts:
    """How many events, manifests, prompts, runs, assets and exports the catalog holds."""
    return await _service(request).counts()


@router.post("/exports", status_code=202, tags=["catalog"])
async def record_export(request: Request, body: ExportRecordRequest) -> dict[str, str]:
    """Record a finished export (published as ``dataset.exported``)."""
    await _service(request).record_export(body.export)
    return {"export_id": body.export.export_id}


@router.post(
    "/deletions",
    response_model=DeletionPlan,
    tags=["assets"],
    responses=error_responses(404, 409),
)
async def delete(request: Request, body: DeletionRequest) -> DeletionPlan:
    """Delete assets, runs or the videos of specs with everything their lineage holds (``dry_run``: the plan).

    404 when an id is unknown, 409 when an export holds an asset and ``force`` is not set; nothing
    is deleted then. A dry run answers the plan in every case.
    """
    plan = await _service(request).delete(body)
    if body.dry_run:
        return plan
    if plan.unknown:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"not in the catalog: {', '.join(plan.unknown)}")
    if plan.blocked:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"exports hold these assets: {', '.join(plan.exports)}; set force to delete them anyway",
        )
    return plan


@router.post("/verify", response_model=VerifyReport, tags=["catalog"])
async def verify(request: Request, body: VerifyRequest) -> VerifyReport:
    """Compare the catalog with the stored objects (missing, mismatched, orphaned); ``fix`` repairs what it can."""
    return await _service(request).verify(body)


@router.post("/rebuild", response_model=CatalogCounts, tags=["catalog"])
async def rebuild(request: Request) -> CatalogCounts:
    """Empty the read model and apply the whole event stream again."""
    return await _service(request).rebuild()


@router.get("/progress/stream", tags=["runs"])
async def progress_stream(request: Request) -> StreamingResponse:
    """Server-sent events: ``progress`` and ``run`` (RunStatus), ``asset`` (AssetSummary), keep-alives."""
    svc = _service(request)

    async def events() -> AsyncIterator[str]:
        async with svc.hub.subscribe() as queue:
            yield ": connected\n\n"
            while not await request.is_disconnected():
                try:
                    update = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_S)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                yield _sse(update.event, update.data)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
