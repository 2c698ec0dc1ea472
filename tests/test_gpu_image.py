"""The GPU image installs the torchvision built for its torch, and its build refuses the CPU stand-in.

No Docker here: the Dockerfile is read as text. The torch → torchvision pairs are PyTorch's release
table (each torchvision wheel requires exactly one torch version).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "docker" / "gpu-runner.Dockerfile"
#: torch → the torchvision release built against it (torchvision's METADATA: Requires-Dist torch==…).
TORCHVISION_FOR = {"2.11.0": "0.26.0", "2.12.0": "0.27.0", "2.13.0": "0.28.0"}


def args(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.MULTILINE))


def problems(text: str, pyproject: str) -> list[str]:
    found = args(text)
    out: list[str] = []
    torch, vision = found.get("TORCH_VERSION"), found.get("TORCHVISION_VERSION")
    pinned = re.search(r'"torch==([\d.]+)"', pyproject)
    if pinned is None or torch != pinned.group(1):
        out.append(f"TORCH_VERSION {torch} is not the torch pyproject.toml pins")
    if torch not in TORCHVISION_FOR or vision != TORCHVISION_FOR[torch]:
        out.append(f"TORCHVISION_VERSION {vision} is not the release for torch {torch}")
    if '"torchvision==${TORCHVISION_VERSION}"' not in text:
        out.append("torchvision is not installed with torch from the CUDA index")
    if "torchvision==%s" not in text:
        out.append("torchvision is not pinned for later pip calls (PIP_CONSTRAINT)")
    if "assert not stand_in()" not in text:
        out.append("the build does not check that the torchvision stand-in is inactive")
    return out


def test_the_gpu_image_gets_the_torchvision_of_its_torch_and_no_stand_in() -> None:
    assert problems(DOCKERFILE.read_text(), (REPO / "pyproject.toml").read_text()) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("ARG TORCHVISION_VERSION=0.28.0", "ARG TORCHVISION_VERSION=0.27.0", "not the release for torch"),
        ('"torchvision==${TORCHVISION_VERSION}"', "", "not installed with torch"),
        ("assert not stand_in()", "stand_in()", "stand-in is inactive"),
        ("ARG TORCH_VERSION=2.13.0", "ARG TORCH_VERSION=2.12.0", "not the torch pyproject.toml pins"),
    ],
)
def test_the_check_fails_on_a_broken_dockerfile(old: str, new: str, expected: str) -> None:
    text = DOCKERFILE.read_text()
    assert old in text
    found = problems(text.replace(old, new), (REPO / "pyproject.toml").read_text())
    assert any(expected in p for p in found), found
