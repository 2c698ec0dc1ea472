"""The GPU runner's video path: chunks → exact frame count → fps conversion → H.264 MP4, decoded back."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from worldmill.contracts.base import Resolution
from worldmill.contracts.cards import GenerationMode
from worldmill.contracts.generation import (
    ChunkPlan,
    ExpectedOutput,
    FpsConversion,
    GenerationPlan,
)
from worldmill.contracts.prompts import SamplingParams
from worldmill.gpu_runner.video import assemble, convert_fps, deliver, encode_mp4, to_rate
from worldmill.runtime.media import probe

Frames = npt.NDArray[np.uint8]


def make_plan(
    chunks: list[tuple[int, int, int]],
    *,
    width: int = 16,
    height: int = 16,
    native_fps: float = 24,
    target_fps: float = 24,
    target_frames: int | None = None,
) -> GenerationPlan:
    """A plan whose chunks are ``(frames, keep_from, keep_frames)``."""
    native = sum(keep for _, _, keep in chunks)
    target = native if target_frames is None else target_frames
    method = "none" if native_fps == target_fps else "interpolate"
    resolution = Resolution(width=width, height=height)
    return GenerationPlan(
        plan_id="plan1",
        prompt_id="prompt1",
        prompt_version=1,
        model="test-model",
        mode=GenerationMode.TEXT2WORLD,
        resolution=resolution,
        native_fps=native_fps,
        native_frames=native,
        chunks=tuple(
            ChunkPlan(
                index=i,
                seed=i,
                frames=frames,
                condition="none" if i == 0 else "previous_chunk",
                condition_frames=0 if i == 0 else keep_from,
                keep_from=keep_from,
                keep_frames=keep,
            )
            for i, (frames, keep_from, keep) in enumerate(chunks)
        ),
        fps_conversion=FpsConversion(
            source_fps=native_fps, target_fps=target_fps, method=method, source_frames=native, target_frames=target
        ),
        expected=ExpectedOutput(frames=target, fps=target_fps, duration_s=target / target_fps, resolution=resolution),
        sampling=SamplingParams(guidance=7.0, steps=35),
        estimated_gpu_seconds=1.0,
    )


def marked_chunk(chunk: int, frames: int, *, size: int = 16) -> Frames:
    """Frames whose pixel (0, 0) holds (chunk, frame index, 0), the rest mid-grey."""
    out = np.full((frames, size, size, 3), 128, dtype=np.uint8)
    out[:, 0, 0, 0] = chunk
    out[:, 0, 0, 1] = np.arange(frames)
    out[:, 0, 0, 2] = 0
    return out


def random_frames(count: int, *, seed: int = 0, size: int = 8) -> Frames:
    """Random uint8 frames (count, size, size, 3)."""
    return np.random.default_rng(seed).integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)


def decode(path: Path) -> tuple[list[Frames], Fraction, Fraction]:
    """All frames of a file as RGB arrays, the stream's average rate and its duration in seconds."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames: list[Frames] = [
            np.asarray(f.to_ndarray(format="rgb24"), dtype=np.uint8) for f in container.decode(stream)
        ]
        assert stream.average_rate is not None and stream.duration is not None and stream.time_base is not None
        rate = Fraction(stream.average_rate)
        duration = Fraction(stream.duration) * stream.time_base
    return frames, rate, duration


def gradient_frames(count: int, *, width: int = 64, height: int = 48) -> list[Frames]:
    """Smooth frames that change over time (cheap to encode)."""
    xs = np.arange(width, dtype=np.int32)[None, :, None]
    ys = np.arange(height, dtype=np.int32)[:, None, None]
    return [((xs * 3 + ys * 2 + i * 5 + np.zeros(3, dtype=np.int32)) % 256).astype(np.uint8) for i in range(count)]


# --- assemble ---------------------------------------------------------------------------------


