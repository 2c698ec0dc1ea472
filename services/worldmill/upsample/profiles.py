"""Upsampling model profiles: how a vision-language server resizes an image and counts its tokens.

Two families are described here (our summary of the public sources, checked against their code):

* **Pixtral-12B** (the Cosmos-Transfer1 upsampler, served by vLLM with the mistral tokenizer). The
  mistral-common image encoder (multimodal version ``m1``: 16 px patches, 1024 px largest side, no
  spatial merge) first scales an image down, if needed, so that its longer side is at most 1024 px
  (each side rounded), then covers it with whole 16×16 patches (each side rounded *up* to a patch)
  and resamples it to exactly that grid. Every patch is one image token; each row of patches is
  closed by a row-break token, except the last row, which is closed by the image-end token instead.
  So an image of ``rows × cols`` patches costs ``rows × (cols + 1)`` tokens.
* **Qwen2.5-VL** (Cosmos-Reason1-7B, the Cosmos-Predict2 prompt refiner). The image processor's
  "smart resize" rounds each side to the nearest multiple of 28 (14 px patches, merged 2×2 into one
  token); if the area is then above ``max_pixels`` it scales both sides down by the square root of
  the excess and rounds down to 28, if below ``min_pixels`` it scales up and rounds up. The image
  costs ``(H/28) × (W/28)`` tokens, and the chat template wraps it in a vision-start and a
  vision-end token. A video is resized the same way per frame and its frames are grouped in pairs
  (temporal patch 2), so ``T`` frames cost ``ceil(T/2)`` grids; a single image counts as one grid.

Context lengths and sampling defaults follow how Cosmos invoked them: Transfer1 ran Pixtral with
``max_model_len`` 4096, at most 2 images, temperature 0.6 and 300 new tokens; Predict2 ran
Reason1-7B with ``min_pixels`` 256·28² and ``max_pixels`` 1280·28² and 512 new tokens (vLLM
deployments of Reason1 commonly use an 8192-token context). Every number is configurable with
``dataclasses.replace`` to match the server actually deployed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

UPSAMPLE_SYSTEM_PROMPT = (
    "You turn a short video prompt into one rich, concrete paragraph that describes a single video clip "
    "for a physically grounded world model. Keep the user's intent and every fact they state: the objects, "
    "their number and colour, the actions, the place, the time of day and the weather. Describe what is "
    "visible: the setting and its layout, the objects and the materials they are made of, where the light "
    "comes from and how it falls on surfaces, the camera's position, height, lens and movement, and how "
    "things move and interact over the clip, in plain physical terms. When reference frames are attached, "
    "stay consistent with what they show. Do not invent text, captions, logos, watermarks or on-screen "
    "overlays, do not add anything that contradicts the prompt, and do not use lists, headings or "
    "quotation marks. Reply with the paragraph only."
)


@dataclass(frozen=True)
class ModelProfile:
    """One upsampling model as a server runs it: its image-to-token rule, limits and defaults.

    The resize rule is chosen by the fields: with ``min_pixels``/``max_pixels`` set, the Qwen-style
    pixel-bounded smart resize (sides rounded to the nearest grid step); otherwise the Pixtral-style
    rule (scale down to ``max_image_side`` if set, then round each side up to the grid step). The
    grid step is ``patch × merge`` pixels and each grid cell is one token.
    """

    name: str
    context_tokens: int
    patch: int
    merge: int
    per_row_break: bool  # a break token after every row of grid cells
    per_image_end: bool  # an end token per image (it replaces the last row break when both are set)
    max_image_side: int | None
    min_pixels: int | None
    max_pixels: int | None
    temporal_patch: int
    max_images: int
    takes_video: bool
    default_temperature: float
    default_max_tokens: int
    chars_per_token: float  # for the text estimate: deliberately low, so the estimate errs high
    system_prompt: str
    per_image_start: bool = False  # a start token per image (Qwen's vision-start)

    def __post_init__(self) -> None:
        if self.context_tokens < 1 or self.patch < 1 or self.merge < 1 or self.temporal_patch < 1:
            raise ValueError(f"{self.name}: context, patch, merge and temporal patch must be positive")
        if self.max_images < 1 or self.default_max_tokens < 1 or self.chars_per_token <= 0:
            raise ValueError(f"{self.name}: max images, max tokens and chars per token must be positive")
        if self.max_image_side is not None and self.max_image_side < self.grid:
            raise ValueError(f"{self.name}: max image side {self.max_image_side} is below one grid step {self.grid}")
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(f"{self.name}: min pixels {self.min_pixels} exceed max pixels {self.max_pixels}")

    @property
    def grid(self) -> int:
        """Pixels per token along each side: ``patch × merge``."""
        return self.patch * self.merge

    @property
    def pixel_bounded(self) -> bool:
        """Whether the server uses the Qwen-style smart resize (pixel-count bounds)."""
        return self.min_pixels is not None or self.max_pixels is not None

    def resized(self, width: int, height: int) -> tuple[int, int]:
        """The ``(width, height)`` the server feeds the model for a ``width × height`` image."""
        if width < 1 or height < 1:
            raise ValueError(f"image size must be positive, got {width}×{height}")
        g = self.grid
        if self.pixel_bounded:
            return self._smart_resize(width, height)
        w: float = width
        h: float = height
        if self.max_image_side is not None:
            ratio = max(width, height) / self.max_image_side
            if ratio > 1:
                w, h = round(width / ratio), round(height / ratio)
        w_cells = max(1, math.ceil(w / g))
        h_cells = max(1, math.ceil(h / g))
        return w_cells * g, h_cells * g

    def _smart_resize(self, width: int, height: int) -> tuple[int, int]:
        g = self.grid
        w_bar = max(g, round(width / g) * g)
        h_bar = max(g, round(height / g) * g)
        if self.max_pixels is not None and w_bar * h_bar > self.max_pixels:
            beta = math.sqrt(width * height / self.max_pixels)
            w_bar = max(g, math.floor(width / beta / g) * g)
            h_bar = max(g, math.floor(height / beta / g) * g)
        elif self.min_pixels is not None and w_bar * h_bar < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (width * height))
            w_bar = math.ceil(width * beta / g) * g
            h_bar = math.ceil(height * beta / g) * g
        return w_bar, h_bar

    def _wrap_tokens(self, rows: int) -> int:
        """Marker tokens around one image of ``rows`` grid rows."""
        extra = rows if self.per_row_break else 0
        if self.per_image_end:
            extra += 0 if self.per_row_break else 1  # the end token takes the last row break's place
        if self.per_image_start:
            extra += 1
        return extra

    def image_tokens(self, width: int, height: int) -> int:
        """Exact prompt tokens one ``width × height`` image costs after the server's own resizing."""
        w, h = self.resized(width, height)
        cols, rows = w // self.grid, h // self.grid
        return rows * cols + self._wrap_tokens(rows)

    def video_tokens(self, width: int, height: int, frames: int) -> int:
        """Prompt tokens of one video of ``frames`` frames of ``width × height`` (frames grouped in time)."""
        if not self.takes_video:
            raise ValueError(f"{self.name} takes no video input")
        if frames < 1:
            raise ValueError(f"a video needs at least one frame, got {frames}")
        w, h = self.resized(width, height)
        cols, rows = w // self.grid, h // self.grid
        return math.ceil(frames / self.temporal_patch) * rows * cols + self._wrap_tokens(rows)


