"""Write an :class:`~worldmill.catalog.export.plan.ExportPlan` to a local folder, atomically and resumably.

Rules the writer keeps (the decisions themselves are in :mod:`worldmill.catalog.export.plan`):

* **Nothing looks finished before it is.** Every file is written as ``<name>.partial``, flushed to
  disk, then renamed; the manifest ``export_manifest.json`` is written the same way and last, so its
  presence means the export is complete.
* **Only verified videos ship.** Each video is fetched to a file and its sha256 and size compared
  with the catalog's ``ObjectRef`` before it goes into a shard; a mismatch stops the export.
* **Byte-identical output.** Tar members carry mtime 0, uid/gid 0, empty user and group names and
  mode 0644, in plan order; no time of the export goes into any shard.
* **Resumable.** Each finished unit (shard, or one sample's files) is appended to the journal
  ``export_manifest.json.partial``; a rerun re-hashes the recorded files and keeps those that
  still match, so an interrupted export completes without rewriting what was finished.
* **DEST is ours or empty.** DEST must be a folder we can write that is empty, or holds an
  export of ours (finished or interrupted); anything else is refused before anything is written.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tarfile
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from worldmill.catalog.export.journal import (
    FileRecord,
    JournalEntry,
    decide_resume,
    files_to_verify,
    journal_header,
    journal_line,
    parse_journal,
)
from worldmill.catalog.export.manifest import ExportManifest, build_manifest, manifest_bytes
from worldmill.catalog.export.plan import (
    JOURNAL_NAME,
    MANIFEST_NAME,
    PARTIAL_SUFFIX,
    ExportPlan,
    PlannedSample,
    PlannedUnit,
    sha256_hex,
)
from worldmill.contracts.base import ObjectRef
from worldmill.runtime.digest import sha256_file
from worldmill.runtime.errors import WorldmillError
from worldmill.runtime.versions import package_version

#: Fetch one object to a local path (e.g. ``ObjectStore.download``): the writer checks the bytes.
Fetch = Callable[[ObjectRef, Path], Awaitable[object]]
#: Called with (samples done, samples in the export) as the export advances.
ProgressCallback = Callable[[int, int], None]

STAGING_DIR = ".export-staging"
#: The journal while it is replaced (a crash right then leaves only this in DEST).
_JOURNAL_TMP = f".{JOURNAL_NAME}.tmp"
_MODE = 0o644


class ExportWriteError(WorldmillError):
    """The export could not be written; the message says which file and why."""


class DestinationError(ExportWriteError):
    """DEST cannot hold the export (not a folder, not writable, holds something else): bad input."""


class FetchError(ExportWriteError):
    """A video could not be fetched (the fetch raised an ``OSError``, e.g. a connection failure)."""


class VideoMismatchError(ExportWriteError):
    """A fetched video is not the one the catalog recorded (sha256 or size differ)."""


@dataclass(frozen=True)
class ExportResult:
    """A complete export: its manifest, the manifest file's sha256, and what this run did."""

    manifest: ExportManifest
    manifest_path: Path
    manifest_sha256: str
    written_units: int
    kept_units: int
    already_complete: bool


# -- DEST ----------------------------------------------------------------------------------------


def prepare_destination(dest: Path) -> Path:
    """Make sure DEST is a writable folder that is empty or holds an export of ours; its absolute path.

    Raises :class:`DestinationError` naming DEST and the rule. Creates DEST (and its parents) when
    missing; writes nothing else.
    """
    path = dest.resolve()
    rule = "DEST must be a writable folder, empty or holding a worldmill export"
    if path.exists() and not path.is_dir():
        raise DestinationError(f"DEST {path}: is a file, not a folder ({rule})")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DestinationError(f"DEST {path}: cannot create the folder: {exc.strerror or exc} ({rule})") from exc
    _check_contents(path, rule)
    try:
        fd, probe = tempfile.mkstemp(prefix=".wm-write-probe-", dir=path)
        os.close(fd)
        Path(probe).unlink()
    except OSError as exc:
        raise DestinationError(f"DEST {path}: cannot write in it: {exc.strerror or exc} ({rule})") from exc
    return path


