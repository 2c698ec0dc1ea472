"""Edge and vis (blur) control videos for Cosmos-Transfer2.5, computed on CPU the way Transfer computes them.

Cosmos-Transfer2.5 renders a new video from control videos. Two control types are plain image
processing: when no control file is given, Transfer computes them itself from the input frames
(``cosmos_transfer2/_src/transfer2/datasets/augmentors/control_input.py``: ``AddControlInputEdge``
and ``AddControlInputBlur`` with ``use_random=False``, as its inference code creates them).
We compute them ourselves, before the GPU job, so that every control of an augmentation is a
file we keep, can show and can check (:func:`control_frames_match`), and the GPU does no CPU
work. The preset tables are Transfer's (``edge_t_lower/upper`` and the blur/down-up factors of
those two classes); the numbers are read from the model card
(``builtin_cards()["cosmos-transfer2.5-2b"].edge_presets`` / ``.blur_presets``), never typed here.

Per frame, on the RGB frame as decoded:

* **edge** (:func:`edge_frame`): ``cv2.Canny(frame, lower, upper)`` with (lower, upper) from the
  preset (very_low 20/50 … medium 100/200 … very_high 300/400), OpenCV's defaults otherwise
  (3×3 Sobel, L1 gradient). Like Transfer, Canny runs on the 3-channel frame, not on a gray
  conversion: OpenCV then uses, per pixel, the channel with the strongest gradient, so an edge
  between two colours of equal luma is still found. The 0/255 map is repeated into 3 channels.
* **vis** (:func:`blur_frame`): with the preset's (pre-blur downsize factor ``f``, down-up factor
  ``s``): resize to (W // f, H // f) with ``INTER_AREA``, ``cv2.bilateralFilter`` with Transfer's
  inference parameters (d = 30, sigmaColor = 150, sigmaSpace = 100, one pass: the defaults of its
  ``BilateralFilterConfig``, which ``Blur(use_random=False)`` uses), resize back with
  ``INTER_LINEAR``, then down to (W // s, H // s) and back up to (W, H) with an antialiased
  bicubic resize. Transfer does that last step with ``torchvision...resize(BICUBIC,
  antialias=True)``; we use Pillow's ``BICUBIC`` (torchvision's antialiased kernel was made to
  match it; measured against torch: about 0.3 grey levels apart on average, at most 2 for 99 % of
  the pixels), so torch is not needed. OpenCV's ``INTER_AREA`` down / ``INTER_LINEAR`` up would be
  about 5 grey levels apart on average.
  Every intermediate size is at least 1 pixel per side.

Depth and seg are not computed here: they need models (Video-Depth-Anything; GroundingDINO +
SAM2). They come as provided files, or from a runner that has those models;
:class:`ControlRequest` refuses them.

:func:`compute_controls` decodes the input once (PyAV), computes every requested control per
frame and writes each as its own H.264 MP4 (libx264, yuv420p, crf 18, preset veryfast, BT.709
limited range, tagged) with exactly the input's frame count and the input stream's average frame
rate (frame i has pts i in time base 1/rate; frame i of a control is frame i of the input, also
for a variable-rate input). yuv420p needs an even width and height: for an odd-sized input the
control frame is padded by one pixel on the right and/or bottom (the last column/row repeated),
and :class:`ControlOutput` records the padded size. Files are written by the runtime's
:class:`~worldmill.runtime.mp4.Mp4Writer` as ``.<name>.part`` and renamed when every control is
complete; on any error none is left behind.

Resolution: the controls have the input's own size. Transfer first resizes the input to its
working resolution (the tier's size for the aspect ratio, ``INTER_AREA``) and computes controls
there; a provided control video is resized to that same size (edge with ``INTER_LINEAR``, vis
with ``INTER_AREA``). So the controls are identical to Transfer's own when the input already has
the working size (e.g. 1280×704 for the 720 tier), and a resampled version of them otherwise.
H.264 also makes the stored edge map only nearly binary (values near 0 and 255).

Cost (``bench/controls.py``, 2 CPUs, 1280×720): decoding is ~3 ms a frame, edge ~45 ms with its
encoding, vis ~0.4-0.5 s, nearly all in the d = 30 bilateral filter, which runs on the full frame
for the very_low and high presets (pre-blur factor 1) and costs about 3× more there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

from worldmill.contracts.cards import ControlType, ModelCard, Preset, builtin_cards
from worldmill.runtime.errors import InvalidInputError
from worldmill.runtime.media import VideoInfo
from worldmill.runtime.mp4 import Mp4Writer

__all__ = [
    "BILATERAL_DIAMETER",
    "BILATERAL_SIGMA_COLOR",
    "BILATERAL_SIGMA_SPACE",
    "CPU_CONTROLS",
    "TRANSFER_CARD_ID",
    "ControlOutput",
    "ControlRequest",
    "blur_frame",
    "compute_controls",
    "control_frames_match",
    "control_path",
    "edge_frame",
]

Image8 = npt.NDArray[np.uint8]
FrameFunction = Callable[[Image8], Image8]

#: The card whose preset tables are used when none are given.
TRANSFER_CARD_ID = "cosmos-transfer2.5-2b"
#: Control types computed here; depth and seg need models.
CPU_CONTROLS = frozenset({ControlType.EDGE, ControlType.VIS})

#: Transfer2.5's bilateral filter at inference (``BilateralFilterConfig`` defaults, CPU path).
BILATERAL_DIAMETER = 30
BILATERAL_SIGMA_COLOR = 150
BILATERAL_SIGMA_SPACE = 100

_CRF = 18
_X264_PRESET = "veryfast"


@functools.cache
def _transfer_card() -> ModelCard:
    return builtin_cards()[TRANSFER_CARD_ID]


def _preset_values(presets: Mapping[Preset, tuple[int, int]], preset: Preset, control: ControlType) -> tuple[int, int]:
    name = preset.value if isinstance(preset, Preset) else str(preset)
    try:
        return presets[Preset(preset)]
    except (KeyError, ValueError):
        known = ", ".join(str(p) for p in presets) or "none"
        raise ValueError(f"{control} control: no preset {name!r} (known: {known})") from None


def _check_rgb(rgb: Image8) -> Image8:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        shape = getattr(rgb, "shape", None)
        dtype = getattr(rgb, "dtype", None)
        raise ValueError(f"expected an RGB uint8 array (height, width, 3), got {type(rgb).__name__} {dtype} {shape}")
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"expected a frame of at least 1×1 pixels, got {rgb.shape[1]}×{rgb.shape[0]}")
    return np.ascontiguousarray(rgb)


def edge_frame(
    rgb: Image8,
    preset: Preset = Preset.MEDIUM,
    presets: Mapping[Preset, tuple[int, int]] | None = None,
) -> Image8:
    """Transfer's edge control of one RGB frame: Canny on the 3-channel frame, white edges on black.

    ``presets`` maps a preset to its (lower, upper) Canny thresholds; default: the Transfer card's
    ``edge_presets``. Returns an array of the same height and width with 3 equal channels, each
    0 or 255. :class:`ValueError` for a frame that is not (H, W, 3) uint8 or an unknown preset.
    """
    image = _check_rgb(rgb)
    table = _transfer_card().edge_presets if presets is None else presets
    lower, upper = _preset_values(table, preset, ControlType.EDGE)
    edges = cv2.Canny(image, lower, upper)
    return np.asarray(cv2.cvtColor(edges, cv2.COLOR_GRAY2RGB), dtype=np.uint8)


def _resize_pil(image: Image8, width: int, height: int) -> Image8:
    """Antialiased bicubic resize (Pillow), the equivalent of torchvision's ``BICUBIC, antialias=True``."""
    resized = Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(resized, dtype=np.uint8)


