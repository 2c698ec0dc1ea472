"""Resident Cosmos-Transfer2.5 worker: NVIDIA's inference behind worldmill's small HTTP protocol.

Runs in NVIDIA's image (``docker/cosmos-transfer-native.Dockerfile``), never in worldmill's: it
imports ``cosmos_transfer2`` and calls ``Control2WorldInference`` (NVIDIA's code is only called,
not copied). The protocol (``docs/native-transfer.md``) is served with the standard library
only, so the worker adds nothing to NVIDIA's pinned environment:

* ``PUT /v1/jobs/{id}/files/{name}`` — the input / a control video (raw body, ``X-Content-SHA256``)
* ``POST /v1/jobs`` — ``{"job_id", "spec", "files": {name: sha256}}``; the same id again is no new work
* ``GET /v1/jobs/{id}`` — state, chunk/chunks, step/steps, error; ``DELETE /v1/jobs/{id}`` — cancel
* ``GET /v1/jobs/{id}/video`` — the MP4; ``GET /v1/health``; ``GET /v1/info``

Multi-GPU: start it under ``torchrun --nproc_per_node=N``; rank 0 serves HTTP and broadcasts each
job to the other ranks, which run the same ``generate`` call (NVIDIA's context parallelism).

This program has not been run against NVIDIA's code here (no GPU, no NVIDIA image): the HTTP and
job layer (:class:`WorkerServer`) is exercised by worldmill's tests with a stand-in engine.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

PROTOCOL_VERSION = 1
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_FILE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}\.mp4$")
#: Spec fields that name files; they must be names uploaded with the job.
_CONTROL_KEYS = ("edge", "vis", "depth", "seg")

#: ``progress(chunk, chunks, step, steps)``.
Progress = Callable[[int, int, int, int], None]


class SpecError(Exception):
    """The spec cannot run as sent (a 4xx / a failed job of kind ``invalid``), naming the field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


class Blocked(Exception):  # noqa: N818 - an outcome
    """NVIDIA's guardrail blocked the prompt or the video."""


class CanceledJob(Exception):  # noqa: N818 - an outcome
    """The job was canceled while it ran."""


class Engine(Protocol):
    """What runs a spec: NVIDIA's inference (:class:`CosmosEngine`) or a test's stand-in."""

    def info(self) -> dict[str, Any]: ...

    def validate(self, spec: dict[str, Any]) -> None:
        """Raise :class:`SpecError` for a spec NVIDIA's ``InferenceArguments`` refuses."""
        ...

    def run(self, spec: dict[str, Any], out_dir: Path, progress: Progress, canceled: Callable[[], bool]) -> Path:
        """Generate; return the MP4. :class:`Blocked`, :class:`CanceledJob`, :class:`SpecError` or any error."""
        ...


