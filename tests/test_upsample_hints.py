"""Hint frames: inspecting hint files, choosing frames, and resizing and encoding them to the planned size.

Real files, no servers: videos from ``tests.helpers.video.write_video`` (a moving gradient) or written here
with PyAV (uniform gray frames whose level says which frame it is), images from Pillow.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tests.helpers.video import write_video
from worldmill.runtime.errors import InvalidInputError
from worldmill.upsample.hints import (
    HintSource,
    data_url,
    encode_hint_video,
    extract_frames,
    frame_indices,
    hints_digest,
    inspect_hint,
)

LEVEL_STEP = 20  # gray level of frame i in a level-coded video: 10 + 20·i (H.264 keeps flat grays within a few levels)


def level(index: int) -> int:
    return 10 + LEVEL_STEP * index


def write_levels(
    path: Path, *, frames: int, width: int = 64, height: int = 48, fps: int = 8, moov_first: bool = False
) -> Path:
    """A video whose frame ``i`` is uniformly gray at :func:`level` ``(i)``, so every frame can be told apart.

    ``moov_first`` puts an MP4's index before the frames, so the file still opens when its tail is cut off.
    """
    assert level(frames - 1) <= 255
    options = {"movflags": "+faststart"} if moov_first else {}
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "10"}
        for i in range(frames):
            image = np.full((height, width, 3), level(i), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def frame_of(gray: float) -> int:
    """The index of the level-coded frame whose level is nearest ``gray``."""
    return round((gray - 10) / LEVEL_STEP)


def mean_gray(jpeg: bytes) -> float:
    with Image.open(io.BytesIO(jpeg)) as image:
        return float(np.asarray(image.convert("L"), dtype=np.float64).mean())


def jpeg_size(jpeg: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(jpeg)) as image:
        assert image.format == "JPEG"
        assert image.mode == "RGB"
        return image.size


def write_image(path: Path, width: int, height: int, fmt: str, color: tuple[int, ...] = (30, 140, 220)) -> Path:
    mode = "RGBA" if len(color) == 4 else "RGB"
    Image.new(mode, (width, height), color).save(path, format=fmt)
    return path


def decode_video(data: bytes) -> tuple[av.video.stream.VideoStream, list[av.VideoFrame], str, str]:
    """Every frame of an in-memory video, with its stream (for its rate), codec name and pixel format."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return stream, frames, stream.codec_context.name, str(stream.codec_context.pix_fmt)


# ------------------------------------------------------------------------------------------------ inspection


def test_inspect_video(tmp_path: Path) -> None:
    """A video gives its frame size, the container's frame count and its frame rate."""
    path = write_video(tmp_path / "clip.mp4", width=64, height=48, fps=8, frames=10)
    assert inspect_hint(path) == HintSource(width=64, height=48, frames=10, fps=8.0, is_image=False)


def test_inspect_counts_decoded_frames_when_the_container_does_not_say(tmp_path: Path) -> None:
    """Matroska states no frame count: the frames are counted by decoding them."""
    path = write_levels(tmp_path / "clip.mkv", frames=7, fps=5)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # the premise: the container does not say
    assert inspect_hint(path) == HintSource(width=64, height=48, frames=7, fps=5.0, is_image=False)


@pytest.mark.parametrize(("fmt", "suffix"), [("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp")])
def test_inspect_image(tmp_path: Path, fmt: str, suffix: str) -> None:
    """A still image is one frame without a frame rate."""
    path = write_image(tmp_path / f"still{suffix}", 300, 170, fmt)
    assert inspect_hint(path) == HintSource(width=300, height=170, frames=1, fps=None, is_image=True)


