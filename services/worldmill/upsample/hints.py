"""Hint frames: the pictures sent next to a prompt to the upsampling model, made by us at the planned size.

The upsample service may attach "hint" frames from a video (or a still image) to the prompt it sends to a
vision-language model (Pixtral-12B or Qwen2.5-VL behind vLLM's OpenAI API). The server turns every image
into tokens at the size it *receives* (after its own resize rule), so frames sent at full resolution cost
what a full-resolution frame costs, and a few 1080p frames overflow a 4096-token context: the failure of
the team's investigation (docs/background.md#upsampler-limits). So the frames are resized here, before the call, to
exactly the
``width × height`` that :func:`worldmill.upsample.budget.plan_hints` chose (aspect kept, on the model's
grid, within its budget); this module only produces the bytes for that plan:

* :func:`inspect_hint` says what a hint file is (size, frame count, frame rate, image or video) so the
  planner can work; a file that is missing, empty, neither an image nor a video, or without a decodable
  video frame is an :class:`~worldmill.runtime.errors.InvalidInputError` on the field ``hint``.
* :func:`frame_indices` spreads the wanted frames evenly over the source (the middle of equal segments).
* :func:`extract_frames` decodes those frames in one pass, resizes each with Pillow (Lanczos) to exactly
  the planned size and encodes it as a baseline JPEG; :func:`encode_hint_video` puts the same frames in a
  short H.264 MP4 for models that take a video.
* :func:`data_url` wraps bytes for the OpenAI ``image_url``/``video_url`` parts and :func:`hints_digest`
  identifies a set of hints (for caching and provenance).

Still images are read with Pillow (first frame of an animated file, EXIF orientation not applied); videos
with PyAV (first video stream that is not cover art, rotation and sample aspect not applied). Local files
only: the caller fetches the hint first.
"""

from __future__ import annotations

import base64
import hashlib
import io
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.stream import Disposition
from av.video.stream import VideoStream
from PIL import Image, UnidentifiedImageError

from worldmill.runtime.errors import InvalidInputError
from worldmill.runtime.mp4 import write_mp4

__all__ = [
    "HintSource",
    "data_url",
    "encode_hint_video",
    "extract_frames",
    "frame_indices",
    "hints_digest",
    "inspect_hint",
]

_FIELD = "hint"
_RESAMPLE = Image.Resampling.LANCZOS
_BACKGROUND = (255, 255, 255)  # transparent pixels of a still image are laid over white
_VIDEO_CRF, _VIDEO_PRESET = 18, "veryfast"
_PIL_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    struct.error,
    Image.DecompressionBombError,
)
_AV_ERRORS: tuple[type[Exception], ...] = (av.error.FFmpegError, OSError, ValueError)


@dataclass(frozen=True)
class HintSource:
    """What a hint file is: its frame size, frame count (1 for a still image) and frame rate (``None`` for one)."""

    width: int
    height: int
    frames: int
    fps: float | None
    is_image: bool


class _NotVideo(Exception):  # noqa: N818 - internal signal, never escapes this module
    """PyAV cannot use the file; the message says why. ``readable`` is False when FFmpeg cannot open it at all."""

    def __init__(self, reason: str, *, readable: bool = True) -> None:
        super().__init__(reason)
        self.readable = readable


# ------------------------------------------------------------------------------------------------ inspection


