"""Pick the backend for an execution signature, by the model card's family."""

from __future__ import annotations

from collections.abc import Mapping

from worldmill.contracts.cards import ModelCard, builtin_cards
from worldmill.contracts.generation import ExecutionSignature
from worldmill.gpu_runner.backends.base import Backend, BackendConfig
from worldmill.gpu_runner.backends.synthetic import SyntheticBackend
from worldmill.runtime.errors import InvalidInputError

__all__ = ["create_backend"]

_DIFFUSERS_FAMILIES = frozenset({"predict", "transfer"})


def create_backend(
    signature: ExecutionSignature, config: BackendConfig, cards: Mapping[str, ModelCard] | None = None
) -> Backend:
    """A backend for ``signature`` (cheap: nothing is loaded before ``setup()``).

    ``synthetic`` → :class:`SyntheticBackend`; ``predict`` / ``transfer`` →
    :class:`~worldmill.gpu_runner.backends.diffusers_backend.DiffusersBackend`, imported only
    here so that torch and diffusers are loaded only by runners that need them. An unknown model
    or family is an :class:`InvalidInputError` naming it.
    """
    known = builtin_cards() if cards is None else cards
    card = known.get(signature.model)
    if card is None:
        raise InvalidInputError("model", f"unknown model {signature.model!r}; known: {sorted(known)}")
    if card.family == "synthetic":
        return SyntheticBackend(config, model=card.id)
    if card.family in _DIFFUSERS_FAMILIES:
        from worldmill.gpu_runner.backends.diffusers_backend import DiffusersBackend  # noqa: PLC0415 - torch on use

        return DiffusersBackend(signature, card, config)
    raise InvalidInputError("model", f"model {signature.model!r} has family {card.family!r}, which no backend runs")