def write_audio_only(path: Path) -> None:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def make_bad(kind: str, tmp_path: Path) -> Path:
    if kind == "missing":
        return tmp_path / "nowhere.mp4"
    if kind == "directory":
        (tmp_path / "folder.mp4").mkdir()
        return tmp_path / "folder.mp4"
    path = tmp_path / f"{kind}.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("not a video at all\n" * 50, encoding="utf-8")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(7).integers(0, 256, size=8192, dtype=np.uint8).tobytes())
    elif kind == "audio":
        path = tmp_path / "tone.wav"
        write_audio_only(path)
    elif kind == "truncated_jpeg":
        path = tmp_path / "cut.jpg"
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(3).integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(
            buffer, format="JPEG"
        )
        path.write_bytes(buffer.getvalue()[:400])
    return path


BAD_INPUTS = {
    "missing": "does not exist",
    "directory": "does not exist or is not a file",
    "empty": "empty",
    "text": "neither an image",
    "random": "neither an image",
    "audio": "no video stream",
    "truncated_jpeg": "damaged or unsupported image",
}


@pytest.mark.parametrize(("kind", "rule"), BAD_INPUTS.items(), ids=BAD_INPUTS.keys())
def test_bad_inputs_are_invalid_hints(tmp_path: Path, kind: str, rule: str) -> None:
    """Every unusable file is an InvalidInputError on the field ``hint`` that says which rule it broke."""
    path = make_bad(kind, tmp_path)
    with pytest.raises(InvalidInputError) as info:
        inspect_hint(path)
    assert info.value.field == "hint"
    assert rule in info.value.rule
    with pytest.raises(InvalidInputError) as again:  # extraction checks the same way
        extract_frames(path, 2, 32, 24)
    assert again.value.field == "hint"


# ------------------------------------------------------------------------------------------------ frame_indices


@pytest.mark.parametrize(
    ("total", "count", "expected"),
    [
        (100, 1, [50]),
        (100, 2, [25, 75]),
        (100, 4, [12, 37, 62, 87]),
        (1, 1, [0]),
        (1, 5, [0]),
        (10, 5, [1, 3, 5, 7, 9]),
        (4, 4, [0, 1, 2, 3]),
        (3, 10, [0, 1, 2]),
    ],
)
def test_frame_indices_examples(total: int, count: int, expected: list[int]) -> None:
    """The middles of equal segments; asking for more frames than there are gives every frame once."""
    assert frame_indices(total, count) == expected


@pytest.mark.parametrize("total", [1, 2, 3, 5, 7, 10, 24, 93, 100, 121, 720, 1001])
@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 8, 16, 32])
def test_frame_indices_properties(total: int, count: int) -> None:
    """Distinct, sorted, in range, ``min(count, total)`` of them, one in (the middle of) each equal segment."""
    indices = frame_indices(total, count)
    n = min(count, total)
    assert len(indices) == n
    assert indices == sorted(set(indices))
    assert all(0 <= i < total for i in indices)
    for k, index in enumerate(indices):
        start, end = k * total / n, (k + 1) * total / n
        assert start < index + 1 and index < end  # frame ``index`` (time [index, index + 1)) lies in segment k
        assert index <= (start + end) / 2 < index + 1  # ... and is the frame shown at its middle
    gaps = {b - a for a, b in itertools.pairwise(indices)}
    assert not gaps or max(gaps) - min(gaps) <= 1  # evenly spread


