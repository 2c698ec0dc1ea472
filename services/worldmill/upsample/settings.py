"""upsample settings: the runtime settings plus the upsampling server and how requests are sized.

Everything reads from ``WM_UPSAMPLE_*`` (or ``WM_*``). Without ``WM_UPSAMPLE_BASE_URL`` there is no
upsampler: requests are answered "unavailable" and specs keep their original prompts.
"""

from __future__ import annotations

from dataclasses import replace

from pydantic import Field, SecretStr

from worldmill.runtime.settings import RuntimeSettings
from worldmill.upsample.profiles import ModelProfile, builtin_profiles

#: The model names vLLM serves the built-in profiles under (``vllm serve <name>``).
SERVED_MODELS = {"pixtral-12b": "mistralai/Pixtral-12B-2409", "cosmos-reason1-7b": "nvidia/Cosmos-Reason1-7B"}


class UpsampleSettings(RuntimeSettings):
    """Where the vision-language server is, which profile sizes its requests, and the limits."""

    base_url: str | None = Field(default=None, description="e.g. http://vllm:8000/v1; unset = no upsampler")
    api_key: SecretStr | None = None
    profile: str = Field(default="pixtral-12b", description="Token-counting profile: pixtral-12b, cosmos-reason1-7b.")
    model: str | None = Field(default=None, description="Served model name; default: the profile's usual one.")
    max_model_len: int | None = Field(
        default=None, gt=0, description="The server's context length (vLLM --max-model-len), if not the profile's."
    )
    max_images: int | None = Field(default=None, ge=1, description="The server's image limit per prompt.")
    hint_frames: int = Field(default=2, ge=1, le=32, description="Hint frames wanted from an input video.")
    hint_as_video: bool = Field(default=False, description="Send hint frames as one short video (video models).")
    max_tokens: int | None = Field(default=None, gt=0, description="New tokens; default: the profile's.")
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float = Field(default=0.95, gt=0, le=1)
    seed: int | None = Field(default=None, description="Sampling seed passed to the server (reproducible answers).")
    margin_tokens: int = Field(default=64, ge=0)
    context_retries: int = Field(default=4, ge=0, le=16, description="Shrink-and-retry rounds after a context error.")
    concurrency: int = Field(default=4, ge=1, le=256, description="Requests in flight to the server.")
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10, description="Retries on 5xx, timeouts and connection errors.")
    backoff_base_s: float = Field(default=0.5, ge=0)

    def model_profile(self) -> ModelProfile:
        """The profile with this deployment's overrides applied; ValueError for an unknown profile."""
        profiles = builtin_profiles()
        base = profiles.get(self.profile)
        if base is None:
            raise ValueError(f"WM_UPSAMPLE_PROFILE={self.profile!r} is not a profile ({', '.join(profiles)})")
        changes: dict[str, object] = {}
        if self.max_model_len is not None:
            changes["context_tokens"] = self.max_model_len
        if self.max_images is not None:
            changes["max_images"] = self.max_images
        if self.max_tokens is not None:
            changes["default_max_tokens"] = self.max_tokens
        if self.temperature is not None:
            changes["default_temperature"] = self.temperature
        return replace(base, **changes)  # type: ignore[arg-type]

    def served_model(self) -> str:
        """The model name to put in requests."""
        return self.model or SERVED_MODELS.get(self.profile, self.profile)
