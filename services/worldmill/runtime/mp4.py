"""Writing H.264 MP4: the one encoder every video worldmill makes goes through.

RGB uint8 frames ``(height, width, 3)`` become H.264 yuv420p (libx264, bundled with PyAV), converted
with BT.709 into limited ("MPEG") range and tagged as such (colour primaries, transfer, matrix, range),
so a player or a decoder reads the colours back the way they were written. Frame i has pts i in the
codec time base ``1 / rate``: the file's duration is exactly ``frames / rate``.

A file target is written to a hidden temporary name in the same folder (``.<name>.part``, the runtime's
convention, as the object store's downloads) and moved onto its name with :func:`os.replace` only when
:meth:`Mp4Writer.commit` is called; :meth:`Mp4Writer.abort` (and any error inside ``with``) removes the
temporary file, so a half-written video never carries the final name. A binary buffer target
(``io.BytesIO``) is written in place, for clips that are sent rather than stored.

Needs PyAV and numpy (the ``video`` extra); only the modules that encode import this one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import IO

import av
import numpy as np
import numpy.typing as npt
from av.video.reformatter import ColorRange, Colorspace

__all__ = ["BT709", "Mp4Writer", "part_path", "write_mp4"]

Frame = npt.NDArray[np.uint8]
#: ITU-R BT.709 in the codec context's colorspace / color_primaries / color_trc fields (ISO/IEC 23091-2).
BT709 = 1


def part_path(path: Path) -> Path:
    """Where a file target is written until committed: ``.<name>.part`` next to it."""
    return path.with_name(f".{path.name}.part")


class Mp4Writer:
    """One H.264 MP4, opened at its first frame (which sets the size), written frame by frame.

    ``faststart`` moves the index to the front (a second pass over the file) so it can play while it
    downloads. :class:`ValueError` for a frame that is not RGB uint8, an odd size (yuv420p halves it) or
    a size different from the first frame's.
    """

    def __init__(
        self,
        target: Path | IO[bytes],
        *,
        rate: Fraction,
        crf: int,
        preset: str,
        faststart: bool = True,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"frame rate must be positive, got {rate}")
        self.path: Path | None = None
        self.part: Path | None = None
        self._sink: str | IO[bytes] = target if not isinstance(target, Path) else str(part_path(target))
        if isinstance(target, Path):
            self.path, self.part = target, part_path(target)
        self.rate = rate
        self.crf = crf
        self.preset = preset
        self.faststart = faststart
        self.frames = 0
        self.width = 0
        self.height = 0
        self.committed = False
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None

    def _open(self, width: int, height: int) -> tuple[av.container.OutputContainer, av.video.stream.VideoStream]:
        if width % 2 or height % 2:
            raise ValueError(f"H.264 yuv420p needs an even width and height, got {width}x{height}")
        if self.part is not None:
            self.part.parent.mkdir(parents=True, exist_ok=True)
        options = {"movflags": "+faststart"} if self.faststart else {}
        container = av.open(self._sink, mode="w", format="mp4", options=options)
        self._container = container
        stream = container.add_stream("libx264", rate=self.rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1) / self.rate
        stream.codec_context.color_range = ColorRange.MPEG
        stream.codec_context.colorspace = BT709
        stream.codec_context.color_primaries = BT709
        stream.codec_context.color_trc = BT709
        stream.options = {"crf": str(self.crf), "preset": self.preset}
        self._stream = stream
        self.width, self.height = width, height
        return container, stream

    def write(self, frame: Frame) -> None:
        """Encode one RGB frame as the next one (pts = frames written so far)."""
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            shape = getattr(frame, "shape", None)
            raise ValueError(f"frame {self.frames}: expected a uint8 array (height, width, 3), got {shape}")
        height, width = frame.shape[0], frame.shape[1]
        if self._container is None or self._stream is None:
            if self.frames or self.committed:
                raise ValueError("the writer is closed")
            container, stream = self._open(width, height)
        else:
            container, stream = self._container, self._stream
            if (width, height) != (self.width, self.height):
                raise ValueError(
                    f"frame {self.frames} is {width}x{height} but frame 0 is {self.width}x{self.height}; "
                    "every frame must have the same size"
                )
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24").reformat(
            format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG
        )
        picture.pts = self.frames
        picture.time_base = stream.codec_context.time_base
        container.mux(stream.encode(picture))
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and close the file (a file target still under its temporary name)."""
        if self._container is not None and self._stream is not None:
            self._container.mux(self._stream.encode(None))
            self._container.close()
        self._container = self._stream = None

    def commit(self) -> None:
        """Close, then give a file target its name (:func:`os.replace`). :class:`ValueError` with no frame."""
        if not self.frames:
            self.abort()
            raise ValueError(f"{self.path or 'video'}: no frames to encode")
        self.close()
        if self.part is not None and self.path is not None:
            self.part.replace(self.path)  # os.replace: atomic within the folder
        self.committed = True

    def abort(self) -> None:
        """Close without flushing and remove a file target's temporary file; the final name is left as it was."""
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
        self._container = self._stream = None
        if self.part is not None:
            self.part.unlink(missing_ok=True)

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_mp4(
    frames: Iterable[Frame],
    target: Path | IO[bytes],
    *,
    rate: Fraction,
    crf: int,
    preset: str,
    faststart: bool = True,
) -> Mp4Writer:
    """Encode every frame into ``target`` and commit it; the finished writer (frames, size) is returned."""
    writer = Mp4Writer(target, rate=rate, crf=crf, preset=preset, faststart=faststart)
    with writer:
        for frame in frames:
            writer.write(frame)
    return writer
