"""QA of one video in one decode pass: real files (good, wrong, broken, not video) through analyze() and check()."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt
import pytest

from tests.helpers.factories import plan
from tests.helpers.video import write_video
from worldmill.contracts.base import Resolution
from worldmill.contracts.cards import GenerationMode
from worldmill.contracts.generation import ChunkPlan, ExpectedOutput, FpsConversion, GenerationPlan
from worldmill.contracts.prompts import SamplingParams
from worldmill.contracts.qa import Finding, Severity
from worldmill.gpu_runner.video import encode_mp4
from worldmill.qa.criteria import Expectation
from worldmill.qa.findings import jpeg, passed
from worldmill.qa.fingerprint import hamming
from worldmill.qa.judge import check, near_duplicate
from worldmill.qa.measure import Analysis, analyze

Frames = npt.NDArray[np.uint8]
W, H = 320, 192


def scene(seed: int, frames: int, *, speed: float = 2.0, width: int = W, height: int = H) -> Iterator[Frames]:
    """A smooth random landscape panning ``speed`` pixels a frame: ordinary, steady motion."""
    rng = np.random.default_rng(seed)
    span = width + int(frames * speed) + 16
    coarse = rng.integers(0, 256, size=(height // 8 + 2, span // 8 + 2, 3), dtype=np.uint8)
    big = cv2.GaussianBlur(cv2.resize(coarse, (coarse.shape[1] * 8, coarse.shape[0] * 8)), (0, 0), 4)
    for i in range(frames):
        x = int(i * speed)
        yield np.ascontiguousarray(big[:height, x : x + width])


def by_check(findings: list[Finding]) -> dict[str, Finding]:
    """Findings by check name (each check appears once)."""
    named = {f.check: f for f in findings}
    assert len(named) == len(findings)
    return named


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 s at 24 fps, 320x192, made the way the GPU runner makes videos."""
    path = tmp_path_factory.mktemp("qa") / "good.mp4"
    encode_mp4(scene(1, 120), path, fps=24)
    return path


def test_good_video_passes_every_check(good: Path) -> None:
    """A correct 120-frame 24 fps video passes every check against its plan, with evidence attached."""
    analysis = analyze(good)
    findings = check(analysis, Expectation.from_plan(plan("p1", frames=120, fps=24)))
    assert [f for f in findings if not f.passed] == []
    assert passed(findings)
    named = by_check(findings)
    assert {"decodes", "container", "codec", "frames", "fps", "duration", "resolution", "vfr", "static"} <= set(named)
    assert {"black", "flat", "flicker"} <= set(named)
    assert (analysis.frames, analysis.fps, analysis.width, analysis.height) == (120, Fraction(24), W, H)
    assert analysis.duration_s == pytest.approx(5.0)
    assert analysis.diffs.shape == (120,) and analysis.diffs[0] == 0
    assert set(analysis.screenshots) == {"start", "middle", "end"}
    assert analysis.screenshots["middle"].shape == (H, W, 3)
    assert analysis.contact_sheet is not None and analysis.contact_sheet.shape == (3 * 96, 4 * 160, 3)
    assert jpeg(analysis.contact_sheet)[:2] == b"\xff\xd8"
    assert len(analysis.phash) == 8


def test_sha256_is_the_file_hash(good: Path) -> None:
    """The streamed SHA-256 and the size are those of the file's bytes."""
    analysis = analyze(good)
    data = good.read_bytes()
    assert analysis.sha256 == hashlib.sha256(data).hexdigest()
    assert analysis.bytes == len(data)


def test_the_seed_000_clip_fails_frames_fps_and_duration(tmp_path: Path) -> None:
    """93 frames at 16 fps delivered as "10 s at 24 fps" fails frames, fps and duration, saying both numbers."""
    path = encode_mp4(scene(2, 93), tmp_path / "C01_10s.mp4", fps=16).path
    findings = check(analyze(path), Expectation(frames=240, fps=24.0, duration_s=10.0, width=W, height=H))
    named = by_check(findings)
    assert (named["frames"].passed, named["frames"].measured, named["frames"].expected) == (False, 93, 240)
    assert (named["fps"].passed, named["fps"].measured, named["fps"].expected) == (False, 16.0, 24.0)
    assert named["duration"].passed is False
    assert named["duration"].measured == pytest.approx(93 / 16, abs=1e-3)
    assert named["duration"].expected == 10.0
    assert "expected 240" in named["frames"].message and "expected 10 s" in named["duration"].message
    assert named["resolution"].passed and named["decodes"].passed
    assert not passed(findings)


