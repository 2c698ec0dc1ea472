"""The client's logic, once, for both the sync and the async client (sans-I/O).

Each operation is a generator: it yields what it needs done — an HTTP call to a service
(:class:`Call`, answered with the :class:`httpx.Response`, errors already raised into it as
:class:`~worldmill.client.errors.APIError`), a pause (:class:`Sleep`), a download of a URL
(:class:`Fetch`) or work on the object store (:class:`StoreTask`) — and returns its result. The
drivers in :mod:`worldmill.client.sync` and :mod:`worldmill.client.aio` do the I/O.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml

from worldmill.client.errors import (
    ChecksumMismatchError,
    ClientError,
    NotFoundError,
    RequestRejectedError,
    WaitTimeoutError,
)
from worldmill.contracts.augment import (
    AUGMENT_FINAL_STATES,
    AugmentAccepted,
    Augmentation,
    AugmentParams,
    AugmentSubmission,
    ControlSpec,
)
from worldmill.contracts.base import ObjectLocation
from worldmill.contracts.catalog import (
    AssetDetail,
    AssetPage,
    DeletionPlan,
    DeletionRequest,
    GenerationStatus,
    MediaLink,
    VerifyReport,
    VerifyRequest,
)
from worldmill.contracts.generation import FINAL_STATES, GenerationAccepted, GenerationSubmission, RunPage, RunRecord
from worldmill.contracts.http_errors import ValidationProblem
from worldmill.contracts.keys import INPUTS_BUCKET
from worldmill.contracts.prompts import ManifestResult, ManifestSubmission, PromptDetail, PromptPage
from worldmill.runtime.digest import sha256_file
from worldmill.runtime.store import ObjectStore

T = TypeVar("T")


class Page(Protocol):
    """A page of a listing: its items and the next page's cursor."""

    @property
    def next_cursor(self) -> str | None: ...


P = TypeVar("P", bound=Page)
Params = list[tuple[str, str | int | float | bool | None]]

#: Largest page the services serve.
PAGE = 500
#: Suffixes that make a string a manifest file's path (a manifest's name is lower-case letters, digits, dashes).
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
#: ``on_progress(done, total, runs)``: called each time the number of finished runs changes.
ProgressCallback = Callable[[int, int, list[RunRecord]], object]


@dataclass(frozen=True)
class Call:
    """An HTTP request to one service; answered with its response (error statuses are raised instead)."""

    service: str
    method: str
    path: str
    params: Params | None = None
    json: Any = None


@dataclass(frozen=True)
class Sleep:
    """Wait this long before going on."""

    seconds: float


@dataclass(frozen=True)
class Fetch:
    """Stream ``url`` (a presigned link: no bearer token) to ``dest``; answered with ``(sha256, size)``."""

    url: str
    dest: Path


@dataclass(frozen=True)
class StoreTask:
    """Work on the object store; answered with what ``run`` returns."""

    run: Callable[[ObjectStore], Awaitable[Any]] = field(repr=False)


Step = Call | Sleep | Fetch | StoreTask
Op = Generator[Step, Any, T]


def _params(**values: object) -> Params:
    """Query parameters: None left out, lists repeated, booleans and datetimes as the services read them."""
    out: Params = []
    for key, value in values.items():
        if value is None:
            continue
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            if isinstance(item, bool):
                out.append((key, str(item).lower()))
            elif isinstance(item, datetime):
                out.append((key, item.isoformat()))
            else:
                out.append((key, str(item)))
    return out


# -- manifests and prompts ---------------------------------------------------------------------------


def manifest_text(path_or_text: str | Path) -> str:
    """A manifest's text: a :class:`Path` or an existing file is read; any other string is the text itself."""
    if isinstance(path_or_text, Path):
        return path_or_text.read_text(encoding="utf-8")
    if "\n" not in path_or_text and path_or_text.lower().endswith(MANIFEST_SUFFIXES):
        return Path(path_or_text).read_text(encoding="utf-8")
    if "\n" not in path_or_text and len(path_or_text) < 4096 and Path(path_or_text).is_file():
        return Path(path_or_text).read_text(encoding="utf-8")
    return path_or_text


