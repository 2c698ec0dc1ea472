"""The runner loop: hold a window of jobs, run the best next one, overlap everything else.

* Jobs come from the shared durable consumer ``gpu-runner`` on ``wm.job.gpu`` (many runners share
  it). A window of up to ``window`` jobs is held (heartbeats keep them from redelivery) so the next
  job can be one whose model is already loaded, without starving older jobs (``selection``).
* Models stay loaded between jobs (``cache``), one load per execution signature while the memory
  budget allows.
* The model thread never waits for the rest: the next job's inputs (its conditioning frames, or a
  Transfer job's input and control videos) download and decode (``inputs``) while the current job
  generates, and the previous job's video is encoded and uploaded meanwhile.
* A Transfer job's control videos must be in the object store (``ControlSpec.video``) with exactly
  the plan's native frame count: the runner computes no controls. Anything else fails the job for
  good (``InvalidInputError`` naming ``controls.<type>``), before any GPU time is spent.
* Progress events per step and chunk are throttled; a cancel flag is honoured between steps.
* Outcomes are events (``job.completed`` with provenance, ``job.failed`` saying whether another
  attempt can help, ``job.canceled``); the message is acked only after its outcome is published.
  A redelivered job whose video was already delivered is answered again without regenerating.
* Outages heal without a restart: the queue re-establishes its pull by itself; a store or bus call
  of a job in hand (download, upload, outcome) waits the outage out, up to ``outage_patience_s``,
  while the job stays held and heartbeated (no delivery spent, nothing regenerated). Past the
  patience a store outage fails the attempt (retryable); an outcome that cannot be published hands
  the job back, and its redelivery answers from the stored video. Nothing that goes wrong with one
  job stops the loop: the job is handed back and the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar

from worldmill.contracts.backends import builtin_backends
from worldmill.contracts.base import Message, ObjectRef
from worldmill.contracts.envelope import EnvelopeAttributes, wrap
from worldmill.contracts.generation import (
    GpuJob,
    JobCanceled,
    JobCompleted,
    JobFailed,
    JobPhase,
    JobProgress,
    Provenance,
)
from worldmill.contracts.keys import provenance_key
from worldmill.contracts.subjects import GPU_JOBS
from worldmill.gpu_runner.backends.base import Backend, Canceled
from worldmill.gpu_runner.cache import ModelCache
from worldmill.gpu_runner.devices import PeakMemory
from worldmill.gpu_runner.inputs import InputFetcher
from worldmill.gpu_runner.jobwork import ChunkProgress, Generated, JobInputs, finish_video, generate_job
from worldmill.gpu_runner.provenance import DeviceDescriptions, code_version, job_provenance
from worldmill.gpu_runner.selection import Candidate, choose, passed_over
from worldmill.runtime.bus import Bus
from worldmill.runtime.cancel import CancelFlags
from worldmill.runtime.errors import BusUnavailableError, ObjectNotFoundError, PermanentError
from worldmill.runtime.jobqueue import HeldJob, JobQueue
from worldmill.runtime.logs import get_logger
from worldmill.runtime.outage import Backoff, Outage, patiently
from worldmill.runtime.store import ObjectStore

log = get_logger(__name__)

T = TypeVar("T")

#: Delay before a job handed back after an unexpected error is offered again.
CRASH_GIVE_BACK_S = 5.0


@dataclass
class Held:
    """A job in hand: the queue's handle, the decoded job and its place in the selection."""

    handle: HeldJob
    job: GpuJob
    candidate: Candidate

    @property
    def envelope(self) -> EnvelopeAttributes:
        """The envelope the job came in."""
        return self.handle.envelope


@dataclass
class RunnerStats:
    """What a runner did, for tests, health and benchmarks."""

    completed: int = 0
    failed: int = 0
    canceled: int = 0
    replayed: int = 0
    busy_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)


