"""The export plan, pure: bins at their edges, keys and order, shard splitting, resume decisions, the manifest."""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
from datetime import UTC, datetime
from typing import Any

import pytest

from worldmill.catalog.export.journal import (
    FileRecord,
    JournalEntry,
    decide_resume,
    files_to_verify,
    journal_header,
    journal_line,
    parse_journal,
)
from worldmill.catalog.export.manifest import SHORT_CLIP_DEVIATION, build_content, build_manifest
from worldmill.catalog.export.plan import (
    ExportItem,
    ExportOptions,
    ExportPlan,
    ExportPlanError,
    NotExportableError,
    SkippedItem,
    aspect_bin,
    bin_of,
    canonical_json,
    duration_bin,
    plan_export,
    resolution_bin,
    sample_key,
    shard_groups,
    shard_path,
)
from worldmill.contracts.base import ObjectRef
from worldmill.contracts.catalog import AssetDetail, AssetSummary, LineageEdge, MediaLink
from worldmill.contracts.qa import Finding, Severity

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _ref(asset_id: str, size: int = 1000) -> ObjectRef:
    digest = hashlib.sha256(f"{asset_id}:{size}".encode()).hexdigest()
    return ObjectRef(bucket="wm-artifacts", key=f"runs/{asset_id}/video.mp4", size=size, sha256=digest)


def _item(
    asset_id: str,
    *,
    width: int = 1280,
    height: int = 720,
    fps: float = 24.0,
    frames: int = 240,
    size: int = 1000,
    prompt: str = "a forklift crosses an aisle",
) -> ExportItem:
    return ExportItem(
        asset_id=asset_id,
        video=_ref(asset_id, size),
        prompt=prompt,
        width=width,
        height=height,
        fps=fps,
        frames=frames,
        duration_s=frames / fps,
        metadata={"asset_id": asset_id},
    )


def _written(plan: ExportPlan) -> dict[str, list[FileRecord]]:
    """What a writer would report: one record per planned file (digest made up from the path)."""
    return {
        u.unit_id: [FileRecord(path=p, sha256=hashlib.sha256(p.encode()).hexdigest(), bytes=100) for p in u.files]
        for u in plan.units
    }


# -- bins ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (1920, 1080, "1080"),
        (1080, 1920, "1080"),  # portrait: the smaller side decides
        (3840, 2160, "1080"),
        (1920, 1079, "720"),
        (1280, 720, "720"),
        (720, 1280, "720"),
        (1280, 704, "lt_720"),  # Predict2.5's native "720p" size is lt_720 by curate's rule
        (719, 1280, "lt_720"),
        (320, 192, "lt_720"),
    ],
)
def test_resolution_bin_by_the_smaller_side(width: int, height: int, expected: str) -> None:
    """>= 1080 -> 1080, >= 720 -> 720, else lt_720, on min(width, height)."""
    assert resolution_bin(width, height) == expected


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (1, 100, "9_16"),
        (65, 100, "9_16"),  # 0.65 exactly: bins are closed above
        (651, 1000, "3_4"),
        (88, 100, "3_4"),
        (881, 1000, "1_1"),
        (100, 100, "1_1"),
        (116, 100, "1_1"),
        (1161, 1000, "4_3"),
        (155, 100, "4_3"),
        (1551, 1000, "16_9"),
        (1920, 1080, "16_9"),
        (1000, 100, "16_9"),  # 10:1 is the last ratio with a bin
        (1001, 100, None),
    ],
)
def test_aspect_bin_edges(width: int, height: int, expected: str | None) -> None:
    """Edges 0.65/0.88/1.16/1.55 (and 10), each bin open below and closed above, like cosmos-curate."""
    assert aspect_bin(width, height) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.04, "0_5"),
        (4.999999, "0_5"),
        (5.0, "5_10"),
        (10.0, "5_10"),  # a boundary goes to the lower bin, as in curate
        (10.000001, "10_30"),
        (30.0, "10_30"),
        (30.000001, "30_inf"),
        (3600.0, "30_inf"),
    ],
)
def test_duration_bin_edges(seconds: float, expected: str) -> None:
    """[0, 5) is our short bin; [5, 10], (10, 30], above 30 are curate's."""
    assert duration_bin(seconds) == expected


