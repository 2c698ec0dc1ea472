"""HTTP routes of the qa service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status

from worldmill.qa.service import QaService

router = APIRouter(tags=["qa"])


def get_service(request: Request) -> QaService:
    """The service object the app's lifespan created."""
    service: QaService = request.app.state.ctx.state["qa"]
    return service


Service = Annotated[QaService, Depends(get_service)]


@router.get("/qa/{asset_id}")
async def get_verdict(asset_id: str, service: Service) -> dict[str, Any]:
    """An asset's verdict: passed or failed, with every finding, screenshots and contact sheet."""
    verdict = await service.verdict(asset_id)
    if verdict is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"asset {asset_id!r} has no verdict (yet)")
    return verdict
