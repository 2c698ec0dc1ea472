"""Edge and vis control videos computed on CPU (worldmill.augment.controls), on real small videos."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt
import pytest

from tests.helpers.video import write_video
from worldmill.augment import controls
from worldmill.augment.controls import (
    CPU_CONTROLS,
    ControlOutput,
    ControlRequest,
    blur_frame,
    compute_controls,
    control_frames_match,
    control_path,
    edge_frame,
)
from worldmill.contracts.cards import ControlType, Preset, builtin_cards
from worldmill.runtime.errors import InvalidInputError
from worldmill.runtime.media import VideoInfo, probe

Image8 = npt.NDArray[np.uint8]
CARD = builtin_cards()["cosmos-transfer2.5-2b"]
PRESETS = list(Preset)
BOTH = [ControlRequest(ControlType.EDGE), ControlRequest(ControlType.VIS)]


def square(width: int = 64, height: int = 48, box: tuple[int, int, int, int] = (16, 12, 48, 36)) -> Image8:
    """A white rectangle (x0, y0, x1, y1; exclusive ends) on black."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = 255
    return image


def textured(width: int = 160, height: int = 96, seed: int = 1) -> Image8:
    """Smooth colour blobs, fine noise and a white rectangle: edges and high frequencies at every scale."""
    rng = np.random.default_rng(seed)
    blobs = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8)
    image = cv2.resize(blobs, (width, height), interpolation=cv2.INTER_CUBIC)
    image = cv2.add(image, rng.integers(0, 60, (height, width, 3), dtype=np.uint8))
    cv2.rectangle(image, (20, 20), (70, 60), (255, 255, 255), -1)
    return np.asarray(image, dtype=np.uint8)


def laplacian_variance(image: Image8) -> float:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def write_frames(path: Path, frames: Sequence[Image8], *, fps: Fraction | int = 24, pix_fmt: str = "yuv420p") -> Path:
    """Encode known RGB frames nearly losslessly (qp 0), so the decoded input is the image we drew."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = {"preset": "ultrafast", "qp": "0"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def decode_rgb(path: Path) -> list[Image8]:
    with av.open(str(path)) as container:
        return [np.asarray(f.to_ndarray(format="rgb24"), dtype=np.uint8) for f in container.decode(video=0)]


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- edge --------------------------------------------------------------------------------------


def test_edges_lie_exactly_on_the_border_of_a_white_square() -> None:
    x0, y0, x1, y1 = 16, 12, 48, 36
    edges = edge_frame(square(box=(x0, y0, x1, y1)))[..., 0] > 0
    # The one-pixel ring around the boundary: the square grown by one minus the square shrunk by one.
    ring = np.zeros_like(edges)
    ring[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1] = True
    ring[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1] = False
    assert edges.any()
    assert not (edges & ~ring).any(), "edge pixels off the square's border"
    # Every side is traced (corners may be cut by non-maximum suppression).
    assert edges[y0 - 1 : y0 + 1, x0:x1].any(axis=0).sum() >= (x1 - x0) - 2  # top
    assert edges[y1 - 1 : y1 + 1, x0:x1].any(axis=0).sum() >= (x1 - x0) - 2  # bottom
    assert edges[y0:y1, x0 - 1 : x0 + 1].any(axis=1).sum() >= (y1 - y0) - 2  # left
    assert edges[y0:y1, x1 - 1 : x1 + 1].any(axis=1).sum() >= (y1 - y0) - 2  # right


@pytest.mark.parametrize("preset", PRESETS)
def test_edge_thresholds_follow_the_card_preset(preset: Preset) -> None:
    """A vertical step of height d has an L1 Sobel magnitude of 4d: an edge exactly when 4d > upper."""
    _lower, upper = CARD.edge_presets[preset]

    def step(contrast: int) -> Image8:
        image = np.full((32, 32, 3), 80, dtype=np.uint8)
        image[:, 16:] = 80 + contrast
        return image

    above = edge_frame(step(upper // 4 + 1), preset)
    below = edge_frame(step((upper - 1) // 4), preset)
    assert (above[..., 0] > 0).sum() == 32  # one full column
    assert not below.any()


def test_a_low_contrast_step_has_edges_at_very_low_but_none_at_very_high() -> None:
    image = np.full((32, 32, 3), 100, dtype=np.uint8)
    image[:, 16:] = 120
    assert edge_frame(image, Preset.VERY_LOW).any()
    assert not edge_frame(image, Preset.VERY_HIGH).any()
    counts = [int((edge_frame(textured(), p) > 0).sum()) for p in PRESETS]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]


@pytest.mark.parametrize("preset", PRESETS)
def test_edge_frame_is_binary_with_three_equal_channels(preset: Preset) -> None:
    image = textured()
    edges = edge_frame(image, preset)
    assert edges.shape == image.shape and edges.dtype == np.uint8
    assert set(np.unique(edges).tolist()) <= {0, 255}
    assert (edges[..., 0] == edges[..., 1]).all() and (edges[..., 1] == edges[..., 2]).all()
    assert edges.any()


def test_edge_frame_runs_canny_on_the_colour_frame_like_transfer() -> None:
    """Two colours of (almost) the same luma: Transfer's Canny on RGB finds the edge, a gray one would not."""
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[:, :16] = (0, 120, 255)
    image[:, 16:] = (200, 60, 44)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    assert abs(int(gray[0, 0]) - int(gray[0, 31])) <= 2
    assert not cv2.Canny(gray, 100, 200).any()
    assert (edge_frame(image)[..., 0] > 0).sum() == 32


