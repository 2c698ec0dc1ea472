"""Throughput of the VLM client on prompt-upsampling requests: concurrent next to sequential calls.

Starts a local stand-in for vLLM in a subprocess (uvicorn + Starlette on a free loopback port, stopped
at the end, also on error): ``POST /v1/chat/completions`` reads and parses the request, counts its prompt
tokens (the two hint images by their JPEG size with the Pixtral-12B profile of ``worldmill.upsample``,
the text with its estimate), waits a fixed delay (``--delay-ms``, default 50; an async sleep, so requests
overlap) and answers one paragraph in vLLM's response shape (``chat.completion``, one choice, ``usage``).

Each request is what the upsampler sends: the upsampling system prompt and a user message with two
448x252 JPEG hint frames as base64 ``image_url`` data URLs and the prompt text (about 92 KiB of JSON).
``worldmill.runtime.vlm.VlmClient`` sends ``--requests`` of them in two modes, over ``--rounds``
interleaved rounds (the order alternates per round; each mode warms its connections first, untimed):

* ``sequential``  - a client with ``concurrency=1``, each call awaited before the next;
* ``concurrent``  - a client with ``concurrency=--concurrency``, every call started at once with
  ``asyncio.gather``; the client's own limit decides how many are in flight.

Every answer is checked (one choice, non-empty content, ``finish_reason`` "stop", integer
``usage.prompt_tokens``), and each client's ``prompt_tokens_total`` must equal the sum the server
reported to it; failed calls and failed checks are counted as errors (retries are off by default, so
none is hidden). Reported per mode: median wall seconds and requests/s, p50/p95 latency per call as the
caller sees it (in the concurrent mode this includes waiting for a free slot) and per HTTP round trip
(slot held, to the response headers), the peak number of requests the server saw in flight; then the
speed-up (median concurrent requests/s / median sequential requests/s) next to the ideal,
min(concurrency, requests), since the server delay dominates. The last line of stdout is one JSON
object with every figure; the exit status is 1 on any error.

    .venv/bin/python bench/upsample.py [--requests 64] [--concurrency 8] [--delay-ms 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import math
import multiprocessing
import random
import socket
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import httpx
from PIL import Image, ImageDraw, ImageFilter
from rich.console import Console
from rich.table import Table

from worldmill.runtime.logs import configure_logging
from worldmill.runtime.versions import package_version
from worldmill.runtime.vlm import VlmClient, VlmConfig
from worldmill.upsample.budget import text_tokens
from worldmill.upsample.profiles import UPSAMPLE_SYSTEM_PROMPT, builtin_profiles

MODEL = "mistralai/Pixtral-12B-2409"
PROFILE = builtin_profiles()["pixtral-12b"]
HINT_WIDTH, HINT_HEIGHT = 448, 252
MODES = ("sequential", "concurrent")
#: How long the server subprocess may take to start and to stop.
SERVER_START_TIMEOUT_S = 30.0
SERVER_STOP_TIMEOUT_S = 5.0

PROMPTS = (
    "A delivery robot crosses a wet city sidewalk at dusk and stops for a cyclist.",
    "A forklift lifts a pallet of boxes onto the top shelf of a warehouse rack.",
    "A robot arm picks a red apple from a bowl of fruit and puts it on a plate.",
    "A car drives through a snowy mountain road at night with its headlights on.",
    "Two people carry a sofa up a narrow staircase in an old apartment building.",
    "A humanoid robot opens a fridge door in a small kitchen and takes out a bottle of milk.",
    "A tractor ploughs a muddy field under heavy clouds while birds follow it.",
    "A drone flies low over a harbour as a container ship is unloaded by cranes.",
)

REPLY_TAIL = (
    " The clip opens on a wide shot from about chest height with a 35 mm lens, the camera moving slowly "
    "forward on a steady dolly. Soft light comes from the left and falls across the nearer surfaces, "
    "leaving long, gentle shadows on the ground, while the background stays in even, slightly cooler "
    "light. Every object keeps its size, shape and colour for the whole clip, moves with believable "
    "weight and momentum, and touches the things around it without passing through them. Small details "
    "such as dust in the air, reflections on glass and metal, and the texture of wood, fabric and "
    "concrete stay stable from frame to frame, and the motion ends calmly as the camera comes to rest."
)


# --- the stand-in vLLM server (runs in a subprocess) ------------------------------------------------


def _vllm_error(status: int, kind: str, message: str) -> dict[str, Any]:
    return {"object": "error", "message": message, "type": kind, "param": None, "code": status}


def _image_tokens(url: str) -> int:
    """Pixtral prompt tokens of one ``data:image/...;base64,`` image, from its real size."""
    _, _, data = url.partition(";base64,")
    with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as image:
        return PROFILE.image_tokens(*image.size)


def _prompt_tokens(messages: list[dict[str, Any]]) -> tuple[int, str]:
    """(prompt tokens, user text) of a chat request; raises ValueError on a malformed message list."""
    system, texts, image_tokens = "", [], 0
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            if message["role"] == "system":
                system += content
            else:
                texts.append(content)
            continue
        for part in content:
            if part["type"] == "text":
                texts.append(part["text"])
            elif part["type"] == "image_url":
                image_tokens += _image_tokens(part["image_url"]["url"])
            else:
                raise ValueError(f"unsupported content part {part['type']!r}")
    text = " ".join(texts)
    if not text.strip():
        raise ValueError("no user text")
    return image_tokens + text_tokens(PROFILE, text, system), text


def make_app(delay_s: float) -> Any:
    """A Starlette app answering chat completions like vLLM serving Pixtral-12B, after ``delay_s``."""
    from starlette.applications import Starlette  # noqa: PLC0415 - only the server process needs it
    from starlette.requests import Request  # noqa: PLC0415
    from starlette.responses import JSONResponse  # noqa: PLC0415
    from starlette.routing import Route  # noqa: PLC0415

    stats = {"requests": 0, "prompt_tokens_total": 0, "body_bytes": 0, "in_flight": 0, "peak_in_flight": 0}

    async def completions(request: Request) -> JSONResponse:
        stats["in_flight"] += 1
        stats["peak_in_flight"] = max(stats["peak_in_flight"], stats["in_flight"])
        try:
            raw = await request.body()
            try:
                body = json.loads(raw)
                if body.get("model") != MODEL:
                    msg = f"The model `{body.get('model')}` does not exist."
                    return JSONResponse(_vllm_error(404, "NotFoundError", msg), status_code=404)
                prompt_tokens, text = _prompt_tokens(body["messages"])
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                msg = f"invalid request: {type(exc).__name__}: {exc}"
                return JSONResponse(_vllm_error(400, "BadRequestError", msg), status_code=400)
            await asyncio.sleep(delay_s)
            content = text.strip().rstrip(".") + "." + REPLY_TAIL
            completion_tokens = math.ceil(len(content) / 4)
            stats["requests"] += 1
            stats["prompt_tokens_total"] += prompt_tokens
            stats["body_bytes"] += len(raw)
            return JSONResponse(
                {
                    "id": f"chatcmpl-{uuid.uuid4().hex}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": MODEL,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                }
            )
        finally:
            stats["in_flight"] -= 1

    async def bench_stats(_request: Request) -> JSONResponse:
        """Not part of vLLM: the bench reads the server's own tally (the peak resets on each read)."""
        snapshot = dict(stats)
        stats["peak_in_flight"] = stats["in_flight"]
        return JSONResponse(snapshot)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/bench/stats", bench_stats, methods=["GET"]),
        ]
    )


