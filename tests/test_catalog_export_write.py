"""Writing exports from real object storage (SeaweedFS) to local folders; reading them back with webdataset.

Also the ``worldmill export`` command's argument checks, which happen before any service is asked.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
import webdataset as wds
from typer.testing import CliRunner, Result

from tests.helpers.video import write_video
from worldmill.catalog.export.cli import QueryError, dataset_exported, export, parse_query, selection_of
from worldmill.catalog.export.journal import FileRecord
from worldmill.catalog.export.manifest import ExportManifest, build_manifest
from worldmill.catalog.export.plan import (
    JOURNAL_NAME,
    MANIFEST_NAME,
    ExportItem,
    ExportOptions,
    ExportPlan,
    plan_export,
)
from worldmill.catalog.export.write import (
    STAGING_DIR,
    DestinationError,
    ExportResult,
    FetchError,
    VideoMismatchError,
    write_export,
)
from worldmill.contracts.base import ObjectRef
from worldmill.contracts.catalog import ExportFormat
from worldmill.runtime.store import ObjectStore

#: (asset id, width, height, fps, frames): 1–7 s clips in three bins, portrait and landscape.
CLIPS = [
    ("clip-a", 320, 192, 24, 24),
    ("clip-b", 320, 192, 24, 48),
    ("clip-c", 320, 192, 24, 72),
    ("clip-d", 192, 320, 24, 96),
    ("clip-e", 320, 192, 24, 130),
    ("clip-f", 320, 192, 12, 84),
    ("clip-g", 256, 256, 24, 60),
]


class CountingFetch:
    """Downloads from the store, counting calls; raises on call number ``fail_on`` (1-based) if set."""

    def __init__(self, store: ObjectStore, *, fail_on: int | None = None) -> None:
        self.store = store
        self.fail_on = fail_on
        self.calls: list[str] = []

    async def __call__(self, ref: ObjectRef, path: Path) -> None:
        self.calls.append(ref.key)
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise ConnectionError(f"simulated outage while fetching {ref.key}")
        await self.store.download(ref.bucket, ref.key, path)


@pytest.fixture
async def items(store: ObjectStore, tmp_path: Path) -> list[ExportItem]:
    """Real videos uploaded to the test bucket, as export items."""
    bucket = str(store.test_bucket)  # type: ignore[attr-defined]
    out: list[ExportItem] = []
    for seed, (asset_id, width, height, fps, frames) in enumerate(CLIPS):
        path = write_video(
            tmp_path / "src" / f"{asset_id}.mp4", width=width, height=height, fps=fps, frames=frames, seed=seed
        )
        ref = await store.put_file(bucket, f"runs/{asset_id}/video.mp4", path, content_type="video/mp4")
        out.append(
            ExportItem(
                asset_id=asset_id,
                video=ref,
                prompt=f"Clip {asset_id}: a forklift crosses aisle {seed} — ünïcode",
                width=width,
                height=height,
                fps=fps,
                frames=frames,
                duration_s=frames / fps,
                metadata={"asset_id": asset_id, "lineage": {"asset_id": asset_id, "manifest": "warehouse"}},
            )
        )
    return out


def _plan(items: list[ExportItem], fmt: ExportFormat = "webdataset", **options: Any) -> ExportPlan:
    opts = ExportOptions(**{"max_samples_per_shard": 2, **options})
    return plan_export(items, export_format=fmt, selection="manifest=warehouse&qa_status=passed", options=opts)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tars(dest: Path) -> list[Path]:
    return sorted(dest.rglob("*.tar"))


def _no_leftovers(dest: Path) -> None:
    assert not list(dest.rglob("*.partial")), "a partial file was left"
    assert not (dest / JOURNAL_NAME).exists()
    assert not (dest / STAGING_DIR).exists()


# -- webdataset ----------------------------------------------------------------------------------


async def test_webdataset_export_reads_back_with_webdataset(
    store: ObjectStore, items: list[ExportItem], tmp_path: Path
) -> None:
    """Every sample is json+mp4+txt under one key; videos are the stored bytes; the manifest lists it all."""
    plan = _plan(items)
    seen: list[tuple[int, int]] = []
    dest = tmp_path / "out"
    result = await write_export(plan, dest, CountingFetch(store), progress=lambda d, t: seen.append((d, t)))

    tars = _tars(dest)
    assert [str(t.relative_to(dest)) for t in tars] == sorted(s.path for s in result.manifest.content.shards)
    samples = list(wds.WebDataset([str(t) for t in tars], shardshuffle=False))
    by_id = {i.asset_id: i for i in items}
    assert len(samples) == len(items)
    for sample in samples:
        assert set(sample) >= {"__key__", "mp4", "txt", "json"}
        item = by_id[sample["__key__"]]
        assert hashlib.sha256(sample["mp4"]).hexdigest() == item.video.sha256
        assert sample["txt"].decode("utf-8") == item.prompt
        meta = json.loads(sample["json"])
        assert meta["lineage"]["asset_id"] == item.asset_id
        assert meta["sample"]["key"] == sample["__key__"]
    assert seen[-1] == (len(items), len(items))

    manifest_bytes = (dest / MANIFEST_NAME).read_bytes()
    manifest = ExportManifest.model_validate_json(manifest_bytes)
    assert result.manifest_sha256 == hashlib.sha256(manifest_bytes).hexdigest()
    content = manifest.content
    assert {s.asset_id for s in content.samples} == set(by_id)
    for shard in content.shards:
        assert _sha(dest / shard.path) == shard.sha256
        assert (dest / shard.path).stat().st_size == shard.bytes
        assert shard.samples <= 2
    assert sum(b.samples for b in content.bins.values()) == len(items)
    assert content.short_clips == sum(f / fps < 5 for _, _, _, fps, f in CLIPS)
    assert content.deviations and "duration_0_5" in content.deviations[0]
    assert all(s.shard.startswith(s.bin + "/part_000000/") for s in content.samples)
    _no_leftovers(dest)


async def test_tar_members_are_normalised_and_in_sample_order(
    store: ObjectStore, items: list[ExportItem], tmp_path: Path
) -> None:
    """mtime 0, root ids, no user names, mode 0644; per sample json, mp4, txt adjacent; keys ascending."""
    dest = tmp_path / "out"
    await write_export(_plan(items), dest, CountingFetch(store))
    for path in _tars(dest):
        with tarfile.open(path) as tar:
            members = tar.getmembers()
        for m in members:
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode, m.type) == (
                0,
                0,
                0,
                "",
                "",
                0o644,
                tarfile.REGTYPE,
            )
        names = [m.name for m in members]
        keys = list(dict.fromkeys(n.split(".", 1)[0] for n in names))
        assert keys == sorted(keys)
        assert names == [f"{k}.{ext}" for k in keys for ext in ("json", "mp4", "txt")]


async def test_same_items_give_byte_identical_shards(
    store: ObjectStore, items: list[ExportItem], tmp_path: Path
) -> None:
    """Two exports of the same items (in another order) into two folders: same shard bytes, same content."""
    first = await write_export(_plan(items), tmp_path / "one", CountingFetch(store))
    shuffled = items[:]
    random.Random(3).shuffle(shuffled)
    second = await write_export(_plan(shuffled), tmp_path / "two", CountingFetch(store))

    one, two = _tars(tmp_path / "one"), _tars(tmp_path / "two")
    assert [p.relative_to(tmp_path / "one") for p in one] == [p.relative_to(tmp_path / "two") for p in two]
    assert [p.read_bytes() for p in one] == [p.read_bytes() for p in two]
    assert first.manifest.content == second.manifest.content
    assert first.manifest.content_sha256 == second.manifest.content_sha256
    assert first.manifest.export_id != second.manifest.export_id  # another destination, another export


async def test_shards_split_by_byte_target(store: ObjectStore, items: list[ExportItem], tmp_path: Path) -> None:
    """A byte target below two videos puts every sample in a shard of its own."""
    target = min(i.video.size for i in items) + 4096
    result = await write_export(
        _plan(items, max_samples_per_shard=100, target_shard_bytes=target), tmp_path / "out", CountingFetch(store)
    )
    assert all(s.samples == 1 for s in result.manifest.content.shards)
    assert len(result.manifest.content.shards) == len(items)


# -- cosmos-video2world --------------------------------------------------------------------------


async def test_cosmos_layout_has_videos_metas_and_metadata(
    store: ObjectStore, items: list[ExportItem], tmp_path: Path
) -> None:
    """videos/<key>.mp4 (the stored bytes), metas/<key>.txt (the prompt), metadata/<key>.json, flat."""
    dest = tmp_path / "out"
    result = await write_export(_plan(items, "cosmos-video2world"), dest, CountingFetch(store))
    for item in items:
        assert _sha(dest / "videos" / f"{item.asset_id}.mp4") == item.video.sha256
        assert (dest / "metas" / f"{item.asset_id}.txt").read_text(encoding="utf-8") == item.prompt
        meta = json.loads((dest / "metadata" / f"{item.asset_id}.json").read_text(encoding="utf-8"))
        assert meta["asset_id"] == item.asset_id
    assert sorted(p.name for p in dest.iterdir()) == [MANIFEST_NAME, "metadata", "metas", "videos"]
    content = result.manifest.content
    assert len(content.files) == 3 * len(items)
    for record in content.files:
        assert _sha(dest / record.path) == record.sha256
    assert content.shards == ()
    assert {s.shard for s in content.samples} == {f"videos/{i.asset_id}.mp4" for i in items}
    _no_leftovers(dest)


# -- resuming ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["webdataset", "cosmos-video2world"])
async def test_interrupted_export_resumes_without_rewriting_finished_units(
    store: ObjectStore, items: list[ExportItem], tmp_path: Path, fmt: ExportFormat
) -> None:
    """A fetch failing on the 3rd video: the first unit(s) finished; a rerun fetches only the rest."""
    plan = _plan(items, fmt)
    dest = tmp_path / "out"
    with pytest.raises(FetchError, match="simulated outage"):
        await write_export(plan, dest, CountingFetch(store, fail_on=3))
    assert not (dest / MANIFEST_NAME).exists()
    assert (dest / JOURNAL_NAME).exists()
    finished = [dest / p for u in plan.units for p in u.files if (dest / p).exists()]
    done_samples = 2  # a shard of two, or two cosmos samples
    assert finished
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in finished}
    # what a killed process would leave: a half shard / half video and a staged download
    (dest / STAGING_DIR).mkdir(exist_ok=True)
    (dest / STAGING_DIR / "x.mp4").write_bytes(b"half")
    stray = dest / "videos" / "clip-z.mp4.partial"
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"half")

    again = CountingFetch(store)
    result = await write_export(plan, dest, again)

    assert len(again.calls) == len(items) - done_samples
    assert result.kept_units == (1 if fmt == "webdataset" else 2)
    assert result.written_units == len(plan.units) - result.kept_units
    for path, stamp in stamps.items():
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp, f"{path} was rewritten"
    _no_leftovers(dest)
    clean = await write_export(plan, tmp_path / "clean", CountingFetch(store))
    assert result.manifest.content == clean.manifest.content


async def test_a_complete_export_is_not_written_again(
    store: ObjectStore, items: list[ExportItem], tmp_path: Path
) -> None:
    """Rerunning a finished export fetches nothing and returns the same manifest."""
    dest = tmp_path / "out"
    first = await write_export(_plan(items), dest, CountingFetch(store))
    again = CountingFetch(store)
    second = await write_export(_plan(items), dest, again)
    assert again.calls == []
    assert second.already_complete
    assert second.manifest_sha256 == first.manifest_sha256


async def test_a_finished_export_of_another_selection_is_refused(
    store: ObjectStore, items: list[ExportItem], tmp_path: Path
) -> None:
    """DEST holding another export's manifest: refused, nothing changed."""
    dest = tmp_path / "out"
    await write_export(_plan(items[:3]), dest, CountingFetch(store))
    before = (dest / MANIFEST_NAME).read_bytes()
    with pytest.raises(DestinationError, match="another selection"):
        await write_export(_plan(items), dest, CountingFetch(store))
    assert (dest / MANIFEST_NAME).read_bytes() == before


