"""``worldmill pull DEST (--manifest NAME_OR_FILE | --query FILTERS) [--all]``: videos as the users name them.

The catalog is asked exactly as ``worldmill export`` asks it (:func:`~worldmill.catalog.export.cli.selection_of`,
:func:`~worldmill.catalog.export.cli.list_assets`); the names and the layout are decided in
:mod:`worldmill.catalog.pull`; here the files are fetched, checked and written.

* **Verified.** Each video is fetched from the object store to ``<name>.partial`` next to its final
  name, its sha256 and size compared with the catalog's record, flushed to disk, then renamed. A
  screenshot, ``generation_status.json`` and ``SHA256SUMS`` are written the same way. A failure
  (a full disk included) removes the temporary file: nothing partial is ever under a final name.
* **Resumable.** A video already at its name with the catalog's sha256 is kept, not fetched; its
  screenshots are kept when the last ``SHA256SUMS`` recorded them for this very video and they
  still match (else they are made again, and kept when the bytes come out the same). A file with
  the wrong content is replaced. ``generation_status.json`` is kept when only its time changed.
* **DEST stays the user's.** Files pull does not plan are never touched (not even ones an earlier
  pull wrote that are no longer selected: they are listed, and left), and nothing is written
  outside DEST.

Exit codes: 0 pulled; 1 a service, the store or DEST failed (the summary says what); 2 bad usage
(the options, DEST, an unknown manifest or nothing to pull).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final
from urllib.parse import quote, urlencode

import typer
from rich.markup import escape
from rich.table import Table

from worldmill.catalog.cli import status_json
from worldmill.catalog.export.cli import QueryError, list_assets, selection_of
from worldmill.catalog.export.plan import PARTIAL_SUFFIX, sha256_hex
from worldmill.catalog.export.write import write_atomic
from worldmill.catalog.pull import (
    STATUS_NAME,
    SUMS_NAME,
    Candidate,
    PlannedVideo,
    PullPlan,
    Skipped,
    candidate_of,
    parse_sums,
    plan_pull,
    render_sums,
    screenshot_times,
    screenshots_still_valid,
)
from worldmill.contracts.catalog import GenerationStatus
from worldmill.runtime.cli_support import (
    console,
    err_console,
    fail,
    fail_response,
    fail_usage,
    manifest_name,
    progress_bar,
)
from worldmill.runtime.cli_support import service_client as _service_client
from worldmill.runtime.client import ServiceClient, ServiceUnavailableError, locate_store
from worldmill.runtime.errors import WorldmillError
from worldmill.runtime.media import probe
from worldmill.runtime.store import LocalFileError, ObjectStore, sha256_file

if TYPE_CHECKING:
    import av

#: Rows of skipped assets or of failures printed; the rest are counted.
MAX_ROWS: Final = 20
JPEG_QUALITY: Final = 90
OUTCOMES: Final = ("written", "kept", "replaced", "skipped", "failed")


class DiskError(Exception):
    """Writing in DEST failed (full disk, permissions): the pull stops; the message names the path."""


class VideoError(Exception):
    """One video could not be fetched, verified or decoded: the pull goes on with the others."""


# -- DEST and paths ------------------------------------------------------------------------------


def check_dest(dest: Path) -> Path:
    """DEST as an absolute folder pull can write in (created when missing); exit 2 naming the rule."""
    path = dest.resolve()
    rule = "DEST must be a folder pull can write in"
    if path.exists() and not path.is_dir():
        fail_usage(escape(f"DEST {path}: is a file, not a folder ({rule})"))
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe_file = tempfile.mkstemp(prefix=".wm-write-probe-", dir=path)
        os.close(fd)
        Path(probe_file).unlink()
    except OSError as exc:
        fail_usage(escape(f"DEST {path}: cannot write in it: {exc.strerror or exc} ({rule})"))
    return path


def target_in(dest: Path, relative: str) -> Path:
    """``dest / relative``, refused (exit 2) when its folder leads outside DEST (e.g. a link)."""
    target = dest / relative
    if not target.parent.resolve().is_relative_to(dest):
        fail_usage(escape(f"DEST {dest}: {target.parent} leads outside DEST; pull writes only inside DEST"))
    return target


def _digest(path: Path) -> str | None:
    """sha256 of the regular file at ``path``, None when there is none."""
    if not path.is_file():
        return None
    try:
        return sha256_file(path)[0]
    except OSError as exc:
        raise DiskError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _put(path: Path, data: bytes) -> None:
    """Write ``data`` at ``path`` atomically (``write_atomic``); a failure is a :class:`DiskError`."""
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise DiskError(f"cannot write {path}: {exc.strerror or exc}") from exc


# -- screenshots ---------------------------------------------------------------------------------


def grab_frames(path: Path, times: tuple[float, ...]) -> list[av.VideoFrame]:
    """The frame shown at each time (non-decreasing): the last one that starts at or before it, one decode pass.

    A time after the last frame's start gets the last frame. :class:`VideoError` when nothing decodes.
    """
    import av  # noqa: PLC0415 - the video extra, loaded on use

    shots: list[av.VideoFrame] = []
    last: av.VideoFrame | None = None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            first_pts: int | None = None
            for index, frame in enumerate(container.decode(stream)):
                if frame.pts is not None and stream.time_base is not None:
                    first_pts = frame.pts if first_pts is None else first_pts
                    start = float((frame.pts - first_pts) * stream.time_base)
                else:
                    start = index / float(rate) if rate else float(index)
                while last is not None and len(shots) < len(times) and start > times[len(shots)] + 1e-6:
                    shots.append(last)
                if len(shots) == len(times):
                    break
                last = frame
    except (av.error.FFmpegError, OSError, IndexError) as exc:
        raise VideoError(f"{path.name} cannot be decoded ({exc})") from exc
    if last is None:
        raise VideoError(f"{path.name} has no decodable frame")
    return [*shots, *([last] * (len(times) - len(shots)))]


def jpeg(frame: av.VideoFrame) -> bytes:
    """A frame as JPEG bytes (full size)."""
    from PIL import Image  # noqa: PLC0415 - loaded with the video extra

    out = BytesIO()
    Image.fromarray(frame.to_ndarray(format="rgb24")).save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def screenshots_of(path: Path) -> list[bytes]:
    """The three JPEG screenshots of a video file (0.5 s, middle, end - 0.5 s of its real length)."""
    try:
        info = probe(path)
    except WorldmillError as exc:
        raise VideoError(str(exc)) from exc
    return [jpeg(frame) for frame in grab_frames(path, screenshot_times(info.duration_s))]


# -- the pull ------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What this run did, per kind of file; the digest of every file in DEST it vouches for."""

    counts: dict[str, Counter[str]] = field(default_factory=lambda: {k: Counter() for k in ("videos", "screenshots")})
    digests: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    files: Counter[str] = field(default_factory=Counter)


