"""Control-plane throughput: jobs/s from manifest to catalog with a no-op engine, and latency per hop.

Starts the local stack the way ``worldmill up`` does (``worldmill.runtime.stack.start_stack``): a real
nats-server (JetStream) and SeaweedFS (S3) on free loopback ports in a temporary data folder, then
every service the path needs as its own process (``python -m worldmill.cli serve <service>``):
``prompt``, ``generate``, ``qa``, ``catalog`` and ``--runners`` GPU-runner processes (upsample and
augment are not on this path). Separate processes, as in production: each service has its own
interpreter, event loop and GIL, so the pipeline can use both cores, and each process's CPU seconds
can be read from ``/proc`` (psutil), which is how the bottleneck is named.

The no-op engine: the runners' synthetic backend with no simulated load or compute
(``WM_GPU_RUNNER_SYNTHETIC_LOAD_S=0``, ``..._S_PER_FRAME=0``), specs at the smallest sizes a manifest
allows (``--resolution`` 64x48, ``--fps`` 8, ``--seconds`` 2 = 16 frames, 1 step). The stand-in still
renders a whole card chunk (93 frames, of which the plan keeps 16) and the runner encodes H.264 and
uploads the video and its provenance, so after the run the bench re-runs ``--calibrate`` of the jobs'
engine (``generate_job``), encode (``finish_video``) and QA decode pass (``analyze``) in its own process
and reports their CPU per job next to each service's: what is left is the control plane. (A backend that
emits a video instantly could not be plugged in from here: a runner with ``backend=synthetic`` always
builds ``SyntheticBackend``, and a plan names only backends with an entry in ``contracts/backends.py``.)
QA does its real work on every video (download, one decode pass, checks, fingerprint index, screenshots
and contact sheet uploaded): its share is reported. ``--warmup`` jobs go through first, outside the
figures, so one-off costs (lazy imports, first connections) are not counted per job.

One manifest of ``--jobs`` specs (``--variants`` per scenario, one duration, ``auto_generate: true``)
goes to the prompt service's ``POST /manifests`` (``--rate R`` instead sends manifests of ``--batch``
specs at R jobs/s, open loop). Every spec is followed to its catalog row. Times per job come from the
event log, read back after the run by replaying ``WM_EVENTS`` from the start: each message's envelope
``time`` (when its service made the fact) and its JetStream store time (when it was on the bus), plus
two things the log does not hold: the ``wm.job.gpu`` message (a work-queue message, deleted when acked:
seen live by a plain NATS subscription) and the catalog row (the catalog stores the events' own times,
not when it applied them: its SQLite file is polled read-only every ``--poll-ms``, so that hop
includes up to one poll interval). The hops, each from one bus time to the next:

    submit              -> prompt.created    prompt: HTTP, expand, store specs + outbox, relay
    prompt.created      -> job queued        generate: spec copy, plan, run v1 + GpuJob in the outbox, relay
    job queued          -> job started       WM_JOBS work queue and the runner's window (job.progress "loading")
    job started         -> job.completed     runner: render, encode, upload video + provenance, publish
    job.completed       -> video.ready       generate: run ready, video.ready through the outbox
    video.ready         -> QA verdict        qa: download, decode, checks, verdict through the outbox
    QA verdict          -> catalog row       catalog: consume, apply to the SQL read model

(``generation.requested`` is not on this path: an auto-generate spec is planned from its
``prompt.created``; the bench counts such events and reports 0.) For each hop: p50/p99/max, and the
part of it between the effect's envelope time and its bus time (the outbox: a fact stored, waiting
for the relay). Throughput: first submit to last catalog row, and steady state (10th to 90th
percentile of catalog rows). Per process: CPU seconds over the run, share of one core, peak share
over 1 s, CPU ms per job and the jobs/s it could do alone at that cost; the whole pipeline's CPU ms
per job gives the machine's bound (cores left by other processes / CPU per job). The bottleneck is
named from that evidence: the machine's CPU when it is busy (with the bound next to the measured
rate), else a process at a full core, else the offered rate; the largest consumer; the slowest hop
(where the jobs wait); and the first single-process ceiling (a service that is one Python process
cannot go past one core, whatever the number of runners). Every job must reach the catalog exactly
once (one asset per spec, one of each event, no duplicate event ids), checked through the catalog's
HTTP API and the log; the exit status is 1 otherwise.

A readable table goes to stdout, then, as the last stdout line, one JSON object with every figure.
Timings are never asserted; ``--strict`` exits 1 when a target is missed (>= 300 jobs/s, p99 < 250 ms
per hop). ``--quick`` is a 10-job smoke run.

    .venv/bin/python bench/throughput.py [--jobs 300] [--runners 1] [--variants 10] [--rate 0] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import secrets
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from rich.console import Console
from rich.table import Table

from worldmill.cli.stack_commands import RunnerPlan, generate_backends, runner_commands
from worldmill.contracts.base import Message
from worldmill.contracts.generation import (
    GenerationRequested,
    GpuJob,
    JobCompleted,
    JobFailed,
    JobProgress,
    RunUpdated,
    VideoReady,
)
from worldmill.contracts.keys import ALL_BUCKETS, ARTIFACTS_BUCKET
from worldmill.contracts.prompts import PromptCreated
from worldmill.contracts.qa import QaFailed, QaPassed
from worldmill.contracts.subjects import ALL_STREAMS, EVENTS, GPU_JOBS
from worldmill.gpu_runner.backends import BackendConfig, SyntheticBackend
from worldmill.gpu_runner.jobwork import JobInputs, finish_video, generate_job
from worldmill.qa.measure import analyze
from worldmill.runtime.bus import Bus
from worldmill.runtime.decode import Undeliverable, parse
from worldmill.runtime.logs import configure_logging
from worldmill.runtime.stack import LocalStack, ServiceCommand, python_module_argv, service_port, start_stack
from worldmill.runtime.store import ObjectStore

TARGET_JOBS_PER_S = 300.0
TARGET_HOP_P99_MS = 250.0
#: The CPU services of the path, each one process (the runners are added by ``runner_commands``).
SERVICES = ("prompt", "generate", "qa", "catalog")
#: Steady state: the catalog rows between these fractions of the jobs (ramp-up and tail left out).
STEADY_FROM, STEADY_TO = 0.10, 0.90


@dataclass(frozen=True)
class Hop:
    """One step of a job's way: from the time ``start`` was on the bus to the time ``end`` was."""

    key: str
    label: str
    start: str
    end: str
    service: str
    work: str


