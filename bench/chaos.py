"""Chaos: N jobs through the whole pipeline while its processes are SIGKILLed and restarted at random.

Starts the local stack as ``worldmill up --cluster 3`` would (``runtime.stack.start_stack`` with
``nats_nodes=3``: a 3-node JetStream cluster, streams with 3 replicas, SeaweedFS S3) and the path's
services as their own processes, as ``bench/throughput.py`` does (its helpers are imported: prompt,
generate, qa, catalog and ``--runners`` GPU runners on the no-op synthetic engine, 64x48, 8 fps, 2 s =
16 frames). ``--jobs`` specs go to the prompt service's ``POST /manifests`` in manifests of ``--batch``
specs at ``--rate`` jobs/s (each manifest's specs are first read from a dry run, so the bench knows
every spec id it expects without asking any service afterwards; a submission that fails is sent again,
which creates nothing twice).

While they flow, a seeded (``--seed``) fault loop picks one fault at a time, after a pause of 1-3 s:

    runner        SIGKILL a GPU-runner process, restart it after 1-5 s (same argv and environment)
    cpu-service   SIGKILL qa, generate or catalog, restart it after 1-5 s
    nats-node     SIGKILL one nats-server of the cluster, restart it after 2-10 s (same ports, file store)
    object-store  SIGKILL SeaweedFS, restart it after 2-10 s (same five ports, same data folder)

The first four faults are one of each kind (in a seeded order); then kinds are drawn at random until
every manifest is submitted (``--faults`` caps the count). Every process is killed by its PID
(SIGKILL: a crash) and restarted by the bench. For each fault: kill time, restart time (when the
restart was issued, and how long until the process was up), and recovery = restart issued → the next
catalog row with a QA verdict (polled read-only in the catalog's SQLite file) and → the next
``job.completed`` seen on a plain NATS subscription. The loop waits for that recovery (at most
``--recovery-cap-s``) before the next fault, so faults never overlap.

After the last fault the bench waits (``--settle-s``) until every expected spec has a verdicted catalog
row, then a few seconds more for late duplicates, and counts independently of the services' own
summaries:

* the event log: ``WM_EVENTS`` replayed from the start (the newest ``run.updated`` of each run by
  version, ``video.ready``, QA verdicts, ``job.completed`` / ``job.failed``);
* the object store: every ``runs/<run>/attempt-<n>/video.mp4`` in the artifacts bucket, each downloaded
  and decoded with PyAV, its frames counted and compared with the spec's ``target_frames``;
* the catalog's database (read-only): asset and run rows per spec;
* dead letters: ``WM_DLQ`` replayed.

Lost = an expected spec without a catalog asset whose video exists in S3; duplicated = a spec with more
than one asset row, more than one run (catalog or log) or more than one distinct ``video.ready`` asset;
stuck = a run whose newest state is not final (ready, failed, canceled, lost), or a spec whose row
never got a verdict; wrong = a delivered video whose decoded frame count is not the plan's. The table
gives each fault and per fault kind the count and mean / max recovery; the last stdout line is one JSON
object with every figure. Exit status 1 when anything is lost, duplicated, stuck or wrong, or a fault
kind never happened.

    .venv/bin/python bench/chaos.py [--jobs 1000] [--rate 4] [--runners 2] [--seed 1] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import httpx
from rich.console import Console
from rich.table import Table
from throughput import CatalogWatch, manifest_text, stack_services, wait_ready

from worldmill.contracts.deadletter import DeadLetter
from worldmill.contracts.generation import FINAL_STATES, JobCompleted, JobFailed, RunUpdated, VideoReady
from worldmill.contracts.keys import ARTIFACTS_BUCKET
from worldmill.contracts.qa import QaFailed, QaPassed
from worldmill.contracts.subjects import DLQ, EVENTS, event_subject
from worldmill.runtime.bus import Bus
from worldmill.runtime.logs import configure_logging
from worldmill.runtime.servers import (
    ManagedProcess,
    NatsCluster,
    spawn,
    start_seaweedfs,
    wait_for_port,
)
from worldmill.runtime.settings import service_prefix
from worldmill.runtime.stack import LocalStack, ServiceCommand, start_stack
from worldmill.runtime.store import ObjectStore

KINDS = ("runner", "cpu-service", "nats-node", "object-store")
CPU_SERVICES = ("qa", "generate", "catalog")
#: Seconds a killed process stays down, per fault kind (uniform in the range).
DOWN_S = {"runner": (1.0, 5.0), "cpu-service": (1.0, 5.0), "nats-node": (2.0, 10.0), "object-store": (2.0, 10.0)}
TARGET_RECOVERY_S = 60.0


# --------------------------------------------------------------------------------------------- killing


def _sigkill(proc: ManagedProcess) -> None:
    """SIGKILL by PID (a crash, not a shutdown) and reap."""
    if proc.proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.proc.wait(10)


@dataclass
class Chaos:
    """Kills and restarts the stack's processes in place (the stack's process list is kept current)."""

    stack: LocalStack
    commands: dict[str, ServiceCommand]
    cluster: NatsCluster

    def _index(self, name: str) -> int:
        return next(i for i, p in enumerate(self.stack.processes) if p.name == name)

    def proc(self, name: str) -> ManagedProcess:
        return self.stack.processes[self._index(name)]

    def kill(self, name: str) -> None:
        _sigkill(self.proc(name))

    def restart(self, name: str) -> None:
        """Start ``name`` again as it was started; return once it listens (services) or is ready (servers)."""
        index = self._index(name)
        if name.startswith("nats-n"):
            node = next(i for i, n in enumerate(self.cluster.nodes) if n.proc is self.stack.processes[index])
            self.cluster.restart(node)
            self.stack.processes[index] = self.cluster.nodes[node].proc
        elif name == "seaweedfs":
            state = self.stack.state
            ports = {k.removeprefix("s3_"): v for k, v in state.ports.items() if k.startswith("s3_")}
            proc, _ = start_seaweedfs(
                self.stack.data_dir, access_key=state.s3_access_key, secret_key=state.s3_secret_key, ports=ports
            )
            self.stack.processes[index] = proc
        else:  # a service: the environment start_stack gave it
            svc = self.commands[name]
            env = {
                **self.stack.state.env(),
                f"{service_prefix(svc.settings_service)}HTTP_PORT": str(svc.port),
                **dict(svc.env),
            }
            proc = spawn(svc.name, list(svc.argv), self.stack.data_dir / "logs" / f"{svc.name}.log", env)
            self.stack.processes[index] = proc
            wait_for_port(svc.port, 60.0, proc.proc)


@dataclass
class Fault:
    kind: str
    target: str
    down_s: float
    killed_at: float = 0.0
    restart_at: float = 0.0
    up_s: float = 0.0
    recovery_s: float | None = None
    first_completion_s: float | None = None
    restart_error: str | None = None


def fault_plan(rng: random.Random, runners: list[str], count: int) -> list[Fault]:
    """``count`` faults: one of each kind first (seeded order), then kinds at random."""
    kinds = rng.sample(KINDS, len(KINDS)) + [rng.choice(KINDS) for _ in range(max(0, count - len(KINDS)))]
    plan = []
    for kind in kinds[:count] if count >= len(KINDS) else kinds:
        target = {
            "runner": lambda: rng.choice(runners),
            "cpu-service": lambda: rng.choice(CPU_SERVICES),
            "nats-node": lambda: f"nats-n{rng.randint(1, 3)}",
            "object-store": lambda: "seaweedfs",
        }[kind]()
        plan.append(Fault(kind, target, round(rng.uniform(*DOWN_S[kind]), 2)))
    return plan


# --------------------------------------------------------------------------------------------- the run


@dataclass
class Observed:
    """What the bench saw live: expected specs, submissions, completions, catalog rows."""

    expected: dict[str, int] = field(default_factory=dict)  # prompt_id -> target_frames
    submit_retries: int = 0
    submit_failed: list[str] = field(default_factory=list)
    completions: list[float] = field(default_factory=list)


async def submit_one(client: httpx.AsyncClient, name: str, text: str, seen: Observed, patience_s: float) -> None:
    """Dry-run (the spec ids it makes), then submit until the service says 200/201."""
    deadline = time.monotonic() + patience_s
    dry = True
    while True:
        try:
            response = await client.post("/manifests", json={"content": text, "dry_run": dry})
            if response.status_code in (200, 201):
                if dry:
                    for spec in response.json()["specs"]:
                        seen.expected[spec["prompt_id"]] = int(spec["target_frames"])
                    dry = False
                    continue
                return
            if response.status_code < 500:
                raise RuntimeError(f"POST /manifests {name}: HTTP {response.status_code} {response.text[:1000]}")
        except httpx.HTTPError:
            pass
        seen.submit_retries += 1
        if time.monotonic() > deadline:
            seen.submit_failed.append(name)
            return
        await asyncio.sleep(1.0)


async def submitter(stack: LocalStack, args: argparse.Namespace, tag: str, seen: Observed) -> None:
    sizes = [min(args.batch, args.jobs - i) for i in range(0, args.jobs, args.batch)]
    gap = args.batch / args.rate if args.rate > 0 else 0.0
    headers = {"Authorization": f"Bearer {stack.state.api_token}"}
    url = stack.state.services["prompt"]
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60.0) as client:
        start = time.monotonic()
        pending = []
        for i, size in enumerate(sizes):
            await asyncio.sleep(max(0.0, start + i * gap - time.monotonic()))
            name = f"chaos-{tag}-m{i:03d}"
            text = manifest_text(name, size, variants=min(10, size), seconds=2.0, fps=8, resolution="64x48")
            pending.append(asyncio.create_task(submit_one(client, name, text, seen, args.recovery_cap_s * 2)))
        await asyncio.gather(*pending)


async def fault_loop(
    chaos: Chaos, plan: list[Fault], *, watch: CatalogWatch, seen: Observed, submit: asyncio.Task[None], args: Any
) -> list[Fault]:
    """Run the faults one at a time while work is submitted; each waits for its recovery."""
    rng = random.Random(args.seed + 1)
    done: list[Fault] = []
    for fault in plan:
        if len(done) >= len(KINDS) and submit.done():
            break
        await asyncio.sleep(rng.uniform(1.0, 3.0))
        fault.killed_at = time.time()
        await asyncio.to_thread(chaos.kill, fault.target)
        await asyncio.sleep(fault.down_s)
        fault.restart_at = time.time()
        try:
            await asyncio.to_thread(chaos.restart, fault.target)
        except Exception as exc:  # recorded: a process that does not come back is a finding
            fault.restart_error = f"{type(exc).__name__}: {exc}"[:2000]
        fault.up_s = round(time.time() - fault.restart_at, 2)
        deadline = time.monotonic() + args.recovery_cap_s
        while time.monotonic() < deadline:
            rows = [t for t, _, _ in list(watch.seen.values()) if t >= fault.restart_at]
            if rows:
                fault.recovery_s = round(min(rows) - fault.restart_at, 2)
                break
            if submit.done() and seen.expected and set(seen.expected) <= _verdicted(watch):
                break  # nothing left to do: no recovery to see
            await asyncio.sleep(0.1)
        done.append(fault)
    return done


def _verdicted(watch: CatalogWatch) -> set[str]:
    return {pid for _, _, pid in list(watch.seen.values()) if pid}


async def drive(stack: LocalStack, chaos: Chaos, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    seen = Observed()
    observer = stack.state.bus("bench-chaos", reconnect_wait_s=0.2)
    await observer.connect()

    async def completed(_: object) -> None:
        seen.completions.append(time.time())

    await observer.nc.subscribe(event_subject("job.completed"), cb=completed)
    watch = CatalogWatch(stack.data_dir / "catalog.sqlite3", 0.05)
    watch.start()
    runners = sorted(n for n in chaos.commands if n.startswith("gpu-runner"))
    plan = fault_plan(random.Random(args.seed), runners, args.faults or 10_000)
    started = time.time()
    submit = asyncio.create_task(submitter(stack, args, tag, seen))
    faults = await fault_loop(chaos, plan, watch=watch, seen=seen, submit=submit, args=args)
    await submit
    faults_done = time.time()
    deadline = time.monotonic() + args.settle_s
    while time.monotonic() < deadline and not set(seen.expected) <= _verdicted(watch):  # noqa: ASYNC110 - polling
        await asyncio.sleep(0.2)
    settled = set(seen.expected) <= _verdicted(watch)
    all_rows = time.time()
    await asyncio.sleep(args.linger_s)  # late duplicates would show now
    watch.stop()
    for fault in faults:  # read at the end: a completion may come after the row that ended the wait
        later = [t for t in seen.completions if t >= fault.restart_at]
        fault.first_completion_s = round(min(later) - fault.restart_at, 2) if later else None
    counts = await count_everything(stack, observer, seen, Path(tempfile.mkdtemp(prefix="wm-chaos-videos-")))
    await observer.close()
    return {
        "started": started,
        "faults": faults,
        "faults_done_s": round(faults_done - started, 2),
        "all_rows_s": round(all_rows - started, 2),
        "settled": settled,
        "seen": seen,
        "counts": counts,
    }


# --------------------------------------------------------------------------------------------- counting


def _frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@dataclass
class Log:
    """What WM_EVENTS holds for the runs: newest run.updated per run, video.ready, verdicts, outcomes."""

    runs: dict[str, RunUpdated] = field(default_factory=dict)
    ready: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # prompt_id -> asset ids
    verdicts: Counter[str] = field(default_factory=Counter)
    verdict_kind: dict[str, str] = field(default_factory=dict)
    completed: Counter[str] = field(default_factory=Counter)
    failed: int = 0

    def add(self, m: object) -> None:
        if isinstance(m, RunUpdated):
            if m.run.run_id not in self.runs or m.version > self.runs[m.run.run_id].version:
                self.runs[m.run.run_id] = m
        elif isinstance(m, VideoReady):
            self.ready[m.prompt_id].add(m.asset_id)
        elif isinstance(m, QaPassed | QaFailed):
            self.verdicts[m.asset_id] += 1
            self.verdict_kind[m.asset_id] = "passed" if isinstance(m, QaPassed) else "failed"
        elif isinstance(m, JobCompleted):
            self.completed[m.run_id] += 1
        elif isinstance(m, JobFailed):
            self.failed += 1


async def bucket_frames(stack: LocalStack, folder: Path) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Every run video in the artifacts bucket (run_id -> keys) and its decoded frame count (key -> frames)."""
    state = stack.state
    store = ObjectStore(state.s3_endpoint, state.s3_access_key, state.s3_secret_key)
    videos: dict[str, list[str]] = defaultdict(list)
    for info in await store.list(ARTIFACTS_BUCKET, "runs/"):
        if info.key.endswith("/video.mp4"):
            videos[info.key.split("/")[1]].append(info.key)
    frames: dict[str, int] = {}
    for run_id, keys in videos.items():
        for i, key in enumerate(keys):
            path = folder / f"{run_id}-{i}.mp4"
            await store.download(ARTIFACTS_BUCKET, key, path)
            frames[key] = _frames(path)
            path.unlink()
    return videos, frames


