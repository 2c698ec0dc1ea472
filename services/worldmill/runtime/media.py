"""Reading video files with PyAV (the ``video`` extra): what a file is, without decoding it.

Shared by every service that looks at videos (prompt specs for inputs, QA, augmentation).
PyAV is imported when a function is called, so services without videos do not load it.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from worldmill.runtime.errors import InvalidInputError


@dataclass(frozen=True)
class VideoInfo:
    """What a video file says about itself, and its exact frame count (packets counted)."""

    width: int
    height: int
    fps: Fraction
    frames: int
    duration_s: float
    codec: str
    container: str

    @property
    def aspect(self) -> float:
        """Width divided by height."""
        return self.width / self.height


def probe(path: Path) -> VideoInfo:
    """Probe a video file; :class:`InvalidInputError` (naming the file) when it is not a usable video.

    The frame count comes from counting the video stream's packets (no decoding), because the
    container's own count is missing or wrong in many files.
    """
    import av  # noqa: PLC0415 - optional dependency, loaded on use

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise InvalidInputError(str(path), f"is not a readable video ({exc})") from exc
    with container:
        if not container.streams.video:
            raise InvalidInputError(str(path), "has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate:
            raise InvalidInputError(str(path), "has no frame rate")
        frames = 0
        try:
            for packet in container.demux(stream):
                if packet.size:
                    frames += 1
        except av.error.FFmpegError as exc:
            raise InvalidInputError(str(path), f"is damaged after {frames} frames ({exc})") from exc
        if frames == 0:
            raise InvalidInputError(str(path), "has no frames")
        fps = Fraction(rate.numerator, rate.denominator)
        return VideoInfo(
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
            fps=fps,
            frames=frames,
            duration_s=float(frames / fps),
            codec=str(stream.codec_context.name),
            container=str(container.format.name),
        )