HOPS = (
    Hop(
        "submit",
        "submit → prompt.created",
        "submit",
        "created",
        "prompt",
        "HTTP POST /manifests: expand, store specs + outbox (one transaction), relay",
    ),
    Hop(
        "plan",
        "prompt.created → job queued",
        "created",
        "queued",
        "generate",
        "spec copy, plan, run v1 + GpuJob in the outbox, relay",
    ),
    Hop(
        "queue",
        "job queued → job started",
        "queued",
        "started",
        "gpu-runner",
        "WM_JOBS work queue + runner window (first job.progress)",
    ),
    Hop(
        "run",
        "job started → job.completed",
        "started",
        "completed",
        "gpu-runner",
        "no-op engine: render, H.264 encode, 2 S3 uploads, publish",
    ),
    Hop(
        "ready",
        "job.completed → video.ready",
        "completed",
        "ready",
        "generate",
        "run ready, video.ready through the outbox",
    ),
    Hop(
        "qa",
        "video.ready → QA verdict",
        "ready",
        "verdict",
        "qa",
        "download, one decode pass, checks, index, screenshots, verdict via outbox",
    ),
    Hop(
        "catalog",
        "QA verdict → catalog row",
        "verdict",
        "catalog",
        "catalog",
        "consume wm.evt.>, apply to the SQL read model (row polled)",
    ),
)


# --------------------------------------------------------------------------------------------- manifests


def manifest_text(name: str, jobs: int, *, variants: int, seconds: float, fps: int, resolution: str) -> str:
    """A manifest of exactly ``jobs`` specs: scenarios of ``variants`` variants each (the last one fewer)."""
    scenarios = []
    for index in range(math.ceil(jobs / variants)):
        count = min(variants, jobs - index * variants)
        scenario: dict[str, Any] = {
            "id": f"S{index:03d}",
            "prompt": f"Fixed camera above a loading dock, scene {index}: a parcel slides along a conveyor.",
        }
        if count != variants:
            scenario["variants"] = count
        scenarios.append(scenario)
    doc = {
        "format": 1,
        "name": name,
        "description": "bench/throughput.py: smallest specs of the synthetic no-op engine",
        "defaults": {
            "model": "synthetic",
            "fps": fps,
            "resolution": resolution,
            "steps": 1,
            "auto_generate": True,
        },
        "durations": [seconds],
        "variants": variants,
        "series": [{"id": "T", "name": "throughput", "scenarios": scenarios}],
    }
    return yaml.safe_dump(doc, sort_keys=False)


# --------------------------------------------------------------------------------------------- the stack


def stack_services(runners: int, catalog_db: Path) -> list[ServiceCommand]:
    """The path's services as ``worldmill up`` would start them, with the runners on the no-op engine."""
    plan = RunnerPlan(runners=runners)
    env_for = {
        "generate": (("WM_GENERATE_BACKENDS", generate_backends(plan, environ={})),),
        # Its default place under the data folder, said explicitly: the bench polls this file.
        "catalog": (("WM_CATALOG_DATABASE_URL", f"sqlite:///{catalog_db}"),),
    }
    commands = [
        ServiceCommand(
            name=name,
            argv=python_module_argv("worldmill.cli", "serve", name),
            port=service_port(),
            env=env_for.get(name, ()),
        )
        for name in SERVICES
    ]
    no_op = (
        ("WM_GPU_RUNNER_SYNTHETIC_LOAD_S", "0"),
        ("WM_GPU_RUNNER_SYNTHETIC_S_PER_FRAME", "0"),
    )
    for runner in runner_commands(plan, environ={"WM_GPU_RUNNER_BACKEND": "synthetic"}, hostname="bench"):
        commands.append(dataclasses.replace(runner, env=(*runner.env, *no_op)))
    return commands


def wait_ready(stack: LocalStack, timeout_s: float = 120.0) -> None:
    """Every service answers ``/readyz`` (NATS connected, S3 reachable)."""
    deadline = time.monotonic() + timeout_s
    for name, url in stack.state.services.items():
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} is not ready after {timeout_s:.0f} s:\n{log_tail(stack, name)}")
            time.sleep(0.1)


def log_tail(stack: LocalStack, name: str, lines: int = 30) -> str:
    """The last lines of a stack process's log."""
    for proc in stack.processes:
        if proc.name == name:
            return proc.log_tail(lines)
    return ""


def dead_processes(stack: LocalStack) -> list[str]:
    """Stack processes that have exited."""
    return [p.name for p in stack.processes if p.proc.poll() is not None]


# --------------------------------------------------------------------------------------------- observers


