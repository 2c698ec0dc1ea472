"""Frame-rate conversion by interpolation: motion-compensated (optical flow) against the linear blend.

The moving-scene tests render the truth: a scene drawn at 48 fps, every 3rd frame kept is 16 fps
(the model's rate), every 2nd frame is the true 24 fps video the conversion should produce.
"""

from __future__ import annotations

import sys

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from worldmill.contracts.generation import FpsConversion
from worldmill.gpu_runner import video
from worldmill.gpu_runner.video import convert_fps, convert_fps_with

Frames = npt.NDArray[np.uint8]


def texture(height: int, width: int, *, cell: int, seed: int, low: int, high: int) -> Frames:
    """A smooth random RGB texture with values in [low, high]."""
    rng = np.random.default_rng(seed)
    rows, cols = height // cell + 3, width // cell + 3
    coarse = rng.integers(0, 256, size=(rows, cols, 3), dtype=np.uint8)
    fine = cv2.resize(coarse, (cols * cell, rows * cell), interpolation=cv2.INTER_CUBIC)[:height, :width]
    return (low + fine.astype(np.float32) * ((high - low) / 255)).astype(np.uint8)


def moving_scene(
    frames: int, *, width: int = 256, height: int = 96, speeds: tuple[int, ...] = (2, 4), pan: int = 1
) -> Frames:
    """A dark textured background panning ``pan`` px per frame, bright textured squares moving ``speeds`` px per frame."""
    background = texture(height, width + pan * frames + 1, cell=10, seed=1, low=30, high=110)
    side = height // 3
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    for i in range(frames):
        out[i] = background[:, pan * i : pan * i + width]
        for k, speed in enumerate(speeds):
            square = texture(side, side, cell=6, seed=10 + k, low=170, high=250)
            x = 8 + speed * i
            y = 8 + k * (height - side - 16) // max(1, len(speeds) - 1)
            out[i, y : y + side, x : x + side] = square[:, : max(0, min(side, width - x))]
    return out


def conversion(source_fps: float, target_fps: float, source_frames: int, target_frames: int) -> FpsConversion:
    return FpsConversion(
        source_fps=source_fps,
        target_fps=target_fps,
        method="interpolate",
        source_frames=source_frames,
        target_frames=target_frames,
    )


def psnr(a: Frames, b: Frames) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def luma(frame: Frames) -> npt.NDArray[np.float64]:
    return np.asarray(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), dtype=np.float64)


def edges_along_row(frame: Frames, row: int, *, threshold: float) -> int:
    """How many separate steps larger than ``threshold`` the luma of ``row`` makes (runs of strong gradient)."""
    strong = np.abs(np.diff(luma(frame)[row])) > threshold
    return int(np.count_nonzero(strong[1:] & ~strong[:-1]) + int(strong[0]))


@pytest.fixture(scope="module")
def scene() -> tuple[Frames, Frames]:
    """(16 fps source, true 24 fps frames) of 1 s of the moving scene rendered at 48 fps (squares stay in view)."""
    render = moving_scene(48)
    return render[0::3], render[0::2]


@pytest.fixture(scope="module")
def converted(scene: tuple[Frames, Frames]) -> dict[str, tuple[Frames, str]]:
    source, truth = scene
    conv = conversion(16, 24, source.shape[0], truth.shape[0])
    return {mode: convert_fps_with(source, conv, interpolation=mode) for mode in ("flow", "blend")}