def serve(delay_s: float, conn: Connection) -> None:
    """Subprocess entry: bind a free loopback port, send it to the parent, serve until SIGTERM."""
    import uvicorn  # noqa: PLC0415

    # proto IPPROTO_TCP, as a socket uvicorn binds itself: asyncio sets TCP_NODELAY only on those, and
    # without it a response's body segment waits out the client's delayed ACK (about 40 ms on Linux).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    conn.send(sock.getsockname()[1])
    conn.close()
    config = uvicorn.Config(
        make_app(delay_s), log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=60
    )
    uvicorn.Server(config).run(sockets=[sock])


def start_server(delay_s: float) -> tuple[BaseProcess, str]:
    """Start the server subprocess; returns it and its base URL once it answers."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=serve, args=(delay_s, child), name="bench-vllm", daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(SERVER_START_TIMEOUT_S):
            raise RuntimeError("the bench server did not report its port")
        base = f"http://127.0.0.1:{parent.recv()}"
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            try:
                httpx.get(f"{base}/bench/stats", timeout=1.0).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or not proc.is_alive():
                    raise RuntimeError(f"the bench server at {base} did not come up") from None
                time.sleep(0.05)
    except BaseException:
        stop_server(proc)
        raise
    return proc, f"{base}/v1"


def stop_server(proc: BaseProcess) -> None:
    proc.terminate()
    proc.join(SERVER_STOP_TIMEOUT_S)
    if proc.is_alive():
        proc.kill()
        proc.join(SERVER_STOP_TIMEOUT_S)


# --- the requests ------------------------------------------------------------------------------------


def hint_jpeg(seed: int) -> bytes:
    """A 448x252 JPEG that compresses like a real frame: sky and ground, shapes, soft edges and grain."""
    rng = random.Random(seed)
    image = Image.new("RGB", (HINT_WIDTH, HINT_HEIGHT))
    draw = ImageDraw.Draw(image)
    horizon = HINT_HEIGHT * 2 // 5
    for y in range(HINT_HEIGHT):
        t = y / HINT_HEIGHT
        sky = (int(120 + 90 * t), int(160 + 60 * t), 230)
        ground = (int(90 - 40 * t), int(80 - 30 * t), int(70 - 20 * t))
        draw.line([(0, y), (HINT_WIDTH, y)], fill=sky if y < horizon else ground)
    for _ in range(24):
        x0, y0 = rng.randrange(HINT_WIDTH), rng.randrange(horizon // 2, HINT_HEIGHT)
        x1, y1 = x0 + rng.randrange(10, 120), y0 + rng.randrange(10, 90)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        (draw.rectangle if rng.random() < 0.6 else draw.ellipse)([x0, y0, x1, y1], fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(1.2))
    grain = Image.effect_noise((HINT_WIDTH, HINT_HEIGHT), 48).convert("RGB")
    image = Image.blend(image, grain, 0.12)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def upsample_messages(prompt: str, hints: list[str]) -> list[dict[str, Any]]:
    """The chat messages of one upsampling request: system prompt, then hint frames and the prompt."""
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": url}} for url in hints]
    parts.append({"type": "text", "text": prompt})
    return [{"role": "system", "content": UPSAMPLE_SYSTEM_PROMPT}, {"role": "user", "content": parts}]


def check_answer(answer: dict[str, Any]) -> tuple[str | None, int]:
    """(problem or None, reported prompt tokens) of one decoded answer."""
    choices = answer.get("choices")
    if not isinstance(choices, list) or len(choices) != 1:
        return "choices", 0
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str) or not content.strip():
        return "empty content", 0
    if choices[0].get("finish_reason") != "stop":
        return "finish_reason", 0
    usage = answer.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    if not isinstance(tokens, int) or tokens < 1:
        return "usage.prompt_tokens", 0
    return None, tokens


# --- the client side ---------------------------------------------------------------------------------


class TimedTransport(httpx.AsyncHTTPTransport):
    """httpx's default transport (same defaults as the one VlmClient builds), timing each round trip."""

    def __init__(self) -> None:
        super().__init__()
        self.round_trips: list[float] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        t0 = time.perf_counter()
        response = await super().handle_async_request(request)
        self.round_trips.append(time.perf_counter() - t0)
        return response


