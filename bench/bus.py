"""Throughput of the worldmill runtime bus next to raw nats-py, against a real local nats-server.

Starts its own nats-server (JetStream, file store in a temporary directory, a free loopback
port), then measures, interleaved over several rounds (raw and runtime alternate, and which one
goes first alternates per round, so drift on a noisy machine hits both alike):

* ``publish_seq``  - N awaited publishes one after the other;
* ``publish_conc`` - N publishes in ``asyncio.gather`` windows of ``--window``;
* ``consume``      - N preloaded messages pulled, decoded and acked.

Then the transactional outbox's relay (``worldmill.runtime.docstore.OutboxRelay``), old and new side by
side in the same rounds: ``--outbox-rows`` rows committed to a SQLite document store (untimed), then
flushed until none is pending, by the relay as it was before pipelining (one publish, wait for its ack,
the next; a copy of that loop is kept here as the baseline) and by ``OutboxRelay`` (a window of
``--outbox-window`` publishes in flight, the acked rows deleted in one transaction per window); each
with every row about its own entity (what a manifest's ``prompt.created`` burst is) and with every row
about one entity (the new relay keeps an entity's rows in order by sending them one at a time: its worst
case). Reported: median rows/s, the relay process's CPU ms per row and nats-server's, and new ÷ old.

Runtime publish includes building the envelope (``wrap``) and its JSON encoding, i.e. the real
cost of ``Bus.publish``; raw nats-py publishes the same pre-encoded bytes with the same
``Nats-Msg-Id`` header. Runtime consume is ``worldmill.runtime.consumer.Consumer`` (envelope and
data validation, structlog context, ack); raw consume is ``fetch`` + ``json.loads`` + ``ack``,
with the same batch size. Reported: median msgs/s per variant, ratio = runtime / raw (of the
medians), overhead = 1 - ratio. The last line of stdout is one JSON object with every figure.

    .venv/bin/python bench/bus.py [--messages 5000] [--rounds 3] [--outbox-rows 300 --outbox-window 128]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import psutil
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from rich.console import Console
from rich.table import Table

from worldmill.contracts.envelope import wrap
from worldmill.contracts.objects import ObjectCreated
from worldmill.contracts.subjects import ConsumerSpec, StreamSpec
from worldmill.runtime.bus import Bus, encode
from worldmill.runtime.consumer import Consumer, Delivery
from worldmill.runtime.docstore import DEFAULT_WINDOW, DocumentStore, OutboxItem, OutboxRelay
from worldmill.runtime.logs import configure_logging
from worldmill.runtime.servers import start_nats
from worldmill.runtime.versions import package_version

TARGET_OVERHEAD = 0.20
OPERATIONS = ("publish_seq", "publish_conc", "consume")
VARIANTS = ("raw", "runtime")
#: Hard cap on any single measurement, so a stuck server can never hang the bench.
STEP_TIMEOUT_S = 60.0

RT_STREAM = StreamSpec(
    name="BENCH_RT",
    subjects=("bench.rt.>",),
    retention="workqueue",
    max_age_s=3600.0,
    duplicate_window_s=120.0,
    description="worldmill bench: runtime variant",
)
RAW_STREAM = StreamSpec(
    name="BENCH_RAW",
    subjects=("bench.raw.>",),
    retention="workqueue",
    max_age_s=3600.0,
    duplicate_window_s=120.0,
    description="worldmill bench: raw nats-py variant",
)
RT_SUBJECT = "bench.rt.object"
RAW_SUBJECT = "bench.raw.object"


def message(i: int) -> ObjectCreated:
    """A realistic small event: one object that appeared in a bucket."""
    return ObjectCreated(
        bucket="bench-bucket",
        key=f"uploads/2024/batch-{i // 1000:04d}/object-{i:08d}.mp4",
        size=1_048_576 + i,
        etag=f"{i:032x}",
        origin="worldmill",
        event_time=datetime(2024, 1, 1, tzinfo=UTC),
    )


def event_id(tag: str, i: int) -> str:
    """Same length for every variant and round, so payload sizes match exactly."""
    return f"bench-{tag}-{i:08d}"


def encoded(tag: str, messages: list[ObjectCreated]) -> list[tuple[str, bytes]]:
    """(id, wire bytes) of each message's envelope, built ahead of time (not timed)."""
    out = []
    for i, m in enumerate(messages):
        eid = event_id(tag, i)
        out.append((eid, encode(wrap(m, source="bench", event_id=eid))))
    return out