def is_manifest_file(arg: str | Path) -> bool:
    """Whether ``arg`` names a manifest file rather than a manifest's name."""
    if isinstance(arg, Path):
        return True
    return "\n" not in arg and (arg.lower().endswith(MANIFEST_SUFFIXES) or "/" in arg or Path(arg).is_file())


def manifest_name(arg: str | Path) -> str:
    """A manifest's name: ``arg`` itself, or the ``name`` inside the manifest file ``arg``."""
    if not is_manifest_file(arg):
        return str(arg)
    doc = yaml.safe_load(manifest_text(arg))
    name = doc.get("name") if isinstance(doc, dict) else None
    if not isinstance(name, str) or not name:
        raise ValueError(f"manifest: {arg} has no 'name' (a manifest file must name its dataset)")
    return name


def submit_manifest(path_or_text: str | Path, *, dry_run: bool = False) -> Op[ManifestResult]:
    """``POST /manifests``: check the manifest and, unless ``dry_run``, store its specs (unchanged ones stay)."""
    body = ManifestSubmission(content=manifest_text(path_or_text), dry_run=dry_run)
    resp = yield Call("prompt", "POST", "/manifests", json=body.model_dump(mode="json"))
    return ManifestResult.model_validate(resp.json())


def prompt_page(params: Params, cursor: str | None, limit: int = PAGE) -> Op[PromptPage]:
    """One page of ``GET /prompts``."""
    resp = yield Call("prompt", "GET", "/prompts", params=[*params, *_params(limit=limit, cursor=cursor)])
    return PromptPage.model_validate(resp.json())


def prompt(prompt_id: str) -> Op[PromptDetail]:
    """``GET /prompts/{id}``: the latest version and the history."""
    resp = yield Call("prompt", "GET", f"/prompts/{prompt_id}")
    return PromptDetail.model_validate(resp.json())


def manifest_prompt_ids(manifest: str | Path) -> Op[list[str]]:
    """Every prompt id of ``manifest``: a file is submitted first; a name lists what the prompt service holds.

    Raises :class:`NotFoundError` when no spec of that name is known.
    """
    name = (yield from submit_manifest(manifest)).manifest if is_manifest_file(manifest) else str(manifest)
    ids: list[str] = []
    cursor: str | None = None
    while True:
        page = yield from prompt_page(_params(manifest=name), cursor)
        ids += [p.prompt_id for p in page.items]
        cursor = page.next_cursor
        if not cursor:
            break
    if not ids:
        raise NotFoundError("prompt", 404, f"no manifest named {name!r} is known to the prompt service")
    return ids


# -- generation ---------------------------------------------------------------------------------------


def generate(
    prompt_ids: Sequence[str] | None,
    *,
    manifest: str | Path | None,
    max_attempts: int,
    request_id: str | None,
    requested_by: str,
    wait_for_specs_s: float,
) -> Op[GenerationAccepted]:
    """``POST /generations`` for the ids and every spec of ``manifest``.

    Specs just created reach the generate service through events a moment later: while the only
    problem is prompt ids it has not heard of yet, the request is repeated (up to ``wait_for_specs_s``),
    as :func:`worldmill.runtime.cli_support.post_once_specs_are_known` does for the CLI.
    """
    ids = list(prompt_ids or [])
    if manifest is not None:
        ids += yield from manifest_prompt_ids(manifest)
    if not ids:
        raise ValueError("generate: give prompt_ids or manifest=")
    body = GenerationSubmission(
        prompt_ids=tuple(dict.fromkeys(ids)),
        request_id=request_id,
        max_attempts=max_attempts,
        requested_by=requested_by,
    ).model_dump(mode="json", exclude_none=True)
    deadline = time.monotonic() + wait_for_specs_s
    while True:
        try:
            resp = yield Call("generate", "POST", "/generations", json=body)
        except RequestRejectedError as exc:
            unknown = all(p.type == "unknown prompt" for p in exc.problems)
            if not unknown or time.monotonic() > deadline:
                raise
            yield Sleep(0.25)
            continue
        return GenerationAccepted.model_validate(resp.json())


