"""The Cosmos guardrail, run once per video by the runner (not per chunk by the pipelines).

NVIDIA's inference checks the prompt once before generating and the finished video once after
(blocking it, or blurring faces); the diffusers pipelines instead check inside every call, and
they handle a block badly for a service: Transfer returns black frames, Predict returns ``None``.
So the pipelines get a pass-through checker and this module runs the real one around the whole
job: :meth:`Guardrail.check_prompt` before the first chunk, :meth:`Guardrail.check_video` on the
assembled native video. A block raises :class:`GuardrailBlocked` (permanent: never retried).

The checker is ``cosmos_guardrail.CosmosSafetyChecker`` (loaded once per runner, shared by every
backend through :class:`SharedComponents`, its parameter bytes counted in the model cache), from
the local Hugging Face cache only: its repos are checked with ``local_files_only`` first (a
missing one names the ``worldmill models pull`` command), and the package's own downloads run
with the hub switched offline. A test or in-house checker can be given as
``BackendConfig.guardrail_loader``: any object with ``check_text_safety(str) -> bool`` and
``check_video_safety(frames) -> frames | None``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from worldmill.gpu_runner.backends.base import BackendConfig, CheckpointError, Frames, GuardrailBlocked

__all__ = ["GUARDRAIL_KEY", "Guardrail", "load_guardrail"]

GUARDRAIL_KEY = "guardrail"


class Guardrail:
    """A loaded safety checker with the name it is recorded under in provenance."""

    def __init__(self, checker: Any, name: str, size_bytes: int = 0) -> None:
        self.checker = checker
        self.name = name
        self.size_bytes = size_bytes

    def check_prompt(self, prompt: str) -> None:
        """Raise :class:`GuardrailBlocked` when the checker refuses the prompt."""
        if not self.checker.check_text_safety(prompt):
            shown = prompt if len(prompt) <= 120 else prompt[:117] + "..."
            raise GuardrailBlocked(self.name, f"the prompt {shown!r}")

    def check_video(self, frames: Frames) -> Frames:
        """The frames as the checker lets them out (faces may be blurred); :class:`GuardrailBlocked` when it blocks."""
        checked = self.checker.check_video_safety(np.ascontiguousarray(frames))
        if checked is None:
            raise GuardrailBlocked(self.name, f"the generated video ({len(frames)} frames)")
        out = np.asarray(checked, dtype=np.uint8)
        if out.shape != frames.shape:
            raise GuardrailBlocked(self.name, "the generated video", f"the checker returned shape {out.shape}")
        return out


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """huggingface_hub (and transformers through it) offline for the duration: local cache only."""
    from huggingface_hub import constants  # noqa: PLC0415

    before_env, before_const = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before_const
        if before_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before_env


def _module_bytes(checker: Any) -> int:
    total = 0
    for model in getattr(checker, "nn_models", []) or []:
        for tensor in [*model.parameters(), *model.buffers()]:
            total += tensor.numel() * tensor.element_size()
    return total


def _check_cached(downloads: tuple[Any, ...], pull: str) -> None:
    """Each ``HubDownload`` in the local cache (with the file patterns it was pulled with), or a CheckpointError."""
    from huggingface_hub import snapshot_download  # noqa: PLC0415

    missing: list[str] = []
    for d in downloads:
        try:
            snapshot_download(
                d.repo, revision=d.revision, allow_patterns=list(d.allow_patterns) or None, local_files_only=True
            )
        except Exception:  # not cached (LocalEntryNotFoundError, IncompleteSnapshotError, …)
            missing.append(f"{d.repo}@{d.revision}")
    if missing:
        raise CheckpointError(
            f"the Cosmos guardrail is on but {', '.join(missing)} is not in the Hugging Face cache: run `{pull}` "
            "(gated: accept the licence on huggingface.co and set HF_TOKEN), or turn the guardrail off "
            "(WM_GPU_RUNNER_SAFETY_CHECKER=false; recorded in provenance)"
        )


def _load_cosmos(device: str) -> Guardrail:
    from worldmill.contracts.checkpoints import GUARDRAIL_DOWNLOADS, guardrail_pull_command  # noqa: PLC0415

    if importlib.util.find_spec("cosmos_guardrail") is None:
        raise CheckpointError(
            "the Cosmos guardrail is on but the cosmos_guardrail package is not installed: pip install "
            "cosmos_guardrail (its models come from the Hugging Face cache), or turn the guardrail off "
            "(WM_GPU_RUNNER_SAFETY_CHECKER=false; recorded in provenance)"
        )
    _check_cached(GUARDRAIL_DOWNLOADS, guardrail_pull_command())
    try:
        with _hub_offline():
            checker = importlib.import_module("cosmos_guardrail").CosmosSafetyChecker()
        checker.to(device)
    except Exception as exc:
        raise CheckpointError(f"the Cosmos guardrail (cosmos_guardrail) could not be loaded: {exc}") from exc
    version = importlib.metadata.version("cosmos_guardrail")
    return Guardrail(checker, f"cosmos_guardrail {version}", _module_bytes(checker))


def load_guardrail(config: BackendConfig, device: str) -> Guardrail:
    """The runner's guardrail, loaded once: shared by every backend through ``config.shared``."""

    def load() -> Guardrail:
        if config.guardrail_loader is not None:
            checker = config.guardrail_loader()
            return Guardrail(checker, type(checker).__name__, _module_bytes(checker))
        return _load_cosmos(device)

    guardrail: Guardrail = config.shared.acquire(GUARDRAIL_KEY, load, lambda g: int(g.size_bytes))
    return guardrail
