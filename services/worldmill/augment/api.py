"""HTTP routes of the augment service. They translate and delegate; the work is in ``service``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.responses import JSONResponse

from worldmill.augment.service import AugmentService
from worldmill.contracts.augment import AugmentAccepted, Augmentation, AugmentationPage, AugmentSubmission
from worldmill.runtime.service import error_responses, provided

router = APIRouter(tags=["augment"])

#: The service object the app's lifespan created.
get_service = provided(AugmentService)
Service = Annotated[AugmentService, Depends(get_service)]


@router.post("/augmentations", status_code=202, response_model=AugmentAccepted)
async def augment(body: AugmentSubmission, service: Service) -> JSONResponse:
    """Augment the listed inputs (or every video under a prefix not yet augmented with a passing verdict).

    Each input is answered: queued, skipped (augmented already), in progress, or rejected with the
    field and the rule. Follow them with ``GET /augmentations?request=<request_id>``.
    """
    accepted = await service.submit(body)
    return JSONResponse(status_code=202, content=accepted.model_dump(mode="json"))


@router.get("/augmentations", response_model=AugmentationPage)
async def list_augmentations(
    service: Service,
    request: str | None = Query(default=None, description="The request id of a submission."),
    state: str | None = None,
    input: str | None = Query(default=None, description="bucket/key of an input."),
    prompt: str | None = None,
    asset: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: str | None = None,
) -> AugmentationPage:
    """Augmentations by id, filtered, with counts per state."""
    filters: dict[str, str] = {
        k: v
        for k, v in (("request", request), ("state", state), ("input", input), ("prompt", prompt), ("asset", asset))
        if v is not None
    }
    # A bad filter or cursor is an InvalidInputError: the service base answers 422 naming it.
    return await service.find(dict(filters), limit=limit, cursor=cursor)


@router.get("/augmentations/{augmentation_id}", response_model=Augmentation, responses=error_responses(404))
async def get_augmentation(augmentation_id: str, service: Service) -> Augmentation:
    """One augmentation with its lineage: upload, input, controls, spec, run, video, QA verdict."""
    found = await service.get(augmentation_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"augmentation {augmentation_id!r} does not exist")
    return found


@router.get(
    "/augmentations/{augmentation_id}/history", response_model=list[Augmentation], responses=error_responses(404)
)
async def augmentation_history(augmentation_id: str, service: Service) -> list[Augmentation]:
    """Every state the augmentation went through, oldest first."""
    history = await service.history(augmentation_id)
    if not history:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"augmentation {augmentation_id!r} does not exist")
    return history