@pytest.mark.parametrize("faststart", [True, False], ids=["index-first", "index-last"])
def test_truncated_file_is_a_decode_error(tmp_path: Path, faststart: bool) -> None:
    """A video cut in half gives a failed ``decodes`` finding naming the damage, never an exception."""
    whole = tmp_path / "whole.mp4"
    if faststart:  # the GPU runner's files: index first, so the first half still decodes
        encode_mp4(scene(3, 96), whole, fps=24)
    else:  # index at the end: the first half cannot even be opened
        write_video(whole, width=W, height=H, fps=24, frames=96)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    analysis = analyze(cut)
    assert analysis.status == "damaged"
    decodes = by_check(check(analysis, Expectation(frames=96, fps=24, duration_s=4.0, width=W, height=H)))["decodes"]
    assert (decodes.passed, decodes.severity, decodes.measured) == (False, Severity.ERROR, "damaged")
    assert "damaged" in decodes.message or "truncated" in decodes.message
    if faststart:
        assert 0 < analysis.frames < 96 and analysis.declared_frames == 96
        assert "declares 96" in decodes.message
    assert analysis.sha256 == hashlib.sha256(data[: len(data) // 2]).hexdigest()


def test_random_bytes_are_not_a_video(tmp_path: Path) -> None:
    """Random bytes named .mp4 are reported as not a video."""
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8).tobytes())
    analysis = analyze(path)
    findings = check(analysis, Expectation(frames=120))
    assert analysis.status == "not_video"
    assert findings[0].check == "decodes" and not findings[0].passed
    assert "not a video" in findings[0].message
    assert not passed(findings)


def test_zero_length_file(tmp_path: Path) -> None:
    """An empty file gives one clear failed finding, and the check list stops there."""
    path = tmp_path / "empty.mp4"
    path.touch()
    findings = check(analyze(path), Expectation(frames=120))
    assert [(f.check, f.passed, f.measured) for f in findings] == [("decodes", False, "empty")]
    assert "empty file (0 bytes)" in findings[0].message


def test_audio_only_file_has_no_video_stream(tmp_path: Path) -> None:
    """An MP4 with only AAC audio is reported as having no video stream."""
    path = tmp_path / "audio.mp4"
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=48000)
        stream.layout = "mono"
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 48000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    analysis = analyze(path)
    assert (analysis.status, analysis.audio_only) == ("no_video_stream", True)
    decodes = check(analysis, None)[0]
    assert not decodes.passed and "no video stream" in decodes.message and "aac" in decodes.message


def test_frozen_video_fails_the_static_check(tmp_path: Path) -> None:
    """The same frame repeated is frozen: the static check fails with severity error."""
    frame = next(scene(4, 1))
    path = encode_mp4([frame] * 48, tmp_path / "frozen.mp4", fps=24).path
    static = by_check(check(analyze(path), None))["static"]
    assert (static.passed, static.severity) == (False, Severity.ERROR)
    assert isinstance(static.measured, float) and static.measured < 0.01


def test_all_black_video_fails_black_frames(tmp_path: Path) -> None:
    """An all-black video fails the black-frame check as an error, counting every frame."""
    path = encode_mp4([np.zeros((H, W, 3), np.uint8)] * 48, tmp_path / "black.mp4", fps=24).path
    named = by_check(check(analyze(path), None))
    assert (named["black"].passed, named["black"].severity, named["black"].measured) == (False, Severity.ERROR, 48)
    assert named["flat"].passed  # black frames are counted once, as black


def test_a_few_black_frames_are_a_warning(tmp_path: Path) -> None:
    """Two black frames of 48 (under 10 %) fail the black check only as a warning: the verdict passes."""
    frames = list(scene(5, 48))
    frames[20] = frames[21] = np.zeros((H, W, 3), np.uint8)
    findings = check(analyze(encode_mp4(frames, tmp_path / "blink.mp4", fps=24).path), None)
    black = by_check(findings)["black"]
    assert (black.passed, black.severity, black.measured) == (False, Severity.WARNING, 2)
    assert passed(findings)


