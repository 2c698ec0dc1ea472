"""Audits run by the service (``POST /qa/audit``): a bucket prefix checked in the background.

Expectations come from file names (``C01_10s.mp4``); a manifest-driven audit is the CLI's
(``worldmill audit --manifest``), because expanding manifests is the prompt service's code. Each
audit is a document: ``running`` when accepted, then ``done`` with the JSON report, or ``failed``.
Videos are downloaded one at a time; only one is on disk at once.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from worldmill.qa.audit import Auditor, Expectations, is_video
from worldmill.qa.audit_report import report
from worldmill.runtime.docstore import DocumentStore, NewDocument
from worldmill.runtime.errors import InvalidInputError, WorldmillError
from worldmill.runtime.logs import get_logger
from worldmill.runtime.store import ObjectStore

AUDIT = "audit"
log = get_logger(__name__)


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → (bucket, prefix); InvalidInputError naming ``url`` otherwise."""
    if not url.startswith("s3://") or len(url) <= len("s3://"):
        raise InvalidInputError("url", "must look like s3://bucket/prefix")
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    return bucket, prefix


@dataclass
class AuditRunner:
    """Starts audits in the background and records their outcome."""

    docs: DocumentStore
    store: ObjectStore

    async def start(self, url: str, *, fps: float = 24.0) -> str:
        """Accept an audit (stored before this returns) and start it; returns its id."""
        bucket, prefix = parse_s3_url(url)
        if not 0 < fps <= 240:
            raise InvalidInputError("fps", "must be between 0 and 240")
        audit_id = f"audit-{secrets.token_hex(8)}"
        await self._record(
            audit_id,
            1,
            {"audit_id": audit_id, "url": url, "state": "running", "started_at": datetime.now(UTC).isoformat()},
        )
        task = asyncio.create_task(self._run(audit_id, url, bucket, prefix, fps))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
        return audit_id

    async def get(self, audit_id: str) -> dict[str, Any] | None:
        """The audit's latest state (with its report once done)."""
        doc = await self.docs.get(AUDIT, audit_id)
        return doc.body if doc else None

    async def _record(self, audit_id: str, version: int, body: dict[str, Any]) -> None:
        await self.docs.commit(
            [
                NewDocument(
                    kind=AUDIT,
                    doc_id=audit_id,
                    version=version,
                    body=body,
                    content_hash=str(body["state"]),
                    index={"state": (body["state"],)},
                )
            ]
        )

    async def _run(self, audit_id: str, url: str, bucket: str, prefix: str, fps: float) -> None:
        base = {"audit_id": audit_id, "url": url}
        try:
            auditor = Auditor(Expectations(fps=fps), source=url)
            keys = [o.key for o in await self.store.list(bucket, prefix) if is_video(o.key)]
            with tempfile.TemporaryDirectory(prefix="wm-audit-") as tmp:
                for key in keys:
                    name = key.removeprefix(prefix).lstrip("/") or key
                    path = Path(tmp) / (PurePosixPath(key).name or "object")
                    try:
                        await self.store.download(bucket, key, path)
                    except WorldmillError as exc:
                        auditor.add_unreadable(name, f"cannot download s3://{bucket}/{key}: {exc}")
                        continue
                    await asyncio.to_thread(auditor.add, name, path)
                    path.unlink(missing_ok=True)
            result = auditor.finish()
            await self._record(
                audit_id,
                2,
                {
                    **base,
                    "state": "done",
                    "ok": result.ok,
                    "report": report(result),
                    "finished_at": datetime.now(UTC).isoformat(),
                },
            )
        except Exception as exc:
            log.error("audit.failed", audit_id=audit_id, error=repr(exc))
            await self._record(audit_id, 2, {**base, "state": "failed", "error": f"{type(exc).__name__}: {exc}"})