def test_bin_of_names_the_three_levels_and_refuses_what_fits_nowhere() -> None:
    """The folder path of a bin; a clip wider than 10:1 or without a size fits no bin."""
    assert bin_of(1920, 1080, 7.5) == "resolution_1080/aspect_ratio_16_9/duration_5_10"
    assert bin_of(720, 960, 2.0) == "resolution_720/aspect_ratio_3_4/duration_0_5"
    with pytest.raises(ValueError, match="wider than 10:1"):
        bin_of(2000, 100, 6.0)
    with pytest.raises(ValueError, match="not a frame size"):
        bin_of(0, 100, 6.0)


def test_duration_comes_from_frames_and_fps() -> None:
    """120 frames at 24 fps is exactly 5 s (5_10); 119 frames is just under (0_5)."""
    assert _item("a", frames=120).clip_seconds == 5.0
    plan = plan_export([_item("a", frames=120), _item("b", frames=119)], export_format="webdataset", selection="s")
    bins = {s.item.asset_id: s.bin for s in plan.samples}
    assert bins == {
        "a": "resolution_720/aspect_ratio_16_9/duration_5_10",
        "b": "resolution_720/aspect_ratio_16_9/duration_0_5",
    }


# -- keys and order ------------------------------------------------------------------------------


def test_sample_key_is_the_asset_id_and_refuses_dots_and_slashes() -> None:
    """webdataset splits a member name at the first dot: a key must not have one."""
    assert sample_key("asset-01_x") == "asset-01_x"
    for bad in ("a.b", "a/b", "", " a"):
        with pytest.raises(ValueError, match="cannot be a sample key"):
            sample_key(bad)


def test_order_is_bin_then_asset_id_whatever_the_input_order() -> None:
    """Shuffled input gives the same plan: same order, same shards, same fingerprint."""
    items = [
        _item(f"a{i:02d}", width=w, height=h, frames=f)
        for i, (w, h, f) in enumerate([(1920, 1080, 48), (1280, 720, 240), (720, 1280, 900), (320, 192, 24)] * 5)
    ]
    first = plan_export(items, export_format="webdataset", selection="manifest=m")
    shuffled = items[:]
    random.Random(7).shuffle(shuffled)
    second = plan_export(shuffled, export_format="webdataset", selection="manifest=m")
    assert first == second
    keys = [(s.bin, s.item.asset_id) for s in first.samples]
    assert keys == sorted(keys)
    assert [s.key for s in first.samples] == [s.item.asset_id for s in first.samples]
    # every sample's JSON says its key and bin
    sample = first.samples[0]
    assert json.loads(sample.meta)["sample"] == {"key": sample.key, "bin": sample.bin}
    assert sample.text == b"a forklift crosses an aisle"
    assert sample.members == (f"{sample.key}.json", f"{sample.key}.mp4", f"{sample.key}.txt")


def test_selection_and_options_change_the_fingerprint() -> None:
    """The plan's fingerprint covers the selection and the shard options, not just the items."""
    items = [_item("a"), _item("b")]
    base = plan_export(items, export_format="webdataset", selection="manifest=m").plan_sha256
    assert plan_export(items, export_format="webdataset", selection="manifest=n").plan_sha256 != base
    opts = ExportOptions(max_samples_per_shard=1)
    assert plan_export(items, export_format="webdataset", selection="manifest=m", options=opts).plan_sha256 != base
    assert plan_export(items, export_format="cosmos-video2world", selection="manifest=m").plan_sha256 != base


