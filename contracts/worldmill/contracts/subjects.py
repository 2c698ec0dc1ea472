"""NATS subject names, and the streams and shared consumers as data. Defined here once.

Subjects: ``wm.evt.<entity>.<fact>`` for events (a limits-retention log anyone can read),
``wm.job.<kind>`` for jobs (a work queue: one durable pull consumer per job subject),
``wm.dlq.<consumer>`` for dead letters, ``wm.s3.<source>`` for raw storage notifications.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from worldmill.contracts.base import Contract

EVENTS_PREFIX = "wm.evt"
JOBS_PREFIX = "wm.job"
DLQ_PREFIX = "wm.dlq"
#: Where MinIO's native NATS target publishes bucket notifications (JetStream mode).
MINIO_NOTIFICATIONS = "wm.s3.minio"

DAY = 86400.0


class StreamSpec(Contract):
    """A JetStream stream the runtime creates (or updates) at start-up."""

    name: str = Field(pattern=r"^[A-Z][A-Z0-9_]+$")
    subjects: tuple[str, ...]
    retention: Literal["limits", "workqueue", "interest"]
    max_age_s: float = Field(gt=0)
    duplicate_window_s: float = Field(gt=0)
    max_msg_size: int = Field(default=1024 * 1024, gt=0)
    description: str


class ConsumerSpec(Contract):
    """A durable pull consumer and the delivery policy of its consume loop.

    ``max_deliver`` is enforced by the consume loop (not the server), so a message that keeps
    failing, or keeps crashing its worker, ends in the dead-letter stream instead of staying
    stuck in the stream.
    """

    durable: str = Field(pattern=r"^[a-z][a-z0-9_\-]+$")
    stream: str
    filter_subject: str
    ack_wait_s: float = Field(default=30.0, gt=0)
    max_deliver: int = Field(default=5, ge=1)
    max_ack_pending: int = Field(default=256, ge=1)
    backoff_base_s: float = Field(default=1.0, gt=0, description="First nak delay; doubles per delivery.")
    backoff_max_s: float = Field(default=60.0, gt=0)
    description: str = ""


EVENTS = StreamSpec(
    name="WM_EVENTS",
    subjects=(f"{EVENTS_PREFIX}.>",),
    retention="limits",
    max_age_s=90 * DAY,
    duplicate_window_s=600.0,
    description="Every fact of the pipeline, kept for replay (the catalog rebuilds from it).",
)
JOBS = StreamSpec(
    name="WM_JOBS",
    subjects=(f"{JOBS_PREFIX}.>",),
    retention="workqueue",
    max_age_s=14 * DAY,
    duplicate_window_s=3600.0,
    description="Commands for exactly one worker; a job leaves the queue when it is acked.",
)
DLQ = StreamSpec(
    name="WM_DLQ",
    subjects=(f"{DLQ_PREFIX}.>",),
    retention="limits",
    max_age_s=180 * DAY,
    duplicate_window_s=600.0,
    description="Messages a consumer gave up on, with the reason and the original payload.",
)
S3_NOTIFICATIONS = StreamSpec(
    name="WM_S3",
    subjects=("wm.s3.>",),
    retention="limits",
    max_age_s=7 * DAY,
    duplicate_window_s=600.0,
    description="Raw bucket notifications (MinIO's NATS target); normalised into object.created.",
)

ALL_STREAMS: tuple[StreamSpec, ...] = (EVENTS, JOBS, DLQ, S3_NOTIFICATIONS)


def event_subject(entity_fact: str) -> str:
    """``wm.evt.<entity>.<fact>`` from ``"<entity>.<fact>"``."""
    return f"{EVENTS_PREFIX}.{entity_fact}"


def job_subject(kind: str) -> str:
    """``wm.job.<kind>``."""
    return f"{JOBS_PREFIX}.{kind}"


def dlq_subject(consumer: str) -> str:
    """``wm.dlq.<consumer>``: where a consumer's dead letters go."""
    return f"{DLQ_PREFIX}.{consumer}"


#: The GPU job queue: every runner binds to this one durable consumer, so runners share the queue.
GPU_JOBS = ConsumerSpec(
    durable="gpu-runner",
    stream=JOBS.name,
    filter_subject=job_subject("gpu"),
    ack_wait_s=60.0,
    max_deliver=4,
    # Jobs held by all runners together: each runner holds a window (4 by default) plus the job
    # whose video is still encoding, acked only once its outcome is published: 64 runners (one per
    # GPU of eight 8-GPU hosts) x 5.
    max_ack_pending=320,
    backoff_base_s=5.0,
    backoff_max_s=300.0,
    description="GPU generation and transfer jobs; heartbeats keep long jobs from redelivery.",
)

#: The upsample job queue: every upsample service process binds to it; concurrency is per process.
UPSAMPLE_JOBS = ConsumerSpec(
    durable="upsampler",
    stream=JOBS.name,
    filter_subject=job_subject("upsample"),
    ack_wait_s=60.0,
    max_deliver=5,
    max_ack_pending=64,
    backoff_base_s=2.0,
    backoff_max_s=120.0,
    description="Prompt rewrites by a vision-language model; the server's own retries come first.",
)

#: Transfer specs the augment service asks the prompt service for (one per probed input video).
INPUT_SPEC_JOBS = ConsumerSpec(
    durable="prompt-input-specs",
    stream=JOBS.name,
    filter_subject=job_subject("input_spec"),
    description="Input-video specs for augmentations; the prompt service stores them and asks for generation.",
)

#: NATS key-value bucket of canceled runs (key = run id); runners watch it between denoising steps.
CANCEL_BUCKET = "wm_cancel"
#: How long a cancel flag is kept (runs finish or are dropped well before).
CANCEL_TTL_S = 7 * DAY