def test_presets_come_from_the_given_table() -> None:
    image = textured()
    custom = {Preset.MEDIUM: CARD.edge_presets[Preset.VERY_LOW]}
    assert np.array_equal(edge_frame(image, Preset.MEDIUM, custom), edge_frame(image, Preset.VERY_LOW))
    blur_custom = {Preset.MEDIUM: CARD.blur_presets[Preset.VERY_HIGH]}
    assert np.array_equal(blur_frame(image, Preset.MEDIUM, blur_custom), blur_frame(image, Preset.VERY_HIGH))
    with pytest.raises(ValueError, match="no preset 'high'"):
        edge_frame(image, Preset.HIGH, custom)


@pytest.mark.parametrize("function", [edge_frame, blur_frame])
@pytest.mark.parametrize(
    "bad",
    [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3), np.float32), [[1, 2, 3]]],
    ids=["gray", "rgba", "float", "list"],
)
def test_frame_functions_refuse_what_is_not_an_rgb_uint8_frame(function: Callable[..., Image8], bad: Any) -> None:
    with pytest.raises(ValueError, match=r"RGB uint8 array \(height, width, 3\)"):
        function(bad)


# --- vis (blur) --------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_blur_keeps_the_size_and_removes_high_frequencies(preset: Preset) -> None:
    image = textured()
    blurred = blur_frame(image, preset)
    assert blurred.shape == image.shape and blurred.dtype == np.uint8
    assert laplacian_variance(blurred) < 0.01 * laplacian_variance(image)
    # Still the same picture at low frequency: the white rectangle stays the brightest region.
    assert blurred[30:50, 30:60].mean() > blurred[70:, 100:].mean()


def test_blur_strength_grows_with_the_preset() -> None:
    """Down-up factors 4, 4, 10, 16, 16 with pre-blur downsizing 1, 4, 2, 1, 4: each preset smoother than the last."""
    variances = [laplacian_variance(blur_frame(textured(), p)) for p in PRESETS]
    assert variances == sorted(variances, reverse=True)
    assert len(set(variances)) == len(variances)


def test_blur_of_a_tiny_frame_keeps_one_pixel_per_side() -> None:
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    for preset in PRESETS:
        assert blur_frame(image, preset).shape == (2, 3, 3)