@pytest.fixture(scope="module")
def jump(tmp_path_factory: pytest.TempPathFactory) -> Analysis:
    """120 frames whose content jumps to another scene at frame 60."""
    path = tmp_path_factory.mktemp("qa") / "jump.mp4"
    frames = [*scene(6, 60), *scene(7, 60)]
    return analyze(encode_mp4(frames, path, fps=24).path)


def test_jump_at_a_planned_boundary_is_a_seam(jump: Analysis) -> None:
    """A jump at frame 60 fails the seam check when chunks are planned to join at 60."""
    seams = by_check(check(jump, Expectation(frames=120, boundaries=(60,))))["seams"]
    assert (seams.passed, seams.severity) == (False, Severity.ERROR)
    assert isinstance(seams.measured, list) and float(seams.measured[0]) >= 3.0
    assert "frame 60" in seams.message


def test_jump_away_from_the_boundaries_is_no_seam(jump: Analysis) -> None:
    """The same video passes the seam check when the planned joins are at 30 and 90."""
    seams = by_check(check(jump, Expectation(frames=120, boundaries=(30, 90))))["seams"]
    assert seams.passed
    assert isinstance(seams.measured, list) and len(seams.measured) == 2


def test_plan_boundaries_map_through_an_fps_conversion() -> None:
    """Chunks joining at native frames 40 and 80 (16 fps) join at output frames 60 and 120 (24 fps)."""
    res = Resolution(width=W, height=H)
    chunks = tuple(
        ChunkPlan(
            index=i,
            seed=i,
            frames=45,
            condition="previous_chunk" if i else "none",
            condition_frames=5 if i else 0,
            keep_from=5 if i else 0,
            keep_frames=40,
        )
        for i in range(3)
    )
    p = GenerationPlan(
        plan_id="p",
        prompt_id="p",
        prompt_version=1,
        model="m",
        mode=GenerationMode.TEXT2WORLD,
        resolution=res,
        native_fps=16,
        native_frames=120,
        chunks=chunks,
        fps_conversion=FpsConversion(
            source_fps=16, target_fps=24, method="interpolate", source_frames=120, target_frames=180
        ),
        expected=ExpectedOutput(frames=180, fps=24, duration_s=7.5, resolution=res),
        sampling=SamplingParams(guidance=7, steps=35),
        estimated_gpu_seconds=1.0,
    )
    expectation = Expectation.from_plan(p)
    assert expectation.boundaries == (60, 120)
    assert (expectation.frames, expectation.fps, expectation.width, expectation.height) == (180, 24, W, H)


def test_variable_frame_rate_is_flagged(tmp_path: Path) -> None:
    """Frames with irregular timestamps are flagged as VFR (a warning), with the gaps measured."""
    path = tmp_path / "vfr.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 24)
        pts = 0
        for i, image in enumerate(scene(8, 48)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 24)
            pts += 2 if i % 3 == 0 else 1
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    analysis = analyze(path)
    vfr = by_check(check(analysis, None))["vfr"]
    assert analysis.vfr and (vfr.passed, vfr.severity) == (False, Severity.WARNING)
    assert analysis.frame_interval_s == pytest.approx((1 / 24, 2 / 24))


def test_steady_video_is_not_vfr(good: Path) -> None:
    """A constant-rate file is not flagged and its frame gaps are all 1/24 s."""
    analysis = analyze(good)
    assert not analysis.vfr and analysis.frame_interval_s == pytest.approx((1 / 24, 1 / 24))


def test_brightness_pulses_are_flicker(tmp_path: Path) -> None:
    """Brightness alternating ±3 levels every frame is a flicker warning that does not fail the verdict."""
    frames = [
        np.clip(f.astype(np.int16) + (3 if i % 2 else -3), 0, 255).astype(np.uint8) for i, f in enumerate(scene(9, 48))
    ]
    findings = check(analyze(encode_mp4(frames, tmp_path / "flicker.mp4", fps=24).path), None)
    flicker = by_check(findings)["flicker"]
    assert (flicker.passed, flicker.severity) == (False, Severity.WARNING)
    assert passed(findings)