@dataclass
class CpuSampler:
    """CPU seconds (user + system) of each process and of the whole machine, sampled in a thread."""

    pids: dict[str, int]
    interval_s: float = 0.25
    samples: list[tuple[float, dict[str, float], float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self, procs: dict[str, psutil.Process]) -> None:
        cpu: dict[str, float] = {}
        for name, proc in procs.items():
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                cpu[name] = t.user + t.system
        total = psutil.cpu_times()
        busy = total.user + total.nice + total.system + total.irq + total.softirq + total.steal
        self.samples.append((time.time(), cpu, busy, busy + total.idle + total.iowait))

    def start(self) -> None:
        procs = {name: psutil.Process(pid) for name, pid in self.pids.items()}

        def loop() -> None:
            while not self._stop.is_set():
                self._sample(procs)
                self._stop.wait(self.interval_s)
            self._sample(procs)

        self._thread = threading.Thread(target=loop, name="cpu-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def window(self, start: float, end: float) -> dict[str, Any]:
        """Per process: CPU seconds between the samples around ``start`` and ``end``, and the peak 1 s share."""
        before = max((s for s in self.samples if s[0] <= start), key=lambda s: s[0], default=self.samples[0])
        after = min((s for s in self.samples if s[0] >= end), key=lambda s: s[0], default=self.samples[-1])
        wall = max(after[0] - before[0], 1e-9)
        inside = [s for s in self.samples if before[0] <= s[0] <= after[0]]
        result: dict[str, Any] = {"wall_s": wall, "processes": {}}
        for name in self.pids:
            if name not in before[1] or name not in after[1]:
                continue
            peak = 0.0
            for i, s in enumerate(inside):
                later = next((t for t in inside[i + 1 :] if t[0] - s[0] >= 1.0), None)
                if later is not None and name in s[1] and name in later[1]:
                    peak = max(peak, (later[1][name] - s[1][name]) / (later[0] - s[0]))
            cpu = after[1][name] - before[1][name]
            result["processes"][name] = {"cpu_s": cpu, "core_share": cpu / wall, "peak_core_share_1s": peak}
        machine_busy = after[2] - before[2]
        machine_all = max(after[3] - before[3], 1e-9)
        result["machine_busy_cores"] = machine_busy / wall
        result["machine_cores"] = machine_all / wall
        return result


@dataclass
class CatalogWatch:
    """First time each asset's row in the catalog's SQLite file carries a QA verdict (read-only polls)."""

    path: Path
    interval_s: float
    seen: dict[str, tuple[float, str, str | None]] = field(default_factory=dict)
    polls: int = 0
    poll_s: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        def loop() -> None:
            conn: sqlite3.Connection | None = None
            try:
                while not self._stop.is_set():
                    t0 = time.perf_counter()
                    with contextlib.suppress(sqlite3.OperationalError):  # not there yet, or busy: next poll
                        if conn is None:
                            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0)
                        rows = conn.execute(
                            "SELECT asset_id, qa_status, prompt_id FROM assets WHERE qa_status != 'pending'"
                        ).fetchall()
                        now = time.time()
                        for asset_id, status, prompt_id in rows:
                            if asset_id not in self.seen:
                                self.seen[asset_id] = (now, status, prompt_id)
                    self.polls += 1
                    self.poll_s += time.perf_counter() - t0
                    self._stop.wait(self.interval_s)
            finally:
                if conn is not None:
                    conn.close()

        self._thread = threading.Thread(target=loop, name="catalog-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


@dataclass(frozen=True)
class Logged:
    """One event read back from WM_EVENTS: its envelope time and its JetStream store time (epoch s)."""

    id: str
    made: float
    on_bus: float
    message: Message


async def replay_events(bus: Bus) -> tuple[list[Logged], int]:
    """Every event in WM_EVENTS from the start, with both times; and how many did not decode."""
    config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=60.0)
    sub = await bus.js.pull_subscribe(EVENTS.subjects[0], durable=None, stream=EVENTS.name, config=config)
    out: list[Logged] = []
    bad = 0
    try:
        remaining = (await sub.consumer_info()).num_pending or 0
        while remaining > 0:
            try:
                msgs = await sub.fetch(min(1024, remaining), timeout=10.0)
            except TimeoutError:
                break
            for msg in msgs:
                remaining -= 1
                try:
                    attrs, message = parse(msg.data, None, (msg.headers or {}).get("ce-type"))
                except Undeliverable:
                    bad += 1
                    continue
                out.append(Logged(attrs.id, attrs.time.timestamp(), msg.metadata.timestamp.timestamp(), message))
    finally:
        await sub.unsubscribe()
    return out, bad


# --------------------------------------------------------------------------------------------- the run


@dataclass
class Submission:
    """One manifest sent: its name, specs, and the bench's clock around the HTTP call."""

    name: str
    specs: int
    sent: float = 0.0
    answered: float = 0.0
    status: int = 0
    created: int = 0


async def submit_all(url: str, token: str, plan: list[tuple[Submission, str]], *, rate: float, batch: int) -> None:
    """POST every manifest: all at once (burst) or one every ``batch / rate`` s (open loop)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300.0) as client:

        async def one(sub: Submission, text: str, at: float) -> None:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            sub.sent = time.time()
            response = await client.post("/manifests", json={"content": text})
            sub.answered = time.time()
            sub.status = response.status_code
            if response.status_code not in (200, 201):
                raise RuntimeError(f"POST /manifests {sub.name}: HTTP {response.status_code} {response.text[:2000]}")
            sub.created = len(response.json().get("created", []))

        start = time.monotonic()
        gap = batch / rate if rate > 0 else 0.0
        await asyncio.gather(*(one(sub, text, start + i * gap) for i, (sub, text) in enumerate(plan)))


def manifests(args: argparse.Namespace, tag: str) -> list[tuple[Submission, str]]:
    """One manifest of every job (burst), or manifests of ``--batch`` jobs (open loop)."""
    if args.rate > 0:
        sizes = [min(args.batch, args.jobs - i) for i in range(0, args.jobs, args.batch)]
        names = [f"tp-{tag}-m{i:03d}" for i in range(len(sizes))]
    else:
        sizes, names = [args.jobs], [f"tp-{tag}"]
    return [
        (
            Submission(name, size),
            manifest_text(
                name,
                size,
                variants=min(args.variants, size),
                seconds=args.seconds,
                fps=args.fps,
                resolution=args.resolution,
            ),
        )
        for name, size in zip(names, sizes, strict=True)
    ]


async def wait_for_catalog(
    stack: LocalStack, watch: CatalogWatch, submit: asyncio.Task[None], count: int, timeout_s: float
) -> bool:
    """Until ``count`` rows have their verdict; False on timeout. Raises when a process died or a submit failed."""
    deadline = time.monotonic() + timeout_s
    while len(watch.seen) < count:
        if submit.done() and (exc := submit.exception()) is not None:
            raise exc
        if dead := dead_processes(stack):
            raise RuntimeError(f"stack process(es) exited: {dead}\n{log_tail(stack, dead[0])}")
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def drive(stack: LocalStack, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    """Submit, follow every job to the catalog, read the log back; the raw observations."""
    state = stack.state
    bus = state.bus("bench-throughput")
    await bus.connect()
    store = ObjectStore(state.s3_endpoint, state.s3_access_key, state.s3_secret_key)
    await bus.ensure_streams(ALL_STREAMS)
    await store.ensure_buckets(ALL_BUCKETS)

    jobs_seen: dict[str, float] = {}
    samples: list[bytes] = []

    async def on_job(msg: Msg) -> None:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            jobs_seen.setdefault(json.loads(msg.data)["data"]["run_id"], time.time())
            if len(samples) < args.calibrate:
                samples.append(msg.data)

    job_sub = await bus.nc.subscribe(GPU_JOBS.filter_subject, cb=on_job)
    plan = manifests(args, tag)
    url = state.services["prompt"]
    sampler = CpuSampler({**{p.name: p.pid for p in stack.processes}, "bench": os.getpid()})
    watch = CatalogWatch(stack.data_dir / "catalog.sqlite3", args.poll_ms / 1000)  # as stack_services set it
    sampler.start()
    watch.start()
    try:
        warmup: list[tuple[Submission, str]] = []
        if args.warmup:
            # Every process pays its one-off costs (lazy imports, first connections, JIT-free but cold caches)
            # on a few jobs first, outside the measured window; they are checked like the others.
            name = f"tp-{tag}-warmup"
            warmup = [
                (
                    Submission(name, args.warmup),
                    manifest_text(
                        name,
                        args.warmup,
                        variants=min(args.warmup, 10),
                        seconds=args.seconds,
                        fps=args.fps,
                        resolution=args.resolution,
                    ),
                )
            ]
            task = asyncio.create_task(submit_all(url, state.api_token, warmup, rate=0.0, batch=args.batch))
            if not await wait_for_catalog(stack, watch, task, args.warmup, args.timeout_s):
                raise RuntimeError(
                    f"the {args.warmup} warm-up jobs did not reach the catalog in {args.timeout_s:.0f} s"
                )
            await task
        await asyncio.sleep(1.0)  # an idle second: the baseline of every process's CPU
        submit = asyncio.create_task(submit_all(url, state.api_token, plan, rate=args.rate, batch=args.batch))
        arrived = await wait_for_catalog(stack, watch, submit, args.warmup + args.jobs, args.timeout_s)
        await submit
        done_at = time.time()
        await asyncio.sleep(1.0)  # late duplicates would show up now (there must be none)
    finally:
        watch.stop()
        sampler.stop()
        await job_sub.unsubscribe()
    events, undecodable = await replay_events(bus)
    assets = await catalog_assets(state.services["catalog"], state.api_token)
    objects = await store.list(ARTIFACTS_BUCKET)
    calibration = await calibrate(store, samples, stack.data_dir / "calibration")
    await bus.close()
    return {
        "submissions": [sub for sub, _ in plan],
        "warmup": [sub for sub, _ in warmup],
        "jobs_seen": jobs_seen,
        "catalog_seen": dict(watch.seen),
        "catalog_polls": watch.polls,
        "catalog_poll_ms_mean": 1000 * watch.poll_s / max(1, watch.polls),
        "events": events,
        "undecodable": undecodable,
        "assets": assets,
        "objects": {"count": len(objects), "bytes": sum(o.size for o in objects)},
        "calibration": calibration,
        "sampler": sampler,
        "done_at": done_at,
        "timed_out": not arrived,
    }


async def calibrate(store: ObjectStore, payloads: list[bytes], folder: Path) -> dict[str, Any]:
    """CPU ms per job of the parts that are not control plane, measured here after the run on sample jobs.

    The runner's engine (``generate_job`` on the synthetic backend, as the runner calls it) and its
    H.264 encode (``finish_video``), and QA's decode pass (``analyze`` on the delivered videos): the
    same code the services ran, in this process while the stack is idle, timed with process CPU time.
    """
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    jobs = [m for m in (parse(p, None, None)[1] for p in payloads) if isinstance(m, GpuJob)]
    if not jobs:
        return {"jobs": 0}
    backend = SyntheticBackend(BackendConfig())
    backend.setup()
    engine: list[float] = []
    encode: list[float] = []
    analysis: list[float] = []
    frames: list[int] = []
    for i, job in enumerate(jobs):
        t0 = time.process_time()
        generated = generate_job(job, backend, JobInputs(), lambda *_: None)
        t1 = time.process_time()
        finish_video(job, generated, folder / f"encoded-{i}.mp4")
        t2 = time.process_time()
        engine.append(t1 - t0)
        encode.append(t2 - t1)
        frames.append(sum(c.frames for c in job.plan.chunks))
        path = folder / f"delivered-{i}.mp4"
        await store.download(job.output_bucket, job.output_key, path)
        t3 = time.process_time()
        analyze(path)
        analysis.append(time.process_time() - t3)
    # The first job of each pays one-off imports and warm-up: report the rest when there is a rest.
    keep = slice(1, None) if len(jobs) > 1 else slice(None)
    return {
        "jobs": len(jobs),
        "rendered_frames_per_job": statistics.fmean(frames),
        "delivered_frames_per_job": statistics.fmean(j.plan.expected.frames for j in jobs),
        "engine_cpu_ms_per_job": round(1000 * statistics.fmean(engine[keep]), 2),
        "encode_cpu_ms_per_job": round(1000 * statistics.fmean(encode[keep]), 2),
        "qa_analyze_cpu_ms_per_job": round(1000 * statistics.fmean(analysis[keep]), 2),
    }


async def catalog_assets(url: str, token: str) -> list[dict[str, Any]]:
    """Every asset the catalog serves (GET /assets, all pages)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60.0) as c:
        while True:
            params: dict[str, Any] = {"limit": 500}
            if cursor:
                params["cursor"] = cursor
            page = (await c.get("/assets", params=params)).raise_for_status().json()
            items += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return items


