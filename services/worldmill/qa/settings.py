"""qa settings: the runtime settings plus the optional VLM critic (``WM_QA_VLM_*``) and its default gate."""

from __future__ import annotations

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from worldmill.contracts.qa import DEFAULT_CRITIC_THRESHOLD, CriticGate, CriticKind, critic_threshold_rule
from worldmill.runtime.settings import RuntimeSettings


class QaSettings(RuntimeSettings):
    """The critic is off unless ``vlm_base_url`` points at a vLLM OpenAI-compatible server.

    ``vlm_gate``, ``vlm_kind`` and ``vlm_threshold`` are the defaults a spec's ``qa.critic`` overrides.
    Field order matters: the validators of the later fields read the earlier ones.
    """

    vlm_base_url: str | None = Field(default=None, description="e.g. http://vllm:8000/v1; unset = no critic")
    vlm_model: str = "nvidia/Cosmos-Reason1-7B"
    vlm_api_key: SecretStr | None = None
    vlm_trials: int = Field(default=4, ge=1, le=16)
    vlm_fps: float = Field(default=4.0, gt=0)
    vlm_timeout_s: float = Field(default=120.0, gt=0, description="Per request; a long video takes a while.")
    vlm_max_retries: int = Field(default=3, ge=0, le=10, description="Retries on 5xx and timeouts per request.")
    vlm_gate: CriticGate = Field(
        default="warn",
        description="What a score under the threshold does when the spec does not say: off, warn or fail "
        "(fail needs vlm_base_url). Without a critic nothing is asked unless a spec requires it.",
    )
    vlm_kind: CriticKind = Field(default="anomaly", description="anomaly (share of clean answers) or plausibility.")
    vlm_threshold: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description="anomaly: share of 'no anomaly' answers, 0–1 (default 0.5); plausibility: mean 1–5 (default 3).",
    )
    max_regenerations: int = Field(default=1, ge=0, le=10, description="New runs asked for per failed spec.")
    regenerate_checks: tuple[str, ...] | None = Field(
        default=None, description="Failed checks that ask for a new run; default: every regenerable check."
    )

    @field_validator("vlm_gate")
    @classmethod
    def _fail_needs_a_critic(cls, gate: CriticGate, info: ValidationInfo) -> CriticGate:
        if gate == "fail" and not info.data.get("vlm_base_url"):
            raise ValueError("'fail' needs a critic: set vlm_base_url (WM_QA_VLM_BASE_URL) or use warn/off")
        return gate

    @field_validator("vlm_threshold")
    @classmethod
    def _threshold_fits_kind(cls, threshold: float | None, info: ValidationInfo) -> float | None:
        kind = info.data.get("vlm_kind")
        if threshold is not None and kind is not None and (rule := critic_threshold_rule(kind, threshold)) is not None:
            raise ValueError(f"{rule}; set vlm_kind to match")
        return threshold

    @property
    def critic_threshold(self) -> float:
        """``vlm_threshold``, or the default of ``vlm_kind``."""
        return DEFAULT_CRITIC_THRESHOLD[self.vlm_kind] if self.vlm_threshold is None else self.vlm_threshold