async def reset_stream(js: JetStreamContext, stream: str, durable: str) -> None:
    """Empty the stream and drop its durable consumer, so each measurement starts clean."""
    with contextlib.suppress(NotFoundError):
        await js.delete_consumer(stream, durable)
    await js.purge_stream(stream)


async def preload(
    js: JetStreamContext, subject: str, items: list[tuple[str, bytes]], window: int, *, runtime: bool = False
) -> None:
    """Fill a stream (untimed). Runtime messages carry the headers the runtime bus sets."""
    extra = {"ce-type": ObjectCreated.ce_type()} if runtime else {}
    for start in range(0, len(items), window):
        chunk = items[start : start + window]
        await asyncio.gather(*(js.publish(subject, p, headers={"Nats-Msg-Id": eid, **extra}) for eid, p in chunk))


# --- measurements: each returns elapsed seconds for n messages -------------------------------


def as_dicts(items: list[tuple[str, bytes]]) -> list[tuple[str, dict[str, Any]]]:
    """The same envelopes as plain dicts: what a hand-written raw nats-py producer would hold."""
    return [(eid, json.loads(payload)) for eid, payload in items]


async def raw_publish_seq(js: JetStreamContext, items: list[tuple[str, dict[str, Any]]]) -> float:
    # Raw nats-py still has to serialise its message: json.dumps of a plain dict, timed.
    t0 = time.perf_counter()
    for eid, doc in items:
        await js.publish(RAW_SUBJECT, json.dumps(doc).encode(), headers={"Nats-Msg-Id": eid})
    return time.perf_counter() - t0


async def rt_publish_seq(bus: Bus, msgs: list[ObjectCreated], tag: str) -> float:
    t0 = time.perf_counter()
    for i, m in enumerate(msgs):
        await bus.publish(wrap(m, source="bench", event_id=event_id(tag, i)), subject=RT_SUBJECT)
    return time.perf_counter() - t0


async def raw_publish_conc(js: JetStreamContext, items: list[tuple[str, dict[str, Any]]], window: int) -> float:
    t0 = time.perf_counter()
    for start in range(0, len(items), window):
        chunk = items[start : start + window]
        await asyncio.gather(
            *(js.publish(RAW_SUBJECT, json.dumps(d).encode(), headers={"Nats-Msg-Id": eid}) for eid, d in chunk)
        )
    return time.perf_counter() - t0


async def rt_publish_conc(bus: Bus, msgs: list[ObjectCreated], tag: str, window: int) -> float:
    async def one(i: int) -> None:
        await bus.publish(wrap(msgs[i], source="bench", event_id=event_id(tag, i)), subject=RT_SUBJECT)

    t0 = time.perf_counter()
    for start in range(0, len(msgs), window):
        await asyncio.gather(*(one(i) for i in range(start, min(start + window, len(msgs)))))
    return time.perf_counter() - t0


async def raw_consume(js: JetStreamContext, n: int, batch: int) -> float:
    durable = "bench-raw"
    config = ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=30.0,
        max_deliver=-1,
        max_ack_pending=batch,
        filter_subject="bench.raw.>",
    )  # what Bus.ensure_consumer creates for the runtime side
    await js.add_consumer("BENCH_RAW", config=config)
    t0 = time.perf_counter()
    psub = await js.pull_subscribe_bind(durable, stream="BENCH_RAW")
    seen = 0
    deadline = t0 + STEP_TIMEOUT_S
    try:
        while seen < n and time.perf_counter() < deadline:
            try:
                msgs = await psub.fetch(batch, timeout=1.0)
            except nats.errors.TimeoutError:
                continue
            for msg in msgs:
                json.loads(msg.data)
                await msg.ack()
                seen += 1
        elapsed = time.perf_counter() - t0
    finally:
        await psub.unsubscribe()
    if seen < n:
        raise RuntimeError(f"raw consume: only {seen}/{n} messages within {STEP_TIMEOUT_S:.0f} s")
    return elapsed