# --------------------------------------------------------------------------------------------- analysis


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary_ms(values_s: list[float]) -> dict[str, float | int]:
    """n, p50, p99, max and mean in milliseconds."""
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 0.50), 1),
        "p99_ms": round(pct(ms, 0.99), 1),
        "max_ms": round(max(ms), 1) if ms else math.nan,
        "mean_ms": round(statistics.fmean(ms), 1) if ms else math.nan,
    }


@dataclass
class Timeline:
    """Per spec (prompt id): the time of each step and its ids, built from the log; counts for the checks."""

    submit_of: dict[str, float]
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_to_prompt: dict[str, str] = field(default_factory=dict)
    asset_to_prompt: dict[str, str] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    per_prompt: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    ids: Counter[str] = field(default_factory=Counter)
    qa: Counter[str] = field(default_factory=Counter)
    progress: Counter[str] = field(default_factory=Counter)

    def job(self, pid: str) -> dict[str, Any]:
        return self.jobs.setdefault(pid, {})

    def add(self, ev: Logged) -> None:
        self.ids[ev.id] += 1
        m = ev.message
        self.counts[m.TYPE] += 1
        if isinstance(m, PromptCreated):
            j = self.job(m.spec.prompt_id)
            j["submit"] = self.submit_of.get(m.spec.manifest or "", math.nan)
            j["manifest"] = m.spec.manifest
            j["created"], j["created_made"] = ev.on_bus, ev.made
            self.per_prompt[m.spec.prompt_id]["prompt.created"] += 1
        elif isinstance(m, RunUpdated):
            self.run_to_prompt[m.run.run_id] = m.run.prompt_id
            if m.version == 1:
                j = self.job(m.run.prompt_id)
                j["run_id"], j["queued_made"], j["queued_run_updated"] = m.run.run_id, ev.made, ev.on_bus
                self.per_prompt[m.run.prompt_id]["run"] += 1
        elif isinstance(m, JobProgress):
            self.progress[m.job_id] += 1
            pid = self.run_to_prompt.get(m.run_id)
            if pid is not None and "started" not in self.jobs.get(pid, {}):
                j = self.job(pid)
                j["started"], j["started_on_bus"], j["runner"] = ev.made, ev.on_bus, m.runner
        elif isinstance(m, JobCompleted | JobFailed):
            self._outcome(ev, m)
        elif isinstance(m, VideoReady):
            self.asset_to_prompt[m.asset_id] = m.prompt_id
            j = self.job(m.prompt_id)
            j["asset_id"], j["ready"], j["ready_made"] = m.asset_id, ev.on_bus, ev.made
            self.per_prompt[m.prompt_id]["video.ready"] += 1
        elif isinstance(m, QaPassed | QaFailed):
            pid = self.asset_to_prompt.get(m.asset_id, "")
            j = self.job(pid)
            j["verdict"], j["verdict_made"], j["qa_status"] = ev.on_bus, ev.made, m.TYPE
            self.qa[m.TYPE] += 1
            self.per_prompt[pid]["verdict"] += 1

    def _outcome(self, ev: Logged, m: JobCompleted | JobFailed) -> None:
        pid = self.run_to_prompt.get(m.run_id, "")
        if isinstance(m, JobFailed):
            self.per_prompt[pid]["job.failed"] += 1
            return
        j = self.job(pid)
        j["completed"], j["completed_made"] = ev.on_bus, ev.made
        timings = m.provenance.timings
        j["infer_s"], j["encode_s"], j["upload_s"] = timings.infer_s, timings.encode_s, timings.upload_s
        self.per_prompt[pid]["job.completed"] += 1