def test_assemble_keeps_exactly_the_planned_frames() -> None:
    """Three 93-frame chunks keeping 93 + 88 + 59 frames give 240 frames whose joins are the planned source frames."""
    plan = make_plan([(93, 0, 93), (93, 5, 88), (93, 5, 59)])
    video = assemble([marked_chunk(c, 93) for c in range(3)], plan)
    assert video.shape == (240, 16, 16, 3)
    expected = [(0, j) for j in range(93)] + [(1, j) for j in range(5, 93)] + [(2, j) for j in range(5, 64)]
    assert [(int(f[0, 0, 0]), int(f[0, 0, 1])) for f in video] == expected
    assert (int(video[92, 0, 0, 1]), int(video[93, 0, 0, 0]), int(video[93, 0, 0, 1])) == (92, 1, 5)
    assert (int(video[181, 0, 0, 0]), int(video[181, 0, 0, 1])) == (2, 5)


def test_assemble_rejects_a_chunk_with_the_wrong_frame_count() -> None:
    """A chunk with fewer frames than planned is a ValueError naming the chunk and both counts."""
    plan = make_plan([(93, 0, 93), (93, 5, 88)])
    with pytest.raises(ValueError, match=r"chunk 1: has 92 frames.* 93"):
        assemble([marked_chunk(0, 93), marked_chunk(1, 92)], plan)


def test_assemble_rejects_frames_of_the_wrong_size_and_missing_chunks() -> None:
    """Frames not at the plan's resolution, or a missing chunk, are ValueErrors naming what is wrong."""
    plan = make_plan([(93, 0, 93), (93, 5, 88)])
    with pytest.raises(ValueError, match=r"chunk 1: frames are 8x8.* 16x16"):
        assemble([marked_chunk(0, 93), marked_chunk(1, 93, size=8)], plan)
    with pytest.raises(ValueError, match=r"got 1 chunks but the plan has 2"):
        assemble([marked_chunk(0, 93)], plan)


# --- convert_fps ------------------------------------------------------------------------------


def test_interpolate_16_to_24_gives_exact_count_and_blends() -> None:
    """80 frames at 16 fps become 120 at 24 fps, frame 0 is source 0 and in-between frames are weighted blends."""
    source = random_frames(80)
    conversion = FpsConversion(source_fps=16, target_fps=24, method="interpolate", source_frames=80, target_frames=120)
    out = convert_fps(source, conversion)
    assert out.shape == (120, 8, 8, 3) and out.dtype == np.uint8
    assert np.array_equal(out[0], source[0])
    assert np.array_equal(out[3], source[2])  # 3/24 s = 2/16 s: exactly on a source frame
    # target 1 is at 1/24 s = 2/3 of the way from source 0 to source 1
    blend = source[0].astype(np.float64) / 3 + source[1].astype(np.float64) * 2 / 3
    assert np.abs(out[1].astype(np.float64) - blend).max() <= 1
    assert np.array_equal(out[-1], source[-1])  # 119/24 s lies after the last source frame: held


def test_interpolate_halfway_is_the_average() -> None:
    """A target frame halfway between two source frames (24 → 16 fps: target 1 is at source 1.5) is their average."""
    source = random_frames(120, seed=1)
    conversion = FpsConversion(source_fps=24, target_fps=16, method="interpolate", source_frames=120, target_frames=80)
    out = convert_fps(source, conversion)
    assert out.shape[0] == 80
    average = (source[1].astype(np.float64) + source[2].astype(np.float64)) / 2
    assert np.abs(out[1].astype(np.float64) - average).max() <= 1


