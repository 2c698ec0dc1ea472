"""A job's inputs from the object store, fetched before its GPU time: ideally while the job before computes.

A Transfer job's control videos must be in the object store (``ControlSpec.video``) with exactly
the plan's native frame count: the runner computes no controls. Anything else fails the job for
good (``InvalidInputError`` naming ``controls.<type>``), before anything is downloaded. Downloads
wait out a store outage for up to the runner's ``outage_patience_s``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from worldmill.contracts.base import ObjectRef
from worldmill.contracts.cards import GenerationMode
from worldmill.contracts.generation import GpuJob
from worldmill.gpu_runner.backends.base import Frames
from worldmill.gpu_runner.jobwork import JobInputs, read_condition, read_video
from worldmill.runtime.errors import InvalidInputError
from worldmill.runtime.outage import Backoff, patiently
from worldmill.runtime.store import ObjectStore


class InputFetcher:
    """Downloads and decodes jobs' inputs; a job's fetch may start early (``prefetch``) and be awaited later."""

    def __init__(self, store: ObjectStore, *, outage_patience_s: float) -> None:
        self.store = store
        #: How long a download waits out the store being down before that fails the job.
        self.outage_patience_s = outage_patience_s
        self._fetching: dict[str, asyncio.Task[JobInputs]] = {}
        self._fetch_wait: dict[str, float] = {}

    @staticmethod
    def needs_fetch(job: GpuJob) -> bool:
        """Whether the job reads anything from the store before generating."""
        transfer_input = job.plan.mode is GenerationMode.TRANSFER and bool(job.inputs)
        return (job.plan.chunks[0].condition == "input" and bool(job.inputs)) or transfer_input or bool(job.controls)

    def prefetch(self, job: GpuJob, tmp: Path) -> None:
        """Start fetching the job's inputs now (if it has any and they are not being fetched already)."""
        if self.needs_fetch(job) and job.job_id not in self._fetching:
            self._fetching[job.job_id] = asyncio.create_task(self._fetch_inputs(job, tmp))

    def forget(self, job_id: str) -> None:
        """Drop a prefetch the job will not use (canceled, replayed, runner stopping)."""
        task = self._fetching.pop(job_id, None)
        if task is None:
            return
        if not task.done():
            task.cancel()
        elif not task.cancelled():
            task.exception()  # retrieved: a failed prefetch of a job that never ran is not an error

    def forget_all(self) -> None:
        """Drop every prefetch (the runner is stopping)."""
        for job_id in list(self._fetching):
            self.forget(job_id)

    async def inputs(self, job: GpuJob, tmp: Path) -> JobInputs:
        """The job's inputs: prefetched while the previous job computed, or fetched now."""
        if not self.needs_fetch(job):
            return JobInputs()
        task = self._fetching.pop(job.job_id, None)
        started = time.perf_counter()
        inputs = await task if task is not None else await self._fetch_inputs(job, tmp)
        self._fetch_wait[job.job_id] = time.perf_counter() - started
        return inputs

    def waited(self, job_id: str) -> float:
        """Seconds the job waited for its inputs (once; 0 when it had none to fetch)."""
        return self._fetch_wait.pop(job_id, 0.0)

    async def _download(self, ref: ObjectRef, path: Path) -> None:
        """``ref`` into ``path``, retried through a store outage for up to ``outage_patience_s``."""
        await patiently(
            lambda: self.store.download(ref.bucket, ref.key, path),
            self.store.outage,
            patience_s=self.outage_patience_s,
            backoff=Backoff(0.5, 2.0),
        )

    async def _fetch_inputs(self, job: GpuJob, tmp: Path) -> JobInputs:
        """Download and decode what the job needs; :class:`InvalidInputError` when the job cannot be run."""
        provided: list[tuple[str, ObjectRef]] = []
        for control in job.controls:  # checked before any download: such a job can never run here
            kind = control.type.value
            if control.video is None:
                raise InvalidInputError(
                    f"controls.{kind}",
                    f"the {kind} control video is missing: the GPU runner computes no controls, so every control "
                    "needs its video in the object store (ControlSpec.video)",
                )
            if any(kind == seen for seen, _ in provided):
                raise InvalidInputError(f"controls.{kind}", "is given more than once; give each control type once")
            provided.append((kind, control.video))
        condition: Frames | None = None
        input_video: Frames | None = None
        if job.plan.mode is GenerationMode.TRANSFER and job.inputs:
            ref = job.inputs[0]
            input_video = await self._fetch_video(job, ref, "input", "input", tmp, what="the input video ")
            if job.plan.chunks[0].condition == "input":
                condition = input_video[-job.plan.chunks[0].condition_frames :]
        elif job.plan.chunks[0].condition == "input" and job.inputs:
            condition = await self._fetch_condition(job, tmp)
        controls: dict[str, Frames] = {}
        for kind, ref in provided:
            controls[kind] = await self._fetch_video(
                job, ref, f"control-{kind}", f"controls.{kind}", tmp, what=f"the {kind} control video "
            )
        return JobInputs(condition=condition, input_video=input_video, controls=controls)

    async def _fetch_video(
        self, job: GpuJob, ref: ObjectRef, name: str, field: str, tmp: Path, *, what: str = ""
    ) -> Frames:
        """Every frame of ``ref`` at the plan's resolution; exactly the plan's native frame count."""
        path = tmp / f"{job.job_id}-{name}{Path(ref.key).suffix}"
        await self._download(ref, path)
        res = job.plan.resolution
        try:
            video = await asyncio.to_thread(read_video, path, res.width, res.height)
        except InvalidInputError as exc:
            raise InvalidInputError(field, f"{what}{ref.uri()} {exc.rule.split(' (')[0]}") from exc
        finally:
            path.unlink(missing_ok=True)
        expected = job.plan.native_frames
        if len(video) != expected:
            raise InvalidInputError(
                field,
                f"{what}{ref.uri()} has {len(video)} frames but the plan expects {expected} "
                f"(the planned input length at {job.plan.native_fps:g} fps)",
            )
        return video

    async def _fetch_condition(self, job: GpuJob, tmp: Path) -> Frames:
        ref = job.inputs[0]
        path = tmp / f"{job.job_id}-input{Path(ref.key).suffix}"
        await self._download(ref, path)
        try:
            first = job.plan.chunks[0]
            res = job.plan.resolution
            return await asyncio.to_thread(read_condition, path, first.condition_frames, res.width, res.height)
        except InvalidInputError as exc:
            raise InvalidInputError(f"input {ref.uri()}", exc.rule.split(" (")[0]) from exc
        finally:
            path.unlink(missing_ok=True)