def job_table(raw: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per spec (prompt id): the time of each step; plus counts for the exactly-once check."""
    line = Timeline({s.name: s.sent for s in [*raw["warmup"], *raw["submissions"]]})
    for ev in raw["events"]:
        line.add(ev)
    for run_id, seen in raw["jobs_seen"].items():
        if (pid := line.run_to_prompt.get(run_id)) is not None:
            line.jobs[pid]["queued"] = seen
    for asset_id, (seen, _status, row_prompt) in raw["catalog_seen"].items():
        pid = row_prompt or line.asset_to_prompt.get(asset_id)
        if pid is not None and pid in line.jobs:
            line.jobs[pid]["catalog"] = seen
    checks = {
        "counts": dict(line.counts),
        "per_prompt": line.per_prompt,
        "duplicate_event_ids": sum(1 for n in line.ids.values() if n > 1),
        "qa": dict(line.qa),
        "progress_events_per_job_mean": statistics.fmean(line.progress.values()) if line.progress else 0.0,
    }
    return line.jobs, checks


def exactly_once(
    jobs: dict[str, dict[str, Any]], checks: dict[str, Any], raw: dict[str, Any], expected: int
) -> dict[str, Any]:
    """Every spec reached the catalog exactly once: one asset per spec, one of each event per spec."""
    per_prompt: dict[str, Counter[str]] = checks["per_prompt"]
    assets: list[dict[str, Any]] = raw["assets"]
    asset_prompts = Counter(a.get("prompt_id") for a in assets)
    steps = ("prompt.created", "run", "job.completed", "video.ready", "verdict")
    not_once = {
        pid: {s: per_prompt[pid][s] for s in steps if per_prompt[pid][s] != 1}
        for pid in jobs
        if any(per_prompt[pid][s] != 1 for s in steps)
    }
    pending = [a["asset_id"] for a in assets if a.get("qa_status") == "pending"]
    result = {
        "specs_expected": expected,
        "specs_created": sum(1 for pid in jobs if "created" in jobs[pid]),
        "catalog_assets": len(assets),
        "catalog_distinct_specs": len(asset_prompts),
        "catalog_specs_more_than_once": sorted(p for p, n in asset_prompts.items() if n > 1 and p),
        "catalog_pending": pending,
        "catalog_rows_seen_by_poll": len(raw["catalog_seen"]),
        "specs_not_exactly_once": not_once,
        "duplicate_event_ids": checks["duplicate_event_ids"],
        "generation_requested_events": checks["counts"].get(GenerationRequested.TYPE, 0),
        "job_failed_events": checks["counts"].get(JobFailed.TYPE, 0),
    }
    result["ok"] = (
        result["specs_created"] == expected
        and result["catalog_assets"] == expected
        and result["catalog_distinct_specs"] == expected
        and not result["catalog_specs_more_than_once"]
        and not pending
        and not not_once
        and result["duplicate_event_ids"] == 0
    )
    return result


def analyse(raw: dict[str, Any], args: argparse.Namespace, stack: LocalStack) -> dict[str, Any]:
    """Every figure of the run."""
    jobs, checks = job_table(raw)
    once = exactly_once(jobs, checks, raw, args.warmup + args.jobs)
    measured = {s.name for s in raw["submissions"]}
    complete = [
        j for j in jobs.values() if j.get("manifest") in measured and all(h.start in j and h.end in j for h in HOPS)
    ]
    hops: dict[str, Any] = {}
    for hop in HOPS:
        values = [j[hop.end] - j[hop.start] for j in complete]
        entry: dict[str, Any] = {"label": hop.label, "service": hop.service, "work": hop.work, **summary_ms(values)}
        made_key = f"{hop.end}_made"
        if all(made_key in j for j in complete) and complete:
            outbox = [j[hop.end] - j[made_key] for j in complete]
            entry["to_bus"] = summary_ms(outbox)
        entry["p99_target_met"] = bool(values) and entry["p99_ms"] < TARGET_HOP_P99_MS
        hops[hop.key] = entry
    end_to_end = summary_ms([j["catalog"] - j["submit"] for j in complete])
    # Cross-check of the one boundary seen by the bench's own subscription: the GpuJob is relayed right
    # after run.updated v1 (same outbox transaction), whose time is the server's.
    job_after_run = summary_ms([j["queued"] - j["queued_run_updated"] for j in complete])
    first_submit = min(s.sent for s in raw["submissions"])
    rows = sorted(j["catalog"] for j in complete)
    total_s = (rows[-1] - first_submit) if rows else math.nan
    n = len(rows)
    lo, hi = max(0, math.floor(n * STEADY_FROM)), min(n - 1, math.ceil(n * STEADY_TO) - 1)
    steady = (hi - lo) / (rows[hi] - rows[lo]) if n >= 5 and rows[hi] > rows[lo] else math.nan
    throughput: dict[str, Any] = {
        "jobs": n,
        "first_submit_to_last_row_s": round(total_s, 3),
        "jobs_per_s": round(n / total_s, 2) if total_s > 0 else math.nan,
        "steady_jobs_per_s": round(steady, 2),
        "steady_window": f"catalog rows {lo + 1}..{hi + 1} of {n}",
        "first_row_after_s": round(rows[0] - first_submit, 3) if rows else math.nan,
        "submit_http_s": [round(s.answered - s.sent, 3) for s in raw["submissions"]][:50],
    }
    throughput["target_met"] = bool(n) and throughput["jobs_per_s"] >= TARGET_JOBS_PER_S
    cpu = cpu_figures(raw["sampler"], first_submit, rows[-1] if rows else raw["done_at"], n, stack)
    runner_stages = {
        k: summary_ms([j[k] for j in complete if j.get(k) is not None]) for k in ("infer_s", "encode_s", "upload_s")
    }
    runners = Counter(j.get("runner") for j in complete)
    report = {
        "hops": hops,
        "end_to_end": end_to_end,
        "job_seen_after_run_queued": job_after_run,
        "throughput": throughput,
        "cpu": cpu,
        "runner_stages": runner_stages,
        "jobs_per_runner": dict(runners),
        "exactly_once": once,
        "qa_verdicts": checks["qa"],
        "events": checks["counts"],
        # The log and the bucket hold the warm-up jobs too: per job over every job sent.
        "events_per_job": round(sum(checks["counts"].values()) / max(1, args.warmup + args.jobs), 2),
        "progress_events_per_job": round(checks["progress_events_per_job_mean"], 2),
        "undecodable_events": raw["undecodable"],
        "s3_objects": raw["objects"],
        "s3_objects_per_job": round(raw["objects"]["count"] / max(1, args.warmup + args.jobs), 2),
        "catalog_poll": {
            "interval_ms": args.poll_ms,
            "polls": raw["catalog_polls"],
            "mean_query_ms": round(raw["catalog_poll_ms_mean"], 2),
        },
        "timed_out": raw["timed_out"],
        "offered_jobs_per_s": args.rate,
    }
    report["calibration"] = raw["calibration"]
    report["breakdown"] = breakdown(report)
    report["bottleneck"] = bottleneck(report)
    report["targets_met"] = bool(
        throughput["target_met"] and all(h["p99_target_met"] for h in hops.values()) and once["ok"]
    )
    return report


def cpu_figures(sampler: CpuSampler, start: float, end: float, jobs: int, stack: LocalStack) -> dict[str, Any]:
    """CPU per process over [first submit, last catalog row]; several runners also summed as ``gpu-runner (all)``."""
    win = sampler.window(start, end)
    wall = win["wall_s"]
    procs: dict[str, Any] = {}

    def entry(cpu_s: float, peak: float) -> dict[str, Any]:
        return {
            "cpu_s": round(cpu_s, 3),
            "core_share": round(cpu_s / wall, 3),
            "peak_core_share_1s": round(peak, 3),
            "cpu_ms_per_job": round(1000 * cpu_s / max(1, jobs), 2),
            "alone_jobs_per_s": round(jobs / cpu_s, 1) if cpu_s > 0 else math.inf,
        }

    for name, f in win["processes"].items():
        procs[name] = entry(f["cpu_s"], f["peak_core_share_1s"])
    runners = [p.name for p in stack.processes if p.name.startswith("gpu-runner") and p.name in procs]
    if len(runners) > 1:
        procs["gpu-runner (all)"] = entry(
            sum(win["processes"][r]["cpu_s"] for r in runners),
            max(win["processes"][r]["peak_core_share_1s"] for r in runners),
        )
    # The pipeline: every process of the stack (servers included), each runner once; not the bench itself.
    pipeline = [n for n in win["processes"] if n != "bench"]
    pipeline_cpu = sum(win["processes"][n]["cpu_s"] for n in pipeline)
    for p in procs.values():
        p["share_of_pipeline"] = round(p["cpu_s"] / pipeline_cpu, 3) if pipeline_cpu > 0 else math.nan
    ours = pipeline_cpu + win["processes"].get("bench", {}).get("cpu_s", 0.0)
    cores = os.cpu_count() or 1
    per_job_ms = 1000 * pipeline_cpu / max(1, jobs)
    others = max(0.0, win["machine_busy_cores"] - ours / wall)
    available = max(0.05, cores - others - procs.get("bench", {}).get("core_share", 0.0))
    return {
        "window_s": round(wall, 3),
        "processes": procs,
        "pipeline_cpu_s": round(pipeline_cpu, 3),
        "pipeline_cpu_ms_per_job": round(per_job_ms, 2),
        "machine_cores": cores,
        "machine_busy_cores": round(win["machine_busy_cores"], 3),
        "other_processes_cores": round(others, 3),
        "cores_left_for_the_pipeline": round(available, 3),
        "machine_bound_jobs_per_s": round(cores * 1000 / per_job_ms, 1) if per_job_ms > 0 else math.inf,
        "available_bound_jobs_per_s": round(available * 1000 / per_job_ms, 1) if per_job_ms > 0 else math.inf,
        "cpu_ms_per_job_for_target": round(cores * 1000 / TARGET_JOBS_PER_S, 2),
    }


def breakdown(report: dict[str, Any]) -> dict[str, Any]:
    """The runner's and QA's CPU per job split into the measured engine/encode/decode and the rest."""
    cal = report["calibration"]
    procs = report["cpu"]["processes"]
    runner = procs.get("gpu-runner (all)", procs.get("gpu-runner", {})).get("cpu_ms_per_job", math.nan)
    qa = procs.get("qa", {}).get("cpu_ms_per_job", math.nan)
    if not cal.get("jobs"):
        return {}
    engine, encode, decode = (
        cal["engine_cpu_ms_per_job"],
        cal["encode_cpu_ms_per_job"],
        cal["qa_analyze_cpu_ms_per_job"],
    )
    per_job = report["cpu"]["pipeline_cpu_ms_per_job"]
    return {
        "runner_cpu_ms_per_job": runner,
        "runner_engine_cpu_ms_per_job": engine,
        "runner_encode_cpu_ms_per_job": encode,
        "runner_rest_cpu_ms_per_job": round(runner - engine - encode, 2),
        "qa_cpu_ms_per_job": qa,
        "qa_decode_pass_cpu_ms_per_job": decode,
        "qa_rest_cpu_ms_per_job": round(qa - decode, 2),
        "qa_share_of_pipeline": round(qa / per_job, 3) if per_job else math.nan,
        "qa_decode_share_of_pipeline": round(decode / per_job, 3) if per_job else math.nan,
        "engine_share_of_pipeline": round(engine / per_job, 3) if per_job else math.nan,
        "control_plane_cpu_ms_per_job": round(per_job - engine - encode - decode, 2),
    }


def bottleneck(report: dict[str, Any]) -> dict[str, Any]:
    """Name the limit from the evidence: machine CPU, a process at a full core, or the slowest hop."""
    cpu = report["cpu"]
    procs = cpu["processes"]
    grouped = "gpu-runner (all)" in procs
    candidates = {
        k: v
        for k, v in procs.items()
        if k != "bench" and not (grouped and k.startswith("gpu-runner") and k != "gpu-runner (all)")
    }
    costly = max(candidates, key=lambda k: candidates[k]["cpu_ms_per_job"])
    full = sorted(
        k for k, v in procs.items() if v["peak_core_share_1s"] >= 0.9 and k not in ("bench", "gpu-runner (all)")
    )
    hops = report["hops"]
    slow = max(hops, key=lambda k: -1.0 if math.isnan(hops[k]["p50_ms"]) else hops[k]["p50_ms"])
    measured = report["throughput"]["steady_jobs_per_s"]
    if math.isnan(measured):
        measured = report["throughput"]["jobs_per_s"]
    saturated = cpu["machine_busy_cores"] >= 0.9 * cpu["machine_cores"]
    if saturated:
        limit = "machine CPU"
        why = (
            f"the machine's CPU: {cpu['machine_busy_cores']:.2f} of {cpu['machine_cores']} cores busy "
            f"({cpu['other_processes_cores']:.2f} by other processes), and the pipeline costs "
            f"{cpu['pipeline_cpu_ms_per_job']:.1f} CPU ms per job, so the {cpu['cores_left_for_the_pipeline']:.2f} "
            f"cores it had bound it at {cpu['available_bound_jobs_per_s']:.1f} jobs/s (measured {measured:.1f})"
        )
    elif report["offered_jobs_per_s"] > 0 and measured >= 0.9 * report["offered_jobs_per_s"]:
        limit = "offered rate"
        why = (
            f"none reached: the pipeline kept up with the offered {report['offered_jobs_per_s']:g} jobs/s "
            f"({cpu['machine_busy_cores']:.2f} of {cpu['machine_cores']} cores busy, "
            f"{cpu['other_processes_cores']:.2f} by other processes)"
        )
    elif full:
        limit = f"process {full[0]}"
        why = f"{', '.join(full)} at a full core (peak 1 s share >= 90%) while the machine had CPU to spare"
    else:
        limit = "latency"
        why = "no process and not the machine at a full core: the hops' own latency sets the pace"
    # Runner processes scale with --runners; each other service is one Python process (one GIL: about one
    # core at most), so its CPU per job caps the pipeline wherever it runs, however many cores or runners.
    single = {k: procs[k] for k in SERVICES if k in procs}
    ceiling = min(single, key=lambda k: single[k]["alone_jobs_per_s"]) if single else ""
    share = candidates[costly]["share_of_pipeline"]
    text = (
        f"{why}; the largest consumer is {costly} ({candidates[costly]['cpu_ms_per_job']:.1f} ms per job, "
        f"{share:.0%} of the pipeline's CPU), and the slowest hop, where the jobs wait, is {hops[slow]['label']} "
        f"(p50 {hops[slow]['p50_ms']:,.0f} ms, {hops[slow]['service']}). 300 jobs/s on "
        f"{cpu['machine_cores']} cores needs <= {cpu['cpu_ms_per_job_for_target']:.1f} CPU ms per job in all"
    )
    if ceiling:
        text += (
            f". With cores to spare the next limit is {ceiling}: one process at "
            f"{single[ceiling]['cpu_ms_per_job']:.1f} CPU ms per job, so at most about "
            f"{single[ceiling]['alone_jobs_per_s']:.0f} jobs/s on one core (more runners do not lift it)"
        )
    return {
        "limit": limit,
        "process_most_cpu_per_job": costly,
        "processes_at_a_full_core_1s": full,
        "single_process_ceiling": ceiling,
        "single_process_ceiling_jobs_per_s": single[ceiling]["alone_jobs_per_s"] if ceiling else math.nan,
        "slowest_hop": slow,
        "machine_saturated": saturated,
        "summary": text,
    }


# --------------------------------------------------------------------------------------------- output


def _ms(value: float) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.0f}"


def print_report(report: dict[str, Any], console: Console) -> None:
    """The hop table, the CPU table and the verdicts."""
    cfg = report["config"]
    mode = f"open loop {cfg['rate']:g} jobs/s in manifests of {cfg['batch']}" if cfg["rate"] > 0 else "one manifest"
    title = (
        f"worldmill control-plane throughput - {cfg['jobs']} jobs ({mode}), {cfg['runners']} runner process(es), "
        f"no-op engine {cfg['resolution']} {cfg['fps']} fps x {cfg['seconds']:g} s, {cfg['cpus']} CPUs"
    )
    table = Table(title=title, title_justify="left")
    for col in ("hop", "service", "n", "p50 ms", "p99 ms", "max ms", "to bus p50/p99", "p99 < 250", "work"):
        table.add_column(col, justify="left" if col in ("hop", "service", "work") else "right")
    for hop in report["hops"].values():
        to_bus = hop.get("to_bus")
        met = "[green]yes[/green]" if hop["p99_target_met"] else "[red]no[/red]"
        table.add_row(
            hop["label"],
            hop["service"],
            str(hop["n"]),
            _ms(hop["p50_ms"]),
            _ms(hop["p99_ms"]),
            _ms(hop["max_ms"]),
            f"{_ms(to_bus['p50_ms'])}/{_ms(to_bus['p99_ms'])}" if to_bus else "-",
            met,
            hop["work"],
        )
    e2e = report["end_to_end"]
    table.add_row(
        "[bold]submit → catalog row[/bold]",
        "all",
        str(e2e["n"]),
        _ms(e2e["p50_ms"]),
        _ms(e2e["p99_ms"]),
        _ms(e2e["max_ms"]),
        "",
        "",
        "end to end",
    )
    console.print(table)
    console.print(
        "Times are bus times (JetStream store time) of each step, except: job queued = the wm.job.gpu message seen "
        "by a NATS subscription, job started = the runner's first job.progress envelope time, catalog row = the "
        f"first read-only poll (every {cfg['poll_ms']} ms) of the catalog's SQLite file showing the verdict. "
        "'to bus' = the effect's envelope time -> its bus time (outbox wait + relay). generation.requested is not on "
        f"this path (auto_generate plans from prompt.created): {report['exactly_once']['generation_requested_events']} seen."
    )

    cpu = report["cpu"]
    ctable = Table(
        title=f"CPU per process over {cpu['window_s']:.1f} s (first submit -> last catalog row)", title_justify="left"
    )
    for col in (
        "process",
        "CPU s",
        "share of a core",
        "peak 1 s",
        "CPU ms / job",
        "share of pipeline",
        "alone: jobs/s",
    ):
        ctable.add_column(col, justify="left" if col == "process" else "right")
    for name, p in sorted(cpu["processes"].items(), key=lambda kv: -kv[1]["cpu_s"]):
        peak = f"{p['peak_core_share_1s']:.0%}"
        if p["peak_core_share_1s"] >= 0.9:
            peak = f"[red]{peak}[/red]"
        ctable.add_row(
            name,
            f"{p['cpu_s']:.2f}",
            f"{p['core_share']:.0%}",
            peak,
            f"{p['cpu_ms_per_job']:.1f}",
            "-" if name == "bench" else f"{p['share_of_pipeline']:.0%}",
            f"{p['alone_jobs_per_s']:.0f}",
        )
    ctable.add_row(
        "[bold]pipeline[/bold]",
        f"{cpu['pipeline_cpu_s']:.2f}",
        f"{cpu['pipeline_cpu_s'] / cpu['window_s']:.0%}",
        "",
        f"{cpu['pipeline_cpu_ms_per_job']:.1f}",
        "100%",
        f"{cpu['machine_bound_jobs_per_s']:.0f} on {cpu['machine_cores']} cores",
    )
    console.print(ctable)
    t = report["throughput"]
    met = "[green]met[/green]" if t["target_met"] else "[red]NOT met[/red]"
    console.print(
        f"throughput: {t['jobs']} jobs in {t['first_submit_to_last_row_s']:.2f} s = {t['jobs_per_s']:.1f} jobs/s "
        f"end to end, {t['steady_jobs_per_s']:.1f} jobs/s steady ({t['steady_window']}); target >= "
        f"{TARGET_JOBS_PER_S:.0f}: {met}. First catalog row {t['first_row_after_s']:.2f} s after the submit. "
        f"Machine busy {cpu['machine_busy_cores']:.2f} of {cpu['machine_cores']} cores, "
        f"{cpu['other_processes_cores']:.2f} of them by processes outside this bench."
    )
    b = report.get("breakdown") or {}
    if b:
        cal = report["calibration"]
        console.print(
            f"per job: runner {b['runner_cpu_ms_per_job']:.1f} CPU ms = engine {b['runner_engine_cpu_ms_per_job']:.1f} "
            f"(the synthetic stand-in renders {cal['rendered_frames_per_job']:.0f} frames, a whole card chunk, for "
            f"{cal['delivered_frames_per_job']:.0f} delivered) + H.264 encode {b['runner_encode_cpu_ms_per_job']:.1f} "
            f"+ the rest {b['runner_rest_cpu_ms_per_job']:.1f} (queue, events, S3, provenance); QA "
            f"{b['qa_cpu_ms_per_job']:.1f} = decode pass {b['qa_decode_pass_cpu_ms_per_job']:.1f} + the rest "
            f"{b['qa_rest_cpu_ms_per_job']:.1f} (QA is {b['qa_share_of_pipeline']:.0%} of the pipeline's CPU, its "
            f"decode {b['qa_decode_share_of_pipeline']:.0%}); without engine, encode and decode the control plane costs "
            f"{b['control_plane_cpu_ms_per_job']:.1f} CPU ms per job (calibrated on {cal['jobs']} jobs re-run in the "
            "bench after the run)."
        )
    st = report["runner_stages"]
    console.print(
        f"runner wall p50 (provenance): infer {_ms(st['infer_s']['p50_ms'])} ms, encode {_ms(st['encode_s']['p50_ms'])} "
        f"ms, upload {_ms(st['upload_s']['p50_ms'])} ms; {report['events_per_job']:.1f} events per job "
        f"({report['progress_events_per_job']:.1f} job.progress), {report['s3_objects_per_job']:.1f} S3 objects per job."
    )
    console.print(f"[bold]bottleneck[/bold] ({report['bottleneck']['limit']}): {report['bottleneck']['summary']}.")
    once = report["exactly_once"]
    ok = "[green]yes[/green]" if once["ok"] else "[red]NO[/red]"
    console.print(
        f"every job reached the catalog exactly once: {ok} ({once['catalog_assets']} assets for "
        f"{once['specs_expected']} specs ({cfg['warmup_jobs']} of them warm-up, outside the figures), "
        f"{once['catalog_distinct_specs']} distinct; QA {report['qa_verdicts']})."
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the stack, drive it, analyse, stop it (also on error)."""
    tag = secrets.token_hex(3)
    tmp = Path(tempfile.mkdtemp(prefix="worldmill-bench-throughput-"))
    stack: LocalStack | None = None
    started = time.monotonic()
    try:
        stack = start_stack(tmp / "stack", stack_services(args.runners, (tmp / "stack" / "catalog.sqlite3").resolve()))
        wait_ready(stack)
        setup_s = time.monotonic() - started
        raw = asyncio.run(drive(stack, args, tag))
        report = analyse(raw, args, stack)
        report["setup_s"] = round(setup_s, 2)
        report["processes"] = {p.name: p.pid for p in stack.processes}
        return report
    finally:
        if stack is not None:
            stack.stop()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    with contextlib.redirect_stdout(sys.stderr):
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    add = parser.add_argument
    add("--jobs", type=int, default=300, help="specs in the manifest(s): one job each (default 300)")
    add("--runners", type=int, default=1, help="GPU-runner processes sharing the queue (default 1)")
    add("--variants", type=int, default=10, help="variants per scenario (1-100, default 10)")
    add("--seconds", type=float, default=2.0, help="clip duration (default 2)")
    add("--fps", type=int, default=8, help="clip frame rate (default 8, the lowest a manifest allows)")
    add("--resolution", default="64x48", help="clip size WxH, even (default 64x48)")
    add("--rate", type=float, default=0.0, help="open loop: offered jobs/s, in manifests of --batch (0 = one burst)")
    add("--batch", type=int, default=10, help="specs per manifest with --rate (default 10)")
    add("--warmup", type=int, default=6, help="jobs sent through first, outside the figures (default 6)")
    add("--calibrate", type=int, default=12, help="jobs re-run here after the run for engine/encode/decode CPU")
    add("--poll-ms", type=int, default=20, help="catalog SQLite poll interval (default 20)")
    add("--timeout-s", type=float, default=600.0, help="give up waiting for the catalog after this (default 600)")
    add("--quick", action="store_true", help="a smoke run: 10 jobs, 5 variants, 2 warm-up, 4 calibrated")
    add("--keep", action="store_true", help="keep the temporary data folder (logs, databases)")
    add("--log-level", default="WARNING", help="the bench's own log level (stderr); services log to files")
    add("--strict", action="store_true", help="exit 1 when a target is missed or a job did not arrive exactly once")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.variants, args.warmup, args.calibrate = 10, 5, 2, 4
    if args.warmup < 0 or args.calibrate < 0:
        parser.error("--warmup and --calibrate must be >= 0")
    if args.jobs < 1 or args.runners < 1 or not 1 <= args.variants <= 100 or args.batch < 1:
        parser.error("--jobs, --runners and --batch must be >= 1; --variants 1..100")
    if args.rate < 0 or args.seconds <= 0:
        parser.error("--rate must be >= 0 and --seconds > 0")
    configure_logging(args.log_level, json=True, service="bench")
    stdout = sys.stdout
    with _stdout_to_stderr():
        report = run(args)
    report["config"] = {
        "jobs": args.jobs,
        "warmup_jobs": args.warmup,
        "runners": args.runners,
        "variants": args.variants,
        "seconds": args.seconds,
        "fps": args.fps,
        "resolution": args.resolution,
        "rate": args.rate,
        "batch": args.batch,
        "poll_ms": args.poll_ms,
        "processes": "separate (python -m worldmill.cli serve <service>)",
        "cpus": os.cpu_count(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    report["targets"] = {"jobs_per_s": TARGET_JOBS_PER_S, "hop_p99_ms": TARGET_HOP_P99_MS}
    print_report(report, Console(file=stdout, width=220))
    print(json.dumps(_finite(report), separators=(",", ":"), allow_nan=False), file=stdout, flush=True)
    ok = report["exactly_once"]["ok"] and not report["timed_out"]
    return 1 if not ok or (args.strict and not report["targets_met"]) else 0


def _finite(value: Any) -> Any:
    """The report as strict JSON: NaN and infinities (no data, no cost) become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