def builtin_profiles() -> dict[str, ModelProfile]:
    """The known upsamplers by name; adjust one to a deployment with ``dataclasses.replace``."""
    pixtral = ModelProfile(
        name="pixtral-12b",
        context_tokens=4096,
        patch=16,
        merge=1,
        per_row_break=True,
        per_image_end=True,
        max_image_side=1024,
        min_pixels=None,
        max_pixels=None,
        temporal_patch=1,
        max_images=2,
        takes_video=False,
        default_temperature=0.6,
        default_max_tokens=300,
        chars_per_token=3.0,
        system_prompt=UPSAMPLE_SYSTEM_PROMPT,
    )
    reason1 = ModelProfile(
        name="cosmos-reason1-7b",
        context_tokens=8192,
        patch=14,
        merge=2,
        per_row_break=False,
        per_image_end=True,
        max_image_side=None,
        min_pixels=256 * 28 * 28,
        max_pixels=1280 * 28 * 28,
        temporal_patch=2,
        max_images=8,
        takes_video=True,
        default_temperature=0.6,
        default_max_tokens=512,
        chars_per_token=3.0,
        system_prompt=UPSAMPLE_SYSTEM_PROMPT,
        per_image_start=True,
    )
    return {p.name: p for p in (pixtral, reason1)}
