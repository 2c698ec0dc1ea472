"""The catalog read model on SQLite and PostgreSQL: event ingest rates and filtered-search latency.

Both databases are measured in one run, with the same synthetic events and the same queries, through
the catalog's own code (``worldmill.catalog.database.CatalogDatabase``, migrated by Alembic at open):

* SQLite: a file in a temporary folder (WAL, ``synchronous=NORMAL``, as the service opens it);
* PostgreSQL: a throwaway server started here (``initdb`` + ``pg_ctl`` as the ``postgres`` user when
  run as root, trust auth, a free loopback port, ``fsync=off`` like the tests' fixture unless
  ``--pg-fsync``), stopped by its PID and its folder removed at the end, also on error. Without the
  server binaries the reason is printed and only SQLite is measured.

Part 1 - ingest. Each synthetic asset is the event mix the live pipeline sends: ``prompt.created``,
``run.updated`` (running), two ``job.progress``, ``run.updated`` (ready), ``video.ready`` and
``qa.passed`` (about 80%) or ``qa.failed`` (7 events). Measured on fresh catalogs, the two databases
taking turns chunk by chunk (who goes first alternates), so load from other processes hits both alike:

* ``apply``      - ``--ingest-assets`` assets' events through ``db.apply``, one event per transaction
                   (what the live consumer did before it batched, thread hop included): events/s and
                   per-event p50/p99;
* ``grouped``    - another ``--group-assets`` assets' events the way the live consumer applies them now:
                   ``--group-window`` (256, its prefetch) events in hand at once, each handed to the
                   service's ``IngestBatcher.apply`` by its own task, which commits whatever is waiting
                   in one transaction: events/s and per-event p50/p99 (from the call to its commit);
* ``apply_many`` - another ``--batch-assets`` assets' events through ``db.apply_many`` in batches of
                   ``--batch-size`` (what a rebuild does): events/s, and from it the time a rebuild of
                   ``--assets`` assets × 7 events would take;
* ``duplicate``  - ``--duplicates`` events of the first set applied again through ``db.apply`` (each
                   must return False: the idempotence check alone): events/s.

Part 2 - search. The catalog is filled to ``--assets`` assets (untimed). ``apply_many`` runs at a few
hundred (PostgreSQL) to a few thousand (SQLite) events/s here, so filling 100,000 assets through it would
take minutes to half an hour per database;
the fill writes instead the rows those events give: each event goes through the projection's own
``changes_for``, the changes are merged in memory with the rules ``apply`` executes, and the rows are
inserted with plain multi-row INSERTs (both databases at once, from the same batches). First, the
loader is checked against the real thing: the same ``--verify-assets`` assets' events go into two
scratch SQLite catalogs, one through ``apply_many`` and one through the loader, and every table must
be equal, or the bench stops. The fill sends the three events that shape an asset row
(``prompt.created``, ``video.ready`` and a verdict; no verdict for about 5%: QA pending). Data: 10
series, 200 scenarios, 4 risk levels, 3 models, durations 5/10/20/30 s, 1-3 tags of 24 (Zipf-like),
``created_at`` spread over 30 days, prompts of scenario words plus 6 common words (each in about 5%
of prompts) and, in 2% of prompts, one of 40 rare words (each in about 0.05%). PostgreSQL then gets
``VACUUM ANALYZE`` (what autovacuum does after such a load); SQLite gets nothing (the service never
runs ANALYZE). Each query shape is run ``--warmup`` times untimed, then ``--runs`` times with varied
values through ``db.read("search", lambda c: search(c, query))`` (one page of 50, newest first, no
count), the databases taking turns query by query; reported: p50 and p99 in ms per shape and over all
shapes, and the rows returned. Per shape, one EXPLAIN is kept in the JSON (SQLite: EXPLAIN QUERY PLAN;
PostgreSQL: EXPLAIN ANALYZE) with the database's own time for the statement (PostgreSQL: its execution
time; SQLite: a driver-level execute + fetch without SQLAlchemy's row processing), and the plans of
shapes whose p99 is over ``--slow-ms`` are printed.

Timings are reported, never asserted. The last line of stdout is one JSON object with every figure.

    .venv/bin/python bench/catalog.py [--assets 100000] [--ingest-assets 1000 --batch-assets 1000] [--runs 50]
    .venv/bin/python bench/catalog.py --quick   # a smoke run: 3,000 assets, about 30 s
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import hashlib
import json
import os
import platform
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import Connection, Engine

from worldmill.catalog.database import CatalogDatabase, Event
from worldmill.catalog.ingest import IngestBatcher
from worldmill.catalog.projection import PROMPT_FIELDS_ON_ASSETS, Edge, FillAssets, RefreshRating, Upsert, changes_for
from worldmill.catalog.queries import counts, search
from worldmill.catalog.search import AssetQuery
from worldmill.catalog.tables import ALL_TABLES, ASSETS, EDGES, EVENTS, PROMPTS
from worldmill.contracts.base import Message, ObjectRef, Resolution
from worldmill.contracts.cards import GenerationMode
from worldmill.contracts.envelope import EnvelopeAttributes, wrap
from worldmill.contracts.generation import (
    AttemptRecord,
    ChunkPlan,
    ExpectedOutput,
    FpsConversion,
    GenerationPlan,
    JobProgress,
    Provenance,
    RunRecord,
    RunUpdated,
    Timings,
    VideoReady,
)
from worldmill.contracts.prompts import PromptCreated, PromptSpec, SamplingParams
from worldmill.contracts.qa import Finding, QaFailed, QaPassed, Severity
from worldmill.runtime.servers import PostgresServer, ServerStartError, start_postgres

SOURCE = "/worldmill/bench-catalog"
SEED = 20261122
START = datetime(2026, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=30)
DATABASES = ("sqlite", "postgresql")
LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}

# -- the synthetic world ------------------------------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


SERIES = _words(
    "urban-intersections highway-merges pedestrian-crossings parking-lots rural-roads night-driving "
    "adverse-weather construction-zones roundabouts school-zones"
)
SITUATIONS = _words(
    "left-turn right-turn u-turn lane-change cut-in hard-brake stalled-vehicle merge overtake "
    "red-light-runner yield stop-sign crosswalk debris door-opening reversing blocked-lane detour "
    "queue emergency-stop"
)
SCENARIOS = tuple(f"{s}-{w}" for s in SERIES for w in SITUATIONS)  # 200
RISKS = (("low", 0.40), ("medium", 0.35), ("high", 0.20), ("critical", 0.05))
MODELS = (("cosmos-predict2.5-2b", 0.5), ("cosmos-predict2.5-14b", 0.3), ("cosmos-transfer2.5-2b", 0.2))
DURATIONS = ((5.0, 0.35), (10.0, 0.35), (20.0, 0.2), (30.0, 0.1))
#: Tags with Zipf-like weights: the first in ~20% of prompts, the last in ~1%.
TAGS = _words(
    "rain night pedestrian cyclist truck fog glare occlusion near-miss wet-road bus dusk "
    "heavy-traffic snow motorcycle roadworks tunnel bridge jaywalking emergency-vehicle school-bus "
    "animal empty-road wrong-way"
)
TAG_WEIGHTS = tuple(1 / (k + 1) ** 0.9 for k in range(len(TAGS)))
#: Words a prompt draws 6 of (each word in ~5% of prompts).
WORDS = _words(
    "asphalt sedan hatchback pickup van taxi scooter stroller wheelchair dog cone barrier guardrail "
    "median curb sidewalk streetlight puddle shadow reflection windshield dashboard mirror "
    "headlights taillights signal billboard storefront awning tree hedge fence gate driveway garage "
    "ramp overpass underpass viaduct tollbooth kiosk bench hydrant mailbox bollard lamppost crane "
    "scaffold excavator dumpster trailer camper ambulance firetruck police courier delivery jogger "
    "skateboard umbrella backpack crowd vendor market plaza fountain statue church hospital "
    "stadium station platform tram trolley railway crossing gravel dirt shoulder ditch hill valley "
    "forest field river canal harbor pier sunset sunrise overcast drizzle mist haze breeze gust "
    "slush frost leaves smoke steam dust"
)
#: Rare words: 2% of prompts get one of these 40 (each in ~0.05% of prompts).
RARE_WORDS = _words(
    "zebra kangaroo hovercraft zeppelin unicycle llama tractor combine rickshaw segway gondola "
    "monorail airship catamaran bulldozer forklift golfcart snowplow streetsweeper hearse limousine "
    "sidecar tandem velomobile moose elk deer horse carriage parade marathon rodeo circus carnival "
    "funeral wedding protest flashmob tornado hailstorm"
)
CHECKS = _words(
    "decodes container frames fps duration resolution vfr static black flicker seams identical near_duplicate"
)
RESOLUTION = Resolution(width=1280, height=704)
SAMPLING = SamplingParams(guidance=7.0, steps=35)
QA_MIX = (("passed", 0.78), ("failed", 0.17), ("pending", 0.05))  # pending: fill only


def pick(rng: random.Random, table: Sequence[tuple[Any, float]]) -> Any:
    """One value of a (value, weight) table."""
    return rng.choices([v for v, _ in table], weights=[w for _, w in table])[0]


def ref(key: str, content_type: str = "video/mp4", size: int = 4_000_000) -> ObjectRef:
    return ObjectRef(
        bucket="wm-artifacts",
        key=key,
        size=size,
        sha256=hashlib.sha256(key.encode()).hexdigest(),
        content_type=content_type,
    )


_PLANS: dict[tuple[str, float, int], GenerationPlan] = {}
_PROVENANCE: dict[tuple[str, float, int], Provenance] = {}


def plan_template(model: str, duration: float, fps: int) -> GenerationPlan:
    """The (cached) plan of one model, duration and frame rate: chunks of up to 93 frames."""
    key = (model, duration, fps)
    if key not in _PLANS:
        frames = int(duration * fps)
        chunks, kept, index = [], 0, 0
        while kept < frames:
            keep = min(93 if index == 0 else 92, frames - kept)
            chunks.append(
                ChunkPlan(
                    index=index,
                    seed=1000 + index,
                    frames=93,
                    condition="none" if index == 0 else "previous_chunk",
                    condition_frames=0 if index == 0 else 1,
                    keep_from=0 if index == 0 else 1,
                    keep_frames=keep,
                )
            )
            kept, index = kept + keep, index + 1
        mode = GenerationMode.TRANSFER if "transfer" in model else GenerationMode.TEXT2WORLD
        _PLANS[key] = GenerationPlan(
            plan_id="plan-template",
            prompt_id="prompt-template",
            prompt_version=1,
            model=model,
            mode=mode,
            resolution=RESOLUTION,
            native_fps=fps,
            native_frames=frames,
            chunks=tuple(chunks),
            fps_conversion=FpsConversion(
                source_fps=fps, target_fps=fps, method="none", source_frames=frames, target_frames=frames
            ),
            expected=ExpectedOutput(frames=frames, fps=fps, duration_s=duration, resolution=RESOLUTION),
            sampling=SAMPLING,
            estimated_gpu_seconds=frames * 1.5,
        )
        _PROVENANCE[key] = Provenance(
            backend="cosmos",
            model=model,
            checkpoint=f"nvidia/{model}",
            checkpoint_sha256=hashlib.sha256(model.encode()).hexdigest(),
            plan=_PLANS[key],
            prompt="template",
            sampling=SAMPLING,
            seeds=(1,),
            code_version="bench",
            library_versions={"torch": "2.5.1", "diffusers": "0.32.0"},
            device="NVIDIA H100 80GB HBM3",
            runner="gpu-0",
            timings=Timings(load_s=0.0, fetch_s=0.4, infer_s=frames * 1.4, encode_s=2.1, upload_s=0.8),
            peak_memory_bytes=61_000_000_000,
            started_at=START,
            finished_at=START,
        )
    return _PLANS[key]


@dataclass
class AssetFacts:
    """Everything random about one asset, drawn once from its index (the same for both databases)."""

    i: int
    series: str
    scenario: str
    risk: str
    model: str
    duration: float
    fps: int
    tags: tuple[str, ...]
    prompt: str
    qa: str
    created: datetime
    ids: dict[str, str] = field(default_factory=dict)


def facts(i: int, total: int) -> AssetFacts:
    rng = random.Random(SEED * 1_000_003 + i)
    series, situation = rng.choice(SERIES), rng.choice(SITUATIONS)
    tags = tuple(sorted(set(rng.choices(TAGS, weights=TAG_WEIGHTS, k=rng.randint(1, 3)))))
    duration = pick(rng, DURATIONS)
    words = rng.sample(WORDS, 6)
    if rng.random() < 0.02:
        words.insert(rng.randrange(len(words)), rng.choice(RARE_WORDS))
    prompt = (
        f"A {duration:g}-second dashcam video, {series.replace('-', ' ')}: {situation.replace('-', ' ')} "
        f"({', '.join(tags)}). The camera sees {' '.join(words)}. Photorealistic, steady, natural motion."
    )
    # Roughly in index order (a live catalog fills over time), with a few hours of jitter.
    created = START + SPAN * (i / max(total, 1)) + timedelta(seconds=rng.uniform(0, 4 * 3600))
    f = AssetFacts(
        i=i,
        series=series,
        scenario=f"{series}-{situation}",
        risk=pick(rng, RISKS),
        model=pick(rng, MODELS),
        duration=duration,
        fps=16 if rng.random() < 0.25 else 24,
        tags=tags,
        prompt=prompt,
        qa=pick(rng, QA_MIX),
        created=created,
    )
    f.ids = {
        "prompt": f"p-{i:07d}",
        "run": f"run-{i:07d}",
        "job": f"job-{i:07d}-1",
        "asset": f"asset-{i:07d}",
        "request": f"req-{i // 100:05d}",
        "plan": f"plan-{i:07d}",
    }
    return f


def _spec(f: AssetFacts) -> PromptSpec:
    return PromptSpec(
        prompt_id=f.ids["prompt"],
        version=1,
        manifest=f"{f.series}-m{f.i % 3}",
        manifest_sha256=hashlib.sha256(f"{f.series}-m{f.i % 3}".encode()).hexdigest(),
        series=f.series,
        scenario=f.scenario,
        variant=f.i % 5,
        duration_s=f.duration,
        fps=f.fps,
        target_frames=int(f.duration * f.fps),
        seed=(f.i * 7919) % 2**32,
        resolution=RESOLUTION,
        model=f.model,
        mode=GenerationMode.TRANSFER if "transfer" in f.model else GenerationMode.TEXT2WORLD,
        prompt=f.prompt,
        sampling=SAMPLING,
        tags=f.tags,
        risk_level=f.risk,
        metadata={"weather": "rain" if "rain" in f.tags else "clear", "camera": "front"},
        created_at=f.created - timedelta(minutes=20),
    )


def _run(f: AssetFacts, plan: GenerationPlan, *, ready: bool) -> RunRecord:
    queued = f.created - timedelta(minutes=15)
    attempt = AttemptRecord(
        attempt=1,
        job_id=f.ids["job"],
        state="ready" if ready else "running",
        runner="gpu-0",
        queued_at=queued,
        finished_at=f.created if ready else None,
    )
    return RunRecord(
        run_id=f.ids["run"],
        request_id=f.ids["request"],
        prompt_id=f.ids["prompt"],
        prompt_version=1,
        state="ready" if ready else "running",
        plan=plan,
        max_attempts=3,
        attempts=(attempt,),
        asset_id=f.ids["asset"] if ready else None,
        video=ref(f"runs/{f.ids['run']}/video.mp4") if ready else None,
        requested_by="auto",
        created_at=queued,
        updated_at=f.created if ready else queued + timedelta(minutes=1),
    )


@functools.cache
def _findings(failing: frozenset[str]) -> tuple[Finding, ...]:
    """Thirteen checks; those in ``failing`` failed with severity error (cached: few distinct sets)."""
    return tuple(
        Finding(
            check=c,
            passed=c not in failing,
            severity=Severity.ERROR,
            measured=round(0.05 + 0.07 * k, 3) if c not in failing else 0.97,
            expected=0.9,
            message=f"{c} out of range" if c in failing else "",
        )
        for k, c in enumerate(CHECKS)
    )


def _verdict(f: AssetFacts) -> QaPassed | QaFailed:
    failing: frozenset[str] = frozenset()
    if f.qa == "failed":
        rng = random.Random(f.i)
        failing = frozenset(rng.sample(("frames", "static", "flicker", "black", "seams"), rng.randint(1, 2)))
    base = f"runs/{f.ids['run']}"
    cls = QaPassed if f.qa == "passed" else QaFailed
    return cls(
        asset_id=f.ids["asset"],
        prompt_id=f.ids["prompt"],
        video=ref(f"{base}/video.mp4"),
        findings=_findings(failing),
        screenshots=tuple(ref(f"{base}/qa/frame{k}.jpg", "image/jpeg", 90_000) for k in (1, 2, 3)),
        contact_sheet=ref(f"{base}/qa/sheet.jpg", "image/jpeg", 400_000),
        checked_at=f.created + timedelta(minutes=1),
        checker_version="bench-1",
    )


def events_of(f: AssetFacts, *, full: bool) -> list[Event]:
    """The asset's events, in pipeline order: 7 (``full``), else the 3 that shape its row (2 if QA pending)."""
    key = (f.model, f.duration, f.fps)
    plan = plan_template(*key).model_copy(update={"plan_id": f.ids["plan"], "prompt_id": f.ids["prompt"]})
    prov = _PROVENANCE[key].model_copy(
        update={
            "plan": plan,
            "prompt": f.prompt,
            "seeds": (f.i,),
            "started_at": f.created - timedelta(minutes=12),
            "finished_at": f.created,
        }
    )
    video = VideoReady(
        asset_id=f.ids["asset"],
        run_id=f.ids["run"],
        prompt_id=f.ids["prompt"],
        attempt=1,
        video=ref(f"runs/{f.ids['run']}/video.mp4"),
        plan=plan,
        provenance=prov,
        request_id=f.ids["request"],
        requested_by="auto",
    )
    timeline: list[tuple[Message, timedelta]] = [(PromptCreated(spec=_spec(f)), timedelta(minutes=-20))]
    if full:
        progress = {"job_id": f.ids["job"], "run_id": f.ids["run"], "attempt": 1, "steps": 35, "runner": "gpu-0"}
        timeline += [
            (RunUpdated(run=_run(f, plan, ready=False), version=1), timedelta(minutes=-14)),
            (JobProgress(**progress, phase="generating", step=17, fraction=0.5), timedelta(minutes=-8)),
            (JobProgress(**progress, phase="encoding", step=35, fraction=0.95), timedelta(minutes=-1)),
            (RunUpdated(run=_run(f, plan, ready=True), version=2), timedelta(seconds=-1)),
        ]
    timeline.append((video, timedelta(0)))
    if f.qa != "pending":
        timeline.append((_verdict(f), timedelta(minutes=1)))
    out: list[Event] = []
    for n, (message, offset) in enumerate(timeline):
        env = wrap(message, source=SOURCE, event_id=f"{f.ids['asset']}-{n}-{message.TYPE}", time=f.created + offset)
        out.append((env, env.data))
    return out