@pytest.mark.parametrize(("total", "count"), [(0, 1), (-3, 2), (10, 0), (10, -1)])
def test_frame_indices_rejects_nothing_to_choose(total: int, count: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        frame_indices(total, count)


# ------------------------------------------------------------------------------------------------ extract_frames


def test_extract_landscape_1080p_to_planned_size(tmp_path: Path) -> None:
    """A 1920×1080 source shrunk to exactly 448×252: baseline JPEGs, one per requested frame."""
    path = write_video(tmp_path / "hd.mp4", width=1920, height=1080, fps=24, frames=3)
    jpegs = extract_frames(path, 2, 448, 252)
    assert len(jpegs) == 2
    for jpeg in jpegs:
        assert jpeg[:2] == b"\xff\xd8"
        assert b"\xff\xc0" in jpeg  # SOF0: baseline DCT
        assert b"\xff\xc2" not in jpeg  # no progressive frame header
        assert jpeg_size(jpeg) == (448, 252)
    assert jpegs[0] != jpegs[1]  # write_video's gradient moves over time


def test_extract_portrait_to_planned_size(tmp_path: Path) -> None:
    path = write_video(tmp_path / "tall.mp4", width=360, height=640, fps=10, frames=6)
    jpegs = extract_frames(path, 3, 252, 448)
    assert [jpeg_size(j) for j in jpegs] == [(252, 448)] * 3


def test_extract_picks_the_middle_of_equal_segments(tmp_path: Path) -> None:
    """The decoded frames are exactly those at frame_indices(total, count), in order."""
    path = write_levels(tmp_path / "levels.mp4", frames=12)
    jpegs = extract_frames(path, 3, 32, 24)
    assert [frame_of(mean_gray(j)) for j in jpegs] == frame_indices(12, 3) == [2, 6, 10]
    (middle,) = extract_frames(path, 1, 32, 24)
    assert frame_of(mean_gray(middle)) == 6


def test_extract_from_a_container_without_frame_count(tmp_path: Path) -> None:
    path = write_levels(tmp_path / "levels.mkv", frames=9)
    jpegs = extract_frames(path, 3, 32, 24)
    assert [frame_of(mean_gray(j)) for j in jpegs] == frame_indices(9, 3) == [1, 4, 7]


def test_extract_selects_again_when_the_container_overstates_its_frames(tmp_path: Path) -> None:
    """An MP4 cut after 6 of its 12 frames still says 12: the frames are chosen again among the 6 that decode."""
    full = write_levels(tmp_path / "full.mp4", frames=12, moov_first=True)
    with av.open(str(full)) as container:
        positions = sorted(p.pos for p in container.demux(video=0) if p.size and p.pos is not None)
    assert len(positions) == 12
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: positions[6]])
    assert inspect_hint(cut).frames == 12  # the container's count is trusted by inspect
    jpegs = extract_frames(cut, 3, 32, 24)
    assert [frame_of(mean_gray(j)) for j in jpegs] == frame_indices(6, 3) == [1, 3, 5]


def test_extract_gives_fewer_frames_when_the_video_is_shorter(tmp_path: Path) -> None:
    path = write_levels(tmp_path / "short.mp4", frames=3)
    jpegs = extract_frames(path, 8, 32, 24)
    assert [frame_of(mean_gray(j)) for j in jpegs] == [0, 1, 2]
    assert all(jpeg_size(j) == (32, 24) for j in jpegs)


def test_extract_image_gives_one_frame_whatever_the_count(tmp_path: Path) -> None:
    """A large JPEG (read at a reduced scale) and a PNG both give exactly one frame of exactly the size."""
    big = write_image(tmp_path / "big.jpg", 1600, 1200, "JPEG")
    png = write_image(tmp_path / "small.png", 400, 300, "PNG")
    for path in (big, png):
        jpegs = extract_frames(path, 4, 224, 168)
        assert len(jpegs) == 1
        assert jpegs[0][:2] == b"\xff\xd8"
        assert jpeg_size(jpegs[0]) == (224, 168)


def test_extract_lays_transparency_over_white(tmp_path: Path) -> None:
    path = write_image(tmp_path / "clear.png", 64, 64, "PNG", color=(0, 0, 0, 0))
    (jpeg,) = extract_frames(path, 1, 32, 32)
    assert mean_gray(jpeg) > 250


