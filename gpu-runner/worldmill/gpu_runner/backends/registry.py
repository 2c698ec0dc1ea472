"""Pick the backend for an execution signature, by the model card's family."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from worldmill.contracts.backends import builtin_backends
from worldmill.contracts.cards import ModelCard, builtin_cards
from worldmill.contracts.generation import ExecutionSignature
from worldmill.gpu_runner.backends.base import Backend, BackendConfig
from worldmill.gpu_runner.backends.synthetic import SyntheticBackend
from worldmill.runtime.errors import InvalidInputError

__all__ = ["create_backend"]

#: Backends by name (``ExecutionSignature.backend``, ``BackendCapabilities.name``): where the class
#: lives, imported only when asked for (torch, diffusers, HTTP clients stay unloaded otherwise).
#: Every class takes ``(signature, card, config)``.
_CLASSES: dict[str, str] = {
    "diffusers": "worldmill.gpu_runner.backends.diffusers_backend:DiffusersBackend",
    "native-transfer": "worldmill.gpu_runner.backends.native_transfer:NativeTransferBackend",
    "nim": "worldmill.gpu_runner.backends.nim_backend:NimBackend",
    "vllm-omni": "worldmill.gpu_runner.backends.vllm_omni_backend:VllmOmniBackend",
    "cosmos3": "worldmill.gpu_runner.backends.cosmos3_backend:Cosmos3Backend",
}
#: The backend a signature without one gets, by model family (plans made before backends were named).
_BY_FAMILY = {"predict": "diffusers", "transfer": "diffusers", "cosmos3": "cosmos3"}


def _load(name: str) -> Any:
    module, _, cls = _CLASSES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def create_backend(
    signature: ExecutionSignature, config: BackendConfig, cards: Mapping[str, ModelCard] | None = None
) -> Backend:
    """A backend for ``signature`` (cheap: nothing is loaded before ``setup()``).

    The signature's ``backend`` (what the plan was made for), else the family's default:
    ``synthetic`` → :class:`SyntheticBackend`; Cosmos 2.5 ``predict`` / ``transfer`` → diffusers. The
    backend must run the model's family (its capabilities say). An unknown model, backend or family
    is an :class:`InvalidInputError` naming it.
    """
    known = builtin_cards() if cards is None else cards
    card = known.get(signature.model)
    if card is None:
        raise InvalidInputError("model", f"unknown model {signature.model!r}; known: {sorted(known)}")
    name = signature.backend or ("synthetic" if card.family == "synthetic" else _BY_FAMILY.get(card.family))
    if name is None:
        raise InvalidInputError("model", f"model {signature.model!r} has family {card.family!r}, which no backend runs")
    if name == "synthetic":
        return SyntheticBackend(config, model=card.id)
    if name not in _CLASSES:
        have = ", ".join(["synthetic", *_CLASSES])
        raise InvalidInputError("backend", f"unknown backend {name!r}; this runner has: {have}")
    capabilities = builtin_backends().get(name)
    if capabilities is not None and not capabilities.runs_family(card.family):
        raise InvalidInputError("backend", f"the {name} backend does not run {card.family} models ({card.id})")
    backend: Backend = _load(name)(signature, card, config)
    return backend