def catalog_rows(path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The catalog database's asset rows and run rows, read-only."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    try:
        assets = db.execute("SELECT asset_id, prompt_id, run_id, qa_status, video, frames FROM assets").fetchall()
        runs = db.execute("SELECT run_id, prompt_id, state FROM runs").fetchall()
    finally:
        db.close()
    return assets, runs


async def count_everything(stack: LocalStack, bus: Bus, seen: Observed, folder: Path) -> dict[str, Any]:
    """Every count from the log, the bucket (decoded), the catalog's database and the DLQ."""
    log = Log()
    async for _, m in bus.replay(EVENTS.name, "wm.evt.>"):
        log.add(m)
    letters = [m async for _, m in bus.replay(DLQ.name, "wm.dlq.>") if isinstance(m, DeadLetter)]
    videos, frames = await bucket_frames(stack, folder)
    assets, catalog_runs = catalog_rows(stack.data_dir / "catalog.sqlite3")
    runs, ready, verdicts, verdict_kind, completed = log.runs, log.ready, log.verdicts, log.verdict_kind, log.completed

    by_spec: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in assets:
        by_spec[row[1]].append(row)
    runs_by_spec: dict[str, set[str]] = defaultdict(set)
    for run_id, prompt_id, _ in catalog_runs:
        runs_by_spec[prompt_id].add(run_id)
    for run_id, m in runs.items():
        runs_by_spec[m.run.prompt_id].add(run_id)

    lost, duplicated, wrong, unverdicted = [], [], [], []
    for pid, target in sorted(seen.expected.items()):
        rows = by_spec.get(pid, [])
        delivered = [r for r in rows if r[4] and json.loads(r[4]).get("key") in frames]
        if not delivered:
            lost.append(pid)
        if len(rows) > 1 or len(runs_by_spec.get(pid, ())) > 1 or len(ready.get(pid, ())) > 1:
            duplicated.append(pid)
        if rows and all(r[3] == "pending" for r in rows):
            unverdicted.append(pid)
        for r in delivered:
            decoded = frames[json.loads(r[4])["key"]]
            if decoded != target or r[5] != target:
                wrong.append({"prompt_id": pid, "target": target, "decoded": decoded, "catalog": r[5]})
    not_final = sorted(r for r, m in runs.items() if m.run.state not in FINAL_STATES)
    run_states = Counter(m.run.state for m in runs.values())
    unexpected = sorted(set(by_spec) - set(seen.expected))
    return {
        "expected_specs": len(seen.expected),
        "lost": lost,
        "duplicated": duplicated,
        "stuck_runs": not_final,
        "unverdicted_specs": unverdicted,
        "wrong_frames": wrong,
        "catalog_assets": len(assets),
        "catalog_runs": len(catalog_runs),
        "catalog_assets_not_expected": unexpected,
        "log_runs": len(runs),
        "log_run_states": dict(run_states),
        "log_video_ready_assets": sum(len(v) for v in ready.values()),
        "log_job_completed": sum(completed.values()),
        "log_job_completed_more_than_once": sum(1 for n in completed.values() if n > 1),
        "log_job_failed": log.failed,
        "qa_verdicts": dict(Counter(verdict_kind.values())),
        "qa_assets_with_several_verdict_events": sum(1 for n in verdicts.values() if n > 1),
        "s3_videos": sum(len(k) for k in videos.values()),
        "s3_runs_with_several_attempt_videos": sum(1 for k in videos.values() if len(k) > 1),
        "decoded_frames": dict(Counter(frames.values())),
        "dead_letters": len(letters),
        "dead_letters_by": dict(Counter(f"{d.consumer}: {d.reason}" for d in letters)),
        "dead_letter_samples": [
            {"consumer": d.consumer, "subject": d.original_subject, "reason": d.reason, "error": d.error[:300]}
            for d in letters[:10]
        ],
    }


# --------------------------------------------------------------------------------------------- report


def per_kind(faults: list[Fault]) -> dict[str, dict[str, Any]]:
    out = {}
    for kind in KINDS:
        mine = [f for f in faults if f.kind == kind]
        rec = [f.recovery_s for f in mine if f.recovery_s is not None]
        out[kind] = {
            "count": len(mine),
            "recovered": len(rec),
            "recovery_mean_s": round(statistics.fmean(rec), 2) if rec else None,
            "recovery_max_s": max(rec) if rec else None,
            "restart_errors": sum(1 for f in mine if f.restart_error),
        }
    return out


def build_report(raw: dict[str, Any], args: argparse.Namespace, wall_s: float) -> dict[str, Any]:
    c = raw["counts"]
    faults: list[Fault] = raw["faults"]
    seen: Observed = raw["seen"]
    kinds = per_kind(faults)
    totals = {
        "jobs": args.jobs,
        "expected_specs": c["expected_specs"],
        "lost": len(c["lost"]),
        "duplicated": len(c["duplicated"]),
        "stuck": len(c["stuck_runs"]) + len(c["unverdicted_specs"]),
        "wrong_frames": len(c["wrong_frames"]),
        "dead_lettered": c["dead_letters"],
        "submit_failed": len(seen.submit_failed),
    }
    recoveries = [f.recovery_s for f in faults if f.recovery_s is not None]
    ok = (
        totals["lost"] == totals["duplicated"] == totals["stuck"] == totals["wrong_frames"] == 0
        and totals["submit_failed"] == 0
        and c["expected_specs"] == args.jobs
        and all(kinds[k]["count"] > 0 for k in KINDS)
        and raw["settled"]
    )
    return {
        "ok": ok,
        "totals": totals,
        "per_kind": kinds,
        "recovery_max_s": max(recoveries) if recoveries else None,
        "recovery_target_s": TARGET_RECOVERY_S,
        "recovery_target_met": bool(recoveries) and max(recoveries) < TARGET_RECOVERY_S,
        "faults": [
            {
                **asdict(f),
                "killed_at": round(f.killed_at - raw["started"], 2),
                "restart_at": round(f.restart_at - raw["started"], 2),
            }
            for f in faults
        ],
        "counts": c,
        "submit_retries": seen.submit_retries,
        "submit_failed": seen.submit_failed,
        "settled": raw["settled"],
        "faults_done_s": raw["faults_done_s"],
        "all_rows_s": raw["all_rows_s"],
        "wall_s": round(wall_s, 2),
    }


def _s(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def print_report(report: dict[str, Any], console: Console) -> None:
    t = Table(title="faults (times in s from the start; recovery from the restart being issued)")
    for col in ("#", "kind", "target", "killed at", "down", "restart took", "next catalog row", "next completion"):
        t.add_column(col, justify="right" if col not in ("kind", "target") else "left")
    for i, f in enumerate(report["faults"], 1):
        target = f["target"] + (" (restart failed)" if f["restart_error"] else "")
        t.add_row(
            str(i),
            f["kind"],
            target,
            _s(f["killed_at"]),
            _s(f["down_s"]),
            _s(f["up_s"]),
            _s(f["recovery_s"]),
            _s(f["first_completion_s"]),
        )
    console.print(t)
    k = Table(title=f"per fault kind (recovery target < {report['recovery_target_s']:.0f} s)")
    for col in ("kind", "count", "recovered", "mean recovery", "max recovery"):
        k.add_column(col, justify="left" if col == "kind" else "right")
    for kind, v in report["per_kind"].items():
        k.add_row(kind, str(v["count"]), str(v["recovered"]), _s(v["recovery_mean_s"]), _s(v["recovery_max_s"]))
    console.print(k)
    c = report["counts"]
    s = Table(title="independent counts (log replay, S3 listing + PyAV decode, catalog DB read-only, WM_DLQ)")
    s.add_column("what")
    s.add_column("value", justify="right")
    tot = report["totals"]
    for label, value in (
        ("jobs submitted / specs expected", f"{tot['jobs']} / {tot['expected_specs']}"),
        ("lost", tot["lost"]),
        ("duplicated", tot["duplicated"]),
        ("stuck (runs not final + rows without verdict)", tot["stuck"]),
        ("wrong frame count", tot["wrong_frames"]),
        ("dead-lettered", tot["dead_lettered"]),
        ("catalog assets / runs", f"{c['catalog_assets']} / {c['catalog_runs']}"),
        ("QA verdicts", ", ".join(f"{k} {v}" for k, v in sorted(c["qa_verdicts"].items())) or "none"),
        ("S3 videos (runs with several attempts)", f"{c['s3_videos']} ({c['s3_runs_with_several_attempt_videos']})"),
        ("decoded frames per video", ", ".join(f"{k}: {v}" for k, v in sorted(c["decoded_frames"].items()))),
        ("job.completed in log (runs with > 1)", f"{c['log_job_completed']} ({c['log_job_completed_more_than_once']})"),
        ("job.failed in log", c["log_job_failed"]),
        ("submit retries / failed", f"{report['submit_retries']} / {tot['submit_failed']}"),
        (
            "wall s (faults done / all rows / total)",
            f"{report['faults_done_s']} / {report['all_rows_s']} / {report['wall_s']}",
        ),
        ("verdict", "OK" if report["ok"] else "NOT OK"),
    ):
        s.add_row(label, str(value))
    console.print(s)
    if c["dead_letters_by"]:
        console.print("dead letters:", c["dead_letters_by"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    tag = secrets.token_hex(3)
    tmp = Path(tempfile.mkdtemp(prefix="worldmill-bench-chaos-"))
    stack: LocalStack | None = None
    started = time.monotonic()
    try:
        commands = stack_services(args.runners, (tmp / "stack" / "catalog.sqlite3").resolve())
        stack = start_stack(tmp / "stack", commands, nats_nodes=3)
        wait_ready(stack)
        assert stack.nats_cluster is not None  # started with nats_nodes=3
        chaos = Chaos(stack, {c.name: c for c in commands}, stack.nats_cluster)
        raw = asyncio.run(drive(stack, chaos, args, tag))
        report = build_report(raw, args, time.monotonic() - started)
        report["logs"] = str(tmp / "stack" / "logs") if args.keep else None
        return report
    finally:
        if stack is not None:
            stack.stop()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    add = parser.add_argument
    add("--jobs", type=int, default=1000, help="specs submitted, one job each (default 1000)")
    add("--rate", type=float, default=4.0, help="offered jobs/s (default 4)")
    add("--batch", type=int, default=10, help="specs per manifest (default 10)")
    add("--runners", type=int, default=2, help="GPU-runner processes (default 2)")
    add("--seed", type=int, default=1, help="seed of the fault schedule (default 1)")
    add("--faults", type=int, default=0, help="at most this many faults (default 0: until all is submitted)")
    add("--settle-s", type=float, default=300.0, help="wait this long after the faults for every row")
    add("--linger-s", type=float, default=5.0, help="then this long for late duplicates (default 5)")
    add("--recovery-cap-s", type=float, default=90.0, help="longest wait for a fault's recovery (default 90)")
    add("--quick", action="store_true", help="CI run: 20 jobs over ~50 s, one fault of each kind")
    add("--keep", action="store_true", help="keep the temporary data folder (logs, databases)")
    add("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.rate, args.batch, args.faults, args.settle_s = 20, 0.4, 2, len(KINDS), 120.0
    if args.jobs < 1 or args.batch < 1 or args.runners < 1 or args.rate < 0:
        parser.error("--jobs, --batch and --runners must be >= 1, --rate >= 0")
    configure_logging(args.log_level, json=True, service="bench-chaos")
    stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        report = run(args)
    report["config"] = {
        "jobs": args.jobs,
        "rate": args.rate,
        "batch": args.batch,
        "runners": args.runners,
        "seed": args.seed,
        "faults": args.faults,
        "nats_nodes": 3,
        "clip": "64x48, 8 fps, 2 s = 16 frames, synthetic no-op engine",
        "cpus": os.cpu_count(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print_report(report, Console(file=stdout, width=200))
    print(json.dumps(report, separators=(",", ":")), file=stdout, flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
