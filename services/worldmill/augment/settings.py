"""augment settings: the runtime settings plus where inputs come from and how uploads are noticed."""

from __future__ import annotations

from pydantic import Field

from worldmill.contracts.keys import ARTIFACTS_BUCKET, INPUTS_BUCKET
from worldmill.runtime.settings import RuntimeSettings


class AugmentSettings(RuntimeSettings):
    """``WM_AUGMENT_*``. MinIO pushes notifications (turn ``poll`` off); other stores are polled."""

    inputs_bucket: str = Field(default=INPUTS_BUCKET, description="Uploads here are augmented.")
    outputs_bucket: str = Field(default=ARTIFACTS_BUCKET, description="Where augmented/<path>_aug.mp4 goes.")
    poll: bool = Field(default=True, description="List the inputs bucket for new uploads (stores that cannot push).")
    poll_interval_s: float = Field(default=2.0, gt=0)
    poll_prefix: str = Field(default="", description="Only uploads under this prefix are noticed by the poller.")
    max_input_bytes: int = Field(default=8 * 1024**3, gt=0, description="Larger inputs are refused.")
    concurrency: int = Field(default=2, ge=1, le=32, description="Inputs prepared at once (decode + controls).")
    settle_s: float = Field(
        default=3.0,
        ge=0,
        description="An input younger than this waits before its folder is read, so control files and a sidecar "
        "uploaded just after it (e.g. by a sync in name order) are seen.",
    )
