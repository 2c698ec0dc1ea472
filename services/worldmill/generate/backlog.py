"""What ``worldmill generate --manifest NAME --missing|--failed|--unverified`` queues (pure).

The catalog's status of a manifest (``GenerationStatus``, what ``worldmill report`` prints) puts
every spec in one state. The backlog of the states asked for is exactly those specs, less the ones
with a run still queued or running (the catalog may not have heard of a run submitted a moment
ago; the generate service has), so running the command twice queues nothing the second time:

* ``missing`` and ``unverified`` specs are generated again as they are (one request);
* a ``failed`` spec is *regenerated*: a request of its own that replaces one of its failed videos
  (the last the catalog lists), with a regeneration number past the videos it already has, so
  planning gives it a new seed (the spec's own seed would make the failed video again). Its request
  id is derived from the spec's failed videos, so a repeat finds the first request's run instead of
  making another, and a spec whose regeneration failed too gets a new request the next time.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from worldmill.contracts.catalog import StatusItem, StatusState
from worldmill.contracts.generation import ACTIVE_STATES, MAX_REGENERATION, Regeneration

#: The states ``--missing``, ``--failed`` and ``--unverified`` select.
SELECTABLE: tuple[StatusState, ...] = ("missing", "failed", "unverified")


@dataclass(frozen=True)
class Replacement:
    """A failed spec's regeneration: the request that makes its video again with a new seed."""

    prompt_id: str
    regeneration: Regeneration
    request_id: str


@dataclass(frozen=True)
class Backlog:
    """What to queue: specs to generate as they are, failed specs to regenerate, and what was left alone."""

    generate: tuple[str, ...]
    regenerate: tuple[Replacement, ...]
    in_flight: tuple[str, ...]
    counts: dict[str, int]

    @property
    def empty(self) -> bool:
        return not self.generate and not self.regenerate


def replacement(item: StatusItem) -> Replacement:
    """The regeneration of a failed spec: it replaces the last failed video the catalog lists."""
    passed = set(item.passed_assets)
    failed = [a for a in item.assets if a not in passed]
    if not failed:
        raise ValueError(f"spec {item.prompt_id} has no failed video to replace")
    number = min(MAX_REGENERATION, max(1, len(item.assets)))
    material = "\x1f".join([item.prompt_id, *sorted(failed)])
    return Replacement(
        prompt_id=item.prompt_id,
        regeneration=Regeneration(number=number, replaces=failed[-1], failed_checks=item.failed_checks[:64]),
        request_id="cli-regen-" + hashlib.sha256(material.encode()).hexdigest()[:24],
    )


def plan_backlog(items: Iterable[StatusItem], states: Collection[str], active: Collection[str]) -> Backlog:
    """The specs of ``items`` in ``states``, less those with an active run (``active``: prompt ids)."""
    unknown = set(states) - set(SELECTABLE)
    if unknown:
        raise ValueError(f"states must be among {', '.join(SELECTABLE)}, not {', '.join(sorted(unknown))}")
    generate: list[str] = []
    regenerate: list[Replacement] = []
    in_flight: list[str] = []
    counts = dict.fromkeys(states, 0)
    for item in items:
        if item.state not in states:
            continue
        counts[item.state] += 1
        if item.prompt_id in active or (item.run_state or "") in ACTIVE_STATES:
            in_flight.append(item.prompt_id)
        elif item.state == "failed" and set(item.assets) - set(item.passed_assets):
            regenerate.append(replacement(item))
        else:
            generate.append(item.prompt_id)
    return Backlog(
        generate=tuple(dict.fromkeys(generate)),
        regenerate=tuple(regenerate),
        in_flight=tuple(in_flight),
        counts=counts,
    )


def backlog_request_id(states: Collection[str]) -> str:
    """A fresh request id for the specs generated as they are (``cli-missing-…``)."""
    return f"cli-{'-'.join(sorted(states))}-{uuid.uuid4().hex[:12]}"