def test_resample_24_to_16_picks_the_nearest_source_frame() -> None:
    """Resampling 120 frames at 24 fps to 80 at 16 fps picks, for each target time, the nearest source frame."""
    source = np.zeros((120, 2, 2, 3), dtype=np.uint8)
    source[:, 0, 0, 0] = np.arange(120)
    conversion = FpsConversion(source_fps=24, target_fps=16, method="resample", source_frames=120, target_frames=80)
    picked = [int(f[0, 0, 0]) for f in convert_fps(source, conversion)]
    assert len(picked) == 80
    assert all(abs(j - i * 1.5) <= 0.5 for i, j in enumerate(picked))
    assert picked[:6] == [0, 2, 3, 5, 6, 8]  # ties (1.5, 4.5) go to the later frame


def test_convert_refuses_counts_that_do_not_add_up() -> None:
    """93 frames at 16 fps cannot become 10 s at 24 fps (docs/background.md#security-cameras), and counts must match the conversion."""
    with pytest.raises(ValueError, match=r"240 frames at 24.* 93 frames at 16"):
        convert_fps(
            random_frames(93),
            FpsConversion(source_fps=16, target_fps=24, method="interpolate", source_frames=93, target_frames=240),
        )
    with pytest.raises(ValueError, match=r"got 80 frames .*source_frames=93"):
        convert_fps(
            random_frames(80),
            FpsConversion(source_fps=16, target_fps=24, method="resample", source_frames=93, target_frames=120),
        )
    with pytest.raises(ValueError, match=r"method 'none' cannot turn 16"):
        convert_fps(
            random_frames(80),
            FpsConversion(source_fps=16, target_fps=24, method="none", source_frames=80, target_frames=120),
        )


@pytest.mark.parametrize(
    ("fps", "rate"),
    [
        (24, Fraction(24)),
        (16, Fraction(16)),
        (29.97002997, Fraction(30000, 1001)),
        (23.976, Fraction(24000, 1001)),
        (59.94, Fraction(60000, 1001)),
        (12.5, Fraction(25, 2)),
    ],
)
def test_to_rate_snaps_to_exact_rates(fps: float, rate: Fraction) -> None:
    """Frame rates become exact fractions, NTSC rates as N × 1000/1001."""
    assert to_rate(fps) == rate


# --- encode_mp4 -------------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "frames"), [(5, 120), (10, 240), (30, 720)])
def test_encode_gives_exact_frames_rate_and_duration(tmp_path: Path, seconds: int, frames: int) -> None:
    """A 24 fps file of N frames decodes to exactly N frames at 24/1 lasting exactly N/24 s."""
    path = tmp_path / f"v{seconds}.mp4"
    result = encode_mp4(gradient_frames(frames), path, fps=24)
    assert (result.frames, result.fps, result.width, result.height) == (frames, Fraction(24), 64, 48)
    assert result.bytes == path.stat().st_size > 0 and result.duration_s == seconds
    decoded, rate, duration = decode(path)
    assert len(decoded) == frames and decoded[0].shape == (48, 64, 3)
    assert rate == Fraction(24)
    assert abs(float(duration) - frames / 24) < 1e-6 and float(duration) == seconds
    info = probe(path)
    assert (info.frames, info.fps, info.codec, info.width, info.height) == (frames, Fraction(24), "h264", 64, 48)
    assert list(tmp_path.iterdir()) == [path]  # no .part left


def test_encode_ntsc_rate(tmp_path: Path) -> None:
    """A 29.97 fps file is written at exactly 30000/1001 and lasts frames × 1001/30000 s."""
    path = tmp_path / "ntsc.mp4"
    result = encode_mp4(gradient_frames(60), path, fps=29.97002997)
    assert result.fps == Fraction(30000, 1001)
    decoded, rate, duration = decode(path)
    assert len(decoded) == 60 and rate == Fraction(30000, 1001)
    assert abs(float(duration) - 60 * 1001 / 30000) < 1e-6


def test_encode_refuses_odd_sizes(tmp_path: Path) -> None:
    """An odd width is a ValueError naming the even-size rule, and nothing is left on disk."""
    path = tmp_path / "odd.mp4"
    with pytest.raises(ValueError, match=r"even width and height.* 63x48"):
        encode_mp4(gradient_frames(10, width=63), path, fps=24)
    assert list(tmp_path.iterdir()) == []