def test_duplicates_and_unbinnable_items_are_skipped_with_reasons() -> None:
    """The same item twice is one sample; a different item under the same id and a 20:1 clip are skipped."""
    a = _item("a")
    other_a = _item("a", size=2000)
    wide = _item("wide", width=2000, height=100)
    plan = plan_export(
        [a, a, other_a, wide],
        export_format="webdataset",
        selection="s",
        skipped=[SkippedItem(asset_id="z", reason="no prompt")],
    )
    assert [s.item.asset_id for s in plan.samples] == ["a"]
    reasons = {s.asset_id: s.reason for s in plan.skipped}
    assert set(reasons) == {"a", "wide", "z"}
    assert "listed twice" in reasons["a"]
    assert "wider than 10:1" in reasons["wide"]
    assert [s.asset_id for s in plan.skipped] == sorted(reasons)


def test_unknown_format_is_refused() -> None:
    """A format the writer does not know fails before anything is planned."""
    with pytest.raises(ExportPlanError, match="format"):
        plan_export([_item("a")], export_format="tfrecord", selection="s")  # type: ignore[arg-type]


# -- shards --------------------------------------------------------------------------------------


def test_shard_groups_close_at_the_count_and_before_the_byte_target() -> None:
    """Count and bytes both close a shard; an oversized sample gets a shard of its own."""
    assert shard_groups([1] * 7, max_samples=3, target_bytes=100) == [[0, 1, 2], [3, 4, 5], [6]]
    assert shard_groups([40, 40, 40, 10, 90, 200, 5], max_samples=10, target_bytes=100) == [
        [0, 1],
        [2, 3],
        [4],
        [5],
        [6],
    ]
    assert shard_groups([], max_samples=3, target_bytes=10) == []


def test_shard_paths_hold_at_most_100_tars_per_part() -> None:
    """part_NNNNNN/NNNNNN.tar, the tar number counting within its part."""
    assert shard_path("b", 0) == "b/part_000000/000000.tar"
    assert shard_path("b", 99) == "b/part_000000/000099.tar"
    assert shard_path("b", 100) == "b/part_000001/000000.tar"
    assert shard_path("b", 250) == "b/part_000002/000050.tar"


def test_plan_splits_each_bin_by_count() -> None:
    """7 samples of a bin with at most 3 per shard: 3 + 3 + 1; another bin starts its own shards."""
    items = [_item(f"s{i}") for i in range(7)] + [_item("short", frames=24)]
    plan = plan_export(items, export_format="webdataset", selection="s", options=ExportOptions(max_samples_per_shard=3))
    long_bin = "resolution_720/aspect_ratio_16_9/duration_5_10"
    short_bin = "resolution_720/aspect_ratio_16_9/duration_0_5"
    assert [(u.unit_id, len(u.samples)) for u in plan.units] == [
        (f"{short_bin}/part_000000/000000.tar", 1),
        (f"{long_bin}/part_000000/000000.tar", 3),
        (f"{long_bin}/part_000000/000001.tar", 3),
        (f"{long_bin}/part_000000/000002.tar", 1),
    ]
    assert all(u.files == (u.unit_id,) for u in plan.units)
    assert all(s.unit == u.unit_id for u in plan.units for s in u.samples)


def test_plan_splits_by_bytes_using_the_tar_size_of_each_sample() -> None:
    """A target of ~2.5 samples gives shards of 2; a sample over the target is alone."""
    items = [_item(f"s{i}", size=10_000) for i in range(5)] + [_item("s9", size=100_000)]
    one = plan_export(items[:1], export_format="webdataset", selection="s").samples[0].tar_bytes
    opts = ExportOptions(max_samples_per_shard=100, target_shard_bytes=int(one * 2.5))
    plan = plan_export(items, export_format="webdataset", selection="s", options=opts)
    assert [[s.key for s in u.samples] for u in plan.units] == [["s0", "s1"], ["s2", "s3"], ["s4"], ["s9"]]


