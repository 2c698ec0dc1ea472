"""HTTP routes of the upsample service. They translate and delegate; the work is in ``service``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.responses import JSONResponse

from worldmill.contracts.base import Identifier
from worldmill.contracts.http_errors import ErrorBody, ValidationProblem
from worldmill.contracts.upsample import (
    UpsampleAccepted,
    UpsamplerInfo,
    UpsampleStatus,
    UpsampleStatusPage,
    UpsampleSubmission,
)
from worldmill.runtime.errors import InvalidInputError
from worldmill.runtime.service import error_responses, provided
from worldmill.upsample.service import UnknownSpecsError, UpsampleService, UpsampleUnavailableError
from worldmill.upsample.settings import UpsampleSettings

router = APIRouter(tags=["upsample"])


@dataclass(frozen=True)
class UpsampleState:
    """What the upsample service's lifespan made: the service, its settings and what ``/upsample/server`` says."""

    service: UpsampleService
    settings: UpsampleSettings
    info: UpsamplerInfo


State = Annotated[UpsampleState, Depends(provided(UpsampleState))]


def get_service(state: State) -> UpsampleService:
    """The service object the app's lifespan created."""
    return state.service


def get_info(state: State) -> UpsamplerInfo:
    """How this service sizes and sends requests (made once at start-up)."""
    return state.info


Service = Annotated[UpsampleService, Depends(get_service)]


@router.post(
    "/upsample",
    status_code=202,
    response_model=UpsampleAccepted,
    responses={
        422: {"description": "Unknown prompt ids, or a hint that is not an image/video in the store"},
        **error_responses(503, s503="No upsampling server is configured"),
    },
)
async def upsample(body: UpsampleSubmission, service: Service) -> JSONResponse:
    """Queue a rewrite of each spec's latest version; follow it with ``GET /upsample?request_id=…``."""
    try:
        accepted = await service.submit(body)
    except UpsampleUnavailableError as exc:
        return JSONResponse(status_code=503, content=ErrorBody(detail=str(exc)).model_dump())
    except UnknownSpecsError as exc:
        raise InvalidInputError.of(
            ValidationProblem(loc=["body", "prompt_ids"], msg=f"unknown prompt id {p!r}", type="unknown prompt")
            for p in exc.missing
        ) from exc
    except InvalidInputError as exc:
        raise exc.located("body") from exc
    return JSONResponse(status_code=202, content=accepted.model_dump(mode="json"))


@router.get("/upsample", response_model=UpsampleStatusPage)
async def request_status(service: Service, request_id: Annotated[Identifier, Query()]) -> UpsampleStatusPage:
    """Every spec of one request, with counts per state."""
    return await service.request_status(request_id)


@router.get("/upsample/server", response_model=UpsamplerInfo)
async def server_info(info: Annotated[UpsamplerInfo, Depends(get_info)], service: Service) -> UpsamplerInfo:
    """Whether an upsampler is configured and how requests are sized (with the current calibration)."""
    calibration = service.upsampler.calibration if service.upsampler else info.calibration
    return info.model_copy(update={"calibration": round(calibration, 4)})


@router.get("/upsample/{prompt_id}", response_model=UpsampleStatus, responses=error_responses(404))
async def prompt_status(prompt_id: str, service: Service) -> UpsampleStatus:
    """Where a spec's latest upsample stands, with the rewrite and how it was made once done."""
    found = await service.status(prompt_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no upsample of {prompt_id!r} was requested")
    return found