def blur_frame(
    rgb: Image8,
    preset: Preset = Preset.MEDIUM,
    presets: Mapping[Preset, tuple[int, int]] | None = None,
) -> Image8:
    """Transfer's vis (blur) control of one RGB frame; same size out as in.

    ``presets`` maps a preset to (pre-blur downsize factor, down-up resize factor); default: the
    Transfer card's ``blur_presets``. Steps: ``INTER_AREA`` down by the first factor, bilateral
    filter (d 30, sigmaColor 150, sigmaSpace 100: Transfer's inference values), ``INTER_LINEAR``
    back up, then an antialiased bicubic resize down by the second factor and back up (see the
    module docstring). :class:`ValueError` for a frame that is not (H, W, 3) uint8 or an unknown preset.
    """
    image = _check_rgb(rgb)
    table = _transfer_card().blur_presets if presets is None else presets
    downsize, downup = _preset_values(table, preset, ControlType.VIS)
    if downsize < 1 or downup < 1:
        raise ValueError(f"vis control: preset {preset} has factors ({downsize}, {downup}); both must be ≥ 1")
    height, width = image.shape[0], image.shape[1]
    small_size = (max(1, width // downsize), max(1, height // downsize))
    small = image if small_size == (width, height) else cv2.resize(image, small_size, interpolation=cv2.INTER_AREA)
    blurred = cv2.bilateralFilter(small, BILATERAL_DIAMETER, BILATERAL_SIGMA_COLOR, BILATERAL_SIGMA_SPACE)
    if small_size != (width, height):
        blurred = cv2.resize(blurred, (width, height), interpolation=cv2.INTER_LINEAR)
    blurred8 = np.asarray(blurred, dtype=np.uint8)
    down = _resize_pil(blurred8, max(1, width // downup), max(1, height // downup))
    return _resize_pil(down, width, height)


@dataclass(frozen=True)
class ControlRequest:
    """One control to compute: EDGE or VIS (strings are accepted and converted) and its preset."""

    type: ControlType
    preset: Preset = Preset.MEDIUM

    def __post_init__(self) -> None:
        control = ControlType(self.type)
        if control not in CPU_CONTROLS:
            raise ValueError(
                f"{control} controls are not computed here: only edge and vis are image processing; "
                "depth and seg need models (provide the control video, or use a runner that has them)"
            )
        object.__setattr__(self, "type", control)
        object.__setattr__(self, "preset", Preset(self.preset))


@dataclass(frozen=True)
class ControlOutput:
    """A written control video. ``width``/``height`` are the file's (odd input sizes padded to even)."""

    type: ControlType
    preset: Preset
    path: Path
    frames: int
    fps: Fraction  # exactly the input's average rate
    width: int
    height: int


def control_path(out_dir: Path, stem: str, control: ControlType) -> Path:
    """Where :func:`compute_controls` writes a control: ``out_dir / f"{stem}_control_{type}.mp4"``."""
    return out_dir / f"{stem}_control_{ControlType(control)}.mp4"


def _pad_even(image: Image8) -> Image8:
    bottom, right = image.shape[0] % 2, image.shape[1] % 2
    if not (bottom or right):
        return image
    return np.pad(image, ((0, bottom), (0, right), (0, 0)), mode="edge")


def _frame_function(request: ControlRequest, card: ModelCard) -> FrameFunction:
    if request.type not in card.controls:
        raise ValueError(f"{card.id} takes no {request.type} control")
    if request.type is ControlType.EDGE:
        _preset_values(card.edge_presets, request.preset, request.type)
        return functools.partial(edge_frame, preset=request.preset, presets=card.edge_presets)
    _preset_values(card.blur_presets, request.preset, request.type)
    return functools.partial(blur_frame, preset=request.preset, presets=card.blur_presets)


def _frame_functions(requests: Sequence[ControlRequest], stem: str, card: ModelCard) -> list[FrameFunction]:
    """Check a request list before anything is read; the per-frame function of each request."""
    if not requests:
        raise ValueError("no controls requested")
    seen: set[ControlType] = set()
    for request in requests:
        if request.type in seen:
            raise ValueError(f"the {request.type} control is requested more than once")
        seen.add(request.type)
    if not stem or Path(stem).name != stem:
        raise ValueError(f"stem must be a plain file name part, got {stem!r}")
    return [_frame_function(request, card) for request in requests]


def _open_input(input_path: Path) -> av.container.InputContainer:
    if not input_path.is_file():
        raise InvalidInputError("input", f"{input_path} does not exist or is not a file")
    try:
        return av.open(str(input_path))
    except (av.error.FFmpegError, OSError) as exc:
        raise InvalidInputError("input", f"{input_path} is not a readable video ({exc})") from exc


def _decoded(container: av.container.InputContainer, input_path: Path) -> Iterator[tuple[Fraction, Image8]]:
    """Every frame of the first video stream as RGB, with the stream's average rate; input errors named."""
    if not container.streams.video:
        raise InvalidInputError("input", f"{input_path} has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    rate: Fraction | None = None
    frames = container.decode(stream)
    decoded = 0
    while True:
        try:
            frame = next(frames, None)
            if frame is None:
                return
            rgb = frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as exc:
            if not decoded:
                raise InvalidInputError("input", f"{input_path} has no decodable video frame ({exc})") from exc
            raise InvalidInputError("input", f"{input_path} is damaged after {decoded} frames ({exc})") from exc
        if rate is None:
            rate = _average_rate(stream, input_path)
        decoded += 1
        yield rate, np.asarray(rgb, dtype=np.uint8)


def _average_rate(stream: av.video.stream.VideoStream, input_path: Path) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise InvalidInputError("input", f"{input_path} has no frame rate")
    return Fraction(rate.numerator, rate.denominator)


def compute_controls(
    input_path: Path,
    requests: Sequence[ControlRequest],
    out_dir: Path,
    *,
    stem: str = "control",
    card: ModelCard | None = None,
) -> list[ControlOutput]:
    """Decode ``input_path`` once and write every requested control as its own MP4 in ``out_dir``.

    Each control goes to ``out_dir / f"{stem}_control_{type}.mp4"`` (:func:`control_path`) with
    exactly the input's decoded frame count and its average frame rate; results in request order.
    Presets come from ``card`` (default: the Transfer card), which must list the control type.

    :class:`ValueError` for no requests, a type requested twice, an unknown preset or a bad stem
    (before anything is read). :class:`InvalidInputError` (field ``"input"``) when the input is
    missing, not a video, has no video stream or frame rate, no decodable frame, is damaged
    part-way or changes size. On any error no control file (and no ``.part`` file) is left.
    """
    functions = _frame_functions(requests, stem, _transfer_card() if card is None else card)
    out_dir.mkdir(parents=True, exist_ok=True)
    writers: list[Mp4Writer] = []
    size: tuple[int, int] | None = None
    try:
        with _open_input(input_path) as container:
            for index, (rate, rgb) in enumerate(_decoded(container, input_path)):
                if size is None:
                    size = (rgb.shape[1], rgb.shape[0])
                    writers = [
                        Mp4Writer(control_path(out_dir, stem, r.type), rate=rate, crf=_CRF, preset=_X264_PRESET)
                        for r in requests
                    ]
                elif (rgb.shape[1], rgb.shape[0]) != size:
                    raise InvalidInputError(
                        "input",
                        f"{input_path} changes size at frame {index}: "
                        f"{rgb.shape[1]}×{rgb.shape[0]}, frame 0 is {size[0]}×{size[1]}",
                    )
                for function, writer in zip(functions, writers, strict=True):
                    writer.write(_pad_even(function(rgb)))
        if size is None:
            raise InvalidInputError("input", f"{input_path} has no decodable video frame")
        for writer in writers:
            writer.close()
        for writer in writers:
            writer.commit()
    except BaseException:
        for writer in writers:
            writer.abort()
            if writer.committed and writer.path is not None:
                writer.path.unlink(missing_ok=True)
        raise
    return [
        ControlOutput(
            type=request.type,
            preset=request.preset,
            path=control_path(out_dir, stem, request.type),
            frames=writer.frames,
            fps=writer.rate,
            width=writer.width,
            height=writer.height,
        )
        for request, writer in zip(requests, writers, strict=True)
    ]


def control_frames_match(control: VideoInfo, reference: VideoInfo) -> str | None:
    """Whether a control video can drive an input: None, or what is wrong (several problems joined by "; ").

    It can when it has the same number of frames and the same width×height. A control one pixel
    larger in an odd dimension of the input also matches: that is the even padding
    :func:`compute_controls` adds for yuv420p. The frame rate is not compared: Transfer reads a
    control's frames, not its timestamps.
    """
    problems: list[str] = []
    if control.frames != reference.frames:
        problems.append(f"has {control.frames} frames, the input has {reference.frames}")
    padded = (reference.width + reference.width % 2, reference.height + reference.height % 2)
    if (control.width, control.height) not in {(reference.width, reference.height), padded}:
        problems.append(f"is {control.width}×{control.height}, the input is {reference.width}×{reference.height}")
    return "; ".join(problems) or None
