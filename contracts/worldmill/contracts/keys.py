"""Bucket names and object keys, as pure functions of ids, so a retry writes the same key.

``check_key`` is the one rule for what a key may be; the object store refuses anything else.
"""

from __future__ import annotations

import posixpath
import unicodedata

#: Uploads people and other systems drop in: augmentation inputs, conditioning images/videos.
INPUTS_BUCKET = "wm-inputs"
#: Everything worldmill makes: videos, provenance, screenshots, control videos.
ARTIFACTS_BUCKET = "wm-artifacts"
#: Dataset exports.
EXPORTS_BUCKET = "wm-exports"
ALL_BUCKETS = (INPUTS_BUCKET, ARTIFACTS_BUCKET, EXPORTS_BUCKET)

MAX_KEY_BYTES = 1024


class InvalidKeyError(ValueError):
    """An object key breaks a rule; the message names the rule."""


def check_key(key: str) -> str:
    """Return ``key`` unchanged if it is a safe object key, else raise :class:`InvalidKeyError`.

    Rules: not empty; at most 1024 bytes in UTF-8; relative (no leading ``/``); no ``.`` or
    ``..`` segment and no empty segment (``a//b``); no backslash; no control characters.
    """
    if not key:
        raise InvalidKeyError("object key: must not be empty")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"object key: must be at most {MAX_KEY_BYTES} bytes in UTF-8")
    if key.startswith("/"):
        raise InvalidKeyError(f"object key {key!r}: must be relative, not start with '/'")
    if "\\" in key:
        raise InvalidKeyError(f"object key {key!r}: must not contain a backslash")
    for ch in key:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            raise InvalidKeyError(f"object key {key!r}: must not contain control character U+{ord(ch):04X}")
    segments = key.split("/")
    for i, segment in enumerate(segments):
        if segment in (".", ".."):
            raise InvalidKeyError(f"object key {key!r}: must not contain a '{segment}' path segment")
        if segment == "" and i != len(segments) - 1:
            raise InvalidKeyError(f"object key {key!r}: must not contain an empty path segment ('//')")
    return key


def run_prefix(run_id: str, attempt: int) -> str:
    """Folder of one attempt of one run."""
    return f"runs/{run_id}/attempt-{attempt}"


def video_key(run_id: str, attempt: int) -> str:
    """The generated video of a run attempt."""
    return f"{run_prefix(run_id, attempt)}/video.mp4"


def provenance_key(run_id: str, attempt: int) -> str:
    """The provenance JSON stored next to the video."""
    return f"{run_prefix(run_id, attempt)}/provenance.json"


def screenshot_key(asset_id: str, label: str) -> str:
    """A QA screenshot (``start``, ``middle``, ``end``) of an asset."""
    return f"qa/{asset_id}/{label}.jpg"


def contact_sheet_key(asset_id: str) -> str:
    """The QA contact sheet of an asset."""
    return f"qa/{asset_id}/contact-sheet.jpg"


def _split(input_key: str) -> tuple[str, str]:
    folder, name = posixpath.split(check_key(input_key))
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return folder, stem


def augment_output_key(input_key: str) -> str:
    """``augmented/<input folder>/<name>_aug.mp4``: mirrors the input's path."""
    folder, stem = _split(input_key)
    return posixpath.join("augmented", folder, f"{stem}_aug.mp4")


def augment_provenance_key(input_key: str) -> str:
    """``augmented/<input folder>/<name>_aug.json``: how the augmentation output was made."""
    folder, stem = _split(input_key)
    return posixpath.join("augmented", folder, f"{stem}_aug.json")


def control_video_key(input_key: str, control: str) -> str:
    """A computed control video next to the augmentation output."""
    folder, stem = _split(input_key)
    return posixpath.join("augmented", folder, f"{stem}_control_{control}.mp4")


def probe_key(probe_id: str) -> str:
    """A small object written by health checks and the smoke demo."""
    return f"probes/{probe_id}.bin"
