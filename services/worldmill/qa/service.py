"""The qa service's work: check every video the moment it is ready, and say so.

One decode pass per video (``analyze``), checks against the plan's expected output (``check``),
then the cross-video checks a single file cannot tell: byte-identical to any other asset (sha256
index) and near-identical to a sibling (the other durations and variants of the same scenario,
by perceptual hashes). Screenshots and a contact sheet are stored next to the video. The verdict,
the asset record and (when the policy says so) a regeneration request are written in one
transaction with their events; a failed video is never replaced silently: a new run makes a new asset.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from worldmill.contracts.base import Message, ObjectRef
from worldmill.contracts.generation import GenerationRequested, VideoReady
from worldmill.contracts.keys import contact_sheet_key, screenshot_key
from worldmill.contracts.qa import Finding, QaFailed, QaPassed, Severity
from worldmill.qa.analyze import Analysis, Expectation, Thresholds, analyze, check, hamming
from worldmill.qa.findings import jpeg, passed
from worldmill.qa.policy import RegenerationPolicy, sibling_group
from worldmill.runtime.bus import Bus
from worldmill.runtime.docstore import DocumentStore, NewDocument, OutboxItem, OutboxRelay, VersionConflictError
from worldmill.runtime.store import ObjectStore
from worldmill.runtime.vlm import VlmClient, VlmError

ASSET, VERDICT = "asset", "verdict"
CHECKER_VERSION = "qa-1"


@dataclass
class QaService:
    """Verdicts for videos. Holds no state of its own."""

    docs: DocumentStore
    bus: Bus | None
    store: ObjectStore
    thresholds: Thresholds = field(default_factory=Thresholds)
    policy: RegenerationPolicy = field(default_factory=RegenerationPolicy)
    critic: VlmClient | None = None
    source: str = "/worldmill/qa"
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def _event(self, message: Message, event_id: str) -> OutboxItem:
        return OutboxItem.of(message, source=self.source, event_id=event_id)

    async def verdict(self, asset_id: str) -> dict[str, Any] | None:
        """The stored verdict of an asset (its event's data), if checked."""
        doc = await self.docs.get(VERDICT, asset_id)
        return doc.body if doc else None

    async def on_video_ready(self, event: VideoReady) -> QaPassed | QaFailed | None:
        """Check a new video; None when it was checked already (redelivery)."""
        if await self.docs.get(VERDICT, event.asset_id) is not None:
            return None
        with tempfile.TemporaryDirectory(prefix="wm-qa-") as tmp:
            path = Path(tmp) / "video.mp4"
            await self.store.download(event.video.bucket, event.video.key, path)
            analysis = await asyncio.to_thread(analyze, path)
        findings = check(analysis, Expectation.from_plan(event.plan), self.thresholds)
        group = sibling_group(event.prompt_id, event.asset_id)
        async with self._lock:
            findings += await self._cross_checks(
                event.asset_id, group, event.video.sha256, analysis, prompt_id=event.prompt_id
            )
            findings += await self._critique(event.video)
            shots, sheet = await self._images(event.asset_id, analysis)
            cls = QaPassed if passed(findings) else QaFailed
            verdict = cls(
                asset_id=event.asset_id,
                prompt_id=event.prompt_id,
                video=event.video,
                findings=tuple(findings),
                screenshots=shots,
                contact_sheet=sheet,
                checked_at=datetime.now(UTC),
                checker_version=CHECKER_VERSION,
                attempt=event.attempt,
            )
            docs, events = self._records(event, verdict, analysis, group)
            if isinstance(verdict, QaFailed):
                regen = await self._regeneration(event, findings)
                if regen is not None:
                    events.append(regen)
            try:
                await self.docs.commit(docs, events)
            except VersionConflictError:
                return None  # another replica checked it meanwhile
        if self.bus is not None and self.bus.connected:
            await OutboxRelay(self.docs, self.bus).flush()
        return verdict

    async def _cross_checks(
        self, asset_id: str, group: str, sha256: str, analysis: Analysis, *, prompt_id: str | None = None
    ) -> list[Finding]:
        out: list[Finding] = []
        found = [d for d in await self.docs.find(ASSET, where={"sha256": sha256}, limit=20) if d.doc_id != asset_id]
        # The same bytes under another spec is seeds/000's copied clip (an error); a re-run of the same spec
        # giving the same bytes is a deterministic model doing its job (a warning: one of them is redundant).
        other_specs = [d for d in found if prompt_id is None or d.body.get("prompt_id") != prompt_id]
        reruns = [d for d in found if d not in other_specs]
        if other_specs:
            message = f"byte-identical to {', '.join(d.doc_id for d in other_specs[:5])}"
        elif reruns:
            message = f"byte-identical to earlier run(s) of the same spec: {', '.join(d.doc_id for d in reruns[:5])}"
        else:
            message = "no other asset has these bytes"
        out.append(
            Finding(
                check="identical",
                passed=not found,
                severity=Severity.ERROR if other_specs or not reruns else Severity.WARNING,
                measured=[d.doc_id for d in (other_specs or reruns)][:5] or None,
                expected=None,
                message=message,
            )
        )
        # Other renditions of the same spec (a regeneration, a re-augmentation of the same input) are meant
        # to look alike; the seeds/000 failure is another duration or variant looking the same.
        siblings = [
            d
            for d in await self.docs.find(ASSET, where={"group": group}, limit=200)
            if d.doc_id != asset_id and (prompt_id is None or d.body.get("prompt_id") != prompt_id)
        ]
        near: list[str] = []
        for doc in siblings:
            theirs = [int(h) for h in doc.body.get("phash", [])]
            if theirs and analysis.phash and len(theirs) == len(analysis.phash):
                distance = sum(hamming(a, b) for a, b in zip(analysis.phash, theirs, strict=True)) / len(theirs)
                if distance <= self.thresholds.near_duplicate_bits:
                    near.append(doc.doc_id)
        out.append(
            Finding(
                check="near_duplicate",
                passed=not near,
                severity=Severity.ERROR,
                measured=near[:5] or None,
                expected=None,
                message=(
                    f"nearly identical to sibling(s) {', '.join(near[:5])}"
                    if near
                    else f"differs from its {len(siblings)} sibling(s)"
                ),
            )
        )
        return out

    async def _critique(self, video: ObjectRef) -> list[Finding]:
        if self.critic is None:
            return []
        try:
            result = await self.critic.critique_video(self.store.presigned_url(video.bucket, video.key))
        except VlmError as exc:
            return [Finding(check="vlm_critic", passed=True, severity=Severity.INFO, message=f"not judged: {exc}")]
        ok = result.score >= 0.5
        return [
            Finding(
                check="vlm_critic",
                passed=ok,
                severity=Severity.WARNING,
                measured=round(result.score, 3),
                expected=0.5,
                message=f"{result.valid_trials} of {result.trials} answers: share without "
                f"anomalies {result.score:.2f} ({result.model})",
            )
        ]

    async def _images(self, asset_id: str, analysis: Analysis) -> tuple[tuple[ObjectRef, ...], ObjectRef | None]:
        shots = []
        for label, image in analysis.screenshots.items():
            shots.append(
                await self.store.put_bytes(
                    "wm-artifacts", screenshot_key(asset_id, label), jpeg(image), content_type="image/jpeg"
                )
            )
        sheet = None
        if analysis.contact_sheet is not None:
            sheet = await self.store.put_bytes(
                "wm-artifacts", contact_sheet_key(asset_id), jpeg(analysis.contact_sheet), content_type="image/jpeg"
            )
        return tuple(shots), sheet

    def _records(
        self, event: VideoReady, verdict: QaPassed | QaFailed, analysis: Analysis, group: str
    ) -> tuple[list[NewDocument], list[OutboxItem]]:
        ok = isinstance(verdict, QaPassed)
        asset = NewDocument(
            kind=ASSET,
            doc_id=event.asset_id,
            version=1,
            content_hash=event.video.sha256,
            body={
                "asset_id": event.asset_id,
                "prompt_id": event.prompt_id,
                "run_id": event.run_id,
                "group": group,
                "sha256": event.video.sha256,
                "phash": [str(h) for h in analysis.phash],
                "passed": ok,
            },
            index={"group": (group,), "sha256": (event.video.sha256,), "passed": (str(ok).lower(),)},
        )
        record = NewDocument(
            kind=VERDICT,
            doc_id=event.asset_id,
            version=1,
            content_hash=event.video.sha256,
            body=verdict.model_dump(mode="json"),
            index={"passed": (str(ok).lower(),), "prompt_id": (event.prompt_id,)},
        )
        return [asset, record], [self._event(verdict, f"{verdict.TYPE}-{event.asset_id}")]

    async def _regeneration(self, event: VideoReady, findings: list[Finding]) -> OutboxItem | None:
        done = len(await self.docs.find(VERDICT, where={"prompt_id": event.prompt_id, "passed": "false"}, limit=100))
        if not self.policy.wants(findings, done):
            return None
        request = GenerationRequested(
            request_id=f"regen-{event.asset_id}"[:128],
            prompt_ids=(event.prompt_id,),
            max_attempts=1,
            requested_by=f"qa:{event.asset_id}",
        )
        return self._event(request, f"generation.requested-regen-{event.asset_id}")