def ingest_facts(i: int, total: int) -> AssetFacts:
    """Ingest-phase assets always get a verdict (the 7-event mix); 80/20 passed/failed."""
    f = facts(i, total)
    if f.qa == "pending":
        f.qa = "passed" if i % 5 else "failed"
    return f


# -- measurements -------------------------------------------------------------------------------------


def pct(xs: Sequence[float], p: float) -> float:
    """The p-th percentile (linear interpolation between closest ranks, like numpy's default)."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


Step = Callable[[CatalogDatabase, list[Event]], Awaitable[tuple[list[float], int]]]


async def interleaved(dbs: dict[str, CatalogDatabase], chunks: list[list[Event]], step: Step) -> dict[str, Any]:
    """``step`` on every chunk, each database in turn (who goes first alternates), so background load
    on the machine hits both alike. Per database: seconds inside ``step``, its latencies, its count."""
    names = list(dbs)
    out = {n: {"seconds": 0.0, "lat": [], "count": 0} for n in names}
    for k, chunk in enumerate(chunks):
        for name in names if k % 2 == 0 else names[::-1]:
            s = time.perf_counter()
            lat, count = await step(dbs[name], chunk)
            out[name]["seconds"] += time.perf_counter() - s
            out[name]["lat"] += lat
            out[name]["count"] += count
    return out


async def one_by_one(db: CatalogDatabase, events: list[Event]) -> tuple[list[float], int]:
    """``db.apply`` per event (one transaction each): per-event latencies and how many were new."""
    lat, new = [], 0
    for attrs, message in events:
        s = time.perf_counter()
        new += await db.apply(attrs, message)
        lat.append(time.perf_counter() - s)
    return lat, new


async def grouped(db: CatalogDatabase, events: list[Event]) -> tuple[list[float], int]:
    """The live consumer's way: every event of the chunk handed to ``IngestBatcher.apply`` by its own task at
    once (the consumer's handlers of one fetch); per-event latencies from the call to its commit."""
    batcher = IngestBatcher(db)

    async def one(attrs: EnvelopeAttributes, message: Message) -> tuple[float, bool]:
        s = time.perf_counter()
        new = await batcher.apply(attrs, message)
        return time.perf_counter() - s, new

    done = await asyncio.gather(*(one(attrs, message) for attrs, message in events))
    return [lat for lat, _ in done], sum(new for _, new in done)


async def batched(db: CatalogDatabase, events: list[Event]) -> tuple[list[float], int]:
    """One ``db.apply_many`` of the chunk (one transaction)."""
    s = time.perf_counter()
    new = await db.apply_many(events)
    return [time.perf_counter() - s], new


def chunked(events: list[Event], size: int) -> list[list[Event]]:
    return [events[k : k + size] for k in range(0, len(events), size)]


def ingest_figures(r: dict[str, Any], events: int, *, batch: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "events": events,
        "seconds": round(r["seconds"], 3),
        "events_per_s": round(events / r["seconds"], 1),
    }
    key = "batch" if batch else "event"
    if batch:
        out["batch"] = batch
    out[f"{key}_p50_ms"] = ms(pct(r["lat"], 50))
    out[f"{key}_p99_ms"] = ms(pct(r["lat"], 99))
    return out


async def ingest_bench(
    dbs: dict[str, CatalogDatabase],
    ingest: list[Event],
    group: list[Event],
    more: list[Event],
    args: argparse.Namespace,
) -> dict[str, dict[str, Any]]:
    res: dict[str, dict[str, Any]] = {name: {} for name in dbs}
    dups = ingest[: args.duplicates]
    runs = (
        ("ingest_apply", ingest, one_by_one, 350, len(ingest), None),  # chunks of 50 assets
        ("ingest_grouped", group, grouped, args.group_window, len(group), args.group_window),
        ("ingest_apply_many", more, batched, args.batch_size, len(more), args.batch_size),
        ("duplicate_apply", dups, one_by_one, 100, 0, None),
    )
    for key, events, step, size, expect, batch in runs:
        console.log(f"{key}: {len(events):,} events, the databases taking turns…")
        r = await interleaved(dbs, chunked(events, size), step)
        for name in dbs:
            if r[name]["count"] != expect:
                raise RuntimeError(f"{name} {key}: {r[name]['count']} of {len(events)} events new, expected {expect}")
            res[name][key] = ingest_figures(r[name], len(events), batch=batch)
    for name, db in dbs.items():
        res[name]["after_ingest"] = await db.read("counts", counts)
    return res


def bulk_rows(events: Sequence[Event]) -> dict[str, list[dict[str, Any]]]:
    """The rows ``apply_many(events)`` leaves in an empty catalog, per table, from the projection's own changes.

    ``changes_for`` gives each event's changes; they are merged in memory with the rules ``apply``
    executes (an upsert sets its values, ``insert_only`` only on insert, a ``newer`` guard keeps a row
    whose stored value is not older; edges and empty upserts are insert-or-nothing), then prompt fields
    are copied onto assets (``FillAssets``). No ratings are sent, so ``RefreshRating`` leaves the
    defaults. Assets must not be split across calls (their prompt may be in the same call only).
    """
    rows: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
    applied = []
    now = datetime.now(UTC)
    for attrs, message in events:
        applied.append(
            {"event_id": attrs.id, "type": attrs.type, "subject": attrs.subject, "time": attrs.time, "applied_at": now}
        )
        for ch in changes_for(attrs, message):
            if isinstance(ch, Upsert):
                table = rows.setdefault(ch.table, {})
                key = tuple(ch.key.values())
                row = table.get(key)
                if row is None:
                    table[key] = {**ch.insert_only, **ch.values, **ch.key}
                elif ch.values and (
                    ch.newer is None or row.get(ch.newer) is None or row[ch.newer] < ch.values[ch.newer]
                ):
                    row.update(ch.values)
            elif isinstance(ch, Edge):
                rows.setdefault(EDGES.name, {}).setdefault(
                    (ch.parent_kind, ch.parent_id, ch.child_kind, ch.child_id),
                    {
                        "parent_kind": ch.parent_kind,
                        "parent_id": ch.parent_id,
                        "child_kind": ch.child_kind,
                        "child_id": ch.child_id,
                        "relation": ch.relation,
                    },
                )
            elif not isinstance(ch, FillAssets | RefreshRating):
                raise TypeError(f"bulk fill: unexpected change {ch!r}")
    prompts = rows.get(PROMPTS.name, {})
    for asset in rows.get(ASSETS.name, {}).values():
        prompt = prompts.get((asset.get("prompt_id"), asset.get("prompt_version")))
        if prompt is not None:
            asset.update({k: prompt[k] for k in PROMPT_FIELDS_ON_ASSETS})
    out = {name: list(table.values()) for name, table in rows.items()}
    out[EVENTS.name] = applied
    return out


def bulk_insert(engine: Engine, rows: dict[str, list[dict[str, Any]]]) -> int:
    """Plain multi-row INSERTs of :func:`bulk_rows` (one transaction); rows with the same columns together."""
    n = 0
    with engine.begin() as conn:
        for table in reversed(ALL_TABLES):
            groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for row in rows.get(table.name, ()):
                groups.setdefault(tuple(sorted(row)), []).append(row)
            for group in groups.values():
                conn.execute(sa.insert(table), group)
                n += len(group)
    return n


def fill_batches(start: int, total: int, size: int) -> Iterator[list[Event]]:
    """Events of assets ``start``..``total-1`` (3 per asset, 2 without a verdict), whole assets per batch."""
    batch: list[Event] = []
    for i in range(start, total):
        batch += events_of(facts(i, total), full=False)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _dump(engine: Engine) -> dict[str, list[str]]:
    """Every row of every table, but when each event was applied (the two catalogs applied them at other times)."""

    def columns(t: sa.Table) -> list[sa.Column[Any]]:
        return [c for c in t.columns if not (t is EVENTS and c.name == "applied_at")]

    with engine.connect() as conn:
        return {t.name: sorted(repr(tuple(r)) for r in conn.execute(sa.select(*columns(t)))) for t in ALL_TABLES}


async def verify_bulk(work: Path, assets: int, total: int) -> dict[str, Any]:
    """The bulk loader against the real thing: the same fill events into two scratch SQLite catalogs,
    one by ``apply_many``, one by :func:`bulk_rows` + :func:`bulk_insert`; every table must be equal."""
    events = [e for b in fill_batches(total - assets, total, 10**9) for e in b]
    real, bulk = CatalogDatabase(f"sqlite:///{work / 'real.db'}"), CatalogDatabase(f"sqlite:///{work / 'bulk.db'}")
    try:
        await real.open()
        await bulk.open()
        await real.apply_many(events)
        await bulk.run("bulk", lambda e: bulk_insert(e, bulk_rows(events)))
        a, b = await real.run("dump", _dump), await bulk.run("dump", _dump)
    finally:
        await real.close()
        await bulk.close()
    diff = sorted(t for t in a if a[t] != b[t])
    if diff:
        raise RuntimeError(f"bulk fill differs from apply_many in {diff}: the bench's loader is wrong")
    return {"assets": assets, "events": len(events), "rows": sum(len(v) for v in a.values()), "equal": True}


async def fill(dbs: dict[str, CatalogDatabase], start: int, total: int, size: int) -> dict[str, Any]:
    """Assets ``start``..``total-1`` by :func:`bulk_insert`, the same rows into every database at once."""
    busy = dict.fromkeys(dbs, 0.0)
    events_n = rows_n = 0

    async def timed(name: str, rows: dict[str, list[dict[str, Any]]]) -> int:
        s = time.perf_counter()
        n = await dbs[name].run("bulk fill", lambda e: bulk_insert(e, rows))
        busy[name] += time.perf_counter() - s
        return n

    t0 = time.perf_counter()
    pending: asyncio.Future[list[int]] | None = None
    for batch in fill_batches(start, total, size):  # the next batch is made while the last one is written
        rows = bulk_rows(batch)
        events_n += len(batch)
        if pending is not None:
            rows_n += (await pending)[0]
        pending = asyncio.gather(*(timed(name, rows) for name in dbs))
        await asyncio.sleep(0)  # let the writes start (in their threads) before the next batch is made
    if pending is not None:
        rows_n += (await pending)[0]
    wall = time.perf_counter() - t0
    return {
        "assets": total - start,
        "events": events_n,
        "rows": rows_n,
        "wall_s": round(wall, 1),
        "insert_s": {name: round(v, 1) for name, v in busy.items()},
    }


@dataclass
class Shape:
    name: str
    label: str
    queries: Callable[[int], AssetQuery]
    #: Pages to walk (untimed) to get the cursor the timed query continues from.
    page: int = 1


def shapes(rng: random.Random) -> list[Shape]:
    scen = rng.sample(SCENARIOS, 60)
    words = rng.sample(WORDS, 40)
    rare = rng.sample(RARE_WORDS, 25)
    ranges = ((4.0, 6.0), (9.0, 11.0), (5.0, 10.0), (15.0, 30.0), (10.0, 20.0))
    models = [m for m, _ in MODELS]
    return [
        Shape("newest", "no filter (gallery default)", lambda _k: AssetQuery()),
        Shape("series", "series", lambda k: AssetQuery(series=SERIES[k % len(SERIES)])),
        Shape(
            "series_passed",
            "series + qa_status=passed",
            lambda k: AssetQuery(series=SERIES[(k * 3) % len(SERIES)], qa_status="passed"),
        ),
        Shape("scenario", "scenario", lambda k: AssetQuery(scenario=scen[k % len(scen)])),
        Shape("tag", "tag", lambda k: AssetQuery(tags=(TAGS[k % len(TAGS)],))),
        Shape("text", "q (common word, ~5%)", lambda k: AssetQuery(q=words[k % len(words)])),
        Shape("text_rare", "q (rare word, ~0.05%)", lambda k: AssetQuery(q=rare[k % len(rare)])),
        Shape(
            "duration_model",
            "duration range + model",
            lambda k: AssetQuery(model=models[k % 3], min_duration=ranges[k % 5][0], max_duration=ranges[k % 5][1]),
        ),
        Shape("page2", "series, page 2 (cursor)", lambda k: AssetQuery(series=SERIES[(k * 7) % 10]), page=2),
        Shape("page20", "no filter, page 20 (cursor)", lambda _k: AssetQuery(), page=20),
    ]


def _explain(conn: Connection, q: AssetQuery) -> tuple[list[str], float]:
    """The plan of the statement ``search`` runs for ``q`` and the database's own time for it, in ms.

    The statement is captured as executed, then explained with its parameters. Database time:
    PostgreSQL's EXPLAIN ANALYZE execution time (in the server, rows not sent); SQLite: the median of
    5 driver-level executes + fetchall (no SQLAlchemy row processing, JSON left undecoded).
    """
    seen: list[tuple[str, Any]] = []

    def grab(_c: Any, _cur: Any, statement: str, parameters: Any, _ctx: Any, _many: bool) -> None:
        seen.append((statement, parameters))

    sa.event.listen(conn, "before_cursor_execute", grab)
    try:
        search(conn, q)
    finally:
        sa.event.remove(conn, "before_cursor_execute", grab)
    statement, params = seen[-1]
    if conn.dialect.name == "sqlite":
        plan = [str(r[3]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)]
        times = []
        for _ in range(5):
            s = time.perf_counter()
            conn.exec_driver_sql(statement, params).fetchall()
            times.append(time.perf_counter() - s)
        return plan, ms(pct(times, 50))
    plan = [str(r[0]) for r in conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement, params)]
    executed = next((line for line in plan if line.startswith("Execution Time:")), "Execution Time: nan ms")
    return plan, float(executed.split()[2])