async def test_a_changed_selection_resumes_and_drops_what_it_no_longer_has(
    store: ObjectStore, items: list[ExportItem], tmp_path: Path
) -> None:
    """Interrupted with one set of items, rerun with another: recorded files not planned any more go."""
    dest = tmp_path / "out"
    with pytest.raises(FetchError, match="clip-c"):
        await write_export(_plan(items, "cosmos-video2world"), dest, CountingFetch(store, fail_on=3))
    assert (dest / "videos" / "clip-a.mp4").exists()
    remaining = [i for i in items if i.asset_id != "clip-a"]
    result = await write_export(_plan(remaining, "cosmos-video2world"), dest, CountingFetch(store))
    assert not (dest / "videos" / "clip-a.mp4").exists()
    assert not (dest / "metas" / "clip-a.txt").exists()
    assert result.kept_units == 1
    assert {s.asset_id for s in result.manifest.content.samples} == {i.asset_id for i in remaining}


# -- refusals ------------------------------------------------------------------------------------


def _assert_refused(exc: pytest.ExceptionInfo[DestinationError], dest: Path) -> None:
    assert str(dest) in str(exc.value)
    assert "DEST must be a writable folder" in str(exc.value)


async def test_a_file_as_dest_is_refused(store: ObjectStore, items: list[ExportItem], tmp_path: Path) -> None:
    """DEST is a regular file: refused naming DEST and the rule; the file untouched, nothing written."""
    dest = tmp_path / "dataset"
    dest.write_bytes(b"not a folder")
    with pytest.raises(DestinationError, match="is a file") as exc:
        await write_export(_plan(items), dest, CountingFetch(store))
    _assert_refused(exc, dest)
    assert dest.read_bytes() == b"not a folder"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "src") == ["dataset"]