def _check_contents(path: Path, rule: str) -> None:
    try:
        names = {p.name for p in path.iterdir()}
    except OSError as exc:
        raise DestinationError(f"DEST {path}: cannot list it: {exc.strerror or exc} ({rule})") from exc
    if names and not names & {MANIFEST_NAME, JOURNAL_NAME, _JOURNAL_TMP}:
        raise DestinationError(
            f"DEST {path}: is not empty and holds no worldmill export to resume ({rule}); choose an empty folder"
        )


# -- small file helpers (sync; the async writer runs them in threads) -----------------------------


def write_atomic(final: Path, data: bytes) -> None:
    """Write ``data`` to ``final`` via ``final.partial``, flushed to disk before the rename."""
    partial = final.with_name(final.name + PARTIAL_SUFFIX)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        with partial.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        partial.replace(final)
    finally:
        partial.unlink(missing_ok=True)


def _fsync_path(path: Path) -> None:
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def _record(dest: Path, relative: str) -> FileRecord | None:
    """What is on disk at ``relative`` now (None: missing or not a file)."""
    path = dest / relative
    if not path.is_file():
        return None
    digest, size = sha256_file(path)
    return FileRecord(path=relative, sha256=digest, bytes=size)


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.type = size, 0, _MODE, tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_sample(tar: tarfile.TarFile, sample: PlannedSample, video: Path) -> None:
    """The sample's three members, adjacent, in name order: json, mp4, txt."""
    meta_name, video_name, text_name = sample.members
    tar.addfile(_tar_info(meta_name, len(sample.meta)), BytesIO(sample.meta))
    with video.open("rb") as fh:
        tar.addfile(_tar_info(video_name, sample.item.video.size), fh)
    tar.addfile(_tar_info(text_name, len(sample.text)), BytesIO(sample.text))


def _remove_partials(dest: Path) -> None:
    """Leftovers of an interrupted run: every ``*.partial`` file except the journal, and the staging folder."""
    shutil.rmtree(dest / STAGING_DIR, ignore_errors=True)
    for pattern in (f"*{PARTIAL_SUFFIX}", f".*{PARTIAL_SUFFIX}.part"):  # ours, and a fetch's own temp file
        for path in dest.rglob(pattern):
            if path.name != JOURNAL_NAME and path.is_file():
                path.unlink(missing_ok=True)


def _worldmill_version() -> str:
    return package_version()


# -- the writer ----------------------------------------------------------------------------------


