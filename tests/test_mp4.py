"""The runtime's MP4 writer: H.264 yuv420p, BT.709 tagged, written under a temporary name and moved."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from worldmill.runtime.mp4 import BT709, Mp4Writer, part_path, write_mp4


def _frames(count: int, width: int = 64, height: int = 48) -> list[np.ndarray]:
    xs = np.arange(width, dtype=np.int32)[None, :, None]
    ys = np.arange(height, dtype=np.int32)[:, None, None]
    return [((xs * 3 + ys * 2 + i * 7 + np.array([0, 85, 170])) % 256).astype(np.uint8) for i in range(count)]


def _probe(source: Path | io.BytesIO) -> dict[str, object]:
    with av.open(source if isinstance(source, io.BytesIO) else str(source)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        frames = list(container.decode(stream))
        return {
            "codec": ctx.name,
            "pix_fmt": ctx.pix_fmt,
            "primaries": ctx.color_primaries,
            "trc": ctx.color_trc,
            "matrix": ctx.colorspace,
            "range": ctx.color_range,
            "rate": stream.average_rate,
            "frames": len(frames),
            "pts": [f.pts for f in frames],
            "time_base": stream.time_base,
            "size": (frames[0].width, frames[0].height),
        }


def test_a_written_file_decodes_with_the_bt709_tags(tmp_path: Path) -> None:
    """Every frame comes back, at the rate given, as H.264 yuv420p tagged BT.709 limited range."""
    path = tmp_path / "out" / "clip.mp4"
    writer = write_mp4(_frames(12), path, rate=Fraction(24000, 1001), crf=20, preset="veryfast")
    assert (writer.frames, writer.width, writer.height, writer.committed) == (12, 64, 48, True)
    info = _probe(path)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert (info["primaries"], info["trc"], info["matrix"]) == (BT709, BT709, BT709)
    assert info["range"] == 1  # MPEG (limited)
    assert info["rate"] == Fraction(24000, 1001) and info["frames"] == 12 and info["size"] == (64, 48)
    assert list(path.parent.iterdir()) == [path]  # no temporary file left


def test_a_buffer_target_is_written_in_place() -> None:
    """An in-memory target gets the same encoding and no file anywhere."""
    buffer = io.BytesIO()
    write_mp4(_frames(3, 32, 32), buffer, rate=Fraction(2), crf=18, preset="veryfast", faststart=False)
    info = _probe(io.BytesIO(buffer.getvalue()))
    assert info["frames"] == 3 and info["primaries"] == BT709 and info["rate"] == Fraction(2)


def test_a_failed_write_leaves_nothing_under_the_final_name(tmp_path: Path) -> None:
    """A frame of another size part-way is a ValueError; neither the file nor its temporary name is left."""
    path = tmp_path / "clip.mp4"
    frames = _frames(40)
    frames[30] = _frames(1, width=32)[0]
    with pytest.raises(ValueError, match="frame 30 is 32x48"):
        write_mp4(frames, path, rate=Fraction(24), crf=20, preset="veryfast")
    assert list(tmp_path.iterdir()) == []


def test_an_error_inside_the_block_keeps_the_previous_file(tmp_path: Path) -> None:
    """An exception while writing removes the temporary file and leaves an existing file as it was."""
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), Mp4Writer(path, rate=Fraction(24), crf=20, preset="veryfast") as writer:
        for frame in _frames(20):
            writer.write(frame)
        assert part_path(path).exists() and path.read_bytes() == b"old"
        raise RuntimeError("the caller failed")
    assert path.read_bytes() == b"old" and not part_path(path).exists()


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (np.zeros((48, 63, 3), np.uint8), "even width and height"),
        (np.zeros((48, 64, 3), np.float32), "uint8"),
        (np.zeros((48, 64), np.uint8), "uint8"),
    ],
)
def test_bad_frames_are_refused_before_a_file_exists(tmp_path: Path, frame: np.ndarray, message: str) -> None:
    """An odd size, another dtype or a missing channel axis is a ValueError; nothing is written."""
    path = tmp_path / "clip.mp4"
    with pytest.raises(ValueError, match=message):
        write_mp4([frame], path, rate=Fraction(24), crf=20, preset="veryfast")
    assert list(tmp_path.iterdir()) == []


def test_no_frames_is_a_value_error(tmp_path: Path) -> None:
    """Committing an empty writer raises and leaves no file."""
    with pytest.raises(ValueError, match="no frames"):
        write_mp4([], tmp_path / "clip.mp4", rate=Fraction(24), crf=20, preset="veryfast")
    assert list(tmp_path.iterdir()) == []