async def search_bench(
    dbs: dict[str, CatalogDatabase], shape_list: list[Shape], runs: int, warmup: int
) -> dict[str, dict[str, Any]]:
    """Every shape on every database, the databases taking turns query by query (who goes first alternates)."""
    names = list(dbs)
    out: dict[str, dict[str, Any]] = {n: {} for n in names}
    every: dict[str, list[float]] = {n: [] for n in names}
    for shape in shape_list:
        console.log(f"search: {shape.label}…")
        queries: dict[str, list[AssetQuery]] = {n: [] for n in names}
        for name, db in dbs.items():
            for k in range(warmup + runs):
                q = shape.queries(k)
                for _ in range(shape.page - 1):  # untimed: the cursor of the page before
                    _rows, nxt, _ = await db.read("search", lambda c, q=q: search(c, q))
                    q = q.model_copy(update={"cursor": nxt})
                queries[name].append(q)
        lat: dict[str, list[float]] = {n: [] for n in names}
        rows_n: dict[str, list[int]] = {n: [] for n in names}
        for k in range(warmup + runs):
            for name in names if k % 2 == 0 else names[::-1]:
                q = queries[name][k]
                s = time.perf_counter()
                rows, _nxt, _ = await dbs[name].read("search", lambda c, q=q: search(c, q))
                dt = time.perf_counter() - s
                if k >= warmup:
                    lat[name].append(dt)
                    rows_n[name].append(len(rows))
        for name, db in dbs.items():
            every[name] += lat[name]
            plan, db_ms = await db.read("explain", lambda c, q=queries[name][warmup]: _explain(c, q))
            out[name][shape.name] = {
                "label": shape.label,
                "runs": len(lat[name]),
                "p50_ms": ms(pct(lat[name], 50)),
                "p99_ms": ms(pct(lat[name], 99)),
                "max_ms": ms(max(lat[name])),
                "rows_mean": round(sum(rows_n[name]) / len(rows_n[name]), 1),
                "empty_pages": sum(1 for n in rows_n[name] if n == 0),
                "db_ms": db_ms,
                "plan": plan,
            }
    for name in names:
        out[name]["overall"] = {
            "runs": len(every[name]),
            "p50_ms": ms(pct(every[name], 50)),
            "p99_ms": ms(pct(every[name], 99)),
        }
    return out