def in_between(source: Frames, truth: Frames) -> list[int]:
    """Target frames strictly between two source frames (16 → 24: target i at source 2i/3)."""
    return [i for i in range(truth.shape[0]) if i % 3 and (2 * i) // 3 + 1 < source.shape[0]]


# --- counts, shapes, exact frames -------------------------------------------------------------


@pytest.mark.parametrize(
    ("source_fps", "target_fps", "source_frames", "target_frames"),
    [(16, 24, 32, 48), (16, 30, 32, 60), (16, 25, 32, 50), (24, 16, 48, 32), (16, 23.976, 32, 47), (16, 60, 16, 60)],
)
def test_flow_gives_the_exact_frame_count_and_shape(
    source_fps: float, target_fps: float, source_frames: int, target_frames: int
) -> None:
    """Every rate pair gives exactly target_frames uint8 frames of the source's size, made by flow."""
    source = moving_scene(source_frames, width=96, height=64, speeds=(4,))
    out, how = convert_fps_with(source, conversion(source_fps, target_fps, source_frames, target_frames))
    assert out.shape == (target_frames, 64, 96, 3) and out.dtype == np.uint8
    assert how == "flow (OpenCV DIS, medium)"


def test_positions_on_a_source_frame_are_that_frame_bit_for_bit(
    scene: tuple[Frames, Frames], converted: dict[str, tuple[Frames, str]]
) -> None:
    """16 → 24: target 3k is source 2k exactly; the last target (after the last source frame) holds it."""
    source, _ = scene
    for mode in ("flow", "blend"):
        out, _ = converted[mode]
        for k in range(source.shape[0] // 2):
            assert np.array_equal(out[3 * k], source[2 * k]), (mode, k)
        assert np.array_equal(out[-1], source[-1]), mode
    flow, _ = converted["flow"]
    assert not np.array_equal(flow[1], source[0]) and not np.array_equal(flow[1], source[1])


def test_16_to_32_keeps_every_source_frame() -> None:
    """Doubling the rate: even targets are the source frames unchanged, odd ones lie halfway and are new."""
    source = moving_scene(24, width=96, height=64, speeds=(4,))
    out, how = convert_fps_with(source, conversion(16, 32, 24, 48))
    assert how.startswith("flow")
    assert np.array_equal(out[0::2], source)
    assert all(not np.array_equal(out[2 * j + 1], source[j]) for j in range(23))


# --- quality on a moving scene ----------------------------------------------------------------


def test_flow_beats_blend_on_a_moving_scene(
    scene: tuple[Frames, Frames], converted: dict[str, tuple[Frames, str]]
) -> None:
    """Against the true 24 fps frames, flow's PSNR is clearly higher than the blend's, on average and per frame."""
    source, truth = scene
    frames = in_between(source, truth)
    flow = [psnr(converted["flow"][0][i], truth[i]) for i in frames]
    blend = [psnr(converted["blend"][0][i], truth[i]) for i in frames]
    assert converted["flow"][1] == "flow (OpenCV DIS, medium)"
    assert converted["blend"][1] == "blend (linear)"
    assert np.mean(flow) > np.mean(blend) + 5.0, (np.mean(flow), np.mean(blend))
    assert min(f - b for f, b in zip(flow, blend, strict=True)) > 2.0


def test_flow_does_not_show_the_double_edges_blend_shows(
    scene: tuple[Frames, Frames], converted: dict[str, tuple[Frames, str]]
) -> None:
    """Along a row through the moving squares the truth has 2 edges per square; blend shows each twice, flow does not.

    An edge is a luma step over half the contrast between the squares (≥ 170) and the background
    (≤ 110): the blend's half-bright copies of a square (one where it was, one where it goes) make two
    weaker steps at each side, both over the threshold; ghost pixels (luma off by over 40) count the same.
    """
    source, truth = scene
    frames = in_between(source, truth)
    side = truth.shape[1] // 3
    rows = (8 + side // 2, truth.shape[1] - 8 - side // 2)  # through the middle of each square
    for mode, expected_extra in (("flow", False), ("blend", True)):
        out, _ = converted[mode]
        extra = [
            edges_along_row(out[i], row, threshold=30.0) - edges_along_row(truth[i], row, threshold=30.0)
            for i in frames
            for row in rows
        ]
        doubled = sum(e >= 2 for e in extra) / len(extra)
        if expected_extra:
            assert doubled > 0.8, (mode, extra)
        else:
            assert doubled < 0.1, (mode, extra)
    ghosts = {
        mode: np.mean([np.mean(np.abs(luma(converted[mode][0][i]) - luma(truth[i])) > 40) for i in frames])
        for mode in ("flow", "blend")
    }
    assert ghosts["blend"] > 0.02 and ghosts["flow"] < ghosts["blend"] / 5, ghosts


def test_flow_is_the_default_of_convert_fps(
    scene: tuple[Frames, Frames], converted: dict[str, tuple[Frames, str]]
) -> None:
    """convert_fps gives the frames of convert_fps_with with flow."""
    source, truth = scene
    assert np.array_equal(
        convert_fps(source, conversion(16, 24, source.shape[0], truth.shape[0])), converted["flow"][0]
    )


def test_threads_do_not_change_the_result(
    scene: tuple[Frames, Frames], converted: dict[str, tuple[Frames, str]]
) -> None:
    """Pairs run on several threads give the same frames as one thread."""
    source, truth = scene
    positions = video._source_positions(conversion(16, 24, source.shape[0], truth.shape[0]))
    one, _ = video._interpolate_flow(source, positions, workers=1)
    assert np.array_equal(one, converted["flow"][0])
    several, _ = video._interpolate_flow(source, positions, workers=3)
    assert np.array_equal(several, one)


def test_large_frames_estimate_flow_downscaled() -> None:
    """Frames wider than 640 px get their flow from a copy 640 px wide, say so, and still beat blending."""
    render = moving_scene(48, width=704, height=96, speeds=(6, 10), pan=2)
    source, truth = render[0::3], render[0::2]
    conv = conversion(16, 24, 16, 24)
    flow, how = convert_fps_with(source, conv)
    blend, _ = convert_fps_with(source, conv, interpolation="blend")
    assert how == "flow (OpenCV DIS, medium, estimated at 640x87)"
    assert np.array_equal(flow[0::3], source[0::2])
    frames = in_between(source, truth)
    assert np.mean([psnr(flow[i], truth[i]) for i in frames]) > np.mean([psnr(blend[i], truth[i]) for i in frames]) + 5


# --- fallbacks --------------------------------------------------------------------------------


def test_a_static_scene_gives_the_same_frames_either_way() -> None:
    """Nothing moves: every pair falls back to blending (the flow explains nothing), so flow == blend == source."""
    still = np.repeat(texture(64, 96, cell=8, seed=3, low=0, high=255)[None], 16, axis=0)
    conv = conversion(16, 24, 16, 24)
    flow, how = convert_fps_with(still, conv)
    blend, _ = convert_fps_with(still, conv, interpolation="blend")
    assert np.array_equal(flow, blend)
    assert np.array_equal(flow, np.repeat(still[:1], 24, axis=0))
    assert how == "flow (OpenCV DIS, medium); 15 of 15 frame pairs blended (flow explained them no better)"


def test_without_opencv_flow_falls_back_to_blend_and_says_so(
    monkeypatch: pytest.MonkeyPatch, scene: tuple[Frames, Frames], converted: dict[str, tuple[Frames, str]]
) -> None:
    """If cv2 cannot be imported, asking for flow gives the blend's frames and a description saying why."""
    source, truth = scene
    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` now raises ImportError
    out, how = convert_fps_with(source, conversion(16, 24, source.shape[0], truth.shape[0]))
    assert how == "blend (linear; flow asked for but OpenCV cannot be imported)"
    assert np.array_equal(out, converted["blend"][0])
    assert not np.array_equal(out, converted["flow"][0])


def test_frames_too_small_for_flow_are_blended() -> None:
    """Under 32 px on a side (at the flow's resolution) flow is not tried: blended, and the description says so."""
    source = moving_scene(16, width=64, height=24, speeds=(2,))
    conv = conversion(16, 24, 16, 24)
    out, how = convert_fps_with(source, conv)
    assert how == "blend (linear; frames under 32 px are too small)"
    assert np.array_equal(out, convert_fps_with(source, conv, interpolation="blend")[0])
    wide = moving_scene(16, width=2000, height=40, speeds=(2,))  # 40 px tall, but 12 px at 640 px wide
    assert convert_fps_with(wide, conv)[1] == "blend (linear; frames under 32 px are too small)"


def test_other_methods_and_bad_arguments_are_described() -> None:
    """'none' and 'resample' say so whatever the interpolation; an unknown interpolation is refused."""
    source = moving_scene(16, width=64, height=48, speeds=(2,))
    same = FpsConversion(source_fps=16, target_fps=16, method="none", source_frames=16, target_frames=16)
    resample = FpsConversion(source_fps=16, target_fps=24, method="resample", source_frames=16, target_frames=24)
    assert convert_fps_with(source, same)[1] == "none"
    assert convert_fps_with(source, resample, interpolation="blend")[1] == "resample"
    with pytest.raises(ValueError, match="interpolation must be 'flow' or 'blend'"):
        convert_fps_with(source, conversion(16, 24, 16, 24), interpolation="optical")  # type: ignore[arg-type]
