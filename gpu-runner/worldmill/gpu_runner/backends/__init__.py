"""Model backends for the GPU runner: a procedural CPU stand-in and Cosmos 2.5 through diffusers.

Importing this package does not import torch or diffusers: only ``create_backend`` loads
``diffusers_backend`` when a Cosmos model is asked for.
"""

from worldmill.gpu_runner.backends.base import (
    VERSION_PREFIX,
    Backend,
    BackendConfig,
    Canceled,
    CheckpointError,
    ChunkRequest,
    Frames,
    StepCallback,
    library_versions,
)
from worldmill.gpu_runner.backends.registry import create_backend
from worldmill.gpu_runner.backends.synthetic import SyntheticBackend

__all__ = [
    "VERSION_PREFIX",
    "Backend",
    "BackendConfig",
    "Canceled",
    "CheckpointError",
    "ChunkRequest",
    "Frames",
    "StepCallback",
    "SyntheticBackend",
    "create_backend",
    "library_versions",
]