def run_page(params: Params, cursor: str | None, limit: int = PAGE) -> Op[RunPage]:
    """One page of ``GET /runs``."""
    resp = yield Call("generate", "GET", "/runs", params=[*params, *_params(limit=limit, cursor=cursor)])
    return RunPage.model_validate(resp.json())


def run(run_id: str) -> Op[RunRecord]:
    """``GET /runs/{id}``."""
    resp = yield Call("generate", "GET", f"/runs/{run_id}")
    return RunRecord.model_validate(resp.json())


def cancel(run_id: str) -> Op[RunRecord]:
    """``POST /runs/{id}/cancel``: a queued run at once, a running one between two steps."""
    resp = yield Call("generate", "POST", f"/runs/{run_id}/cancel")
    return RunRecord.model_validate(resp.json())


def request_runs(request_id: str) -> Op[list[RunRecord]]:
    """Every run of a generation request."""
    runs: list[RunRecord] = []
    cursor: str | None = None
    while True:
        page = yield from run_page(_params(request_id=request_id), cursor)
        runs += page.items
        cursor = page.next_cursor
        if not cursor:
            return runs


Waitable = GenerationAccepted | str | Iterable[GenerationAccepted | str]


def _targets(what: Waitable) -> Op[tuple[dict[str, int], list[str]]]:
    """(request id → its run count, run ids) of what to wait for; a string is a run id, else a request id."""
    items: list[GenerationAccepted | str] = [what] if isinstance(what, GenerationAccepted | str) else list(what)
    requests: dict[str, int] = {}
    singles: list[str] = []
    for item in items:
        if isinstance(item, GenerationAccepted):
            requests[item.request_id] = len(item.runs)
            continue
        try:
            yield from run(item)
        except NotFoundError:
            runs = yield from request_runs(item)
            if not runs:
                raise NotFoundError("generate", 404, f"{item!r} is neither a run nor a generation request") from None
            requests[item] = len(runs)
        else:
            singles.append(item)
    return requests, singles


def wait(
    what: Waitable, *, timeout_s: float, poll_s: float, on_progress: ProgressCallback | None
) -> Op[list[RunRecord]]:
    """Poll until every run is final; ``on_progress(done, total, runs)`` each time ``done`` changes.

    Raises :class:`WaitTimeoutError` (with the last view of the runs) when ``timeout_s`` passes first.
    """
    deadline = time.monotonic() + timeout_s
    requests, singles = yield from _targets(what)
    total = sum(requests.values()) + len(singles)
    reported = -1
    while True:
        runs: list[RunRecord] = []
        for request_id in requests:
            runs += yield from request_runs(request_id)
        for run_id in singles:
            runs.append((yield from run(run_id)))
        done = sum(r.state in FINAL_STATES for r in runs)
        if done != reported and on_progress is not None:
            on_progress(done, total, runs)
        reported = done
        if done >= total and len(runs) >= total:
            return runs
        if time.monotonic() > deadline:
            raise WaitTimeoutError(f"{done} of {total} run(s) final after {timeout_s:g} s", runs)
        yield Sleep(poll_s)


# -- the catalog --------------------------------------------------------------------------------------


def asset_page(params: Params, cursor: str | None, limit: int = PAGE) -> Op[AssetPage]:
    """One page of ``GET /assets``."""
    resp = yield Call("catalog", "GET", "/assets", params=[*params, *_params(limit=limit, cursor=cursor)])
    return AssetPage.model_validate(resp.json())


def asset(asset_id: str) -> Op[AssetDetail]:
    """``GET /assets/{id}``: findings, provenance, lineage, ratings, notes, presigned links."""
    resp = yield Call("catalog", "GET", f"/assets/{asset_id}")
    return AssetDetail.model_validate(resp.json())


def delete(request: DeletionRequest) -> Op[DeletionPlan]:
    """``POST /deletions``: assets, runs or specs' videos with their objects (``dry_run``: the plan only).

    An unknown id raises :class:`NotFoundError`, an asset an export holds :class:`ConflictError`
    (unless ``force``); nothing is deleted then.
    """
    resp = yield Call("catalog", "POST", "/deletions", json=request.model_dump(mode="json"))
    return DeletionPlan.model_validate(resp.json())


