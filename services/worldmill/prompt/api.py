"""HTTP routes of the prompt service. They translate and delegate; the work is in ``service``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.responses import JSONResponse

from worldmill.contracts.http_errors import ValidationProblem
from worldmill.contracts.prompts import (
    InputSpecRequest,
    InputSpecResult,
    ManifestProblem,
    ManifestResult,
    ManifestSubmission,
    PromptDetail,
    PromptPage,
)
from worldmill.prompt.service import ManifestInvalidError, PromptService
from worldmill.runtime.errors import InvalidInputError
from worldmill.runtime.service import error_responses, provided

router = APIRouter(tags=["prompts"])

#: The service object the app's lifespan created.
get_service = provided(PromptService)
Service = Annotated[PromptService, Depends(get_service)]


def manifest_invalid(problems: list[ManifestProblem], manifest: str | None, sha256: str) -> InvalidInputError:
    """The 422 with every problem: where (path in the manifest, line, column), which rule, what is wrong."""
    detail = [
        ValidationProblem(loc=[p.path], type=p.rule, msg=p.message, line=p.line, column=p.column) for p in problems
    ]
    return InvalidInputError.of(detail, manifest=manifest, sha256=sha256)


@router.post("/manifests", response_model=ManifestResult, responses={422: {"description": "Manifest problems"}})
async def submit_manifest(body: ManifestSubmission, service: Service) -> JSONResponse:
    """Check a manifest and, unless ``dry_run``, store its specs as new versions (idempotent)."""
    try:
        result = await service.submit(body.content, dry_run=body.dry_run)
    except ManifestInvalidError as exc:
        exp = exc.expansion
        raise manifest_invalid(exp.problems, exp.manifest.name if exp.manifest else None, exp.sha256) from exc
    code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
    return JSONResponse(status_code=code, content=result.model_dump(mode="json"))


@router.get("/prompts", response_model=PromptPage)
async def list_prompts(
    service: Service,
    manifest: str | None = None,
    series: str | None = None,
    scenario: str | None = None,
    tag: Annotated[list[str] | None, Query()] = None,
    risk: str | None = None,
    duration: str | None = Query(default=None, description="Seconds, e.g. 10 or 10s"),
    model: str | None = None,
    upsample: bool | None = None,
    upsampled: bool | None = Query(default=None, description="Only versions written by the upsampler (or not)."),
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: str | None = None,
) -> PromptPage:
    """The latest version of each spec matching every filter given, ordered by id."""
    filters: dict[str, str | list[str]] = {}
    for key, value in (
        ("manifest", manifest),
        ("series", series),
        ("scenario", scenario),
        ("risk", risk),
        ("model", model),
    ):
        if value is not None:
            filters[key] = value
    if tag:
        filters["tag"] = tag
    if duration is not None:
        filters["duration"] = duration
    if upsample is not None:
        filters["upsample"] = str(upsample).lower()
    if upsampled is not None:
        filters["upsampled"] = str(upsampled).lower()
    return await service.list_prompts(filters, limit=limit, cursor=cursor)


@router.get("/prompts/{prompt_id}", response_model=PromptDetail, responses=error_responses(404))
async def get_prompt(prompt_id: str, service: Service) -> PromptDetail:
    """A spec's latest version and its whole history."""
    detail = await service.get_prompt(prompt_id)
    if detail is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"prompt {prompt_id!r} does not exist")
    return detail


@router.post("/input-specs", response_model=InputSpecResult)
async def input_specs(body: InputSpecRequest, service: Service) -> InputSpecResult:
    """A Transfer spec per video under a bucket prefix (existing specs kept unless ``new_version``)."""
    return await service.specs_for_videos(body)