def inspect_hint(path: Path) -> HintSource:
    """Inspect a hint file: a still image (anything Pillow decodes) or a video (PyAV, first video stream).

    The frame count is the container's own when it states one, otherwise the number of decoded frames.
    Raises :class:`InvalidInputError` (field ``hint``) for a missing or empty file, a file that is
    neither an image nor a video, and a video without a video stream or without a decodable frame.
    """
    _check_file(path)
    try:
        with _open_image(path) as image:
            return HintSource(width=image.width, height=image.height, frames=1, fps=None, is_image=True)
    except _PIL_ERRORS as exc:
        return _inspect_video(path, image_error=exc)


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise InvalidInputError(_FIELD, f"{path} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise InvalidInputError(_FIELD, f"{path.name} is empty (0 bytes)")


def _open_image(path: Path, draft: tuple[int, int] | None = None) -> Image.Image:
    """The file's first frame, fully decoded (so a damaged image fails here), still in its own mode."""
    image = Image.open(path)
    try:
        if draft is not None:
            image.draft("RGB", draft)  # JPEG only: decode at a reduced DCT scale, never below ``draft``
        image.load()
    except BaseException:
        image.close()
        raise
    return image


def _video_stream(container: av.container.InputContainer) -> VideoStream:
    """The first video stream that is not an attached picture (an audio file's cover art)."""
    for stream in container.streams.video:
        if not stream.disposition & Disposition.attached_pic:
            return stream
    raise _NotVideo("has no video stream")


def _inspect_video(path: Path, image_error: Exception) -> HintSource:
    """:func:`inspect_hint` for a file Pillow could not decode (``image_error`` says why)."""
    try:
        return _probe_video(path)
    except _NotVideo as exc:
        if not isinstance(image_error, UnidentifiedImageError):  # Pillow knew the format but failed to decode
            rule = f"{path.name} is a damaged or unsupported image ({image_error}) and no video ({exc})"
        elif not exc.readable:
            rule = f"{path.name} is neither an image ({image_error}) nor a video ({exc})"
        else:
            rule = f"{path.name} {exc}"
        raise InvalidInputError(_FIELD, rule) from exc


def _probe_video(path: Path) -> HintSource:
    try:
        container = av.open(str(path))
    except _AV_ERRORS as exc:
        raise _NotVideo(str(exc), readable=False) from exc
    with container:
        stream = _video_stream(container)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else None
        stated = int(stream.frames or 0)
        decoded = 0
        width = height = 0
        try:
            for frame in container.decode(stream):
                if decoded == 0:
                    width, height = int(frame.width), int(frame.height)
                decoded += 1
                if stated > 0:
                    break  # one decodable frame is proof enough; the container's count stands
        except _AV_ERRORS as exc:
            if decoded == 0:
                raise _NotVideo(f"has no decodable video frame ({exc})") from exc
            # damaged after ``decoded`` frames: those are the frames there are
        if decoded == 0 or width < 1 or height < 1:
            raise _NotVideo("has no decodable video frame")
        frames = stated if stated > 0 else decoded
        return HintSource(width=width, height=height, frames=frames, fps=fps, is_image=False)


# ------------------------------------------------------------------------------------------------ selection


def frame_indices(total: int, count: int) -> list[int]:
    """``min(count, total)`` distinct, sorted frame indices: the middles of equal segments of ``0..total-1``.

    One frame of 100 is ``[50]``, two are ``[25, 75]``; asking for ``total`` or more gives every frame.
    """
    if total < 1:
        raise ValueError(f"total frames must be at least 1, got {total}")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    n = min(count, total)
    # Segment i covers [i·total/n, (i+1)·total/n); its middle is (2i+1)·total/(2n). Middles lie total/n ≥ 1
    # apart, so their floors are distinct, and the last is below total.
    return [(2 * i + 1) * total // (2 * n) for i in range(n)]


def _check_size(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be positive, got {width}×{height}")


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency laid over white (a plain convert would show the hidden colours)."""
    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _resized(image: Image.Image, width: int, height: int) -> Image.Image:
    rgb = _to_rgb(image)
    if rgb.size == (width, height):
        return rgb
    return rgb.resize((width, height), _RESAMPLE)


def _decode_selected(path: Path, indices: Sequence[int], width: int, height: int) -> tuple[list[Image.Image], int]:
    """The frames at ``indices`` (sorted), resized, in one decode pass that stops after the last one.

    Also returns how many frames were decoded, which is below ``indices[-1] + 1`` only when the stream
    ended (or broke) early.
    """
    wanted = set(indices)
    last = max(indices)
    picked: list[Image.Image] = []
    decoded = 0
    try:
        with av.open(str(path)) as container:
            stream = _video_stream(container)
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if decoded in wanted:
                    picked.append(_resized(Image.fromarray(frame.to_ndarray(format="rgb24")), width, height))
                decoded += 1
                if decoded > last:
                    break
    except _NotVideo as exc:
        raise InvalidInputError(_FIELD, f"{path.name} {exc}") from exc
    except _AV_ERRORS as exc:
        if decoded == 0:
            raise InvalidInputError(_FIELD, f"{path.name} has no decodable video frame ({exc})") from exc
    return picked, decoded


def _select(path: Path, count: int, width: int, height: int) -> list[Image.Image]:
    """The planned frames of a hint file as RGB images of exactly ``width × height``."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    _check_size(width, height)
    _check_file(path)
    try:
        with _open_image(path, draft=(2 * width, 2 * height)) as image:
            return [_resized(image, width, height)]
    except _PIL_ERRORS as exc:
        source = _inspect_video(path, image_error=exc)
    indices = frame_indices(source.frames, count)
    picked, decoded = _decode_selected(path, indices, width, height)
    if len(picked) < len(indices):
        # The container's frame count was too high (or the stream breaks early): select again over the
        # frames that really decode. Rare, and the second pass too stops at its last index.
        picked, _ = _decode_selected(path, frame_indices(decoded, count), width, height)
    return picked


# ------------------------------------------------------------------------------------------------ encoding


def extract_frames(path: Path, count: int, width: int, height: int, *, quality: int = 85) -> list[bytes]:
    """``count`` evenly spread frames (fewer if the source has fewer), as baseline JPEGs of exactly ``width × height``.

    The frames are those at :func:`frame_indices` ``(frames, count)``, decoded in one pass and resized
    with Pillow's Lanczos filter (the caller keeps the aspect ratio). A still image gives one frame,
    whatever ``count`` is.
    """
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be between 1 and 100, got {quality}")
    out: list[bytes] = []
    for image in _select(path, count, width, height):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality, progressive=False, optimize=False)
        out.append(buffer.getvalue())
    return out


def encode_hint_video(path: Path, count: int, width: int, height: int, *, fps: float = 2.0) -> bytes:
    """The frames :func:`extract_frames` would give, as a short H.264 MP4 (yuv420p, BT.709) at ``fps``, in memory.

    ``width`` and ``height`` must be even (4:2:0 chroma subsampling). A still image gives a one-frame video.
    """
    _check_size(width, height)
    if width % 2 or height % 2:
        raise ValueError(f"H.264 yuv420p needs an even width and height, got {width}×{height}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    rate = Fraction(fps).limit_denominator(1001)
    images = _select(path, count, width, height)
    buffer = io.BytesIO()
    write_mp4(
        (np.asarray(image) for image in images),
        buffer,
        rate=rate,
        crf=_VIDEO_CRF,
        preset=_VIDEO_PRESET,
        faststart=False,
    )
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------ wrapping


def data_url(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,<data>``: how an OpenAI-style chat request carries an inline image or video."""
    if "/" not in mime or any(ch in mime for ch in ";, \t\r\n"):
        raise ValueError(f"not a plain MIME type: {mime!r}")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def hints_digest(items: Sequence[bytes]) -> str:
    """SHA-256 (hex) of the hints in order, each prefixed with its length, so item boundaries count."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(len(item).to_bytes(8, "big"))
        digest.update(item)
    return digest.hexdigest()