@pytest.mark.parametrize("key_length", [10, 120])
def test_tar_bytes_estimate_matches_what_tarfile_writes(key_length: int) -> None:
    """The estimate is exact for short names and names needing a pax header (over 100 bytes)."""
    asset_id = "k" * key_length
    sample = plan_export([_item(asset_id, size=1234)], export_format="webdataset", selection="s").samples[0]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in zip(sample.members, (sample.meta, b"v" * 1234, sample.text), strict=True):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        members_end = buf.tell()
    assert sample.tar_bytes == members_end


def test_cosmos_layout_is_flat_one_unit_per_sample() -> None:
    """videos/<key>.mp4, metas/<key>.txt, metadata/<key>.json; bins still recorded."""
    plan = plan_export([_item("b"), _item("a", frames=24)], export_format="cosmos-video2world", selection="s")
    assert [u.files for u in plan.units] == [
        ("videos/a.mp4", "metas/a.txt", "metadata/a.json"),
        ("videos/b.mp4", "metas/b.txt", "metadata/b.json"),
    ]
    assert [s.unit for s in plan.samples] == ["videos/a.mp4", "videos/b.mp4"]
    assert plan.samples[0].bin.endswith("duration_0_5")


# -- the manifest --------------------------------------------------------------------------------


def test_manifest_counts_per_bin_and_records_the_short_clip_deviation() -> None:
    """Per-bin samples/shards/bytes, totals, every sample and shard, skipped items, the 0_5 deviation."""
    items = [_item(f"s{i}") for i in range(3)] + [_item("short", frames=24)]
    plan = plan_export(
        items,
        export_format="webdataset",
        selection="manifest=m&qa_status=passed",
        options=ExportOptions(max_samples_per_shard=2),
        skipped=[SkippedItem(asset_id="x", reason="no prompt text")],
    )
    content = build_content(plan, _written(plan))
    long_bin = "resolution_720/aspect_ratio_16_9/duration_5_10"
    short_bin = "resolution_720/aspect_ratio_16_9/duration_0_5"
    assert content.bins[long_bin].model_dump() == {"samples": 3, "shards": 2, "bytes": 200}
    assert content.bins[short_bin].model_dump() == {"samples": 1, "shards": 1, "bytes": 100}
    assert content.totals.model_dump() == {"samples": 4, "shards": 3, "bytes": 300}
    assert content.short_clips == 1
    assert content.deviations == (SHORT_CLIP_DEVIATION,)
    assert [s.asset_id for s in content.skipped] == ["x"]
    assert [(s.asset_id, s.shard) for s in content.samples][:2] == [
        ("short", f"{short_bin}/part_000000/000000.tar"),
        ("s0", f"{long_bin}/part_000000/000000.tar"),
    ]
    assert [(s.path, s.samples, s.first_key, s.last_key) for s in content.shards] == [
        (f"{short_bin}/part_000000/000000.tar", 1, "short", "short"),
        (f"{long_bin}/part_000000/000000.tar", 2, "s0", "s1"),
        (f"{long_bin}/part_000000/000001.tar", 1, "s2", "s2"),
    ]
    assert content.files == ()
    assert content.binning["aspect_ratio"][0] == {"above": 0.0, "at_most": 0.65, "bin": "9_16"}


def test_manifest_content_has_no_time_and_its_digest_is_stable() -> None:
    """Two manifests of one plan made at different times differ only outside ``content``."""
    plan = plan_export([_item("a"), _item("b")], export_format="cosmos-video2world", selection="s")
    first = build_manifest(plan, _written(plan), destination="/d1", created_at=NOW, worldmill_version="1")
    later = NOW.replace(year=2027)
    second = build_manifest(plan, _written(plan), destination="/d1", created_at=later, worldmill_version="2")
    assert first.content == second.content
    assert first.content_sha256 == second.content_sha256
    assert first.export_id == second.export_id  # a rerun reports the same export
    elsewhere = build_manifest(plan, _written(plan), destination="/d2", created_at=NOW, worldmill_version="1")
    assert elsewhere.export_id != first.export_id
    assert "created_at" not in json.dumps(first.content.model_dump(mode="json"))
    assert len(first.content.files) == 6
    assert first.content.shards == ()
    assert first.content.deviations == ()