def _fetch(store: ObjectStore, video: PlannedVideo, target: Path) -> None:
    """Fetch the video to ``<target>.partial``, prove it is the catalog's, flush it, rename it."""
    ref = video.candidate.video
    partial = target.with_name(target.name + PARTIAL_SUFFIX)
    try:
        try:
            asyncio.run(store.download(ref.bucket, ref.key, partial))
        except (LocalFileError, OSError) as exc:
            raise DiskError(f"cannot write {partial}: {exc}") from exc
        except WorldmillError as exc:
            raise VideoError(f"fetching {ref.uri()} failed: {exc}") from exc
        digest, size = sha256_file(partial)
        if digest != ref.sha256 or size != ref.size:
            raise VideoError(
                f"the video fetched from {ref.uri()} has sha256 {digest} ({size} bytes), but the catalog "
                f"recorded {ref.sha256} ({ref.size} bytes); it was not written"
            )
        with partial.open("rb") as fh:
            os.fsync(fh.fileno())
        partial.replace(target)
    except OSError as exc:
        raise DiskError(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
        partial.with_name(f".{partial.name}.part").unlink(missing_ok=True)


def pull_video(store: ObjectStore, dest: Path, video: PlannedVideo, previous: dict[str, str], tally: Tally) -> None:
    """Have one video and its screenshots in DEST; counts what was done in ``tally``."""
    ref = video.candidate.video
    target = target_in(dest, video.video)
    if target.exists() and not target.is_file():
        raise VideoError(f"{target} is there and is not a file; it was left alone")
    before = _digest(target)
    if before == ref.sha256 and target.stat().st_size == ref.size:
        outcome = "kept"
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        _fetch(store, video, target)
        outcome = "written" if before is None else "replaced"
    tally.counts["videos"][outcome] += 1
    tally.digests[video.video] = ref.sha256
    shots = [target_in(dest, p) for p in video.screenshots]
    on_disk = {p: _digest(path) for p, path in zip(video.screenshots, shots, strict=True)}
    if outcome == "kept" and screenshots_still_valid(video, previous, on_disk):
        for relative in video.screenshots:
            tally.counts["screenshots"]["kept"] += 1
            tally.digests[relative] = previous[relative]
        return
    images = screenshots_of(target)
    for relative, path, data in zip(video.screenshots, shots, images, strict=True):
        digest = sha256_hex(data)
        old = on_disk[relative]
        if old != digest:
            if path.exists() and not path.is_file():
                raise VideoError(f"{path} is there and is not a file; it was left alone")
            _put(path, data)
        tally.counts["screenshots"]["kept" if old == digest else "written" if old is None else "replaced"] += 1
        tally.digests[relative] = digest


def _same_status(path: Path, data: bytes) -> bool:
    """Whether ``path`` holds this status already, but for its ``generated_at`` time."""
    try:
        old = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    new = json.loads(data)
    if not isinstance(old, dict):
        return False
    old.pop("generated_at", None)
    new.pop("generated_at", None)
    return bool(old == new)


def write_small(dest: Path, relative: str, data: bytes, tally: Tally, *, same: bool | None = None) -> None:
    """Write one small file of ours (status, sums) unless it is there already (``same``, else equal bytes)."""
    path = target_in(dest, relative)
    if path.exists() and not path.is_file():
        raise DiskError(f"{path} is there and is not a file")
    existed = path.is_file()
    if same is None:
        same = existed and _digest(path) == sha256_hex(data)
    if same:
        tally.files["kept"] += 1
    else:
        _put(path, data)
        tally.files["replaced" if existed else "written"] += 1
    if relative != SUMS_NAME:
        digest = _digest(path)
        if digest is not None:
            tally.digests[relative] = digest


def run_pull(
    store: ObjectStore, dest: Path, plan: PullPlan, status: GenerationStatus | None, previous: dict[str, str]
) -> Tally:
    """Every planned video, then the status file and SHA256SUMS; :class:`DiskError` stops it."""
    tally = Tally()
    with progress_bar() as bar:
        task = bar.add_task("pulling videos", total=len(plan.videos))
        for video in plan.videos:
            try:
                pull_video(store, dest, video, previous, tally)
            except VideoError as exc:
                tally.failures.append(f"{video.video} ({video.candidate.asset_id}): {exc}")
                tally.counts["videos"]["failed"] += 1
            bar.advance(task)
    if status is not None:
        data = status_json(status)
        path = target_in(dest, STATUS_NAME)
        write_small(dest, STATUS_NAME, data, tally, same=path.is_file() and _same_status(path, data))
    write_small(dest, SUMS_NAME, render_sums(tally.digests), tally)
    return tally


# -- the catalog ---------------------------------------------------------------------------------


def manifest_status(catalog: ServiceClient, name: str) -> GenerationStatus | None:
    """``GET /manifests/{name}/status``; None when the catalog knows no such manifest."""
    resp = catalog.request("GET", f"/manifests/{quote(name, safe='')}/status")
    if resp.status_code == 404:
        return None
    if resp.status_code >= 400:
        fail_response(resp)
    return GenerationStatus.model_validate(resp.json())


def pull_filters(manifest: str | None, query: str | None, *, include_all: bool) -> list[tuple[str, str]]:
    """The ``/assets`` filters: the selection, QA-passed unless ``include_all``, videos unless a kind is asked."""
    filters, _ = selection_of(manifest, query)
    if include_all:
        filters = [f for f in filters if f != ("qa_status", "passed")]
    if not any(key == "kind" for key, _ in filters):
        filters = sorted([*filters, ("kind", "video")])
    return filters


def plan_from(catalog: ServiceClient, filters: list[tuple[str, str]], status: GenerationStatus | None) -> PullPlan:
    """The catalog's matching assets, named and de-duplicated."""
    durations = {item.prompt_id: item.duration_s for item in status.items} if status else {}
    candidates: list[Candidate] = []
    skipped: list[Skipped] = []
    for summary in list_assets(catalog, filters):
        try:
            candidates.append(candidate_of(summary, durations))
        except ValueError as exc:
            skipped.append(Skipped(summary.asset_id, str(exc)))
    return plan_pull(candidates, skipped)


def _one_manifest(filters: list[tuple[str, str]]) -> str | None:
    names = [value for key, value in filters if key == "manifest"]
    return names[0] if len(names) == 1 else None


# -- reporting -----------------------------------------------------------------------------------


def print_summary(plan: PullPlan, tally: Tally, dest: Path) -> None:
    """The table (written / kept / replaced / skipped / failed), what was skipped and why, SHA256SUMS."""
    console.print(escape(f"pulled into {dest}"))
    table = Table(title="pull summary")
    table.add_column("files")
    for outcome in OUTCOMES:
        table.add_column(outcome, justify="right")
    videos = Counter(tally.counts["videos"])
    videos["skipped"] = len(plan.skipped)
    rows: list[tuple[str, Counter[str]]] = [
        ("videos", videos),
        ("screenshots", tally.counts["screenshots"]),
        ("status and sums", tally.files),
    ]
    for name, counts in rows:
        table.add_row(name, *(str(counts.get(o, 0)) for o in OUTCOMES))
    console.print(table)
    if plan.skipped:
        console.print(f"[yellow]{len(plan.skipped)} asset(s) skipped:[/]")
        for item in plan.skipped[:MAX_ROWS]:
            console.print(escape(f"  {item.asset_id}: {item.reason}"))
        if len(plan.skipped) > MAX_ROWS:
            console.print(f"  … and {len(plan.skipped) - MAX_ROWS} more")
    console.print(escape(f"checksums: {dest / SUMS_NAME} (check with: cd {dest} && sha256sum -c {SUMS_NAME})"))


def _report_leftovers(plan: PullPlan, previous: dict[str, str]) -> None:
    planned = {*plan.files, STATUS_NAME}
    stale = sorted(p for p in previous if p not in planned)
    if stale:
        console.print(
            f"[yellow]{len(stale)} file(s) of an earlier pull are no longer selected; left in place, "
            f"not in {SUMS_NAME}:[/]"
        )
        for path in stale[:MAX_ROWS]:
            console.print(escape(f"  {path}"))


def _previous_sums(dest: Path) -> dict[str, str]:
    path = dest / SUMS_NAME
    try:
        return parse_sums(path.read_text(encoding="utf-8", errors="replace")) if path.is_file() else {}
    except OSError:
        return {}


def pull(
    dest: Annotated[
        Path,
        typer.Argument(
            metavar="DEST",
            help="Folder to pull into (created if missing; files pull does not write there are left alone).",
        ),
    ],
    *,
    manifest: Annotated[
        str | None, typer.Option("--manifest", help="The manifest's name, or its file (its 'name' is used).")
    ] = None,
    query: Annotated[
        str | None,
        typer.Option("--query", help="Catalog filters, e.g. 'series=C&risk_level=high' (instead of --manifest)."),
    ] = None,
    include_all: Annotated[
        bool,
        typer.Option("--all", help="Also failed and unverified videos (a passed one wins a name over them)."),
    ] = False,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", envvar="WM_DATA_DIR", help="The local stack's folder.")
    ] = Path(".worldmill"),
) -> None:
    """Pull QA-passed videos into DEST, named as the users name them, with screenshots and checksums.

    Layout: DEST/outputs/<scenario>_<duration>.mp4 (variant 0; variant k: <scenario>_<duration>_v<k>.mp4,
    e.g. outputs/C01_30s.mp4, outputs/C01_2_5s_v1.mp4); DEST/screenshots/<name>_frame1.jpg, _frame2.jpg,
    _frame3.jpg at 0.5 s, the middle and 0.5 s before the end; DEST/generation_status.json (with --manifest,
    or a --query with one manifest filter); DEST/SHA256SUMS for `sha256sum -c`. When two assets get one name,
    a QA-passed one wins, then the original video over an augmentation, then the newest. Files already there
    with the right sha256 are kept; wrong ones are replaced; other files in DEST are never touched.
    Generated videos only (kind=video) unless --query names a kind, e.g. 'manifest=NAME&kind=augmentation'.
    Exit codes: 0 pulled, 1 something failed, 2 bad usage or nothing to pull.
    """
    name = manifest_name(manifest, "--manifest") if manifest is not None else None
    try:
        filters = pull_filters(name, query, include_all=include_all)
    except QueryError as exc:
        fail_usage(escape(str(exc)))
    folder = check_dest(dest)
    selection = urlencode(filters)
    with _service_client("catalog", data_dir) as catalog:
        try:
            wanted = name if name is not None else _one_manifest(filters)
            status = manifest_status(catalog, wanted) if wanted is not None else None
            if name is not None and status is None:
                fail_usage(
                    escape(
                        f"--manifest: the catalog knows no manifest {name!r}: nothing to pull "
                        f"(check the name with `worldmill report {name}`)"
                    )
                )
            plan = plan_from(catalog, filters, status)
        except ServiceUnavailableError as exc:
            fail(escape(str(exc)))
    if not plan.videos:
        for item in plan.skipped[:MAX_ROWS]:
            err_console.print(escape(f"  skipped {item.asset_id}: {item.reason}"))
        what = "video" if include_all else "QA-passed video"
        hint = f"`worldmill report {name or wanted}`" if (name or wanted) else "`worldmill report MANIFEST`"
        fail_usage(escape(f"--manifest/--query: nothing to pull: no {what} matches {selection}; check with {hint}"))
    try:
        store = locate_store(data_dir)
    except ServiceUnavailableError as exc:
        fail(escape(str(exc)))
    previous = _previous_sums(folder)
    try:
        tally = run_pull(store, folder, plan, status, previous)
    except DiskError as exc:
        fail(escape(f"{exc}; nothing partial was left under a final name: free the space and run it again"))
    print_summary(plan, tally, folder)
    if status is None:
        console.print(f"no {STATUS_NAME}: the selection is not one manifest (pull with --manifest NAME for it)")
    _report_leftovers(plan, previous)
    if tally.failures:
        for line in tally.failures[:MAX_ROWS]:
            err_console.print(escape(f"  {line}"))
        fail(f"{len(tally.failures)} video(s) could not be pulled; run the same command again to retry them")
