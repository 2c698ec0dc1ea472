"""The synchronous client, :class:`Worldmill` (one :class:`httpx.Client` per service)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

import httpx

from worldmill.client import _ops
from worldmill.client._ops import P
from worldmill.client.discovery import STORE, Endpoints, StoreConfig, from_env, local
from worldmill.client.errors import APIError, GenerationFailedError, UnavailableError, error_for
from worldmill.client.results import QuickResult
from worldmill.contracts.augment import Augmentation, ControlSpec
from worldmill.contracts.catalog import (
    AssetDetail,
    AssetSummary,
    DeletionPlan,
    DeletionRequest,
    GenerationStatus,
    VerifyReport,
    VerifyRequest,
)
from worldmill.contracts.generation import GenerationAccepted, RunRecord
from worldmill.contracts.prompts import ManifestResult, PromptDetail, PromptSpec
from worldmill.runtime.errors import StoreUnavailableError
from worldmill.runtime.store import ObjectStore

T = TypeVar("T")


def _hash_stream(chunks: Iterator[bytes], dest: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with dest.open("wb") as fh:
        for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
            fh.write(chunk)
    return digest.hexdigest(), size


class Worldmill:
    """Typed access to every worldmill service over HTTP.

    ``Worldmill(urls={"prompt": ..., "generate": ..., "catalog": ...}, token=...)``, or
    :meth:`from_env` (``WM_<SERVICE>_URL``, ``WM_API_TOKEN``, ``WM_S3_*``), or :meth:`local` (the
    environment, then the stack ``worldmill up`` runs in ``data_dir``). Use it as a context manager,
    or call :meth:`close`. Only the services a method needs must be configured.
    """

    def __init__(
        self,
        urls: Mapping[str, str] | None = None,
        token: str | None = None,
        *,
        store: StoreConfig | ObjectStore | None = None,
        timeout_s: float = 60.0,
        poll_s: float = 0.5,
        requested_by: str = "api",
        endpoints: Endpoints | None = None,
    ) -> None:
        if endpoints is None:
            endpoints = Endpoints(
                urls=dict(urls or {}), token=token, store=store if isinstance(store, StoreConfig) else None
            )
        self.endpoints = endpoints
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.requested_by = requested_by
        self._store: ObjectStore | None = store if isinstance(store, ObjectStore) else None
        self._clients: dict[str, httpx.Client] = {}
        self._plain: httpx.Client | None = None

    # -- construction and lifetime -------------------------------------------------------------------

    @classmethod
    def from_env(cls, **kwargs: Any) -> Self:
        """Services from ``WM_<SERVICE>_URL`` and ``WM_API_TOKEN``; the object store from ``WM_S3_*``."""
        return cls(endpoints=from_env(), **kwargs)

    @classmethod
    def local(cls, data_dir: Path | str = ".worldmill", **kwargs: Any) -> Self:
        """The environment first, then the local stack running in ``data_dir`` (``worldmill up``)."""
        return cls(endpoints=local(data_dir), **kwargs)

    def close(self) -> None:
        """Close every connection pool."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        if self._plain is not None:
            self._plain.close()
            self._plain = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- the driver ------------------------------------------------------------------------------------

    def _client(self, service: str) -> httpx.Client:
        if service not in self._clients:
            token = self.endpoints.token
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            url = self.endpoints.url(service)
            self._clients[service] = httpx.Client(base_url=url, headers=headers, timeout=self.timeout_s)
        return self._clients[service]

    def _object_store(self) -> ObjectStore:
        if self._store is None:
            self._store = self.endpoints.store_config().open()
        return self._store

    def _call(self, call: _ops.Call) -> httpx.Response:
        client = self._client(call.service)
        try:
            resp = client.request(call.method, call.path, params=call.params, json=call.json)
        except httpx.TransportError as exc:
            raise UnavailableError(
                call.service, str(client.base_url).rstrip("/"), str(exc) or type(exc).__name__
            ) from exc
        if resp.status_code >= 400:
            raise error_for(call.service, resp)
        return resp

    def _fetch(self, fetch: _ops.Fetch) -> tuple[str, int]:
        if self._plain is None:
            self._plain = httpx.Client(timeout=self.timeout_s, follow_redirects=True)
        try:
            with self._plain.stream("GET", fetch.url) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise error_for(STORE, resp)
                return _hash_stream(resp.iter_bytes(1024 * 1024), fetch.dest)
        except httpx.TransportError as exc:
            raise UnavailableError(STORE, fetch.url.split("?", 1)[0], str(exc) or type(exc).__name__) from exc

    def _store_task(self, task: _ops.StoreTask) -> Any:
        store = self._object_store()

        async def work() -> Any:
            return await task.run(store)

        # A thread of its own: works whether or not the caller's thread runs an event loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            try:
                return pool.submit(asyncio.run, work()).result()
            except StoreUnavailableError as exc:
                raise UnavailableError(STORE, store.endpoint, str(exc)) from exc

    def _step(self, step: _ops.Step) -> Any:
        if isinstance(step, _ops.Call):
            return self._call(step)
        if isinstance(step, _ops.Sleep):
            time.sleep(step.seconds)
            return None
        if isinstance(step, _ops.Fetch):
            return self._fetch(step)
        return self._store_task(step)

    def _run(self, op: _ops.Op[T]) -> T:
        try:
            step = next(op)
            while True:
                try:
                    answer = self._step(step)
                except Exception as exc:  # handed to the operation, which may handle it
                    step = op.throw(exc)
                else:
                    step = op.send(answer)
        except StopIteration as stop:
            result: T = stop.value
            return result

    def _pages(self, page: Callable[[str | None], _ops.Op[P]]) -> Iterator[P]:
        cursor: str | None = None
        while True:
            got = self._run(page(cursor))
            yield got
            cursor = got.next_cursor
            if not cursor:
                return

    # -- manifests and prompts -------------------------------------------------------------------------

    def submit_manifest(self, path_or_text: str | Path, *, dry_run: bool = False) -> ManifestResult:
        """Check a manifest (a file, or its text) and, unless ``dry_run``, store its specs as new versions.

        Raises :class:`RequestRejectedError` with every problem (``loc``, ``msg``, ``type``, ``line``, ``column``).
        """
        return self._run(_ops.submit_manifest(path_or_text, dry_run=dry_run))

    def prompts(
        self,
        *,
        manifest: str | None = None,
        series: str | None = None,
        scenario: str | None = None,
        tags: Sequence[str] | None = None,
        risk: str | None = None,
        duration: float | str | None = None,
        model: str | None = None,
        upsample: bool | None = None,
        upsampled: bool | None = None,
        page_size: int = _ops.PAGE,
    ) -> Iterator[PromptSpec]:
        """The latest version of every spec matching all filters given, by id (every page, lazily)."""
        params = _ops._params(
            manifest=manifest,
            series=series,
            scenario=scenario,
            tag=list(tags) if tags else None,
            risk=risk,
            duration=duration,
            model=model,
            upsample=upsample,
            upsampled=upsampled,
        )
        for page in self._pages(lambda cursor: _ops.prompt_page(params, cursor, page_size)):
            yield from page.items

    def prompt(self, prompt_id: str) -> PromptDetail:
        """A spec's latest version (``.latest``) and its history; :class:`NotFoundError` if there is no such spec."""
        return self._run(_ops.prompt(prompt_id))

    # -- generation ------------------------------------------------------------------------------------

    def generate(
        self,
        prompt_ids: Sequence[str] | None = None,
        *,
        manifest: str | Path | None = None,
        max_attempts: int = 3,
        request_id: str | None = None,
        wait_for_specs_s: float = 10.0,
    ) -> GenerationAccepted:
        """Queue one run per spec: the ids given plus every spec of ``manifest`` (a name, or a file: submitted).

        Repeat ``request_id`` to make the request idempotent. Raises :class:`RequestRejectedError` for unknown
        prompt ids (after ``wait_for_specs_s``: new specs take a moment to reach the generate service) or
        specs the models cannot meet.
        """
        return self._run(
            _ops.generate(
                prompt_ids,
                manifest=manifest,
                max_attempts=max_attempts,
                request_id=request_id,
                requested_by=self.requested_by,
                wait_for_specs_s=wait_for_specs_s,
            )
        )

    def wait(
        self,
        runs: _ops.Waitable,
        *,
        timeout: float = 3600.0,
        on_progress: _ops.ProgressCallback | None = None,
        poll_s: float | None = None,
    ) -> list[RunRecord]:
        """Poll until every run is final (ready, failed, canceled, lost) and return them.

        ``runs``: a :class:`GenerationAccepted`, a request id, a run id, or a list of those.
        ``on_progress(done, total, runs)`` is called each time the number of finished runs changes.
        Raises :class:`WaitTimeoutError` (``.runs``: the last view) after ``timeout`` seconds.
        """
        return self._run(_ops.wait(runs, timeout_s=timeout, poll_s=poll_s or self.poll_s, on_progress=on_progress))

    def runs(
        self,
        *,
        state: str | None = None,
        prompt_id: str | None = None,
        request_id: str | None = None,
        page_size: int = _ops.PAGE,
    ) -> Iterator[RunRecord]:
        """Runs by id, filtered by state, prompt or request (every page, lazily)."""
        params = _ops._params(state=state, prompt_id=prompt_id, request_id=request_id)
        for page in self._pages(lambda cursor: _ops.run_page(params, cursor, page_size)):
            yield from page.items

    def run(self, run_id: str) -> RunRecord:
        """A run's latest state, attempts, video and provenance references."""
        return self._run(_ops.run(run_id))

    def cancel(self, run_id: str) -> RunRecord:
        """Cancel a queued run at once or a running one between two steps; :class:`ConflictError` if it has finished."""
        return self._run(_ops.cancel(run_id))

    # -- augmentation ----------------------------------------------------------------------------------

    def augment_file(
        self,
        path: str | Path,
        *,
        controls: str | Sequence[ControlSpec | Mapping[str, Any]] | None = None,
        template: str | None = None,
        prompt: str | None = None,
        model: str | None = None,
        prefix: str = "",
        force: bool = False,
        wait: bool = True,
        timeout: float = 3600.0,
    ) -> Augmentation:
        """Upload a local video to the inputs bucket (as ``worldmill augment`` does) and augment it.

        ``controls``: ``"edge=0.6,depth=0.4"`` or control specs. With ``wait``, returns the augmentation
        once passed, failed or rejected (check ``.state``, ``.output``, ``.reason``).
        """
        params = _ops.augment_params(controls, template=template, prompt=prompt, model=model)
        return self._run(
            _ops.augment_file(
                Path(path),
                params,
                prefix=prefix,
                force=force,
                requested_by=self.requested_by,
                wait=wait,
                timeout_s=timeout,
                poll_s=self.poll_s,
            )
        )

    def augmentation(self, augmentation_id: str) -> Augmentation:
        """One augmentation with its lineage."""
        return self._run(_ops.augmentation(augmentation_id))

    # -- the catalog -----------------------------------------------------------------------------------

    def search(
        self,
        *,
        manifest: str | None = None,
        series: str | None = None,
        scenario: str | None = None,
        risk_level: str | None = None,
        model: str | None = None,
        qa_status: Literal["pending", "passed", "failed"] | None = None,
        kind: Literal["video", "augmentation"] | None = None,
        tags: Sequence[str] | None = None,
        q: str | None = None,
        min_duration: float | None = None,
        max_duration: float | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        min_rating: float | None = None,
        page_size: int = 100,
    ) -> Iterator[AssetSummary]:
        """Catalogued assets matching every filter, newest first (every page, lazily)."""
        params = _ops._params(
            manifest=manifest,
            series=series,
            scenario=scenario,
            risk_level=risk_level,
            model=model,
            qa_status=qa_status,
            kind=kind,
            tag=list(tags) if tags else None,
            q=q,
            min_duration=min_duration,
            max_duration=max_duration,
            created_from=created_from,
            created_to=created_to,
            min_rating=min_rating,
        )
        for page in self._pages(lambda cursor: _ops.asset_page(params, cursor, page_size)):
            yield from page.items

    def delete(
        self,
        *,
        assets: Iterable[str] = (),
        runs: Iterable[str] = (),
        prompts: Iterable[str] = (),
        dry_run: bool = False,
        force: bool = False,
        reason: str = "",
    ) -> DeletionPlan:
        """Delete assets, runs or the videos of specs with everything their lineage holds.

        ``dry_run`` answers the plan only; an asset an export holds raises ``ConflictError`` unless
        ``force``; an unknown id raises ``NotFoundError`` (nothing is deleted then).
        """
        request = DeletionRequest(
            assets=tuple(assets),
            runs=tuple(runs),
            prompts=tuple(prompts),
            dry_run=dry_run,
            force=force,
            reason=reason,
            requested_by=self.requested_by,
        )
        return self._run(_ops.delete(request))

    def verify(self, *, fix: bool = False, min_orphan_age_s: float = 3600.0) -> VerifyReport:
        """The catalog against the stored objects (missing, mismatched, orphaned); ``fix`` repairs what it can."""
        request = VerifyRequest(fix=fix, min_orphan_age_s=min_orphan_age_s, requested_by=self.requested_by)
        return self._run(_ops.verify(request))

    def asset(self, asset_id: str) -> AssetDetail:
        """One asset: findings, provenance, lineage, ratings, notes, presigned links."""
        return self._run(_ops.asset(asset_id))

    def wait_for_asset(self, asset_id: str, *, timeout: float = 120.0, verdict: bool = False) -> AssetDetail:
        """The asset once the catalog has it (with ``verdict``: once QA has judged it)."""
        return self._run(_ops.wait_asset(asset_id, timeout_s=timeout, poll_s=self.poll_s, verdict=verdict))

    def status(self, manifest: str | Path) -> GenerationStatus:
        """A manifest's ``generation_status.json``: what exists, passed, failed, is missing or in flight."""
        return self._run(_ops.status(manifest))

    def download(self, asset_id: str, dest: str | Path, *, expected_sha256: str | None = None) -> Path:
        """The asset's video to ``dest`` (a file, a folder, or a string ending in ``/``), sha256 verified.

        Raises :class:`ChecksumMismatchError` (and leaves nothing at ``dest``) when the bytes do not match.
        """
        return self._run(_ops.download(asset_id, dest, expected_sha256=expected_sha256))

    # -- all at once -----------------------------------------------------------------------------------

    def quick_generate(
        self,
        prompt: str,
        *,
        duration_s: float = 5.0,
        model: str | None = None,
        fps: int | None = None,
        resolution: str | None = None,
        steps: int | None = None,
        variants: int = 1,
        negative_prompt: str | None = None,
        name: str | None = None,
        max_attempts: int = 3,
        timeout: float = 3600.0,
        on_progress: _ops.ProgressCallback | None = None,
        download_to: str | Path | None = None,
    ) -> QuickResult:
        """One prompt to finished videos: a one-scenario manifest submitted, generated and waited for.

        The manifest's name is derived from the arguments (unless ``name`` is given), so asking again
        reuses the same specs. With ``download_to`` each video is fetched (sha256 verified) into that
        folder once the catalog has it. Raises :class:`GenerationFailedError` if a run does not end ready.
        """
        text = _ops.quick_manifest(
            prompt,
            name=name,
            duration_s=duration_s,
            model=model,
            fps=fps,
            resolution=resolution,
            steps=steps,
            variants=variants,
            negative_prompt=negative_prompt,
        )
        submitted = self.submit_manifest(text)
        accepted = self.generate(manifest=submitted.manifest, max_attempts=max_attempts)
        runs = self.wait(accepted, timeout=timeout, on_progress=on_progress)
        if any(r.state != "ready" for r in runs):
            raise GenerationFailedError(runs)
        videos: list[Path] = []
        if download_to is not None:
            folder = Path(download_to)
            folder.mkdir(parents=True, exist_ok=True)
            for r in runs:
                if r.asset_id is None:
                    raise APIError("generate", 200, f"run {r.run_id} is ready without an asset id")
                self.wait_for_asset(r.asset_id, timeout=timeout)
                videos.append(self.download(r.asset_id, folder))
        return QuickResult(manifest=submitted, request=accepted, runs=runs, videos=videos)