def test_manifest_needs_every_unit() -> None:
    """A manifest of a half-written export is refused."""
    plan = plan_export([_item("a"), _item("b")], export_format="cosmos-video2world", selection="s")
    written = _written(plan)
    written.pop(plan.units[0].unit_id)
    with pytest.raises(ExportPlanError, match="not written"):
        build_content(plan, written)


# -- from the catalog ------------------------------------------------------------------------------


def _detail(**changes: Any) -> AssetDetail:
    summary: dict[str, Any] = {
        "asset_id": "asset-1",
        "kind": "video",
        "manifest": "warehouse",
        "prompt_id": "warehouse-forklift-5s-v0",
        "prompt_version": 2,
        "run_id": "run-1",
        "series": "w",
        "scenario": "forklift",
        "variant": 0,
        "risk_level": "high",
        "tags": ("night", "aisle"),
        "model": "cosmos-predict2.5-2b",
        "duration_s": 5.0,
        "fps": 24.0,
        "frames": 120,
        "width": 1280,
        "height": 704,
        "prompt": "A forklift crosses a dark aisle.",
        "qa_status": "passed",
        "video": MediaLink(ref=_ref("asset-1"), url="http://x/presigned"),
        "created_at": NOW,
    }
    summary.update(changes.pop("asset", {}))
    detail: dict[str, Any] = {
        "asset": AssetSummary(**summary),
        "findings": (
            Finding(check="frames", passed=True, severity=Severity.ERROR, measured=120, expected=120),
            Finding(check="flicker", passed=False, severity=Severity.WARNING, measured=0.3, message="some flicker"),
        ),
        "qa_attempt": 1,
        "checked_at": NOW,
        "checker_version": "qa-1",
        "provenance": {
            "backend": "diffusers",
            "model": "cosmos-predict2.5-2b",
            "checkpoint": "nvidia/Cosmos-Predict2.5-2B",
            "checkpoint_sha256": "0" * 64,
            "seeds": [11, 12],
            "code_version": "1.2.3",
            "device": "cuda:0",
            "started_at": "2026-01-01T00:00:00Z",
        },
        "request_id": "req-1",
        "lineage_edges": (
            LineageEdge(
                parent_kind="run", parent_id="run-1", child_kind="asset", child_id="asset-1", relation="produced"
            ),
        ),
    }
    detail.update(changes)
    return AssetDetail(**detail)


def test_from_detail_keeps_asset_qa_provenance_and_lineage_essentials() -> None:
    """The metadata JSON: the asset, a QA summary, model/checkpoint/seeds/code, lineage ids; no times."""
    item = ExportItem.from_detail(_detail())
    assert (item.asset_id, item.width, item.height, item.fps, item.frames) == ("asset-1", 1280, 704, 24.0, 120)
    assert item.prompt == "A forklift crosses a dark aisle."
    meta = item.metadata
    assert meta["lineage"] == {
        "asset_id": "asset-1",
        "manifest": "warehouse",
        "prompt_id": "warehouse-forklift-5s-v0",
        "prompt_version": 2,
        "prompt": "warehouse-forklift-5s-v0@2",
        "run_id": "run-1",
        "request_id": "req-1",
        "parents": ["run:run-1"],
    }
    assert meta["provenance"] == {
        "model": "cosmos-predict2.5-2b",
        "backend": "diffusers",
        "checkpoint": "nvidia/Cosmos-Predict2.5-2B",
        "checkpoint_sha256": "0" * 64,
        "seeds": [11, 12],
        "code_version": "1.2.3",
    }
    assert meta["qa"]["status"] == "passed"
    assert [c["check"] for c in meta["qa"]["checks"]] == ["flicker", "frames"]
    assert meta["qa"]["warnings"] == ["flicker: some flicker"]
    assert meta["labels"] == {
        "series": "w",
        "scenario": "forklift",
        "variant": 0,
        "risk_level": "high",
        "tags": ["aisle", "night"],
    }
    assert meta["video"]["sha256"] == item.video.sha256
    text = canonical_json(meta).decode()
    assert "2026-01-01" not in text and "presigned" not in text