@dataclass
class Job:
    job_id: str
    spec: dict[str, Any]
    files: dict[str, str]
    folder: Path
    state: str = "queued"
    chunk: int = 0
    chunks: int = 1
    step: int = 0
    steps: int = 1
    error: dict[str, Any] | None = None
    video: Path | None = None
    cancel: bool = False
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def status(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "state": self.state,
            "chunk": self.chunk,
            "chunks": self.chunks,
            "step": self.step,
            "steps": self.steps,
            "error": self.error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def _resolve(spec: dict[str, Any], folder: Path, files: dict[str, str]) -> dict[str, Any]:
    """The spec with its file names made absolute paths in the job's folder; only uploaded names."""
    resolved = json.loads(json.dumps(spec))

    def one(where: str, name: Any) -> str:
        if not isinstance(name, str) or name not in files:
            raise SpecError(where, f"{name!r} is not a file uploaded with this job ({sorted(files)})")
        return str(folder / name)

    resolved["video_path"] = one("video_path", spec.get("video_path"))
    for key in _CONTROL_KEYS:
        block = resolved.get(key)
        if isinstance(block, dict) and block.get("control_path") is not None:
            block["control_path"] = one(f"{key}.control_path", block["control_path"])
    return resolved


class WorkerServer:
    """Jobs by id, one at a time on one engine, behind the protocol's HTTP endpoints."""

    def __init__(self, engine: Engine, root: Path, host: str = "0.0.0.0", port: int = 8700) -> None:  # noqa: S104
        self.engine = engine
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.queue: queue.Queue[str | None] = queue.Queue()
        handler = type("Handler", (_Handler,), {"worker": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        """Serve and run jobs in background threads (:meth:`stop` ends both)."""
        for target in (self.httpd.serve_forever, self._run_jobs):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.queue.put(None)
        with self.lock:
            for job in self.jobs.values():
                job.cancel = True
        for thread in self._threads:
            thread.join(timeout=10)

    # -- the protocol -------------------------------------------------------------------------

    def put_file(self, job_id: str, name: str, body: bytes, sha256: str | None) -> tuple[int, dict[str, Any]]:
        if not _ID.match(job_id) or not _FILE.match(name):
            return 400, _error("file", f"bad job id or file name {job_id!r}/{name!r}")
        digest = hashlib.sha256(body).hexdigest()
        if sha256 is not None and sha256 != digest:
            return 400, _error("file", f"{name}: sha256 {digest} differs from X-Content-SHA256 {sha256}")
        folder = self.root / job_id
        folder.mkdir(parents=True, exist_ok=True)
        part = folder / f"{name}.part"
        part.write_bytes(body)
        part.replace(folder / name)
        return 200, {"name": name, "sha256": digest, "size": len(body)}

    def submit(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        job_id, spec, files = body.get("job_id"), body.get("spec"), body.get("files") or {}
        if not isinstance(job_id, str) or not _ID.match(job_id):
            return 400, _error("job_id", f"{job_id!r} is not a job id")
        if not isinstance(spec, dict) or not isinstance(files, dict):
            return 400, _error("spec", "spec must be an object and files a {name: sha256} object")
        folder = self.root / job_id
        with self.lock:
            known = self.jobs.get(job_id)
            if known is not None and (known.spec, known.files) != (spec, files):
                return 409, _error("job_id", f"job {job_id} exists with another spec or files")
            if known is not None and known.state not in ("failed", "canceled"):
                return 200, known.status()
        for name, sha in files.items():
            path = folder / str(name)
            if not _FILE.match(str(name)) or not path.is_file():
                return 400, _error(f"files.{name}", "was not uploaded (PUT /v1/jobs/{id}/files/{name} first)")
            if hashlib.sha256(path.read_bytes()).hexdigest() != sha:
                return 400, _error(f"files.{name}", "the uploaded bytes have another sha256")
        try:
            resolved = _resolve(spec, folder, {str(k): str(v) for k, v in files.items()})
            self.engine.validate(resolved)
        except SpecError as exc:
            return 422, _error(exc.field, exc.message)
        job = Job(job_id=job_id, spec=spec, files=dict(files), folder=folder)
        job.steps = int(spec.get("num_steps") or 1)
        with self.lock:
            self.jobs[job_id] = job
        self.queue.put(job_id)
        return 202, job.status()

    def status(self, job_id: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            job = self.jobs.get(job_id)
            return (404, _error("job_id", f"unknown job {job_id}")) if job is None else (200, job.status())

    def cancel(self, job_id: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return 404, _error("job_id", f"unknown job {job_id}")
            if job.state == "queued":
                job.state, job.updated_at = "canceled", time.time()
            elif job.state == "running":
                job.cancel = True
            return 202, job.status()

    def video(self, job_id: str) -> tuple[int, Path | dict[str, Any]]:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return 404, _error("job_id", f"unknown job {job_id}")
            if job.state != "succeeded" or job.video is None:
                return 409, _error("state", f"job {job_id} is {job.state}, not succeeded")
            return 200, job.video

    # -- running ------------------------------------------------------------------------------

    def _run_jobs(self) -> None:
        while (job_id := self.queue.get()) is not None:
            with self.lock:
                job = self.jobs.get(job_id)
                if job is None or job.state != "queued":
                    continue
                job.state, job.updated_at = "running", time.time()
            self._run(job)

    def _run(self, job: Job) -> None:
        def progress(chunk: int, chunks: int, step: int, steps: int) -> None:
            with self.lock:
                job.chunk, job.chunks, job.step, job.steps, job.updated_at = chunk, chunks, step, steps, time.time()

        out_dir = job.folder / "out"
        shutil.rmtree(out_dir, ignore_errors=True)
        state, error, video = "succeeded", None, None
        try:
            video = self.engine.run(
                _resolve(job.spec, job.folder, job.files), out_dir, progress, canceled=lambda: job.cancel
            )
        except CanceledJob:
            state, error = "canceled", {"kind": "canceled", "message": "canceled while running"}
        except Blocked as exc:
            state, error = "blocked", {"kind": "blocked", "what": str(exc), "message": str(exc)}
        except SpecError as exc:
            state, error = "failed", {"kind": "invalid", "field": exc.field, "message": exc.message}
        except Exception as exc:
            state, error = "failed", {"kind": "internal", "message": f"{type(exc).__name__}: {exc}"[:2000]}
        with self.lock:
            job.state, job.error, job.video, job.updated_at = state, error, video, time.time()
            if state == "succeeded":
                job.chunk, job.step = job.chunks - 1, job.steps


def _error(field_name: str, message: str) -> dict[str, Any]:
    return {"error": {"field": field_name, "message": message}}


class _Handler(BaseHTTPRequestHandler):
    worker: WorkerServer  # HTTP/1.0: one request per connection, nothing outlives a restart

    def log_message(self, format: str, *args: Any) -> None:  # noqa: ARG002 - quiet
        return None

    def _json(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _parts(self) -> list[str]:
        return [p for p in self.path.split("?")[0].split("/") if p]

    def do_GET(self) -> None:
        parts = self._parts()
        if parts == ["v1", "health"]:
            self._json(200, {"status": "ok", "protocol": PROTOCOL_VERSION})
        elif parts == ["v1", "info"]:
            self._json(200, {"protocol": PROTOCOL_VERSION, **self.worker.engine.info()})
        elif len(parts) == 3 and parts[:2] == ["v1", "jobs"]:
            self._json(*self.worker.status(parts[2]))
        elif len(parts) == 4 and parts[:2] == ["v1", "jobs"] and parts[3] == "video":
            code, found = self.worker.video(parts[2])
            if isinstance(found, dict):
                self._json(code, found)
                return
            data = found.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self._json(404, _error("path", f"no such endpoint {self.path}"))

    def do_PUT(self) -> None:
        parts = self._parts()
        body = self._body()
        if len(parts) == 5 and parts[:2] == ["v1", "jobs"] and parts[3] == "files":
            self._json(*self.worker.put_file(parts[2], parts[4], body, self.headers.get("X-Content-SHA256")))
        else:
            self._json(404, _error("path", f"no such endpoint {self.path}"))

    def do_POST(self) -> None:
        parts = self._parts()
        body = self._body()
        if parts != ["v1", "jobs"]:
            self._json(404, _error("path", f"no such endpoint {self.path}"))
            return
        try:
            parsed = json.loads(body)
        except ValueError:
            self._json(400, _error("body", "not JSON"))
            return
        self._json(*self.worker.submit(parsed if isinstance(parsed, dict) else {}))

    def do_DELETE(self) -> None:
        parts = self._parts()
        if len(parts) == 3 and parts[:2] == ["v1", "jobs"]:
            self._json(*self.worker.cancel(parts[2]))
        else:
            self._json(404, _error("path", f"no such endpoint {self.path}"))


# -- NVIDIA's inference -----------------------------------------------------------------------------


class CosmosEngine:
    """``cosmos_transfer2.inference.Control2WorldInference``, one loaded per control set.

    One control loads that control's checkpoint; several load NVIDIA's multibranch checkpoint with
    all four keys as the batch's hint keys (absent controls get weight 0), as NVIDIA's CLI does for
    a batch whose controls differ. Progress is per chunk (NVIDIA's API has no step callback): each
    ``generate_samples_from_batch`` call is one chunk; cancel is checked before each chunk (and
    agreed between the ranks under torchrun).
    """

    def __init__(self, model: str, output_root: Path, *, guardrails: bool, commit: str) -> None:
        import torch  # noqa: PLC0415 - NVIDIA's image only
        from cosmos_transfer2.config import CONTROL_KEYS, InferenceArguments, SetupArguments  # noqa: PLC0415

        self._torch = torch
        self._control_keys = list(CONTROL_KEYS)
        self._arguments = InferenceArguments
        self._setup_cls = SetupArguments
        self.model = model
        self.output_root = output_root
        self.guardrails = guardrails
        self.commit = commit
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self._loaded: tuple[tuple[str, ...], Any] | None = None

    def info(self) -> dict[str, Any]:
        return {
            "nvidia_repo": "nvidia-cosmos/cosmos-transfer2.5",
            "nvidia_commit": self.commit,
            "model": self.model,
            "distilled": self.model.endswith("/distilled"),
            "checkpoint": f"cosmos-transfer2.5/{self.model}" + (" + multibranch" if self._multibranch() else ""),
            "gpus": self.world,
            "context_parallel_size": self.world,
            "guardrails": self.guardrails,
        }

    def _multibranch(self) -> bool:
        return self._loaded is not None and len(self._loaded[0]) > 1

    def validate(self, spec: dict[str, Any]) -> None:
        import pydantic  # noqa: PLC0415

        try:
            self._arguments.model_validate(spec)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            raise SpecError(".".join(str(p) for p in first["loc"]) or "spec", first["msg"]) from exc
        except ValueError as exc:  # model_post_init: no control, vis with image_context_path
            raise SpecError("spec", str(exc)) from exc

    def _inference(self, keys: tuple[str, ...], out_dir: Path) -> Any:
        batch = keys if len(keys) == 1 else tuple(self._control_keys)
        if self._loaded is None or self._loaded[0] != batch:
            from cosmos_transfer2.inference import Control2WorldInference  # noqa: PLC0415

            self._loaded = None
            self._torch.cuda.empty_cache()
            setup = self._setup_cls(
                output_dir=out_dir, model=self.model, disable_guardrails=not self.guardrails, keep_going=True
            )
            self._loaded = (batch, Control2WorldInference(setup, batch_hint_keys=list(batch)))
        return self._loaded[1]

    def run(self, spec: dict[str, Any], out_dir: Path, progress: Progress, canceled: Callable[[], bool]) -> Path:
        if self.world > 1:
            self._broadcast([spec, str(out_dir)])
        return self._run(spec, out_dir, progress, canceled)

    def _run(self, spec: dict[str, Any], out_dir: Path, progress: Progress, canceled: Callable[[], bool]) -> Path:
        sample = self._arguments.model_validate(spec)
        keys = tuple(sample.hint_keys)
        inference = self._inference(keys, out_dir)
        model = inference.inference_pipeline.model
        original = model.generate_samples_from_batch
        frames = int(spec.get("max_frames") or 1)
        chunk, overlap = int(sample.num_video_frames_per_chunk), int(sample.num_conditional_frames)
        chunks = 1 if frames <= chunk else 1 + -(-(frames - chunk) // (chunk - overlap))
        done = 0

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal done
            stop = self._agree(canceled())
            if stop:
                raise CanceledJob
            progress(done, chunks, 0, sample.num_steps)
            result = original(*args, **kwargs)
            progress(done, chunks, sample.num_steps, sample.num_steps)
            done += 1
            return result

        model.generate_samples_from_batch = counted
        try:
            inference.generate([sample], output_dir=out_dir)
        finally:
            model.generate_samples_from_batch = original
        video = out_dir / f"{sample.name}.mp4"
        if self.rank == 0 and not video.is_file():
            raise Blocked("the prompt or the generated video (NVIDIA's guardrail; no output written)")
        return video

    def _agree(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        box = [flag]
        self._torch.distributed.broadcast_object_list(box, src=0)
        return bool(box[0])

    def _broadcast(self, item: list[Any] | None) -> list[Any] | None:
        box = [item]
        self._torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def follow(self) -> None:
        """Ranks > 0: run every job rank 0 broadcasts, until it broadcasts None."""
        while (item := self._broadcast(None)) is not None:
            spec, out_dir = item
            with contextlib.suppress(CanceledJob, Blocked):
                self._run(spec, Path(out_dir), lambda *_: None, lambda: False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a container's port
    parser.add_argument("--port", type=int, default=8700)
    parser.add_argument("--root", type=Path, default=Path("/spool"), help="job folders (uploads, outputs)")
    parser.add_argument("--model", default="edge", help="edge (default), depth, seg, vis, or edge/distilled")
    parser.add_argument("--disable-guardrails", action="store_true")
    args = parser.parse_args()

    from cosmos_oss.init import init_environment  # noqa: PLC0415 - NVIDIA's image only

    init_environment()
    engine = CosmosEngine(
        args.model,
        args.root,
        guardrails=not args.disable_guardrails,
        commit=os.environ.get("COSMOS_TRANSFER_COMMIT", "unknown"),
    )
    if engine.rank != 0:
        engine.follow()
        return
    server = WorkerServer(engine, args.root, args.host, args.port)
    server.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
        if engine.world > 1:
            engine._broadcast(None)


if __name__ == "__main__":
    main()