def test_near_duplicates(tmp_path: Path) -> None:
    """The same frames re-encoded at another crf are near duplicates; another seed's video is not."""
    a = analyze(encode_mp4(scene(10, 48), tmp_path / "a.mp4", fps=24, crf=18).path)
    a_again = analyze(encode_mp4(scene(10, 48), tmp_path / "a36.mp4", fps=24, crf=36).path)
    b = analyze(encode_mp4(scene(11, 48), tmp_path / "b.mp4", fps=24, crf=18).path)
    assert a.sha256 != a_again.sha256
    assert near_duplicate(a.phash, a_again.phash, bits=10, equal_length=False).duplicate
    assert not near_duplicate(a.phash, b.phash, bits=10, equal_length=False).duplicate
    assert sum(hamming(x, y) for x, y in zip(a.phash, b.phash, strict=True)) / len(a.phash) > 20


def _bars(index: int) -> Frames:
    """A frame showing ``index`` in binary: eight vertical bars, bright for a 1 bit (most significant left)."""
    image = np.full((H, W, 3), 30, np.uint8)
    for bit in range(8):
        if index >> (7 - bit) & 1:
            image[:, bit * 40 : (bit + 1) * 40] = 220
    return image


def _read_bars(image: Frames) -> int:
    """The index a :func:`_bars` frame shows, read from the middle of each bar."""
    return sum(
        1 << (7 - bit) for bit in range(8) if image[H // 4 : 3 * H // 4, bit * 40 + 10 : bit * 40 + 30].mean() > 125
    )


def test_screenshots_are_the_frames_at_their_times(tmp_path: Path) -> None:
    """Screenshots show the frames at 0.5 s, the middle and 0.5 s before the end (12, 60, 108 of 120 at 24 fps)."""
    path = encode_mp4((_bars(i) for i in range(120)), tmp_path / "index.mp4", fps=24).path
    shots = analyze(path).screenshots
    assert {label: _read_bars(image) for label, image in shots.items()} == {"start": 12, "middle": 60, "end": 108}
    assert jpeg(shots["start"])[:2] == b"\xff\xd8"


def test_no_expectation_is_reported(good: Path) -> None:
    """Without a plan the content checks still run and an info finding says what was not checked."""
    findings = check(analyze(good), None)
    named = by_check(findings)
    assert (named["expectation"].passed, named["expectation"].severity) == (False, Severity.INFO)
    assert "frames" not in named and named["static"].passed
    assert passed(findings)


def test_large_file_is_streamed_not_read_whole(tmp_path: Path) -> None:
    """A ~100 MB (mostly sparse) garbage file is hashed and rejected with a Python memory peak far below its size."""
    path = tmp_path / "huge.mp4"
    size = 100 * 2**20
    with path.open("wb") as handle:
        handle.write(os.urandom(2**20))
        handle.seek(size - 2**20)
        handle.write(os.urandom(2**20))
    tracemalloc.start()
    try:
        analysis = analyze(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert analysis.status == "not_video" and analysis.bytes == size
    assert peak < 8 * 2**20, f"peak {peak} bytes"
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 * 2**20):
            digest.update(chunk)
    assert analysis.sha256 == digest.hexdigest()


def test_a_video_stream_without_frames_is_refused(tmp_path: Path) -> None:
    """A file whose index is intact but whose frames were cut off (index first) fails 'decodes', no exception."""
    whole = tmp_path / "whole.mp4"
    encode_mp4(scene(3, 96), whole, fps=24)  # index at the front, as the runner writes
    data = whole.read_bytes()
    head = tmp_path / "index_only.mp4"
    head.write_bytes(data[: data.index(b"mdat") + 4])  # keep the index, drop every frame
    analysis = analyze(head)
    assert analysis.frames == 0
    decodes = by_check(check(analysis, Expectation(frames=96, fps=24, duration_s=4.0, width=W, height=H)))["decodes"]
    assert not decodes.passed and decodes.severity == Severity.ERROR