@dataclass
class Mode:
    """One client and everything measured with it over the rounds."""

    name: str
    concurrency: int
    client: VlmClient
    transport: TimedTransport
    walls: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    round_trips: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    answers: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    answer_tokens: int = 0  # usage.prompt_tokens summed over the answers this client got
    server_tokens: int = 0  # what the server counted while only this client was talking to it


async def server_stats(http: httpx.AsyncClient, base_url: str) -> dict[str, int]:
    response = await http.get(base_url.removesuffix("/v1") + "/bench/stats")
    response.raise_for_status()
    stats: dict[str, int] = response.json()
    return stats


async def calls(mode: Mode, batch: list[list[dict[str, Any]]], *, record: bool) -> float:
    """Send ``batch`` with the mode's client (gathered or one by one); returns the wall seconds."""

    async def one(messages: list[dict[str, Any]]) -> None:
        t0 = time.perf_counter()
        try:
            answer = await mode.client.chat(
                messages, max_tokens=PROFILE.default_max_tokens, temperature=PROFILE.default_temperature
            )
        except Exception as exc:  # every failure is counted, whatever its kind
            mode.errors[type(exc).__name__] += 1
            return
        elapsed = time.perf_counter() - t0
        problem, tokens = check_answer(answer)
        if problem is not None:
            mode.errors[f"bad answer: {problem}"] += 1
            return
        mode.answer_tokens += tokens
        if record:
            mode.latencies.append(elapsed)
            mode.answers += 1

    first = len(mode.transport.round_trips)
    t0 = time.perf_counter()
    if mode.concurrency > 1:
        await asyncio.gather(*(one(m) for m in batch))
    else:
        for m in batch:
            await one(m)
    wall = time.perf_counter() - t0
    if record:
        mode.round_trips.extend(mode.transport.round_trips[first:])
    return wall


