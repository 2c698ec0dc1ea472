"""Augmented videos written to a local folder: ``DIR/<name>_aug.mp4`` (or ``DIR/<name>/<name>_aug.mp4``).

The hand-video team (docs/background.md#hand-videos) wants ``outputs/<video>_aug.mp4`` next to their other outputs.
Each passing
augmentation's video is downloaded from the object store into a temporary file in the target's
folder, checked against the sha256 the augmentation recorded, and renamed onto the final name, so
the final name never holds a partial or wrong file.

A file already at the final name is never replaced silently:

* the same bytes (sha256): left as it is ("unchanged");
* other bytes: kept, with a warning ("kept"), unless ``overwrite`` (then "replaced").
"""

from __future__ import annotations

import errno
import posixpath
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from worldmill.contracts.augment import Augmentation
from worldmill.runtime.errors import WorldmillError
from worldmill.runtime.store import ObjectStore, sha256_file

#: The summary the CLI writes next to the videos (worldmill's own file: replaced on every run).
SUMMARY_NAME = "worldmill-augment-summary.json"

DeliveryStatus = Literal["written", "replaced", "unchanged", "kept", "error"]


class OutputDirError(Exception):
    """The output folder cannot be used; the message names the path."""


@dataclass(frozen=True)
class Delivered:
    """What happened to one output file."""

    path: Path
    status: DeliveryStatus
    note: str = ""
    sha256: str | None = None


def output_name(aug: Augmentation) -> str:
    """The sample's name: the sidecar's ``name``, else the input's file name without its suffix."""
    if aug.params.name:
        return aug.params.name
    return posixpath.splitext(posixpath.basename(aug.input.key))[0]


def target_path(folder: Path, name: str, *, per_video_folders: bool) -> Path:
    """``folder/<name>_aug.mp4``, or ``folder/<name>/<name>_aug.mp4``."""
    return (folder / name if per_video_folders else folder) / f"{name}_aug.mp4"


def _describe(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "not writable (permission denied or read-only)"
    return exc.strerror or str(exc)


def prepare_dir(folder: Path) -> None:
    """Create ``folder`` and check that files can be written in it; :class:`OutputDirError` naming it otherwise."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".worldmill-write-test-{secrets.token_hex(4)}"
        probe.write_bytes(b"")
        probe.unlink()
    except FileExistsError as exc:
        raise OutputDirError(f"--output-dir {folder}: exists and is not a folder") from exc
    except OSError as exc:
        raise OutputDirError(f"--output-dir {folder}: cannot write there ({_describe(exc)})") from exc


async def deliver(store: ObjectStore, aug: Augmentation, target: Path, *, overwrite: bool) -> Delivered:
    """Download ``aug``'s output to ``target``: verified, atomic, never silently replacing another file."""
    ref = aug.output
    if ref is None:
        return Delivered(target, "error", "the augmentation has no output video")
    existing: str | None = None
    if target.is_file():  # noqa: ASYNC240 - a stat of a local file; the CLI runs one delivery at a time
        try:
            existing = sha256_file(target)[0]
        except OSError as exc:
            return Delivered(target, "error", f"cannot read the existing {target}: {_describe(exc)}")
        if existing == ref.sha256:
            return Delivered(target, "unchanged", "already there with the same sha256", ref.sha256)
        if not overwrite:
            return Delivered(
                target,
                "kept",
                f"{target} exists with other content (sha256 {existing[:12]}…); kept it: --overwrite replaces it",
                ref.sha256,
            )
    elif target.exists():  # noqa: ASYNC240
        return Delivered(target, "error", f"{target} exists and is not a file")
    tmp = target.with_name(f".{target.name}.wm-{secrets.token_hex(4)}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        await store.download(ref.bucket, ref.key, tmp)
        digest, size = sha256_file(tmp)
        if digest != ref.sha256 or size != ref.size:
            return Delivered(
                target,
                "error",
                f"downloaded s3://{ref.bucket}/{ref.key} is {size} bytes with sha256 {digest}, not the recorded "
                f"{ref.size} bytes with sha256 {ref.sha256}; nothing written",
            )
        tmp.replace(target)
    except OSError as exc:
        return Delivered(target, "error", f"cannot write {target}: {_describe(exc)}")
    except WorldmillError as exc:  # the store: unreachable, missing object, integrity, local file
        return Delivered(target, "error", f"cannot download s3://{ref.bucket}/{ref.key} to {target}: {exc}")
    finally:
        tmp.unlink(missing_ok=True)
    return Delivered(target, "replaced" if existing is not None else "written", "", ref.sha256)