async def rt_consume(bus: Bus, n: int, batch: int, concurrency: int) -> float:
    spec = ConsumerSpec(durable="bench-rt", stream="BENCH_RT", filter_subject="bench.rt.>", max_ack_pending=batch)
    await bus.ensure_consumer(spec)  # created up front, as for raw; run() re-checks it (timed)
    stop = asyncio.Event()
    seen = 0
    done_at = 0.0

    async def handler(_delivery: Delivery) -> None:
        nonlocal seen, done_at
        seen += 1
        if seen >= n:
            done_at = time.perf_counter()
            stop.set()

    consumer = Consumer(bus, spec, handler, accept=(ObjectCreated,), concurrency=concurrency, prefetch=batch)
    t0 = time.perf_counter()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await asyncio.wait_for(stop.wait(), STEP_TIMEOUT_S)
    except TimeoutError:
        stop.set()
        raise RuntimeError(f"runtime consume: only {seen}/{n} messages within {STEP_TIMEOUT_S:.0f} s") from None
    finally:
        # run() drains: its last fetch may wait out fetch_timeout_s (1 s) on the empty stream; untimed.
        await asyncio.wait_for(task, 10.0)
    if consumer.stats.dead_lettered:
        stats = consumer.stats
        raise RuntimeError(f"runtime consume: {stats.dead_lettered} dead-lettered ({stats.reasons})")
    return done_at - t0


# --- the run ----------------------------------------------------------------------------------


class Bench:
    def __init__(self, url: str, n: int, window: int, batch: int, concurrency: int) -> None:
        self.url, self.n, self.window, self.batch, self.concurrency = url, n, window, batch, concurrency
        self.bus = Bus(url, name="bench-runtime")
        self.raw: Any = None
        self.msgs = [message(i) for i in range(n)]
        self.results: dict[str, dict[str, list[float]]] = {op: {v: [] for v in VARIANTS} for op in OPERATIONS}

    async def open(self) -> None:
        await self.bus.connect()
        self.raw = await nats.connect(self.url, name="bench-raw", connect_timeout=5, allow_reconnect=False)
        self.rjs = self.raw.jetstream()
        for spec in (RT_STREAM, RAW_STREAM):
            await self.bus.ensure_stream(spec)

    async def close(self) -> None:
        if self.raw is not None:
            await self.raw.close()
        await self.bus.close()

    async def round(self, r: int, n: int, record: bool) -> None:
        """One round: every operation, raw and runtime back to back (who goes first alternates)."""
        order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
        tag = f"r{r:02d}"  # ids are unique per round and variant, so dedup never drops anything
        rjs, msgs = self.rjs, self.msgs[:n]
        raw_items = {k: encoded(f"{tag}{k}w", msgs) for k in ("ps", "pc", "cs")}
        rt_items = encoded(f"{tag}csr", msgs)  # runtime consume's preload (same bytes as Bus.publish)

        async def run(op: str, variant: str) -> None:
            raw = variant == "raw"
            stream, durable = (RAW_STREAM.name, "bench-raw") if raw else (RT_STREAM.name, "bench-rt")
            await reset_stream(rjs, stream, durable)
            step: Awaitable[float]
            if op == "publish_seq":
                step = (
                    raw_publish_seq(rjs, as_dicts(raw_items["ps"]))
                    if raw
                    else rt_publish_seq(self.bus, msgs, f"{tag}psr")
                )
            elif op == "publish_conc":
                step = (
                    raw_publish_conc(rjs, as_dicts(raw_items["pc"]), self.window)
                    if raw
                    else rt_publish_conc(self.bus, msgs, f"{tag}pcr", self.window)
                )
            elif raw:  # consume: preload n messages (untimed), then drain them (timed)
                await preload(rjs, RAW_SUBJECT, raw_items["cs"], self.window)
                step = raw_consume(rjs, n, self.batch)
            else:
                await preload(rjs, RT_SUBJECT, rt_items, self.window, runtime=True)
                step = rt_consume(self.bus, n, self.batch, self.concurrency)
            elapsed = await asyncio.wait_for(step, STEP_TIMEOUT_S + 15)
            if record:
                self.results[op][variant].append(n / elapsed)
            if op != "consume":  # every publish landed (no dedup drop, nothing lost)
                info = await rjs.stream_info(stream)
                if info.state.messages != n:
                    raise RuntimeError(f"{op}/{variant}: stream holds {info.state.messages}, expected {n}")

        for op in OPERATIONS:
            for variant in order:
                await run(op, variant)
        for stream, durable in ((RAW_STREAM.name, "bench-raw"), (RT_STREAM.name, "bench-rt")):
            await reset_stream(rjs, stream, durable)