class Runner:
    """One runner process's loop. Construction is cheap; ``run`` does the work until ``stop``."""

    def __init__(
        self,
        bus: Bus,
        store: ObjectStore,
        cache: ModelCache,
        *,
        name: str | None = None,
        window: int = 4,
        max_passes: int = 3,
        progress_interval_s: float = 0.5,
        source: str = "/worldmill/gpu-runner",
        device: str = "cpu",
        fps_interpolation: Literal["flow", "blend"] = "flow",
        served_concurrency: int = 1,
        outage_patience_s: float = 300.0,
    ) -> None:
        self.bus = bus
        self.store = store
        self.cache = cache
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.window = window
        self.max_passes = max_passes
        self.progress_interval_s = progress_interval_s
        self.source = source
        self.device = device
        self.fps_interpolation: Literal["flow", "blend"] = fps_interpolation
        #: Jobs of served backends (capabilities ``in_process=False``) run at once; in-process ones: one.
        self.served_concurrency = max(1, served_concurrency)
        #: How long a job in hand waits out the store or NATS being down before that fails it.
        self.outage_patience_s = outage_patience_s
        self._load_lock = asyncio.Lock()  # concurrent served jobs must not load one signature twice
        self._devices = DeviceDescriptions()
        self.flags = CancelFlags(bus)
        self.stats = RunnerStats()
        self._held: list[Held] = []
        self.queue = JobQueue(bus, GPU_JOBS, (GpuJob,), source=source, store=store)
        self._cancel_watch = Outage("cancel-flags")
        self.fetcher = InputFetcher(store, outage_patience_s=outage_patience_s)
        self._current: GpuJob | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._code_version = code_version()

    # -- the loop -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume jobs until ``stop``; then finish the job in hand, hand the held ones back, return."""
        self._loop = asyncio.get_running_loop()
        await self.queue.open()
        watcher = asyncio.create_task(self._watch_cancels(stop))
        finishing: set[asyncio.Task[None]] = set()
        served: set[asyncio.Task[None]] = set()
        served_slots = asyncio.Semaphore(self.served_concurrency)
        with tempfile.TemporaryDirectory(prefix="wm-runner-") as tmp:
            try:
                while not stop.is_set():
                    waited = not self._held
                    await self._fill(wait=waited)
                    if not self._held:
                        continue
                    if waited:  # a job arrived: top the window up so there is a choice and a next job
                        await self._fill(wait=False)
                    held = self._next()
                    self._current = held.job
                    if self._held:  # the next job's inputs download while this one computes
                        self.fetcher.prefetch(self._peek().job, Path(tmp))
                    if self.served_concurrency > 1 and self._is_served(held.job):
                        # A served engine computes elsewhere: up to served_concurrency such jobs wait on
                        # it at once (it may batch them); the loop goes on taking jobs meanwhile.
                        await served_slots.acquire()
                        job_task = asyncio.create_task(self._run_served(held, Path(tmp), served_slots, finishing))
                        served.add(job_task)
                        job_task.add_done_callback(served.discard)
                        continue
                    try:
                        task = await self._run_job(held, Path(tmp))
                    except Exception as exc:  # one job's trouble never stops the loop
                        await self._crashed(held, exc)
                        continue
                    if task is not None:
                        finishing.add(task)
                        task.add_done_callback(finishing.discard)
                        if len(finishing) > 1:  # bound memory: at most one video finishing behind the model
                            await asyncio.wait(finishing, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if served:
                    await asyncio.wait(served)
                if finishing:
                    await asyncio.wait(finishing)
                self.fetcher.forget_all()
                self._held.clear()
                await self.queue.close()
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watcher

    @staticmethod
    def _is_served(job: GpuJob) -> bool:
        """Whether the job's backend is a served engine (its capabilities say ``in_process=False``)."""
        capabilities = builtin_backends().get(job.signature.backend or "")
        return capabilities is not None and not capabilities.in_process

    async def _run_served(
        self, held: Held, tmp: Path, slots: asyncio.Semaphore, finishing: set[asyncio.Task[None]]
    ) -> None:
        """One served job beside others; its slot is free once generated (encoding overlaps the next)."""
        try:
            task = await self._run_job(held, tmp)
        except Exception as exc:
            await self._crashed(held, exc)
            return
        finally:
            slots.release()
        if task is not None:
            finishing.add(task)
            task.add_done_callback(finishing.discard)

    async def _crashed(self, held: Held, exc: BaseException) -> None:
        """An unexpected error around one job: hand it back (after a delay) if it is still held; the loop goes on."""
        log.error("job.crashed", job_id=held.job.job_id, error=f"{type(exc).__name__}: {exc}")
        self.fetcher.forget(held.job.job_id)
        if self._current is held.job:
            self._current = None
        if self.queue.holds(held.handle):
            await self.queue.give_back(held.handle, delay_s=CRASH_GIVE_BACK_S)

    async def _patient(self, call: Callable[[], Awaitable[T]], outage: Outage) -> T:
        """A store or bus call of a job in hand, retried through an outage for up to ``outage_patience_s``."""
        return await patiently(call, outage, patience_s=self.outage_patience_s, backoff=Backoff(0.5, 2.0))

    async def _watch_cancels(self, stop: asyncio.Event) -> None:
        """Follow cancel flags until ``stop``; a watch that fails (NATS gone) is started again with backoff."""
        backoff = Backoff(1.0, 30.0)
        while not stop.is_set():
            try:
                await self.flags.watch(stop)
            except Exception as exc:
                self._cancel_watch.failed(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=backoff.next())
            else:
                self._cancel_watch.ok()

    async def _fetch_flag(self, run_id: str) -> bool:
        """Ask the cancel bucket about a run; ``False`` when it cannot be asked (the watched flags still apply)."""
        try:
            return await self.flags.fetch(run_id)
        except Exception as exc:
            log.debug("cancel.fetch_failed", run_id=run_id, error=f"{type(exc).__name__}: {exc}")
            return False

    async def _fill(self, *, wait: bool) -> None:
        for handle in await self.queue.take(self.window - len(self._held), wait=wait):
            job = handle.message
            if isinstance(job, GpuJob):
                self._held.append(Held(handle, job, Candidate(job.job_id, job.signature, time.monotonic())))

    def _peek(self) -> Held:
        """The job that would run next, without taking it."""
        candidates = [h.candidate for h in self._held]
        current = self._current.signature if self._current else None
        return self._held[choose(candidates, self.cache.signatures(), max_passes=self.max_passes, current=current)]

    def _next(self) -> Held:
        candidates = [h.candidate for h in self._held]
        current = self._current.signature if self._current else None
        index = choose(candidates, self.cache.signatures(), max_passes=self.max_passes, current=current)
        passed_over(candidates, index)
        return self._held.pop(index)

    # -- one job --------------------------------------------------------------------------------

    async def _run_job(self, held: Held, tmp: Path) -> asyncio.Task[None] | None:
        job = held.job
        if self.flags.is_canceled(job.run_id) or await self._fetch_flag(job.run_id):
            self.fetcher.forget(job.job_id)
            await self._outcome(
                held,
                JobCanceled(
                    job_id=job.job_id, run_id=job.run_id, attempt=job.attempt, phase="queued", runner=self.name
                ),
                "canceled",
            )
            return None
        try:
            replayed = await self._replay_if_done(held)
        except Exception as exc:  # the store stayed down past the patience, or answered nonsense
            self.fetcher.forget(job.job_id)
            await self._fail(held, "queued", exc)
            return None
        if replayed:
            self.fetcher.forget(job.job_id)
            return None
        started_at = datetime.now(UTC)
        self._current = job
        busy_from = time.perf_counter()
        try:
            self._progress(job, "loading", chunk=0, chunks=len(job.plan.chunks), step=0, steps=1, force=True)
            inputs = await self.fetcher.inputs(job, tmp)
            async with self._load_lock:
                backend, load_s = await self.cache.get(job.signature)
            generated = await asyncio.to_thread(self._generate, job, backend, inputs)
        except Canceled:
            await self._outcome(
                held,
                JobCanceled(
                    job_id=job.job_id, run_id=job.run_id, attempt=job.attempt, phase="generating", runner=self.name
                ),
                "canceled",
            )
            return None
        except Exception as exc:
            await self._fail(held, "generating", exc)
            return None
        finally:
            self.stats.busy_seconds += time.perf_counter() - busy_from
        return asyncio.create_task(
            self._finish(held, backend=backend, generated=generated, load_s=load_s, started_at=started_at, tmp=tmp)
        )

    def _generate(self, job: GpuJob, backend: Backend, inputs: JobInputs) -> Generated:
        """The GPU step in the model thread, with the device's peak memory for this job."""
        with PeakMemory(backend.describe().get("device", "cpu")) as peak:
            generated = generate_job(job, backend, inputs, self._step_reporter(job))
        return dataclasses.replace(generated, peak_memory_bytes=peak.bytes, peak_memory_kind=peak.kind)

    def _step_reporter(self, job: GpuJob) -> ChunkProgress:
        def report(chunk: int, chunks: int, step: int, steps: int) -> None:
            if self.flags.is_canceled(job.run_id):
                raise Canceled(job.run_id)
            self.queue.watchdog.progressed()  # a step done is progress, even on a job of an hour
            self._progress(job, "generating", chunk=chunk, chunks=chunks, step=step, steps=steps, force=step == steps)

        return report

    async def _finish(
        self, held: Held, *, backend: Backend, generated: Generated, load_s: float, started_at: datetime, tmp: Path
    ) -> None:
        job = held.job
        try:
            last = len(job.plan.chunks) - 1
            self._progress(job, "encoding", chunk=last, chunks=last + 1, step=1, steps=1, force=True)
            path = tmp / f"{job.job_id}.mp4"
            t0 = time.perf_counter()
            delivered = await asyncio.to_thread(
                finish_video, job, generated, path, interpolation=self.fps_interpolation
            )
            encoded = delivered.encoded
            encode_s = time.perf_counter() - t0
            self._progress(job, "uploading", chunk=last, chunks=last + 1, step=1, steps=1, force=True)
            t0 = time.perf_counter()
            video = await self._patient(
                lambda: self.store.put_file(
                    job.output_bucket,
                    job.output_key,
                    path,
                    content_type="video/mp4",
                    metadata={"job": job.job_id, "run": job.run_id},
                ),
                self.store.outage,
            )
            provenance = job_provenance(
                job,
                backend=backend,
                generated=generated,
                load_s=load_s,
                fetch_s=self.fetcher.waited(job.job_id),
                encode_s=encode_s,
                upload_s=time.perf_counter() - t0,
                started_at=started_at,
                fps_method=delivered.fps_method,
                runner=self.name,
                default_device=self.device,
                code_version=self._code_version,
                devices=self._devices,
            )
            prov_bytes = provenance.model_dump_json(indent=2).encode()
            prov_ref = await self._patient(
                lambda: self.store.put_bytes(
                    job.output_bucket,
                    provenance_key(job.run_id, job.attempt),
                    prov_bytes,
                    content_type="application/json",
                ),
                self.store.outage,
            )
            path.unlink(missing_ok=True)
            done = JobCompleted(
                job_id=job.job_id,
                run_id=job.run_id,
                attempt=job.attempt,
                video=video,
                provenance_ref=prov_ref,
                provenance=provenance,
            )
            await self._outcome(held, done, "completed")
            log.info(
                "job.completed",
                job_id=job.job_id,
                frames=encoded.frames,
                fps=str(encoded.fps),
                infer_s=round(generated.seconds, 3),
                encode_s=round(encode_s, 3),
            )
        except Exception as exc:
            await self._fail(held, "encoding", exc)
        finally:
            if self.queue.holds(held.handle):  # settled on every path above; never leave one heartbeated forever
                log.error("job.unsettled", job_id=job.job_id)
                await self.queue.give_back(held.handle, delay_s=CRASH_GIVE_BACK_S)

    async def _replay_if_done(self, held: Held) -> bool:
        """A redelivered job whose video and provenance are stored: announce it again, do not regenerate."""
        job = held.job
        prov_key = provenance_key(job.run_id, job.attempt)
        try:
            raw = await self._patient(lambda: self.store.get_bytes(job.output_bucket, prov_key), self.store.outage)
            video = await self._patient(lambda: self.store.stat(job.output_bucket, job.output_key), self.store.outage)
            prov = await self._patient(lambda: self.store.stat(job.output_bucket, prov_key), self.store.outage)
        except ObjectNotFoundError:
            return False
        if not video.sha256 or not prov.sha256:
            return False
        done = JobCompleted(
            job_id=job.job_id,
            run_id=job.run_id,
            attempt=job.attempt,
            video=ObjectRef(
                bucket=job.output_bucket,
                key=job.output_key,
                size=video.size,
                sha256=video.sha256,
                content_type=video.content_type,
                etag=video.etag,
            ),
            provenance_ref=ObjectRef(
                bucket=job.output_bucket,
                key=prov_key,
                size=prov.size,
                sha256=prov.sha256,
                content_type="application/json",
            ),
            provenance=Provenance.model_validate_json(raw),
        )
        await self._outcome(held, done, "replayed")
        return True

    async def _fail(self, held: Held, phase: JobPhase, exc: BaseException) -> None:
        job = held.job
        retryable = not isinstance(exc, PermanentError)
        log.warning("job.failed", job_id=job.job_id, error=f"{type(exc).__name__}: {exc}", retryable=retryable)
        failed = JobFailed(
            job_id=job.job_id,
            run_id=job.run_id,
            attempt=job.attempt,
            phase=phase,
            error=f"{type(exc).__name__}: {exc}"[:4000],
            retryable=retryable,
            runner=self.name,
        )
        await self._outcome(held, failed, "failed")

    async def _outcome(self, held: Held, message: Message, kind: str) -> None:
        """Publish the job's outcome (dedup id per job, so a retried publish is stored once), then ack its message.

        While NATS is down the publish is retried (the job stays held) for up to ``outage_patience_s``;
        after that the job is handed back and its redelivery answers from what is stored.
        """
        envelope = wrap(
            message,
            source=self.source,
            event_id=f"{message.TYPE}-{held.job.job_id}",
            correlation_id=held.envelope.correlationid,
            causation_id=held.envelope.id,
        )
        if self._current is held.job:
            self._current = None
        try:
            await self._patient(lambda: self.bus.publish(envelope), self.bus.outage)
        except BusUnavailableError as exc:
            log.error("job.outcome_unpublished", job_id=held.job.job_id, outcome=kind, error=str(exc))
            await self.queue.give_back(held.handle, delay_s=CRASH_GIVE_BACK_S)
            return
        await self.queue.done(held.handle)
        setattr(self.stats, kind, getattr(self.stats, kind) + 1)

    # -- progress -------------------------------------------------------------------------------

    _last_progress: float = 0.0

    def _progress(
        self, job: GpuJob, phase: JobPhase, *, chunk: int, chunks: int, step: int, steps: int, force: bool = False
    ) -> None:
        """Publish a throttled progress event; safe to call from the model thread."""
        now = time.monotonic()
        if not force and now - self._last_progress < self.progress_interval_s:
            return
        self._last_progress = now
        done = (chunk + (step / steps if steps else 0)) / max(1, chunks)
        event = JobProgress(
            job_id=job.job_id,
            run_id=job.run_id,
            attempt=job.attempt,
            phase=phase,
            chunk=chunk,
            chunks=max(1, chunks),
            step=min(step, steps),
            steps=max(1, steps),
            fraction=round(min(1.0, max(0.0, done)), 4),
            runner=self.name,
        )
        coro = self.bus.publish(wrap(event, source=self.source))
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task = loop.create_task(coro)
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
        else:
            asyncio.run_coroutine_threadsafe(coro, loop)