def test_blur_matches_transfers_torchvision_resize() -> None:
    """Transfer's AddControlInputBlur (cv2 stages, then torchvision bicubic antialiased down-up) within rounding."""
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    image = textured()
    height, width = image.shape[:2]
    for preset in PRESETS:
        downsize, downup = CARD.blur_presets[preset]
        small = cv2.resize(image, (width // downsize, height // downsize), interpolation=cv2.INTER_AREA)
        small = cv2.bilateralFilter(small, 30, 150, 100)
        pre = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
        tensor = torch.from_numpy(pre).permute(2, 0, 1)[None].float()
        for size in ((int(height / downup), int(width / downup)), (height, width)):
            tensor = functional.interpolate(tensor, size=size, mode="bicubic", antialias=True, align_corners=False)
            tensor = tensor.clamp(0, 255).round()  # torchvision's uint8 output
        reference = tensor[0].permute(1, 2, 0).numpy().astype(np.int16)
        diff = np.abs(blur_frame(image, preset).astype(np.int16) - reference)
        assert diff.mean() < 0.5, preset
        assert np.percentile(diff, 99) <= 2, preset


# --- requests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("control", [ControlType.DEPTH, ControlType.SEG, "depth"])
def test_model_controls_are_refused(control: ControlType) -> None:
    with pytest.raises(ValueError, match=r"^(depth|seg) controls are not computed here") as caught:
        ControlRequest(control)
    assert "depth and seg need models" in str(caught.value)
    assert {ControlType.EDGE, ControlType.VIS} == CPU_CONTROLS


def test_requests_accept_strings_and_default_to_medium() -> None:
    request = ControlRequest("vis", "high")  # type: ignore[arg-type]
    assert request == ControlRequest(ControlType.VIS, Preset.HIGH)
    assert ControlRequest(ControlType.EDGE).preset is Preset.MEDIUM
    with pytest.raises(ValueError, match="'blurry' is not a valid ControlType"):
        ControlRequest("blurry")  # type: ignore[arg-type]


def test_duplicate_or_missing_requests_are_refused_before_reading(tmp_path: Path) -> None:
    source = write_video(tmp_path / "in.mp4", width=32, height=32, fps=24, frames=2)
    out = tmp_path / "out"
    twice = [ControlRequest(ControlType.EDGE), ControlRequest(ControlType.EDGE, Preset.LOW)]
    with pytest.raises(ValueError, match="the edge control is requested more than once"):
        compute_controls(source, twice, out)
    with pytest.raises(ValueError, match="no controls requested"):
        compute_controls(source, [], out)
    with pytest.raises(ValueError, match="stem must be a plain file name part"):
        compute_controls(source, BOTH, out, stem="a/b")
    assert not out.exists()


# --- compute_controls --------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [Fraction(24), Fraction(30000, 1001), Fraction(25)], ids=["24", "29.97", "25"])
def test_controls_have_the_inputs_exact_frame_count_and_rate(tmp_path: Path, fps: Fraction) -> None:
    source = write_video(tmp_path / "in.mp4", width=64, height=48, fps=fps, frames=11, seed=3)
    outputs = compute_controls(source, BOTH, tmp_path / "out", stem="clip")
    assert [o.type for o in outputs] == [ControlType.EDGE, ControlType.VIS]
    assert [o.path.name for o in outputs] == ["clip_control_edge.mp4", "clip_control_vis.mp4"]
    reference = probe(source)
    for output in outputs:
        info = probe(output.path)
        assert (info.frames, info.fps, info.width, info.height) == (11, fps, 64, 48)
        assert output == ControlOutput(output.type, Preset.MEDIUM, output.path, 11, fps, 64, 48)
        assert info.codec == "h264"
        assert control_frames_match(info, reference) is None
    assert files_in(tmp_path / "out") == ["clip_control_edge.mp4", "clip_control_vis.mp4"]


def test_both_controls_come_from_one_decode_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_video(tmp_path / "in.mp4", width=32, height=32, fps=24, frames=5)
    real_open: Any = av.open
    reads: list[str] = []

    def counting_open(file: Any, mode: str = "r", **kwargs: Any) -> Any:
        if mode == "r":
            reads.append(str(file))
        return real_open(file, mode, **kwargs)

    monkeypatch.setattr(av, "open", counting_open)
    outputs = compute_controls(source, BOTH, tmp_path)
    assert reads == [str(source)]
    assert [o.frames for o in outputs] == [5, 5]


def test_control_videos_show_the_computed_controls(tmp_path: Path) -> None:
    frames = [square(box=(16 + i, 12, 48 + i, 36)) for i in range(4)]  # the square moves right
    source = write_frames(tmp_path / "square.mp4", frames)
    requests = [ControlRequest(ControlType.VIS, Preset.LOW), ControlRequest(ControlType.EDGE, Preset.HIGH)]
    vis, edge = compute_controls(source, requests, tmp_path)
    assert (vis.preset, edge.preset) == (Preset.LOW, Preset.HIGH)
    inputs = decode_rgb(source)
    for i, (shown, wanted) in enumerate(zip(decode_rgb(edge.path), inputs, strict=True)):
        expected = edge_frame(wanted, Preset.HIGH) > 0
        stored = shown > 127
        assert (stored == expected).mean() > 0.995, i  # H.264 keeps the map nearly binary
        assert stored[12:36, 16 + i - 1 : 16 + i + 1, 0].any(axis=1).all()  # left side of the moved square
    for shown, wanted in zip(decode_rgb(vis.path), inputs, strict=True):
        assert np.abs(shown.astype(np.int16) - blur_frame(wanted, Preset.LOW)).mean() < 2.0


def test_odd_sized_input_is_padded_to_even(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 255, (25, 33, 3), dtype=np.uint8) for _ in range(3)]
    source = write_frames(tmp_path / "odd.mp4", frames, pix_fmt="yuv444p")
    reference = probe(source)
    assert (reference.width, reference.height) == (33, 25)
    outputs = compute_controls(source, BOTH, tmp_path)
    for output in outputs:
        info = probe(output.path)
        assert (output.width, output.height) == (info.width, info.height) == (34, 26)
        assert output.frames == info.frames == 3
        assert control_frames_match(info, reference) is None
    vis = decode_rgb(outputs[1].path)[0].astype(np.int16)
    # The added column and row repeat the last ones (the blur output is smooth, so no codec surprise).
    assert np.abs(vis[:, 33] - vis[:, 32]).max() <= 3
    assert np.abs(vis[25] - vis[24]).max() <= 3


def _no_frame_video(path: Path) -> Path:
    """An MP4 whose video stream holds only packets no decoder can turn into a picture."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 24)
        container.start_encoding()
        for i in range(3):
            packet = av.Packet(bytes(np.random.default_rng(i).integers(0, 255, 200, dtype=np.uint8)))
            packet.stream = stream
            packet.pts = packet.dts = i
            packet.time_base = Fraction(1, 24)
            container.mux(packet)
    return path


def _empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _garbage_file(path: Path) -> Path:
    path.write_bytes(b"not a video " * 500)
    return path


def _audio_only(path: Path) -> Path:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=8000)
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 8000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize(
    ("make", "rule"),
    [
        (_empty_file, "is not a readable video"),
        (_garbage_file, "is not a readable video"),
        (lambda p: p, "does not exist"),
        (_audio_only, "has no video stream"),
        (_no_frame_video, "has no decodable video frame"),
    ],
    ids=["empty", "garbage", "missing", "audio-only", "no-decodable-frame"],
)
def test_unusable_inputs_are_invalid_input(tmp_path: Path, make: Callable[[Path], Path], rule: str) -> None:
    source = tmp_path / "input.mp4"
    make(source)
    out = tmp_path / "out"
    with pytest.raises(InvalidInputError, match=rule) as caught:
        compute_controls(source, BOTH, out)
    assert caught.value.field == "input"
    assert str(source) in caught.value.rule
    assert files_in(out) == []


def test_a_failure_part_way_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_video(tmp_path / "in.mp4", width=32, height=32, fps=24, frames=6)
    calls = 0
    real_edge = controls.edge_frame

    def failing_edge(rgb: Image8, *args: Any, **kwargs: Any) -> Image8:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise RuntimeError("boom")
        return real_edge(rgb, *args, **kwargs)

    monkeypatch.setattr(controls, "edge_frame", failing_edge)
    with pytest.raises(RuntimeError, match="boom"):
        compute_controls(source, [ControlRequest(ControlType.VIS), ControlRequest(ControlType.EDGE)], tmp_path / "out")
    assert files_in(tmp_path / "out") == []


def test_a_card_without_the_control_or_preset_is_refused(tmp_path: Path) -> None:
    source = write_video(tmp_path / "in.mp4", width=32, height=32, fps=24, frames=2)
    no_vis = CARD.model_copy(update={"controls": frozenset({ControlType.EDGE})})
    with pytest.raises(ValueError, match=r"cosmos-transfer2\.5-2b takes no vis control"):
        compute_controls(source, BOTH, tmp_path, card=no_vis)
    few_presets = CARD.model_copy(update={"edge_presets": {Preset.LOW: (50, 100)}})
    with pytest.raises(ValueError, match="edge control: no preset 'medium' \\(known: low\\)"):
        compute_controls(source, BOTH, tmp_path, card=few_presets)
    assert control_path(tmp_path, "x", ControlType.EDGE) == tmp_path / "x_control_edge.mp4"


# --- control_frames_match ----------------------------------------------------------------------


def info(width: int, height: int, frames: int, fps: Fraction = Fraction(24)) -> VideoInfo:
    return VideoInfo(width, height, fps, frames, float(frames / fps), "h264", "mov,mp4,m4a,3gp,3g2,mj2")


def test_control_frames_match() -> None:
    reference = info(1280, 720, 120)
    assert control_frames_match(info(1280, 720, 120, Fraction(16)), reference) is None  # rate not compared
    assert control_frames_match(info(1280, 720, 100), reference) == "has 100 frames, the input has 120"
    assert control_frames_match(info(640, 360, 120), reference) == "is 640×360, the input is 1280×720"
    assert control_frames_match(info(640, 360, 100), reference) == (
        "has 100 frames, the input has 120; is 640×360, the input is 1280×720"
    )
    # Our even padding of an odd input matches (both odd sides padded); anything else does not.
    assert control_frames_match(info(34, 26, 3), info(33, 25, 3)) is None
    assert control_frames_match(info(34, 24, 3), info(33, 24, 3)) is None
    assert control_frames_match(info(34, 25, 3), info(33, 25, 3)) == "is 34×25, the input is 33×25"
    assert control_frames_match(info(34, 26, 3), info(32, 25, 3)) == "is 34×26, the input is 32×25"
