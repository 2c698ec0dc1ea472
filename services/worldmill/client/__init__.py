"""A typed Python client for the worldmill services' HTTP APIs, sync and async.

Every call returns the services' own contracts (pydantic models: ``ManifestResult``, ``PromptSpec``,
``GenerationAccepted``, ``RunRecord``, ``AssetSummary``, ``AssetDetail``, ``GenerationStatus``,
``Augmentation``); every error is a :class:`ClientError` (see :mod:`worldmill.client.errors`).

::

    from worldmill.client import Worldmill, RequestRejectedError

    with Worldmill.local(".worldmill") as wm:          # or Worldmill.from_env(), or Worldmill(urls={...}, token=...)
        try:
            result = wm.submit_manifest("scenarios/doorstep.yaml")
        except RequestRejectedError as exc:
            for p in exc.problems:                     # where, what, which rule (and the line in the YAML)
                print(p.loc, p.line, p.msg, p.type)
            raise
        accepted = wm.generate(manifest=result.manifest)
        runs = wm.wait(accepted, on_progress=lambda done, total, _: print(f"{done}/{total}"))
        for asset in wm.search(manifest=result.manifest, qa_status="passed"):
            wm.download(asset.asset_id, "videos/")     # sha256 verified

        quick = wm.quick_generate("a parcel left at a door, rain", duration_s=5, download_to="videos/")
        print(quick.videos)

``AsyncWorldmill`` has the same methods, awaited (``async for`` over the listings)::

    async with AsyncWorldmill.from_env() as wm:
        runs = await wm.wait(await wm.generate(["doorstep-C01-5s-v0"]))
"""

from __future__ import annotations

from worldmill.client._ops import ProgressCallback, Waitable, parse_controls
from worldmill.client.aio import AsyncWorldmill
from worldmill.client.discovery import SERVICES, Endpoints, StoreConfig
from worldmill.client.errors import (
    APIError,
    ChecksumMismatchError,
    ClientError,
    ConflictError,
    GenerationFailedError,
    NotFoundError,
    RequestRejectedError,
    ServerError,
    UnauthorizedError,
    UnavailableError,
    WaitTimeoutError,
)
from worldmill.client.results import QuickResult
from worldmill.client.sync import Worldmill

__all__ = [
    "SERVICES",
    "APIError",
    "AsyncWorldmill",
    "ChecksumMismatchError",
    "ClientError",
    "ConflictError",
    "Endpoints",
    "GenerationFailedError",
    "NotFoundError",
    "ProgressCallback",
    "QuickResult",
    "RequestRejectedError",
    "ServerError",
    "StoreConfig",
    "UnauthorizedError",
    "UnavailableError",
    "WaitTimeoutError",
    "Waitable",
    "Worldmill",
    "parse_controls",
]
