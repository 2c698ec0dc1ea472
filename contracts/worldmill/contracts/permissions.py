"""Who may publish and consume what on NATS: one grant per service (and per outside role), as data.

Each service publishes only the messages it owns, binds only its own durable consumers (and
dead-letters only theirs, on ``wm.dlq.<durable>``), and reads the event log (events are facts
anyone may read). The cancel flags (KV bucket ``wm_cancel``) are written by the generate service
and read by the GPU runners. ``worldmill.runtime.nats_auth`` turns these grants into nats-server
users with publish/subscribe permissions; a test checks them against what each service's code
constructs and the consumers its ``app`` module declares.

Two grants are for what is not a service: ``integrator`` (other systems publishing requests and
uploads as plain CloudEvents and following the event log) and ``minio`` (MinIO's bucket
notifications). ``admin`` (``worldmill bus init``, the CLI, the local stack's set-up) may do anything.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

from worldmill.contracts.augment import AugmentCompleted, AugmentRejected, AugmentRequested, InputSpecRequested
from worldmill.contracts.base import Message
from worldmill.contracts.catalog import AssetDeleted, AssetNoted, AssetRated, DatasetExported, RunDeleted
from worldmill.contracts.generation import (
    GenerationRejected,
    GenerationRequested,
    GpuJob,
    JobCanceled,
    JobCompleted,
    JobFailed,
    JobProgress,
    RunUpdated,
    VideoReady,
)
from worldmill.contracts.objects import ObjectCreated
from worldmill.contracts.prompts import ManifestAccepted, ManifestRejected, PromptCreated
from worldmill.contracts.qa import QaFailed, QaPassed
from worldmill.contracts.subjects import (
    DLQ,
    EVENTS,
    GPU_JOBS,
    INPUT_SPEC_JOBS,
    JOBS,
    MINIO_NOTIFICATIONS,
    S3_NOTIFICATIONS,
    UPSAMPLE_JOBS,
    dlq_subject,
)
from worldmill.contracts.upsample import PromptUpsampled, UpsampleRequested, UpsampleSkipped

ADMIN_USER = "admin"

#: What a grant may do with the cancel flags: nothing, read and watch them (runners), or set them.
CancelAccess = Literal["none", "read", "write"]


@dataclass(frozen=True)
class NatsGrant:
    """One NATS user: the messages it publishes, the durable consumers it binds, its cancel access.

    ``consumers`` are ``(stream, durable)`` pairs; ``raw_subjects`` are subjects published that
    carry no worldmill message (MinIO's notifications); ``own_event_consumers`` lets an outside role
    create durable consumers of its own (any name) on the event log.
    """

    user: str
    description: str
    publishes: tuple[type[Message], ...] = ()
    consumers: tuple[tuple[str, str], ...] = ()
    cancel: CancelAccess = "none"
    raw_subjects: tuple[str, ...] = ()
    reads_events: bool = True
    own_event_consumers: bool = False
    default_inbox: bool = False
    """The client cannot set an inbox prefix (MinIO's NATS target): its replies come on ``_INBOX.>``."""

    @property
    def subjects(self) -> tuple[str, ...]:
        """Every data subject this user publishes on: its messages, its consumers' dead letters, raw ones."""
        own = [m.subject() for m in self.publishes]
        dead = [dlq_subject(durable) for _, durable in self.consumers]
        return tuple(dict.fromkeys([*own, *dead, *self.raw_subjects]))


def _events(*durables: str) -> tuple[tuple[str, str], ...]:
    return tuple((EVENTS.name, d) for d in durables)


@functools.cache
def service_grants() -> tuple[NatsGrant, ...]:
    """The grant of every service (its settings name is its NATS user) and of the outside roles."""
    return (
        NatsGrant(
            user="prompt",
            description="Manifests and specs; asks for generation of augmentation specs.",
            publishes=(ManifestAccepted, ManifestRejected, PromptCreated, GenerationRequested),
            consumers=(
                *_events("prompt-upsampled"),
                (JOBS.name, INPUT_SPEC_JOBS.durable),
            ),
        ),
        NatsGrant(
            user="upsample",
            description="Prompt rewrites: queues its own jobs and announces their outcome.",
            publishes=(UpsampleRequested, PromptUpsampled, UpsampleSkipped),
            consumers=(*_events("upsample-specs"), (JOBS.name, UPSAMPLE_JOBS.durable)),
        ),
        NatsGrant(
            user="generate",
            description="Runs: plans, queues GPU jobs, sets cancel flags, announces videos.",
            publishes=(GenerationRejected, GpuJob, VideoReady, RunUpdated),
            consumers=(
                *_events("generate-specs", "generate-requests", "generate-jobs", "generate-upsample-skips"),
                (DLQ.name, "generate-lost"),
            ),
            cancel="write",
        ),
        NatsGrant(
            user="gpu-runner",
            description="GPU workers: take jobs from the shared queue, report progress and outcomes.",
            publishes=(JobProgress, JobCompleted, JobFailed, JobCanceled),
            consumers=((JOBS.name, GPU_JOBS.durable),),
            cancel="read",
        ),
        NatsGrant(
            user="qa",
            description="Verdicts on every video; regenerations of failed ones.",
            publishes=(QaPassed, QaFailed, GenerationRequested),
            consumers=_events("qa-videos", "qa-deletions"),
        ),
        NatsGrant(
            user="augment",
            description="Uploads become augmentations: normalises uploads, asks for input specs.",
            publishes=(ObjectCreated, AugmentRequested, InputSpecRequested, AugmentRejected, AugmentCompleted),
            consumers=(
                *_events(
                    "augment-uploads",
                    "augment-requests",
                    "augment-videos",
                    "augment-generation-rejected",
                    "augment-verdicts",
                ),
                (S3_NOTIFICATIONS.name, "augment-minio"),
            ),
        ),
        NatsGrant(
            user="catalog",
            description="The read model of every event; ratings, notes, exports the export command reports, deletions.",
            publishes=(AssetRated, AssetNoted, DatasetExported, AssetDeleted, RunDeleted),
            consumers=_events("catalog"),
        ),
        NatsGrant(
            user="integrator",
            description="Other systems: requests and uploads as CloudEvents, their own consumers on the event log.",
            publishes=(GenerationRequested, AugmentRequested, ObjectCreated),
            own_event_consumers=True,
        ),
        NatsGrant(
            user="minio",
            description="MinIO's bucket notifications (its NATS target in JetStream mode).",
            raw_subjects=(MINIO_NOTIFICATIONS,),
            reads_events=False,
            default_inbox=True,
        ),
    )


def grant_for(user: str) -> NatsGrant:
    """The grant of ``user``; ``KeyError`` naming the known users when there is none."""
    for grant in service_grants():
        if grant.user == user:
            return grant
    known = ", ".join(g.user for g in service_grants())
    raise KeyError(f"no NATS grant for {user!r} (known: {ADMIN_USER}, {known})")