async def run_mode(mode: Mode, batch: list[list[dict[str, Any]]], http: httpx.AsyncClient, base_url: str) -> None:
    """Warm the mode's connections (untimed), then one timed pass; the server's tally is read around it."""
    before = await server_stats(http, base_url)
    await calls(mode, batch[: mode.concurrency], record=False)  # opens up to `concurrency` connections
    await server_stats(http, base_url)  # resets the server's peak, so it covers the timed pass only
    errors_before = sum(mode.errors.values())
    wall = await calls(mode, batch, record=True)
    after = await server_stats(http, base_url)
    ok = len(batch) - (sum(mode.errors.values()) - errors_before)
    mode.walls.append(wall)
    mode.rps.append(ok / wall)
    mode.peaks.append(after["peak_in_flight"])
    mode.server_tokens += after["prompt_tokens_total"] - before["prompt_tokens_total"]


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100), None when there is nothing to rank."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def summarize(mode: Mode, requests: int) -> dict[str, Any]:
    return {
        "concurrency": mode.concurrency,
        "requests": requests,
        "answers": mode.answers,
        "wall_s": round(statistics.median(mode.walls), 4),
        "rps": round(statistics.median(mode.rps), 2),
        "rps_runs": [round(x, 2) for x in mode.rps],
        "p50_ms": ms(percentile(mode.latencies, 50)),
        "p95_ms": ms(percentile(mode.latencies, 95)),
        "http_p50_ms": ms(percentile(mode.round_trips, 50)),
        "http_p95_ms": ms(percentile(mode.round_trips, 95)),
        "server_peak_in_flight": max(mode.peaks),
        "errors": sum(mode.errors.values()),
        "error_kinds": dict(mode.errors),
        "prompt_tokens_client": mode.client.prompt_tokens_total,
        "prompt_tokens_answers": mode.answer_tokens,
        "prompt_tokens_server": mode.server_tokens,
        "prompt_tokens_ok": mode.client.prompt_tokens_total == mode.server_tokens == mode.answer_tokens,
    }


