"""qa settings: the runtime settings plus the optional VLM critic (``WM_QA_VLM_*``)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from worldmill.runtime.settings import RuntimeSettings


class QaSettings(RuntimeSettings):
    """The critic is off unless ``vlm_base_url`` points at a vLLM OpenAI-compatible server."""

    vlm_base_url: str | None = Field(default=None, description="e.g. http://vllm:8000/v1; unset = no critic")
    vlm_model: str = "nvidia/Cosmos-Reason1-7B"
    vlm_api_key: SecretStr | None = None
    vlm_trials: int = Field(default=4, ge=1, le=16)
    vlm_fps: float = Field(default=4.0, gt=0)
    max_regenerations: int = Field(default=1, ge=0, le=10, description="New runs asked for per failed spec.")
    regenerate_checks: tuple[str, ...] | None = Field(
        default=None, description="Failed checks that ask for a new run; default: every regenerable check."
    )