def test_extract_quality_changes_the_bytes(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4", width=128, height=96, fps=8, frames=2, seed=4)
    (low,) = extract_frames(path, 1, 128, 96, quality=20)
    (high,) = extract_frames(path, 1, 128, 96, quality=95)
    assert len(low) < len(high)


@pytest.mark.parametrize(
    ("count", "width", "height", "quality"),
    [(0, 32, 24, 85), (1, 0, 24, 85), (1, 32, -2, 85), (1, 32, 24, 0), (1, 32, 24, 101)],
)
def test_extract_rejects_bad_arguments(tmp_path: Path, count: int, width: int, height: int, quality: int) -> None:
    path = write_levels(tmp_path / "levels.mp4", frames=2)
    with pytest.raises(ValueError, match="must be"):
        extract_frames(path, count, width, height, quality=quality)


# ------------------------------------------------------------------------------------------------ encode_hint_video


def test_encode_hint_video_round_trips(tmp_path: Path) -> None:
    """An H.264 yuv420p MP4 of the selected frames at the requested size and rate, in order."""
    path = write_levels(tmp_path / "levels.mp4", frames=12, width=96, height=64)
    data = encode_hint_video(path, 4, 48, 32, fps=2.0)
    assert data[4:8] == b"ftyp"
    stream, frames, codec, pix_fmt = decode_video(data)
    assert (codec, pix_fmt) == ("h264", "yuv420p")
    assert stream.average_rate == 2
    assert len(frames) == 4
    assert all((f.width, f.height) == (48, 32) for f in frames)
    levels = [float(f.to_ndarray(format="gray").mean()) for f in frames]
    assert [frame_of(g) for g in levels] == frame_indices(12, 4) == [1, 4, 7, 10]


def test_encode_hint_video_from_1080p_and_from_an_image(tmp_path: Path) -> None:
    video = write_video(tmp_path / "hd.mp4", width=1920, height=1080, fps=24, frames=2)
    _, frames, _, _ = decode_video(encode_hint_video(video, 2, 448, 252, fps=1.5))
    assert [(f.width, f.height) for f in frames] == [(448, 252), (448, 252)]
    image = write_image(tmp_path / "still.png", 300, 200, "PNG")
    _, frames, _, _ = decode_video(encode_hint_video(image, 3, 150, 100))
    assert [(f.width, f.height) for f in frames] == [(150, 100)]


@pytest.mark.parametrize(("width", "height"), [(449, 252), (448, 251), (31, 31)])
def test_encode_hint_video_rejects_odd_sizes(tmp_path: Path, width: int, height: int) -> None:
    path = write_levels(tmp_path / "levels.mp4", frames=2)
    with pytest.raises(ValueError, match="even"):
        encode_hint_video(path, 1, width, height)


def test_encode_hint_video_rejects_a_bad_rate(tmp_path: Path) -> None:
    path = write_levels(tmp_path / "levels.mp4", frames=2)
    with pytest.raises(ValueError, match="fps"):
        encode_hint_video(path, 1, 32, 24, fps=0)


# ------------------------------------------------------------------------------------------------ data_url, digest


def test_data_url_round_trips() -> None:
    payload = bytes(range(256)) * 3
    url = data_url(payload, "image/jpeg")
    prefix = "data:image/jpeg;base64,"
    assert url.startswith(prefix)
    assert base64.b64decode(url[len(prefix) :], validate=True) == payload
    assert data_url(b"", "video/mp4") == "data:video/mp4;base64,"


@pytest.mark.parametrize("mime", ["jpeg", "image/jpeg;charset=x", "image/ jpeg", ""])
def test_data_url_rejects_malformed_mime(mime: str) -> None:
    with pytest.raises(ValueError, match="MIME"):
        data_url(b"x", mime)


def test_hints_digest_is_order_and_boundary_sensitive() -> None:
    digest = hints_digest([b"ab", b"c"])
    assert len(digest) == 64
    assert int(digest, 16) >= 0  # hex
    assert digest == hints_digest((b"ab", b"c"))  # deterministic, any sequence
    assert digest != hints_digest([b"a", b"bc"])  # boundaries count
    assert digest != hints_digest([b"c", b"ab"])  # order counts
    assert digest != hints_digest([b"abc"])
    assert hints_digest([]) == hashlib.sha256().hexdigest()
    assert hints_digest([b""]) != hints_digest([])