def test_from_detail_falls_back_to_the_provenance_prompt_and_the_frame_count() -> None:
    """No prompt on the summary: the provenance's; no duration: frames / fps."""
    detail = _detail(asset={"prompt": None, "duration_s": None})
    detail = detail.model_copy(update={"provenance": {**(detail.provenance or {}), "prompt": "from provenance"}})
    item = ExportItem.from_detail(detail)
    assert item.prompt == "from provenance"
    assert item.duration_s == 5.0


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"asset": {"qa_status": "failed"}}, "qa_status is failed"),
        ({"asset": {"video": None}}, "no video"),
        ({"asset": {"prompt": "  "}, "provenance": None}, "no prompt"),
        ({"asset": {"fps": None, "width": None}}, "unknown width, fps"),
        ({"asset": {"frames": 0}}, "frames"),
    ],
)
def test_from_detail_names_why_an_asset_cannot_be_exported(changes: dict[str, Any], reason: str) -> None:
    """Not exportable is a reason to list, not a crash."""
    with pytest.raises(NotExportableError, match=reason) as info:
        ExportItem.from_detail(_detail(**changes))
    assert info.value.asset_id == "asset-1"


# -- journal and resume --------------------------------------------------------------------------


def _entry(plan: ExportPlan, index: int, *, fingerprint: str | None = None) -> JournalEntry:
    unit = plan.units[index]
    files = tuple(FileRecord(path=p, sha256=hashlib.sha256(p.encode()).hexdigest(), bytes=10) for p in unit.files)
    return JournalEntry(unit=unit.unit_id, fingerprint=fingerprint or unit.fingerprint, files=files)


def test_journal_round_trip_ignores_a_torn_last_line_and_foreign_files() -> None:
    """The header says it is ours; the last record of a unit wins; half a line is ignored."""
    plan = plan_export([_item("a"), _item("b")], export_format="cosmos-video2world", selection="s")
    first, second = _entry(plan, 0), _entry(plan, 1)
    text = "\n".join([journal_header(plan), journal_line(first), journal_line(second), journal_line(second)[:30]])
    assert parse_journal(text) == {first.unit: first, second.unit: second}
    assert parse_journal("") is None
    assert parse_journal('{"something": "else"}\n') is None
    assert parse_journal("not json") is None


def test_resume_keeps_units_recorded_unchanged_and_on_disk_as_recorded() -> None:
    """Kept: same fingerprint and same bytes on disk. Rewritten: changed, missing, altered. Removed: no longer planned."""
    items = [_item(n) for n in ("a", "b", "c", "d")]
    plan = plan_export(items, export_format="cosmos-video2world", selection="s")
    old_plan = plan_export([*items, _item("gone")], export_format="cosmos-video2world", selection="s")
    journal = {
        e.unit: e
        for e in (
            _entry(plan, 0),  # a: intact
            _entry(plan, 1, fingerprint="f" * 64),  # b: its content changed since
            _entry(plan, 2),  # c: a file was altered on disk
            _entry(old_plan, 4),  # gone: no longer selected
        )
    }  # d: never finished
    verify = files_to_verify(plan, journal)
    assert {r.path for r in verify} == {*plan.units[0].files, *plan.units[2].files}
    on_disk: dict[str, FileRecord | None] = {r.path: r for r in verify}
    on_disk["metas/c.txt"] = FileRecord(path="metas/c.txt", sha256="1" * 64, bytes=10)
    decision = decide_resume(plan, journal, on_disk)
    assert decision.keep == {plan.units[0].unit_id}
    assert decision.remove == ("metadata/gone.json", "metas/gone.txt", "videos/gone.mp4")
    # a missing file is not kept either
    on_disk["videos/a.mp4"] = None
    assert decide_resume(plan, journal, on_disk).keep == frozenset()