# --- the outbox relay: before and after pipelining ---------------------------------------------

OUTBOX_STREAM = StreamSpec(
    name="BENCH_OUTBOX",
    subjects=("bench.outbox.>",),
    retention="limits",
    max_age_s=3600.0,
    duplicate_window_s=120.0,
    description="worldmill bench: outbox relay",
)
RELAYS = ("sequential", "pipelined")
SHAPES = ("entities", "one_entity")


class SequentialRelay(OutboxRelay):
    """The relay as it was before pipelining: publish a row, wait for its ack, the next; stop at the first
    failure; delete what was sent in one transaction at the end (kept here as the baseline)."""

    async def flush(self, limit: int = 500) -> int:
        sent: list[int] = []
        try:
            for row in await self.store.pending_outbox(limit):
                try:
                    await self.bus.publish_raw(row.subject, row.payload, row.headers)
                except Exception:
                    break
                sent.append(row.id)
        finally:
            await self.store.mark_sent(sent)
        return len(sent)


def outbox_items(tag: str, n: int, *, one_entity: bool) -> list[OutboxItem]:
    """``n`` events, each about its own object (or all about one), ids unique per ``tag``."""
    out = []
    for i, m in enumerate(message(i) for i in range(n)):
        event = m.model_copy(update={"key": "uploads/one-entity.mp4"}) if one_entity else m
        envelope = wrap(event, source="bench", event_id=event_id(tag, i))
        out.append(OutboxItem.from_envelope(envelope, subject=f"bench.outbox.{tag}"))
    return out


class OutboxBench:
    def __init__(self, bus: Bus, store: DocumentStore, n: int, window: int, nats_pid: int) -> None:
        self.bus, self.store, self.n, self.window = bus, store, n, window
        self.server = psutil.Process(nats_pid)
        self.results: dict[str, dict[str, list[dict[str, float]]]] = {s: {r: [] for r in RELAYS} for s in SHAPES}

    async def one(self, r: int, shape: str, relay_name: str, record: bool) -> None:
        tag = f"o{r:02d}{shape[:3]}{relay_name[:3]}"
        items = outbox_items(tag, self.n, one_entity=shape == "one_entity")
        await self.store.commit([], items)  # one transaction, like a manifest's specs and their events
        relay = (
            SequentialRelay(self.store, self.bus)
            if relay_name == "sequential"
            else OutboxRelay(self.store, self.bus, window=self.window)
        )
        server0, cpu0, t0 = self.server.cpu_times(), time.process_time(), time.perf_counter()
        sent = 0
        while True:
            k = await asyncio.wait_for(relay.flush(), STEP_TIMEOUT_S)
            sent += k
            if k < 500:
                break
        wall, cpu, server1 = time.perf_counter() - t0, time.process_time() - cpu0, self.server.cpu_times()
        if sent != self.n or await self.store.pending_outbox(1):
            raise RuntimeError(f"outbox {shape}/{relay_name}: {sent} of {self.n} sent")
        ids = [(await self.bus.js.get_last_msg(OUTBOX_STREAM.name, f"bench.outbox.{tag}")).headers]
        if ids[0] is None or ids[0].get("Nats-Msg-Id") != items[-1].headers["Nats-Msg-Id"]:
            raise RuntimeError(f"outbox {shape}/{relay_name}: the last row is not the last in the stream")
        if record:
            server_s = (server1.user + server1.system) - (server0.user + server0.system)
            self.results[shape][relay_name].append({"wall_s": wall, "cpu_s": cpu, "nats_s": server_s})

    async def round(self, r: int, record: bool) -> None:
        order = RELAYS if r % 2 == 0 else RELAYS[::-1]
        for shape in SHAPES:
            for relay_name in order:
                await self.one(r, shape, relay_name, record)
        await self.bus.js.purge_stream(OUTBOX_STREAM.name)


