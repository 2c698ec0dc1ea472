"""Which container a video file is: from its first bytes (when ffmpeg cannot open it) or from its demuxer."""

from __future__ import annotations

from pathlib import Path

import av

__all__ = ["MAGIC_BYTES", "container_kind", "container_name", "read_head"]

#: How many leading bytes are read to recognise a video container that ffmpeg cannot open.
MAGIC_BYTES = 512
_ISO_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"}


def container_kind(head: bytes) -> str | None:
    """The container a file's first bytes announce, or ``None`` when they announce no video container."""
    if len(head) >= 8 and head[4:8] in _ISO_BOXES:
        return "mp4/mov"
    if head[:4] == b"\x1aE\xdf\xa3":
        return "matroska/webm"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:3] == b"FLV":
        return "flv"
    if head[:4] == b"\x00\x00\x01\xba":
        return "mpeg-ps"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "mpeg-ts"
    return None


def container_name(container: av.container.InputContainer) -> str:
    """``mp4`` or ``mov`` for the ISO demuxer (by the major brand), else the demuxer's first name."""
    names = container.format.name.split(",")
    if "mp4" in names:
        brand = str(container.metadata.get("major_brand", "")).strip()
        return "mov" if brand == "qt" else "mp4"
    return names[0]


def read_head(path: Path) -> bytes:
    """The file's first :data:`MAGIC_BYTES` bytes (none when it cannot be read)."""
    try:
        with path.open("rb") as handle:
            return handle.read(MAGIC_BYTES)
    except OSError:
        return b""
