"""Cosmos-Transfer augmentation: controls and requests."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from worldmill.contracts.base import Contract, Identifier, Message, ObjectRef
from worldmill.contracts.cards import ControlType, Preset


class ControlSpec(Contract):
    """One control branch: its type, weight 0–1, optional preset and an optional provided video."""

    type: ControlType
    weight: float = Field(default=1.0, ge=0.0, le=1.0)
    preset: Preset | None = Field(default=None, description="Edge threshold or blur strength preset.")
    video: ObjectRef | None = Field(default=None, description="A provided control video; None = computed.")


class AugmentRequested(Message):
    """Someone (an upload, the API, the CLI) asks for a Transfer augmentation of one input video."""

    TYPE: ClassVar[str] = "augment.requested"

    request_id: Identifier
    input_bucket: str
    input_key: str = Field(min_length=1, max_length=1024)
    controls: tuple[ControlSpec, ...] = ()
    template: str | None = None
    prompt: str | None = Field(default=None, max_length=20000)
    requested_by: str = "api"

    def entity_id(self) -> str | None:
        return self.request_id
