"""generate settings: the runtime settings plus which runner backends this deployment has."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from worldmill.contracts.backends import BackendCapabilities, builtin_backends
from worldmill.runtime.settings import RuntimeSettings


class GenerateSettings(RuntimeSettings):
    """``WM_GENERATE_*``."""

    backends: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("diffusers", "cosmos3", "synthetic"),
        description="Runner backends this deployment runs, in order of preference (comma-separated). Specs are "
        "planned for the first that can run them and refused when none can. Default: the in-process ones; add "
        "nim, vllm-omni or native-transfer where runners are configured for them. The local stack, whose runner "
        "is the synthetic CPU stand-in, sets 'synthetic'.",
    )

    @field_validator("backends", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("backends")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        known = builtin_backends()
        unknown = [v for v in value if v not in known]
        if unknown:
            raise ValueError(f"unknown backend(s) {unknown}; known: {sorted(known)}")
        if not value:
            raise ValueError("at least one backend is needed")
        return value

    def capabilities(self) -> tuple[BackendCapabilities, ...]:
        """The configured backends' capabilities, in order."""
        known = builtin_backends()
        return tuple(known[name] for name in self.backends)