def test_encode_refuses_a_frame_of_another_size_and_keeps_the_old_file(tmp_path: Path) -> None:
    """A frame whose size differs from frame 0 is a ValueError naming it; the .part goes and the old file stays."""
    path = tmp_path / "mixed.mp4"
    path.write_bytes(b"previous video")
    frames = gradient_frames(60)
    frames[50] = gradient_frames(1, width=32)[0]  # late enough that the encoder has written to the .part
    with pytest.raises(ValueError, match=r"frame 50 is 32x48 but frame 0 is 64x48"):
        encode_mp4(frames, path, fps=24)
    assert list(tmp_path.iterdir()) == [path]
    assert path.read_bytes() == b"previous video"


def test_moving_square_survives_encoding(tmp_path: Path) -> None:
    """A bright square moving 3 px per frame is found again at the same place in every decoded frame."""
    width, height, side, count = 128, 64, 12, 30
    frames = []
    for i in range(count):
        frame = np.full((height, width, 3), 30, dtype=np.uint8)
        x, y = 4 + 3 * i, 10 + i
        frame[y : y + side, x : x + side] = 240
        frames.append(frame)
    path = tmp_path / "square.mp4"
    encode_mp4(frames, path, fps=24)
    decoded, _, _ = decode(path)
    assert len(decoded) == count
    for i, frame in enumerate(decoded):
        ys, xs = np.nonzero(frame.mean(axis=2) > 135)
        assert len(xs) > side * side * 0.8, f"frame {i}: square lost"
        expected_x, expected_y = 4 + 3 * i + (side - 1) / 2, 10 + i + (side - 1) / 2
        assert abs(xs.mean() - expected_x) < 1.5 and abs(ys.mean() - expected_y) < 1.5, f"frame {i}"


def test_colours_survive_encoding(tmp_path: Path) -> None:
    """Flat saturated colours decode back to the same RGB values (BT.709 conversion and tags agree)."""
    colours = [(200, 60, 30), (20, 180, 90), (40, 70, 220), (235, 235, 20)]
    frames = [np.full((48, 64, 3), colour, dtype=np.uint8) for colour in colours for _ in range(6)]
    path = tmp_path / "colours.mp4"
    encode_mp4(frames, path, fps=24)
    decoded, _, _ = decode(path)
    for i, frame in enumerate(decoded):
        assert np.abs(frame[8:40, 8:56].astype(int) - frames[i][0, 0].astype(int)).max() <= 6, f"frame {i}"


# --- deliver ----------------------------------------------------------------------------------


def test_deliver_writes_exactly_the_expected_output(tmp_path: Path) -> None:
    """Two 16 fps chunks of 93 frames keeping 80 frames are delivered as exactly 120 frames at 24 fps (5 s)."""
    plan = make_plan([(93, 0, 50), (93, 5, 30)], native_fps=16, target_fps=24, target_frames=120)
    chunks = [random_frames(93, seed=3, size=16), random_frames(93, seed=4, size=16)]
    result = deliver(chunks, plan, tmp_path / "out.mp4")
    decoded, rate, duration = decode(result.path)
    assert (len(decoded), rate, float(duration)) == (120, Fraction(24), 5.0)


def test_deliver_refuses_a_plan_whose_numbers_disagree(tmp_path: Path) -> None:
    """A plan whose conversion delivers fewer frames than its expected output is refused before writing."""
    plan = make_plan([(93, 0, 80)], native_fps=16, target_fps=24, target_frames=120)
    bad = plan.model_copy(update={"expected": plan.expected.model_copy(update={"frames": 240})})
    with pytest.raises(ValueError, match=r"target_frames is 120 but expected.frames is 240"):
        deliver([random_frames(93, size=16)], bad, tmp_path / "out.mp4")
    assert list(tmp_path.iterdir()) == []