def verify(request: VerifyRequest) -> Op[VerifyReport]:
    """``POST /verify``: the catalog against the stored objects; ``fix`` repairs what it can."""
    resp = yield Call("catalog", "POST", "/verify", json=request.model_dump(mode="json"))
    return VerifyReport.model_validate(resp.json())


def wait_asset(asset_id: str, *, timeout_s: float, poll_s: float, verdict: bool) -> Op[AssetDetail]:
    """The asset's detail once the catalog has it (and, with ``verdict``, its QA verdict)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            detail = yield from asset(asset_id)
        except NotFoundError:
            detail = None
        if detail is not None and (not verdict or detail.asset.qa_status != "pending"):
            return detail
        if time.monotonic() > deadline:
            state = "has no QA verdict" if detail is not None else "is not in the catalog"
            raise WaitTimeoutError(f"asset {asset_id} {state} after {timeout_s:g} s")
        yield Sleep(poll_s)


def status(manifest: str | Path) -> Op[GenerationStatus]:
    """``GET /manifests/{name}/status`` (a manifest file: its name is read from it)."""
    resp = yield Call("catalog", "GET", f"/manifests/{manifest_name(manifest)}/status")
    return GenerationStatus.model_validate(resp.json())


def download(asset_id: str, dest: str | Path, *, expected_sha256: str | None) -> Op[Path]:
    """The asset's video to ``dest`` (a folder, or a string ending in ``/``: its file name is kept), sha256
    verified, written atomically.

    Through the catalog's presigned link when there is one, else from the object store. The expected
    digest is ``expected_sha256`` when given, else the one the catalog recorded; on a mismatch nothing
    is left at ``dest`` and :class:`ChecksumMismatchError` is raised.
    """
    detail = yield from asset(asset_id)
    link: MediaLink | None = detail.asset.video
    if link is None:
        raise NotFoundError("catalog", 404, f"asset {asset_id!r} has no video")
    folder = isinstance(dest, str) and dest.endswith(("/", os.sep))
    dest = Path(dest)
    target = dest / Path(link.ref.key).name if folder or dest.is_dir() else dest
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    expected = (expected_sha256 or link.ref.sha256).lower()
    try:
        if link.url:
            actual, _ = yield Fetch(link.url, tmp)
        else:
            ref = link.ref
            yield StoreTask(lambda store: store.download(ref.bucket, ref.key, tmp))
            actual = sha256_file(tmp)[0]
        if actual != expected:
            raise ChecksumMismatchError(f"asset {asset_id} ({link.ref.uri()})", expected, actual)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# -- augmentation -------------------------------------------------------------------------------------


def parse_controls(text: str) -> list[ControlSpec]:
    """``edge=0.6,depth=0.4`` (``edge=0.6:low``: with a preset) as control specs, as ``worldmill augment`` reads them.

    Raises :class:`ValueError` naming the part that is malformed. (``worldmill.augment.cli.parse_controls``
    could use this and turn the error into its exit 2.)
    """
    controls: list[ControlSpec] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"controls: {part!r} is not TYPE=WEIGHT (e.g. edge=0.6,depth=0.4)")
        weight, _, preset = value.partition(":")
        try:
            entry: dict[str, Any] = {"type": name.strip(), "weight": float(weight)}
        except ValueError:
            raise ValueError(f"controls: the weight of {name.strip()!r} is not a number: {weight!r}") from None
        if preset:
            entry["preset"] = preset.strip()
        controls.append(ControlSpec.model_validate(entry))
    return controls


def augment_params(
    controls: str | Sequence[ControlSpec | Mapping[str, Any]] | None,
    *,
    template: str | None,
    prompt: str | None,
    model: str | None,
) -> AugmentParams:
    """The augmentation parameters from the client's arguments (validated by the contract)."""
    specs: list[ControlSpec] = []
    if isinstance(controls, str):
        specs = parse_controls(controls)
    elif controls is not None:
        specs = [c if isinstance(c, ControlSpec) else ControlSpec.model_validate(c) for c in controls]
    body: dict[str, Any] = {"controls": [c.model_dump(mode="json", exclude_none=True) for c in specs]}
    for key, value in (("template", template), ("prompt", prompt), ("model", model)):
        if value is not None:
            body[key] = value
    return AugmentParams.model_validate(body)


