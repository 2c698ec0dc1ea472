"""HTTP routes of the generate service. They translate and delegate; the work is in ``service``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.responses import JSONResponse

from worldmill.contracts.generation import GenerationAccepted, GenerationSubmission, JobProgress, RunPage, RunRecord
from worldmill.contracts.http_errors import ValidationProblem
from worldmill.generate.service import CancelRefusedError, GenerateService, PlansRejectedError, UnknownPromptsError
from worldmill.runtime.errors import InvalidInputError
from worldmill.runtime.service import error_responses, provided

router = APIRouter(tags=["generation"])

#: The service object the app's lifespan created.
get_service = provided(GenerateService)
Service = Annotated[GenerateService, Depends(get_service)]


@router.post(
    "/generations",
    status_code=202,
    response_model=GenerationAccepted,
    responses={422: {"description": "Unknown prompt ids or specs the models cannot meet"}},
)
async def generate(body: GenerationSubmission, service: Service) -> JSONResponse:
    """Plan every spec (all or nothing) and enqueue one GPU job per run; repeat a request_id to retry safely."""
    try:
        accepted = await service.submit(body)
    except UnknownPromptsError as exc:
        raise InvalidInputError.of(
            ValidationProblem(loc=["body", "prompt_ids"], msg=f"unknown prompt id {p!r}", type="unknown prompt")
            for p in exc.missing
        ) from exc
    except PlansRejectedError as exc:
        raise InvalidInputError.of(
            ValidationProblem(loc=["body", "prompt_ids", pid], msg=msg, type="cannot be generated")
            for pid, msg in exc.problems.items()
        ) from exc
    return JSONResponse(status_code=202, content=accepted.model_dump(mode="json"))


@router.get("/runs", response_model=RunPage)
async def list_runs(
    service: Service,
    state: str | None = None,
    prompt_id: str | None = None,
    request_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: str | None = None,
) -> RunPage:
    """Runs by id, filtered by state, prompt or request."""
    return await service.list_runs(state=state, prompt_id=prompt_id, request_id=request_id, limit=limit, cursor=cursor)


@router.get("/runs/{run_id}", response_model=RunRecord, responses=error_responses(404))
async def get_run(run_id: str, service: Service) -> RunRecord:
    """A run's latest state, attempts, video and provenance references."""
    run = await service.run(run_id)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"run {run_id!r} does not exist")
    return run


@router.get("/runs/{run_id}/history", response_model=list[RunRecord], responses=error_responses(404))
async def run_history(run_id: str, service: Service) -> list[RunRecord]:
    """Every state the run went through, oldest first."""
    history = await service.history(run_id)
    if not history:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"run {run_id!r} does not exist")
    return history


@router.get("/runs/{run_id}/progress", response_model=JobProgress, responses=error_responses(404))
async def run_progress(run_id: str, service: Service) -> JobProgress:
    """The last progress event a runner sent for this run (since this service started)."""
    progress = service.progress.get(run_id)
    if progress is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no progress seen for run {run_id!r}")
    return progress


@router.post(
    "/runs/{run_id}/cancel", response_model=RunRecord, responses=error_responses(404, 409, s409="The run has finished")
)
async def cancel_run(run_id: str, service: Service) -> RunRecord:
    """Cancel a queued run at once, or a running one between two denoising steps."""
    try:
        return await service.cancel(run_id)
    except CancelRefusedError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