# -- the run ------------------------------------------------------------------------------------------


def db_size(name: str, db: CatalogDatabase, sqlite_path: Path) -> Awaitable[int]:
    if name == "sqlite":

        def files(_c: Connection) -> int:
            return sum(p.stat().st_size for p in sqlite_path.parent.glob(sqlite_path.name + "*"))

        return db.read("size", files)
    return db.read("size", lambda c: int(c.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one()))


def vacuum_analyze(url: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    finally:
        engine.dispose()


async def bench(
    args: argparse.Namespace, urls: dict[str, str], sqlite_path: Path, shared: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Per-database figures; figures about the run itself go into ``shared``."""
    work = sqlite_path.parent
    dbs = {name: CatalogDatabase(url) for name, url in urls.items()}
    res: dict[str, dict[str, Any]] = {}
    n_ing, n_group, n_batch = args.ingest_assets, args.group_assets, args.batch_assets
    first = min(args.assets, n_ing + n_group + n_batch)  # assets made by part 1; the fill adds the rest
    try:
        for db in dbs.values():
            await db.open()

        # Part 1 events, built once (not timed): assets 0..n_ing-1 one by one, the next n_group grouped as the
        # live consumer does, then the next n_batch batched.
        def assets(start: int, n: int) -> list[Event]:
            return [e for i in range(start, start + n) for e in events_of(ingest_facts(i, args.assets), full=True)]

        ingest, group, more = assets(0, n_ing), assets(n_ing, n_group), assets(n_ing + n_group, n_batch)
        res = await ingest_bench(dbs, ingest, group, more, args)
        del ingest, group, more  # the bench's own garbage should not cost the searches GC time
        gc.collect()
        console.log(f"bulk loader check: {args.verify_assets} assets by apply_many and by bulk insert…")
        shared["bulk_check"] = await verify_bulk(work, args.verify_assets, args.assets)
        console.log(f"fill to {args.assets:,} assets ({args.assets - first:,} more, bulk, both databases together)…")
        shared["fill"] = await fill(dbs, first, args.assets, args.fill_batch)
        for name, db in dbs.items():
            res[name]["fill_insert_s"] = shared["fill"]["insert_s"][name]
            res[name]["counts"] = await db.read("counts", counts)
            if res[name]["counts"]["assets"] != args.assets:
                raise RuntimeError(f"{name}: {res[name]['counts']['assets']} assets, expected {args.assets}")
            rate = res[name]["ingest_apply_many"]["events_per_s"]
            res[name]["rebuild_estimate_s"] = round(args.assets * 7 / rate, 1)
        if "postgresql" in dbs:
            s = time.perf_counter()
            await asyncio.to_thread(vacuum_analyze, urls["postgresql"])
            res["postgresql"]["vacuum_analyze_s"] = round(time.perf_counter() - s, 1)
        for name, db in dbs.items():
            res[name]["size_bytes"] = await db_size(name, db, sqlite_path)
        found = await search_bench(dbs, shapes(random.Random(SEED)), args.runs, args.warmup)
        for name in dbs:
            res[name]["search"] = found[name]
    finally:
        for db in dbs.values():
            await db.close()
    return res


def _rate(x: dict[str, Any]) -> str:
    return f"{x['events_per_s']:,.0f} ev/s"


def print_table(report: dict[str, Any], slow_ms: float) -> None:
    names = [n for n in DATABASES if report.get(n)]
    title = (
        f"worldmill catalog - {report['assets']:,} assets, SQLite {report['sqlite_version']} vs "
        f"{report.get('postgresql_version') or 'PostgreSQL (not run)'}"
    )
    table = Table(title=title, title_justify="left", caption_justify="left")
    table.add_column("measure")
    for n in names:
        table.add_column(LABELS[n], justify="right")
    if len(names) == 2:
        table.add_column("PG ÷ SQLite", justify="right")

    def row(label: str, cells: list[str], ratio: float | None = None, *, end: bool = False) -> None:
        extra = [f"{ratio:.2f}" if ratio is not None else ""] if len(names) == 2 else []
        table.add_row(label, *cells, *extra, end_section=end)

    def ratio(get: Callable[[dict[str, Any]], float]) -> float | None:
        if len(names) != 2 or not get(report["sqlite"]):
            return None
        return get(report["postgresql"]) / get(report["sqlite"])

    r = {n: report[n] for n in names}
    ing = r[names[0]]["ingest_apply"]
    row(
        f"apply, 1 event/txn ({ing['events']:,} ev)",
        [_rate(r[n]["ingest_apply"]) for n in names],
        ratio(lambda x: x["ingest_apply"]["events_per_s"]),
    )
    row(
        "  per event p50 / p99",
        [f"{r[n]['ingest_apply']['event_p50_ms']:.2f} / {r[n]['ingest_apply']['event_p99_ms']:.2f} ms" for n in names],
    )
    g = r[names[0]]["ingest_grouped"]
    row(
        f"grouped, ≤{g['batch']} waiting ev/txn ({g['events']:,} ev)",
        [_rate(r[n]["ingest_grouped"]) for n in names],
        ratio(lambda x: x["ingest_grouped"]["events_per_s"]),
    )
    row(
        "  per event p50 / p99",
        [
            f"{r[n]['ingest_grouped']['batch_p50_ms']:.2f} / {r[n]['ingest_grouped']['batch_p99_ms']:.2f} ms"
            for n in names
        ],
    )
    b = r[names[0]]["ingest_apply_many"]
    row(
        f"apply_many ×{b['batch']} ({b['events']:,} ev)",
        [_rate(r[n]["ingest_apply_many"]) for n in names],
        ratio(lambda x: x["ingest_apply_many"]["events_per_s"]),
    )
    d = r[names[0]]["duplicate_apply"]
    row(
        f"duplicate apply ({d['events']:,} ev, no-ops)",
        [_rate(r[n]["duplicate_apply"]) for n in names],
        ratio(lambda x: x["duplicate_apply"]["events_per_s"]),
    )
    row(
        f"→ rebuild of {report['assets']:,} assets × 7 ev (estimate)",
        [f"{r[n]['rebuild_estimate_s'] / 60:,.1f} min" for n in names],
        ratio(lambda x: x["rebuild_estimate_s"]),
    )
    row(
        f"bulk fill insert ({report['fill']['assets']:,} assets, untimed load)",
        [f"{r[n]['fill_insert_s']:,.1f} s" for n in names],
    )
    row(
        "database size",
        [f"{r[n]['size_bytes'] / 1e6:,.0f} MB" for n in names],
        ratio(lambda x: x["size_bytes"]),
        end=True,
    )
    shape_names = [k for k in r[names[0]]["search"] if k != "overall"]
    for k in shape_names:
        cells = []
        for n in names:
            s = r[n]["search"][k]
            p99 = f"{s['p99_ms']:.1f}"
            p99 = f"[red]{p99}[/red]" if s["p99_ms"] > slow_ms else p99
            cells.append(f"{s['p50_ms']:.1f} / {p99} ms · db {s['db_ms']:.1f} · {s['rows_mean']:.0f} rows")
        row(f"search: {r[names[0]]['search'][k]['label']}", cells, ratio(lambda x, k=k: x["search"][k]["p50_ms"]))
    o = r[names[0]]["search"]["overall"]
    row(
        f"search: all shapes ({o['runs']} queries)",
        [f"{r[n]['search']['overall']['p50_ms']:.1f} / {r[n]['search']['overall']['p99_ms']:.1f} ms" for n in names],
        ratio(lambda x: x["search"]["overall"]["p50_ms"]),
    )
    table.caption = (
        "apply: db.apply per event (thread hop + one transaction), rate over all events; grouped: the live "
        "consumer's IngestBatcher, a window of events handed in at once and committed together (per-event latency: "
        "call to commit); apply_many: one transaction per batch; duplicate: events already applied (must return False); rebuild: assets × 7 events "
        "at the apply_many rate. search: db.read + queries.search, one page of 50 newest first, p50 / p99 ms over "
        f"{report['runs']} runs per shape (after {report['warmup']} warm-ups; red: p99 > {slow_ms:g} ms); db: the "
        "database's own time for one such query (PostgreSQL: EXPLAIN ANALYZE execution time; SQLite: driver-level "
        "execute + fetch, no row processing). PG ÷ SQLite: of rates, times and search p50. PostgreSQL "
        f"fsync={'on' if report['pg_fsync'] else 'off'}; SQLite WAL, synchronous=NORMAL."
    )
    out = Console(width=max(130, len(title) + 4))
    out.print(table)
    if report.get("postgresql_skipped"):
        out.print(f"[yellow]PostgreSQL not measured:[/yellow] {report['postgresql_skipped']}")
    for n in names:
        for k in shape_names:
            s = r[n]["search"][k]
            if s["p99_ms"] > slow_ms:
                out.print(f"\n[bold]{LABELS[n]}: {s['label']}[/bold] p99 {s['p99_ms']:.1f} ms; plan:")
                for line in s["plan"]:
                    out.print(f"  {line}", highlight=False, markup=False)


console = Console(stderr=True, width=150)


def _postgres(args: argparse.Namespace) -> tuple[PostgresServer | None, str | None]:
    """The server to measure (the runtime's launcher), or None and why not."""
    if args.sqlite_only:
        return None, "--sqlite-only"
    try:
        return start_postgres(fsync=args.pg_fsync, prefix="wm-bench-pg-"), None
    except ServerStartError as exc:
        return None, str(exc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--assets", type=int, default=100_000, help="assets in the catalog for the searches (default 100000)")
    add("--ingest-assets", type=int, default=1000, help="assets whose 7 events go through db.apply (default 1000)")
    add("--group-assets", type=int, default=1000, help="assets whose 7 events go through IngestBatcher (default 1000)")
    add("--group-window", type=int, default=256, help="events handed to IngestBatcher at once (default 256)")
    add("--batch-assets", type=int, default=1000, help="assets whose 7 events go through apply_many (default 1000)")
    add("--batch-size", type=int, default=500, help="events per apply_many transaction (default 500)")
    add("--fill-batch", type=int, default=3000, help="events per bulk-fill transaction (default 3000)")
    add("--verify-assets", type=int, default=60, help="assets of the bulk loader's check (default 60)")
    add("--duplicates", type=int, default=1000, help="already-applied events applied again (default 1000)")
    add("--runs", type=int, default=50, help="timed runs per query shape (default 50)")
    add("--warmup", type=int, default=3, help="untimed runs per query shape first (default 3)")
    add("--slow-ms", type=float, default=200.0, help="print the plan of shapes whose p99 is over this (default 200)")
    add("--pg-fsync", action="store_true", help="run PostgreSQL with fsync=on (default off, like the tests)")
    add("--sqlite-only", action="store_true", help="do not start PostgreSQL")
    add("--quick", action="store_true", help="a tiny smoke run (3000 assets, 150+150 ingested, 10 runs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.assets, args.ingest_assets, args.batch_assets, args.group_assets = 3000, 150, 150, 150
        args.duplicates, args.runs, args.batch_size, args.verify_assets = 200, 10, 200, 30
    if (
        min(args.assets, args.ingest_assets, args.batch_size, args.runs, args.group_window) < 1
        or min(args.batch_assets, args.group_assets) < 0
    ):
        parser.error("--assets, --ingest-assets, --batch-size, --group-window and --runs must be >= 1")
    args.ingest_assets = min(args.ingest_assets, args.assets)
    args.group_assets = min(args.group_assets, args.assets - args.ingest_assets)
    args.batch_assets = min(args.batch_assets, args.assets - args.ingest_assets - args.group_assets)
    args.duplicates = min(args.duplicates, args.ingest_assets * 7)

    t0 = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    server, skipped = _postgres(args)
    if skipped:
        console.print(f"[yellow]PostgreSQL not measured:[/yellow] {skipped}")
    work = Path(tempfile.mkdtemp(prefix="wm-bench-catalog-"))
    try:
        sqlite_path = work / "catalog.db"
        urls = {"sqlite": f"sqlite:///{sqlite_path}"}
        if server is not None:
            urls["postgresql"] = server.url
        shared: dict[str, Any] = {}
        res = asyncio.run(bench(args, urls, sqlite_path, shared))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    report: dict[str, Any] = {
        "bench": "catalog",
        "assets": args.assets,
        "ingest_assets": args.ingest_assets,
        "group_assets": args.group_assets,
        "group_window": args.group_window,
        "batch_assets": args.batch_assets,
        "events_per_asset": 7,
        "batch_size": args.batch_size,
        "runs": args.runs,
        "warmup": args.warmup,
        "quick": args.quick,
        "pg_fsync": args.pg_fsync,
        "sqlite_version": sqlite3.sqlite_version,
        "postgresql_version": server.version if server else None,
        "postgresql_skipped": skipped,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "bulk_check": shared["bulk_check"],
        "fill": shared["fill"],
        "sqlite": res["sqlite"],
        "postgresql": res.get("postgresql"),
        "loadavg_start": load_start,
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print_table(report, args.slow_ms)
    print(json.dumps(report, separators=(",", ":"), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