def upload_input(path: Path, params: AugmentParams, *, prefix: str) -> Op[ObjectLocation]:
    """Upload a local video to the inputs bucket the way ``worldmill augment`` does.

    The parameters' sidecar (``<name>.json``) goes up first, so the upload trigger and the request
    describe the same augmentation; then the video.
    """
    if not path.is_file():
        raise FileNotFoundError(f"augment_file: {path} is not a file")
    key = f"{prefix}{path.name}"
    if params != AugmentParams():
        sidecar = key.rsplit(".", 1)[0] + ".json"
        text = json.dumps(params.model_dump(mode="json", exclude_defaults=True), indent=2).encode()
        yield StoreTask(lambda store: store.put_bytes(INPUTS_BUCKET, sidecar, text, content_type="application/json"))
    content_type = "video/mp4" if path.suffix else "application/octet-stream"
    yield StoreTask(lambda store: store.put_file(INPUTS_BUCKET, key, path, content_type=content_type))
    return ObjectLocation(bucket=INPUTS_BUCKET, key=key)


def augmentation(augmentation_id: str) -> Op[Augmentation]:
    """``GET /augmentations/{id}``: the augmentation and its lineage."""
    resp = yield Call("augment", "GET", f"/augmentations/{augmentation_id}")
    return Augmentation.model_validate(resp.json())


def augment_file(
    path: Path,
    params: AugmentParams,
    *,
    prefix: str,
    force: bool,
    requested_by: str,
    wait: bool,
    timeout_s: float,
    poll_s: float,
) -> Op[Augmentation]:
    """Upload ``path``, ask for its augmentation, and (with ``wait``) poll it to passed, failed or rejected.

    A skipped input (augmented already, with a passing verdict) answers the existing augmentation. An
    input the service refuses outright raises :class:`RequestRejectedError` with its reason.
    """
    location = yield from upload_input(path, params, prefix=prefix)
    body = AugmentSubmission(inputs=(location,), params=params, force=force, requested_by=requested_by)
    resp = yield Call("augment", "POST", "/augmentations", json=body.model_dump(mode="json", exclude_none=True))
    accepted = AugmentAccepted.model_validate(resp.json())
    outcome = accepted.outcomes[0]
    if outcome.augmentation_id is None:
        problem = ValidationProblem(loc=["body", "inputs", 0], msg=outcome.reason or outcome.outcome, type="rejected")
        raise RequestRejectedError("augment", [problem], status_code=202)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = yield from augmentation(outcome.augmentation_id)
        except NotFoundError:
            found = None
        if found is not None and (not wait or found.state in AUGMENT_FINAL_STATES):
            return found
        if time.monotonic() > deadline:
            state = found.state if found is not None else "unknown"
            raise ClientError(f"augmentation {outcome.augmentation_id} still {state} after {timeout_s:g} s")
        yield Sleep(poll_s)


# -- quick generation ---------------------------------------------------------------------------------


def quick_manifest(
    prompt: str,
    *,
    name: str | None,
    duration_s: float,
    model: str | None,
    fps: int | None,
    resolution: str | None,
    steps: int | None,
    variants: int,
    negative_prompt: str | None,
) -> str:
    """A one-scenario manifest for ``prompt`` (its name derived from the whole request unless given)."""
    defaults = {
        k: v
        for k, v in (
            ("model", model),
            ("fps", fps),
            ("resolution", resolution),
            ("steps", steps),
            ("negative_prompt", negative_prompt),
        )
        if v is not None
    }
    doc: dict[str, Any] = {
        "defaults": defaults,
        "durations": [duration_s],
        "variants": variants,
        "series": [{"id": "Q", "scenarios": [{"id": "Q01", "prompt": prompt}]}],
    }
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]
    return yaml.safe_dump({"name": name or f"quick-{digest}", **doc}, sort_keys=False)