async def bench(args: argparse.Namespace, base_url: str, hints: list[str]) -> dict[str, Any]:
    batch = [upsample_messages(PROMPTS[i % len(PROMPTS)], hints) for i in range(args.requests)]
    body_bytes = len(json.dumps({"model": MODEL, "messages": batch[0]}).encode())
    modes: dict[str, Mode] = {}
    for name, concurrency in zip(MODES, (1, args.concurrency), strict=True):
        transport = TimedTransport()
        config = VlmConfig(
            base_url=base_url,
            model=MODEL,
            concurrency=concurrency,
            max_retries=args.max_retries,
            timeout_s=args.timeout,
            temperature=PROFILE.default_temperature,
            max_tokens=PROFILE.default_max_tokens,
        )
        modes[name] = Mode(name, concurrency, VlmClient(config, transport=transport), transport)
    async with httpx.AsyncClient(timeout=10.0) as http:
        try:
            t0 = time.perf_counter()
            for r in range(args.rounds):
                for name in MODES if r % 2 == 0 else MODES[::-1]:
                    await run_mode(modes[name], batch, http, base_url)
            measured_s = time.perf_counter() - t0
        finally:
            for mode in modes.values():
                await mode.client.aclose()
        served = await server_stats(http, base_url)
    seq, conc = (summarize(modes[name], args.requests) for name in MODES)
    speedup = conc["rps"] / seq["rps"] if seq["rps"] else 0.0
    ideal = min(args.concurrency, args.requests)
    return {
        "bench": "upsample",
        "delay_ms": args.delay_ms,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "sequential_rps": seq["rps"],
        "concurrent_rps": conc["rps"],
        "speedup": round(speedup, 3),
        "ideal_speedup": ideal,
        "efficiency": round(speedup / ideal, 3),
        "errors": seq["errors"] + conc["errors"],
        "prompt_tokens_ok": seq["prompt_tokens_ok"] and conc["prompt_tokens_ok"],
        "sequential": seq,
        "concurrent": conc,
        "request_body_bytes": body_bytes,
        "model": MODEL,
        "server_requests": served["requests"],
        "server_mean_body_bytes": round(served["body_bytes"] / served["requests"]) if served["requests"] else None,
        "measured_seconds": round(measured_s, 2),
        "httpx_version": package_version("httpx", default=None),
        "uvicorn_version": package_version("uvicorn", default=None),
        "python": sys.version.split()[0],
    }


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(report: dict[str, Any]) -> None:
    title = (
        f"VlmClient upsampling requests vs a local vLLM stand-in - {report['delay_ms']:g} ms server delay, "
        f"{report['requests']} requests x {report['rounds']} rounds"
    )
    table = Table(title=title, title_justify="left")
    columns = ("mode", "concurrency", "requests", "wall s", "req/s", "p50 ms", "p95 ms", "HTTP p50 ms", "HTTP p95 ms")
    for col in (*columns, "server peak", "errors"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    table.add_column("req/s by round")
    for name in MODES:
        s = report[name]
        errors = f"[green]{s['errors']}[/green]" if s["errors"] == 0 else f"[red]{s['errors']}[/red]"
        table.add_row(
            name,
            str(s["concurrency"]),
            str(s["requests"]),
            f"{s['wall_s']:.3f}",
            f"{s['rps']:.1f}",
            _fmt(s["p50_ms"]),
            _fmt(s["p95_ms"]),
            _fmt(s["http_p50_ms"]),
            _fmt(s["http_p95_ms"]),
            str(s["server_peak_in_flight"]),
            errors,
            " ".join(f"{x:.1f}" for x in s["rps_runs"]),
        )
    console = Console(width=150)
    console.print(table)
    jpegs = " + ".join(f"{b / 1024:.1f}" for b in report["jpeg_bytes"])
    tokens = "[green]match[/green]" if report["prompt_tokens_ok"] else "[red]MISMATCH[/red]"
    counts = ", ".join(
        f"{n} {report[n]['prompt_tokens_client']} / {report[n]['prompt_tokens_answers']} / "
        f"{report[n]['prompt_tokens_server']}"
        for n in MODES
    )
    console.print(
        f"speed-up {report['speedup']:.2f}x (ideal {report['ideal_speedup']}x, efficiency {report['efficiency']:.0%})\n"
        f"request body {report['request_body_bytes'] / 1024:.1f} KiB (system prompt, text, 2 JPEG hints "
        f"{HINT_WIDTH}x{HINT_HEIGHT} of {jpegs} KiB)\n"
        f"prompt tokens client / answers / server: {counts} ({tokens})\n"
        "p50/p95: call to answer (concurrent: waiting for a free slot included); HTTP: round trip to the response "
        "headers, slot held; server peak: requests in flight at the server",
        highlight=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--requests", type=int, default=64, help="requests per mode and round (default 64)")
    add("--concurrency", type=int, default=8, help="client concurrency limit of the concurrent mode (default 8)")
    add("--delay-ms", type=float, default=50.0, help="server delay before each answer, in ms (default 50)")
    add("--rounds", type=int, default=3, help="interleaved rounds; medians are reported (default 3)")
    add("--max-retries", type=int, default=0, help="client retries (default 0: every failure is an error)")
    add("--timeout", type=float, default=10.0, help="client timeout per request, in seconds (default 10)")
    add("--log-level", default="WARNING", help="log level on stderr (default WARNING; INFO logs every request)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.rounds < 1:
        parser.error("--requests, --concurrency and --rounds must be >= 1")
    if args.delay_ms < 0 or args.max_retries < 0 or args.timeout <= 0:
        parser.error("--delay-ms and --max-retries must be >= 0, --timeout > 0")
    configure_logging(args.log_level, json=True, service="bench")

    jpegs = [hint_jpeg(seed) for seed in (1, 2)]
    hints = ["data:image/jpeg;base64," + base64.b64encode(j).decode("ascii") for j in jpegs]
    proc, base_url = start_server(args.delay_ms / 1000)
    try:
        report = asyncio.run(bench(args, base_url, hints))
    finally:
        stop_server(proc)
    report["jpeg_bytes"] = [len(j) for j in jpegs]
    print_table(report)
    print(json.dumps(report, separators=(",", ":")))
    return 1 if report["errors"] or not report["prompt_tokens_ok"] else 0


if __name__ == "__main__":
    sys.exit(main())
