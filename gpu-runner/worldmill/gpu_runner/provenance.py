"""What a finished video records about how it was made: model, plan, seeds, versions, device, timings.

The provenance of a job is stored next to its video and carried by ``job.completed``; a redelivered
job whose provenance is stored is answered from it (``worker``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from worldmill.contracts.generation import GpuJob, Provenance, Timings
from worldmill.gpu_runner.backends.base import Backend, library_versions
from worldmill.gpu_runner.devices import DeviceInfo, describe_device
from worldmill.gpu_runner.jobwork import Generated
from worldmill.runtime.logs import get_logger
from worldmill.runtime.versions import package_version

log = get_logger(__name__)


def code_version() -> str:
    """worldmill's version (and the git commit when running from a checkout)."""
    ver = package_version("worldmill")
    head = Path(__file__).resolve().parents[3] / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref = (head.parent / ref.removeprefix("ref: ")).read_text().strip()
        return f"{ver}+g{ref[:12]}"
    except OSError:
        return ver


class DeviceDescriptions:
    """Each device's description, read once per device (``None`` when it cannot be read)."""

    def __init__(self) -> None:
        self._devices: dict[str, DeviceInfo | None] = {}

    def get(self, device: str) -> DeviceInfo | None:
        """The device's description, read now if it was not read before."""
        if device not in self._devices:
            try:
                self._devices[device] = describe_device(device)
            except Exception as exc:  # provenance must not fail a finished video
                log.warning("device.describe_failed", device=device, error=str(exc))
                self._devices[device] = None
        return self._devices[device]


def job_provenance(
    job: GpuJob,
    *,
    backend: Backend,
    generated: Generated,
    load_s: float,
    fetch_s: float,
    encode_s: float,
    upload_s: float,
    started_at: datetime,
    fps_method: str,
    runner: str,
    default_device: str,
    code_version: str,
    devices: DeviceDescriptions,
) -> Provenance:
    """The provenance of a job just encoded; ``default_device`` when the backend does not name its device."""
    described = backend.describe()
    device = described.get("device", default_device)
    info = devices.get(device)
    return Provenance(
        backend=described.get("backend", backend.name),
        model=job.signature.model,
        checkpoint=described.get("checkpoint", job.signature.checkpoint),
        checkpoint_sha256=described.get("checkpoint_sha256") or None,
        plan=job.plan,
        prompt=job.prompt,
        sampling=job.plan.sampling,
        seeds=tuple(c.seed for c in job.plan.chunks),
        inputs=job.inputs,
        code_version=code_version,
        library_versions=library_versions(described),
        device=device,
        runner=runner,
        timings=Timings(
            load_s=round(load_s, 4),
            fetch_s=round(fetch_s, 4),
            infer_s=round(generated.seconds, 4),
            encode_s=round(encode_s, 4),
            upload_s=round(upload_s, 4),
        ),
        peak_memory_bytes=generated.peak_memory_bytes,
        peak_memory_kind=generated.peak_memory_kind,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        extra={
            **{k: v for k, v in described.items() if not k.startswith("version.")},
            **(info.as_provenance() if info is not None else {}),
            "fps_conversion": fps_method,
            "chunking": job.plan.chunking,
            "model_calls": generated.calls,
            **({"controls": [c.model_dump(mode="json") for c in job.controls]} if job.controls else {}),
        },
    )
