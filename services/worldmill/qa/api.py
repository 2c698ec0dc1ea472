"""HTTP routes of the qa service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

from worldmill.qa.audits import AuditRunner
from worldmill.qa.service import QaService
from worldmill.runtime.service import error_responses, provided

router = APIRouter(tags=["qa"])


@dataclass(frozen=True)
class QaState:
    """What the qa service's lifespan made: the verdict service and the audit runner."""

    qa: QaService
    audits: AuditRunner


State = Annotated[QaState, Depends(provided(QaState))]


def get_service(state: State) -> QaService:
    """The service object the app's lifespan created."""
    return state.qa


Service = Annotated[QaService, Depends(get_service)]


class AuditRequest(BaseModel):
    """``POST /qa/audit``: a bucket prefix of existing videos; expectations from their file names."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="s3://bucket/prefix")
    fps: float = Field(default=24.0, gt=0, le=240, description="Expected frame rate of the files.")


def get_audits(state: State) -> AuditRunner:
    """The audit runner the app's lifespan created."""
    return state.audits


Audits = Annotated[AuditRunner, Depends(get_audits)]


@router.post("/qa/audit", status_code=202)
async def start_audit(body: AuditRequest, audits: Audits) -> dict[str, str]:
    """Start auditing a bucket prefix in the background; poll ``GET /qa/audits/{id}``."""
    audit_id = await audits.start(body.url, fps=body.fps)
    return {"audit_id": audit_id, "state": "running"}


@router.get("/qa/audits/{audit_id}", responses=error_responses(404))
async def get_audit(audit_id: str, audits: Audits) -> dict[str, Any]:
    """An audit's state, and its report once done (totals, failures by check, groups, missing, files)."""
    found = await audits.get(audit_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"audit {audit_id!r} does not exist")
    return found


@router.get("/qa/{asset_id}", responses=error_responses(404))
async def get_verdict(asset_id: str, service: Service) -> dict[str, Any]:
    """An asset's verdict: passed or failed, with every finding, screenshots and contact sheet."""
    verdict = await service.verdict(asset_id)
    if verdict is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"asset {asset_id!r} has no verdict (yet)")
    return verdict
