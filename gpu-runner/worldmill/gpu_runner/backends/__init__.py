"""Model backends for the GPU runner: one per way of running a model (``contracts.backends`` lists them).

A procedural CPU stand-in (``synthetic``), Cosmos 2.5 and Cosmos 3 in process through diffusers,
served engines over HTTP and NVIDIA's native Transfer worker. Importing this package does not import
torch, diffusers or an HTTP client: ``create_backend`` imports the one backend a plan names, when
it is asked for.
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