def summarize_outbox(results: dict[str, dict[str, list[dict[str, float]]]], rows: int) -> dict[str, Any]:
    """Median rows/s per relay; CPU ms per row over all rounds together (psutil's clock ticks are 10 ms)."""
    out: dict[str, Any] = {}
    for shape, per in results.items():
        fig = {
            relay: {
                "rows_per_s": statistics.median(rows / run["wall_s"] for run in runs),
                "cpu_ms_per_row": 1000 * sum(run["cpu_s"] for run in runs) / (rows * len(runs)),
                "nats_ms_per_row": 1000 * sum(run["nats_s"] for run in runs) / (rows * len(runs)),
            }
            for relay, runs in per.items()
        }
        new, old = fig["pipelined"], fig["sequential"]
        out[shape] = {
            **{f"{relay}_{k}": round(v, 4) for relay, f in fig.items() for k, v in f.items()},
            "speedup": round(new["rows_per_s"] / old["rows_per_s"], 2),
            "cpu_ratio": round(new["cpu_ms_per_row"] / old["cpu_ms_per_row"], 3),
            "nats_cpu_ratio": round(new["nats_ms_per_row"] / max(1e-9, old["nats_ms_per_row"]), 3),
            **{f"{relay}_runs": [round(rows / run["wall_s"]) for run in runs] for relay, runs in per.items()},
        }
    return out


async def outbox_bench(url: str, args: argparse.Namespace, work: Path, nats_pid: int) -> dict[str, Any]:
    bus = Bus(url, name="bench-outbox")
    store = DocumentStore(f"sqlite:///{work / 'outbox.sqlite3'}")
    await bus.connect()
    await store.open()
    try:
        await bus.ensure_stream(OUTBOX_STREAM)
        b = OutboxBench(bus, store, args.outbox_rows, args.outbox_window, nats_pid)
        await b.round(99, record=False)  # warm-up: imports, the SQLite file, the stream
        for r in range(args.rounds):
            await b.round(r, record=True)
    finally:
        await store.close()
        await bus.close()
    summary = summarize_outbox(b.results, args.outbox_rows)
    return {"rows": args.outbox_rows, "window": args.outbox_window, "store": "sqlite", **summary}


def print_outbox(report: dict[str, Any]) -> None:
    o = report["outbox"]
    title = (
        f"outbox relay, before (sequential) and after (pipelined, window {o['window']}) - {o['rows']} rows "
        f"x {report['rounds']} rounds, SQLite"
    )
    table = Table(title=title, title_justify="left")
    for col in ("rows about", "relay", "rows/s (median)", "relay CPU ms/row", "nats CPU ms/row", "runs rows/s"):
        table.add_column(col, justify="left" if col in ("rows about", "relay", "runs rows/s") else "right")
    for shape, label in (("entities", "one entity each"), ("one_entity", "one entity, all")):
        s = o[shape]
        for relay in RELAYS:
            table.add_row(
                label,
                relay,
                f"{s[f'{relay}_rows_per_s']:,.0f}",
                f"{s[f'{relay}_cpu_ms_per_row']:.3f}",
                f"{s[f'{relay}_nats_ms_per_row']:.3f}",
                " ".join(str(x) for x in s[f"{relay}_runs"]),
            )
        table.add_row(
            "",
            "new ÷ old",
            f"x{s['speedup']:.2f}",
            f"x{s['cpu_ratio']:.2f}",
            f"x{s['nats_cpu_ratio']:.2f}",
            "",
            end_section=True,
        )
    Console(width=max(120, len(title) + 4)).print(table)


