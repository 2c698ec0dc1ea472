"""A stand-in for the three torchvision functions the Cosmos 2.5 diffusers code calls.

diffusers' ``CosmosTransformer3DModel`` and ``CosmosControlNetModel`` resize their padding mask
with ``torchvision.transforms.functional.resize(..., NEAREST)``, and Predict's Image2World path
calls ``to_tensor``. The torchvision wheel on PyPI that matches torch 2.13 links the CUDA
libraries and fails to import against the CPU torch build, so CPU machines run without torchvision
and get these equivalents instead. Applied only when ``diffusers.utils.is_torchvision_available()``
is False: a machine with a real torchvision is left untouched.
"""

from __future__ import annotations

from enum import Enum
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from diffusers.utils import import_utils

__all__ = ["apply_torchvision_stand_in"]


class _InterpolationMode(Enum):
    NEAREST = "nearest"


def _resize(tensor: Any, size: list[int], interpolation: _InterpolationMode = _InterpolationMode.NEAREST) -> Any:
    if interpolation is not _InterpolationMode.NEAREST:
        raise NotImplementedError("the torchvision stand-in only resizes with NEAREST")
    squeeze = tensor.ndim == 3
    batch = tensor.unsqueeze(0) if squeeze else tensor
    out = F.interpolate(batch, size=tuple(size), mode="nearest")
    return out.squeeze(0) if squeeze else out


def _to_tensor(picture: Any) -> Any:
    array = np.asarray(picture)
    if array.ndim == 2:
        array = array[:, :, None]
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    return tensor.float().div(255.0) if array.dtype == np.uint8 else tensor.float()


_TRANSFORMS = SimpleNamespace(
    functional=SimpleNamespace(resize=_resize, to_tensor=_to_tensor),
    InterpolationMode=_InterpolationMode,
)


def apply_torchvision_stand_in() -> bool:
    """Install the stand-in into the Cosmos diffusers modules when torchvision is missing; True if applied."""
    available: Any = import_utils.is_torchvision_available
    if available():
        return False
    from diffusers.models.controlnets import controlnet_cosmos  # noqa: PLC0415 - imported only to be patched
    from diffusers.models.transformers import transformer_cosmos  # noqa: PLC0415
    from diffusers.pipelines.cosmos import pipeline_cosmos2_5_predict  # noqa: PLC0415

    transformer_cosmos.transforms = _TRANSFORMS  # type: ignore[attr-defined]
    controlnet_cosmos.transforms = _TRANSFORMS  # type: ignore[attr-defined]
    pipeline_cosmos2_5_predict.torchvision = SimpleNamespace(transforms=_TRANSFORMS)  # type: ignore[attr-defined]
    return True