class _Writer:
    """One run of one plan into one folder."""

    def __init__(self, plan: ExportPlan, dest: Path, fetch: Fetch, progress: ProgressCallback | None) -> None:
        self.plan = plan
        self.dest = dest
        self.fetch = fetch
        self.progress = progress
        self.done = 0
        self.written: dict[str, tuple[FileRecord, ...]] = {}
        self.journal: IO[str] | None = None

    def _advance(self, count: int) -> None:
        self.done += count
        if self.progress is not None:
            self.progress(self.done, len(self.plan.samples))

    # journal

    def _load_journal(self) -> dict[str, JournalEntry]:
        path = self.dest / JOURNAL_NAME
        if not path.exists():
            return {}
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise ExportWriteError(f"cannot read the progress record {path}: {exc.strerror or exc}") from exc
        return parse_journal(text) or {}

    def _start_journal(self, kept: Mapping[str, JournalEntry]) -> None:
        """A fresh journal holding only the kept units (replaced atomically), then opened for appending."""
        lines = [journal_header(self.plan), *(journal_line(kept[u]) for u in sorted(kept))]
        path = self.dest / JOURNAL_NAME
        tmp = path.with_name(_JOURNAL_TMP)
        try:
            with tmp.open("w", encoding="utf-8") as fh:
                fh.write("\n".join(lines) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(path)
            self.journal = path.open("a", encoding="utf-8")
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise DestinationError(
                f"DEST {self.dest}: cannot write the progress record: {exc.strerror or exc}"
            ) from exc

    def _journal_done(self, unit: PlannedUnit, files: tuple[FileRecord, ...]) -> None:
        if self.journal is None:
            raise ExportWriteError("the progress record is not open (resume() must run first)")
        entry = JournalEntry(unit=unit.unit_id, fingerprint=unit.fingerprint, files=files)
        self.journal.write(journal_line(entry) + "\n")
        self.journal.flush()
        os.fsync(self.journal.fileno())
        self.written[unit.unit_id] = files

    # resume

    async def resume(self) -> int:
        """Decide what is already done, drop leftovers and stale files; the number of units kept."""
        journal = await asyncio.to_thread(self._load_journal)
        verify = files_to_verify(self.plan, journal)
        on_disk = {r.path: await asyncio.to_thread(_record, self.dest, r.path) for r in verify}
        decision = decide_resume(self.plan, journal, on_disk)
        for relative in decision.remove:
            (self.dest / relative).unlink(missing_ok=True)
        await asyncio.to_thread(_remove_partials, self.dest)
        kept = {u: journal[u] for u in decision.keep}
        await asyncio.to_thread(self._start_journal, kept)
        for unit in self.plan.units:
            if unit.unit_id in kept:
                self.written[unit.unit_id] = kept[unit.unit_id].files
                self._advance(len(unit.samples))
        return len(kept)

    # units

    async def write_unit(self, unit: PlannedUnit) -> None:
        """Write one unit and record it in the journal."""
        files: tuple[FileRecord, ...]
        if self.plan.format == "webdataset":
            files = (await self._write_shard(unit),)
        else:
            files = await self._write_cosmos_sample(unit.samples[0])
        await asyncio.to_thread(self._journal_done, unit, files)

    async def _fetch_verified(self, sample: PlannedSample, target: Path) -> None:
        """Fetch the sample's video to ``target`` and prove it is the catalog's video."""
        ref = sample.item.video
        await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
        try:
            await self.fetch(ref, target)
        except OSError as exc:  # the network's fault (ConnectionError, timeouts), not DEST's
            raise FetchError(f"asset {sample.item.asset_id}: fetching {ref.uri()} failed: {exc}") from exc
        if not await asyncio.to_thread(target.is_file):
            raise ExportWriteError(f"asset {sample.item.asset_id}: fetching {ref.uri()} left no file at {target}")
        digest, size = await asyncio.to_thread(sha256_file, target)
        if digest != ref.sha256 or size != ref.size:
            await asyncio.to_thread(target.unlink, missing_ok=True)
            raise VideoMismatchError(
                f"asset {sample.item.asset_id}: the video fetched from {ref.uri()} has sha256 {digest} "
                f"({size} bytes), but the catalog recorded {ref.sha256} ({ref.size} bytes); "
                "the export stops rather than ship a video that is not the one QA passed"
            )

    async def _write_shard(self, unit: PlannedUnit) -> FileRecord:
        final = self.dest / unit.unit_id
        partial = final.with_name(final.name + PARTIAL_SUFFIX)
        staging = self.dest / STAGING_DIR
        await asyncio.to_thread(final.parent.mkdir, parents=True, exist_ok=True)
        fh = await asyncio.to_thread(partial.open, "wb")
        try:
            with fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for sample in unit.samples:
                    video = staging / f"{sample.key}.mp4"
                    await self._fetch_verified(sample, video)
                    await asyncio.to_thread(_add_sample, tar, sample, video)
                    await asyncio.to_thread(video.unlink)
                    self._advance(1)
            await asyncio.to_thread(_fsync_path, partial)
            digest, size = await asyncio.to_thread(sha256_file, partial)
            await asyncio.to_thread(partial.replace, final)
        finally:
            await asyncio.to_thread(partial.unlink, missing_ok=True)
        return FileRecord(path=unit.unit_id, sha256=digest, bytes=size)

    async def _write_cosmos_sample(self, sample: PlannedSample) -> tuple[FileRecord, FileRecord, FileRecord]:
        video_path, text_path, meta_path = (self.dest / p for p in (sample.unit, *_sidecars(sample)))
        partial = video_path.with_name(video_path.name + PARTIAL_SUFFIX)
        try:
            await self._fetch_verified(sample, partial)
            await asyncio.to_thread(_fsync_path, partial)
            await asyncio.to_thread(write_atomic, text_path, sample.text)
            await asyncio.to_thread(write_atomic, meta_path, sample.meta)
            await asyncio.to_thread(partial.replace, video_path)
        finally:
            await asyncio.to_thread(partial.unlink, missing_ok=True)
        self._advance(1)
        ref = sample.item.video
        return (
            FileRecord(path=sample.unit, sha256=ref.sha256, bytes=ref.size),
            FileRecord(path=_sidecars(sample)[0], sha256=sha256_hex(sample.text), bytes=len(sample.text)),
            FileRecord(path=_sidecars(sample)[1], sha256=sha256_hex(sample.meta), bytes=len(sample.meta)),
        )

    # finish

    def finish(self, created_at: datetime, version: str) -> tuple[ExportManifest, bytes]:
        """Write the manifest (last), then drop the journal; the manifest and its file's bytes."""
        manifest = build_manifest(
            self.plan, self.written, destination=str(self.dest), created_at=created_at, worldmill_version=version
        )
        data = manifest_bytes(manifest)
        write_atomic(self.dest / MANIFEST_NAME, data)
        self.close()
        (self.dest / JOURNAL_NAME).unlink(missing_ok=True)
        return manifest, data

    def close(self) -> None:
        """Close the journal (it stays on disk for a rerun) and drop the staging folder."""
        if self.journal is not None:
            self.journal.close()
            self.journal = None
        shutil.rmtree(self.dest / STAGING_DIR, ignore_errors=True)


def _sidecars(sample: PlannedSample) -> tuple[str, str]:
    """The prompt and metadata paths next to a cosmos-layout video ``videos/<key>.mp4``."""
    return (f"metas/{sample.key}.txt", f"metadata/{sample.key}.json")


def _finished(plan: ExportPlan, dest: Path) -> ExportResult:
    """The export already at DEST when it is this plan's; :class:`DestinationError` when it is another's."""
    path = dest / MANIFEST_NAME
    try:
        data = path.read_bytes()
        manifest = ExportManifest.model_validate_json(data)
    except (OSError, ValidationError, ValueError) as exc:
        raise DestinationError(f"DEST {dest}: holds an {MANIFEST_NAME} that cannot be read ({exc})") from exc
    if manifest.content.plan_sha256 != plan.plan_sha256:
        raise DestinationError(
            f"DEST {dest}: holds a finished export of another selection or content "
            f"({manifest.content.selection}); export to an empty folder, or delete this one first"
        )
    (dest / JOURNAL_NAME).unlink(missing_ok=True)
    return ExportResult(manifest, path, sha256_hex(data), 0, len(plan.units), already_complete=True)


async def write_export(
    plan: ExportPlan,
    dest: Path,
    fetch: Fetch,
    *,
    progress: ProgressCallback | None = None,
    now: Callable[[], datetime] | None = None,
    worldmill_version: str | None = None,
) -> ExportResult:
    """Write ``plan`` into ``dest`` (resuming an interrupted run); the complete export's manifest.

    Raises :class:`DestinationError` when DEST cannot hold it, :class:`VideoMismatchError` when a
    video is not the catalog's, :class:`ExportWriteError` for other local failures, and whatever
    ``fetch`` raises. On any error no manifest is written and finished units stay for a rerun.
    """
    folder = await asyncio.to_thread(prepare_destination, dest)
    if await asyncio.to_thread((folder / MANIFEST_NAME).exists):
        return await asyncio.to_thread(_finished, plan, folder)
    writer = _Writer(plan, folder, fetch, progress)
    try:
        kept = await writer.resume()
        written = 0
        for unit in plan.units:
            if unit.unit_id not in writer.written:
                await writer.write_unit(unit)
                written += 1
        created_at = now() if now is not None else datetime.now(UTC)
        manifest, data = await asyncio.to_thread(writer.finish, created_at, worldmill_version or _worldmill_version())
    except OSError as exc:
        raise ExportWriteError(f"DEST {folder}: writing the export failed: {exc}") from exc
    finally:
        await asyncio.to_thread(writer.close)
    return ExportResult(manifest, folder / MANIFEST_NAME, sha256_hex(data), written, kept, already_complete=False)