def summarize(results: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for op, per in results.items():
        raw, rt = statistics.median(per["raw"]), statistics.median(per["runtime"])
        ratio = rt / raw
        out[op] = {
            "raw_msgs_per_s": round(raw, 1),
            "runtime_msgs_per_s": round(rt, 1),
            "ratio": round(ratio, 4),
            "overhead_pct": round((1 - ratio) * 100, 1),
            "within_target": (1 - ratio) < TARGET_OVERHEAD,
            "raw_runs": [round(x, 1) for x in per["raw"]],
            "runtime_runs": [round(x, 1) for x in per["runtime"]],
        }
    return out


def print_table(summary: dict[str, Any], meta: dict[str, Any]) -> None:
    title = (
        f"worldmill bus vs raw nats-py - {meta['messages']} msgs x {meta['rounds']} rounds, "
        f"{meta['payload_bytes']} B payload, nats-server {meta['nats_server_version']}"
    )
    table = Table(title=title, title_justify="left")
    for col in ("operation", "raw msg/s (median)", "runtime msg/s (median)", "ratio", "overhead"):
        table.add_column(col, justify="left" if col == "operation" else "right")
    table.add_column("runs raw / runtime")
    for op, s in summary.items():
        over = f"{s['overhead_pct']:.1f}%"
        over = f"[green]{over}[/green]" if s["within_target"] else f"[red]{over}[/red]"
        runs = " / ".join(" ".join(f"{x / 1000:.1f}k" for x in s[k]) for k in ("raw_runs", "runtime_runs"))
        raw, rt = f"{s['raw_msgs_per_s']:,.0f}", f"{s['runtime_msgs_per_s']:,.0f}"
        table.add_row(op, raw, rt, f"{s['ratio']:.3f}", over, runs)
    Console(width=max(120, len(title) + 4)).print(table)


async def bench(url: str, args: argparse.Namespace, work: Path, nats_pid: int) -> dict[str, Any]:
    outbox = await outbox_bench(url, args, work, nats_pid) if args.outbox_rows else None
    b = Bench(url, args.messages, args.window, args.batch, args.concurrency)
    try:
        await b.open()
        v = b.raw.connected_server_version
        server_version = f"{v.major}.{v.minor}.{v.patch}"
        # Warm-up (not recorded): imports, pydantic caches, JetStream file store, connections.
        await b.round(99, min(args.messages, 500), record=False)
        t0 = time.perf_counter()
        for r in range(args.rounds):
            await b.round(r, args.messages, record=True)
        measured_s = time.perf_counter() - t0
    finally:
        await b.close()
    summary = summarize(b.results)
    payload_bytes = len(encode(wrap(b.msgs[0], source="bench", event_id=event_id("r00psr", 0))))
    return {
        "benchmark": "worldmill.bus",
        "messages": args.messages,
        "rounds": args.rounds,
        "payload_bytes": payload_bytes,
        "publish_window": args.window,
        "consume_batch": args.batch,
        "consumer_concurrency": args.concurrency,
        "nats_server_version": server_version,
        "nats_py_version": getattr(nats, "__version__", None) or package_version("nats-py", default=None),
        "target_overhead_pct": TARGET_OVERHEAD * 100,
        "measured_seconds": round(measured_s, 2),
        "results": summary,
        "publish_ratio": summary["publish_seq"]["ratio"],
        "publish_conc_ratio": summary["publish_conc"]["ratio"],
        "consume_ratio": summary["consume"]["ratio"],
        "all_within_target": all(s["within_target"] for s in summary.values()),
        "outbox": outbox,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--messages", type=int, default=5000, help="messages per measurement (default 5000)")
    add("--rounds", type=int, default=5, help="interleaved rounds; medians are reported (default 5)")
    add("--window", type=int, default=200, help="concurrent publish window / preload window")
    add("--batch", type=int, default=256, help="consume fetch batch = runtime prefetch")
    add("--concurrency", type=int, default=1, help="runtime Consumer concurrency (raw is sequential)")
    add("--outbox-rows", type=int, default=300, help="outbox rows per relay measurement (default 300; 0 skips it)")
    add("--outbox-window", type=int, default=DEFAULT_WINDOW, help=f"OutboxRelay window (default {DEFAULT_WINDOW})")
    add("--log-level", default="INFO", help="runtime log level, as in a deployed service (stderr)")
    add("--strict", action="store_true", help="exit 1 when an overhead is over the 20%% target")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.rounds < 1 or args.window < 1 or args.batch < 1 or args.concurrency < 1:
        parser.error("--messages, --rounds, --window, --batch and --concurrency must be >= 1")
    if args.outbox_rows < 0 or args.outbox_window < 1:
        parser.error("--outbox-rows must be >= 0 and --outbox-window >= 1")
    configure_logging(args.log_level, json=True, service="bench")

    with tempfile.TemporaryDirectory(prefix="worldmill-bench-") as tmp:
        proc, endpoint = start_nats(Path(tmp))
        try:
            report = asyncio.run(bench(endpoint.url, args, Path(tmp), proc.pid))
        finally:
            proc.stop()
    print_table(report["results"], report)
    if report["outbox"]:
        print_outbox(report)
    print(json.dumps(report, separators=(",", ":")))
    return 1 if args.strict and not report["all_within_target"] else 0


if __name__ == "__main__":
    sys.exit(main())