async def test_a_dest_under_a_file_is_refused(store: ObjectStore, items: list[ExportItem], tmp_path: Path) -> None:
    """A path below a regular file cannot be created (blocks root too, unlike permissions)."""
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"x")
    dest = blocker / "dataset"
    fetch = CountingFetch(store)
    with pytest.raises(DestinationError, match="cannot create the folder") as exc:
        await write_export(_plan(items), dest, fetch)
    _assert_refused(exc, dest)
    assert fetch.calls == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0500 folder anyway")
async def test_a_read_only_dest_is_refused(store: ObjectStore, items: list[ExportItem], tmp_path: Path) -> None:
    """A folder we may not write in: refused before anything is fetched."""
    dest = tmp_path / "ro"
    dest.mkdir(mode=0o500)
    try:
        with pytest.raises(DestinationError, match="cannot write in it") as exc:
            await write_export(_plan(items), dest, CountingFetch(store))
        _assert_refused(exc, dest)
    finally:
        dest.chmod(0o700)


async def test_a_folder_holding_other_things_is_refused(
    store: ObjectStore, items: list[ExportItem], tmp_path: Path
) -> None:
    """A non-empty folder that is not an export of ours is left alone."""
    dest = tmp_path / "photos"
    dest.mkdir()
    (dest / "holiday.jpg").write_bytes(b"jpg")
    with pytest.raises(DestinationError, match="not empty") as exc:
        await write_export(_plan(items), dest, CountingFetch(store))
    _assert_refused(exc, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["holiday.jpg"]


@pytest.mark.parametrize("field", ["sha256", "size"])
async def test_a_video_that_is_not_the_catalogs_stops_the_export(
    store: ObjectStore, items: list[ExportItem], tmp_path: Path, field: str
) -> None:
    """The stored bytes differ from the ObjectRef (digest or size): a clear error, no manifest, no such shard."""
    victim = items[3]
    wrong: dict[str, Any] = {"sha256": "0" * 64} if field == "sha256" else {"size": victim.video.size + 1}
    bad = victim.model_copy(update={"video": victim.video.model_copy(update=wrong)})
    plan = _plan([*items[:3], bad, *items[4:]])
    dest = tmp_path / "out"
    with pytest.raises(VideoMismatchError, match=victim.asset_id) as exc:
        await write_export(plan, dest, CountingFetch(store))
    assert "the catalog recorded" in str(exc.value)
    assert not (dest / MANIFEST_NAME).exists()
    bad_unit = next(u for u in plan.units if any(s.key == victim.asset_id for s in u.samples))
    assert not (dest / bad_unit.unit_id).exists()
    assert [p.name for p in dest.rglob("*.partial")] == [JOURNAL_NAME]  # only the progress record stays


# -- the command's argument checks ---------------------------------------------------------------


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(export)
    app.command("version")(lambda: None)  # a second command keeps `export` a named sub-command
    return app


@pytest.fixture
def run_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """Invoke ``export`` with no stack running (an empty data folder, no service URLs)."""
    for name in ("WM_CATALOG_URL", "WM_API_TOKEN", "WM_S3_ACCESS_KEY", "WM_S3_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    env = {"WM_DATA_DIR": str(tmp_path / "no-stack"), "COLUMNS": "200"}

    def run(*args: str) -> Result:
        return CliRunner().invoke(_app(), ["export", *args], env=env)

    return run


@pytest.mark.parametrize(
    ("args", "messages"),
    [
        (["--manifest", "m", "--query", "series=a"], ["--manifest", "--query"]),
        ([], ["--manifest", "--query"]),
        (["--query", "colour=red"], ["unknown filter 'colour'"]),
        (["--query", "qa_status=failed"], ["qa_status"]),
        (["--query", "series=a&series=b"], ["'series' is given twice"]),
        (["--query", "min_duration=short"], ["'min_duration' must be a number"]),
        (["--query", "kind=image"], ["'kind' must be one of"]),
        (["--manifest", "m", "--format", "tfrecord"], ["--format"]),
        (["--manifest", "m", "--max-samples-per-shard", "0"], ["--max-samples-per-shard"]),
    ],
)
def test_bad_arguments_exit_2_naming_the_option(
    run_cli: Callable[..., Result], tmp_path: Path, args: list[str], messages: list[str]
) -> None:
    """Usage errors are found before any service is asked; nothing is written to DEST."""
    dest = tmp_path / "dest"
    result = run_cli(str(dest), *args)
    assert result.exit_code == 2, result.output
    for message in messages:
        assert message in result.output
    assert not dest.exists()


def test_an_unusable_dest_exits_2_before_the_catalog_is_asked(run_cli: Callable[..., Result], tmp_path: Path) -> None:
    """A file as DEST: exit 2 naming DEST and the rule (not 1 for the missing catalog)."""
    dest = tmp_path / "file"
    dest.write_bytes(b"x")
    result = run_cli(str(dest), "--manifest", "m")
    assert result.exit_code == 2, result.output
    assert "is a file" in result.output and "DEST must be a writable folder" in result.output


def test_without_a_catalog_the_command_exits_1(run_cli: Callable[..., Result], tmp_path: Path) -> None:
    """Good arguments, no stack: exit 1 saying how to start the catalog."""
    result = run_cli(str(tmp_path / "dest"), "--query", "series=a&tag=x&tag=y")
    assert result.exit_code == 1, result.output
    assert "catalog" in result.output


def test_the_selection_string_is_canonical() -> None:
    """Filters sorted and URL-encoded, with qa_status=passed; tag may repeat."""
    filters, selection = selection_of(None, "tag=b&series=s%201&tag=a")
    assert filters == [("qa_status", "passed"), ("series", "s 1"), ("tag", "a"), ("tag", "b")]
    assert selection == "qa_status=passed&series=s+1&tag=a&tag=b"
    assert selection_of("warehouse", None)[1] == "manifest=warehouse&qa_status=passed"
    assert parse_query("created_from=2026-01-01T00:00:00%2B00:00") == [("created_from", "2026-01-01T00:00:00+00:00")]
    with pytest.raises(QueryError, match="no value"):
        parse_query("series=")
    with pytest.raises(QueryError, match="ISO 8601"):
        parse_query("created_to=yesterday")


def test_export_result_is_what_the_cli_records(tmp_path: Path) -> None:
    """The record the CLI posts is built from the manifest alone (no catalog needed to check its shape)."""
    item = ExportItem(
        asset_id="a",
        video=ObjectRef(bucket="wm-artifacts", key="k", size=1, sha256="1" * 64),
        prompt="p",
        width=320,
        height=192,
        fps=24,
        frames=24,
        duration_s=1,
    )
    plan = _plan([item])
    written = {u.unit_id: [FileRecord(path=u.unit_id, sha256="2" * 64, bytes=10)] for u in plan.units}
    created = datetime(2026, 1, 1, tzinfo=UTC)
    manifest = build_manifest(plan, written, destination=str(tmp_path), created_at=created, worldmill_version="x")
    record = dataset_exported(ExportResult(manifest, tmp_path / MANIFEST_NAME, "3" * 64, 1, 0, already_complete=False))
    assert record.export_id == manifest.export_id
    assert record.samples[0].shard == plan.units[0].unit_id
    assert record.manifest_sha256 == "3" * 64
    assert record.selection == "manifest=warehouse&qa_status=passed"
    assert record.exported_at == created
