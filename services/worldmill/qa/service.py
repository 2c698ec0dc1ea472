"""The qa service's work: check every video the moment it is ready, and say so.

One decode pass per video (``analyze``), checks against the plan's expected output (``check``),
then the cross-video checks a single file cannot tell: byte-identical to any other asset (sha256
index) and near-identical to a sibling (the other durations and variants of the same scenario,
by perceptual hashes), and a perceptual copy of ANY other asset of the store at any time offset
(``copy_of``: the dataset-wide fingerprint index of ``qa/fpindex.py``; fingerprints are stored with
each verdict and the index is rebuilt from them at start-up). Screenshots and a contact sheet are
stored next to the video. The VLM critic, when the spec or the settings ask for it, is asked first,
outside the service's lock (``qa/critic_gate.py`` decides the gate; its question and answers go into
the verdict's ``critic`` record); a ``fail`` gate whose critic is unreachable raises
:class:`~worldmill.runtime.vlm.VlmUnavailable`, so the message is retried, not judged. The verdict,
the asset record, the fingerprint and (when the policy says so) a regeneration request are written
in one transaction with their events; a failed video is never replaced silently: a new run makes a
new asset.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from worldmill.contracts.base import Message, ObjectRef
from worldmill.contracts.catalog import AssetDeleted
from worldmill.contracts.generation import GenerationRequested, Regeneration, VideoReady
from worldmill.contracts.keys import contact_sheet_key, screenshot_key
from worldmill.contracts.qa import CriticRecord, Finding, QaFailed, QaPassed, Severity
from worldmill.qa.criteria import Expectation, Thresholds
from worldmill.qa.critic_gate import CriticDefaults, judged, malformed, not_configured, resolve, unjudged
from worldmill.qa.findings import jpeg, passed
from worldmill.qa.fpindex import FingerprintIndex, FingerprintLike, Match
from worldmill.qa.judge import check, near_duplicate
from worldmill.qa.measure import Analysis, analyze
from worldmill.qa.policy import RegenerationPolicy, copy_severity, failed_checks, sibling_group
from worldmill.runtime.bus import Bus
from worldmill.runtime.docstore import DocumentStore, NewDocument, OutboxItem, OutboxRelay, VersionConflictError
from worldmill.runtime.store import ObjectStore
from worldmill.runtime.vlm import ContextTooLong, MalformedCritique, VlmClient, VlmError, VlmUnavailable

ASSET, VERDICT, FINGERPRINT = "asset", "verdict", "fingerprint"
CHECKER_VERSION = "qa-1"
PAGE = 1000  # the document store's largest page


@dataclass(frozen=True)
class StoredFingerprint:
    """A fingerprint as the ``fingerprint`` documents hold it (rate + hashes as 16-digit hex)."""

    rate: float
    hashes: tuple[int, ...]

    def to_body(self) -> dict[str, Any]:
        return {"rate": self.rate, "hashes": [f"{h:016x}" for h in self.hashes]}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> StoredFingerprint:
        return cls(float(body["rate"]), tuple(int(h, 16) for h in body["hashes"]))


def fingerprint_of(analysis: Analysis) -> FingerprintLike | None:
    """``analysis.fingerprint`` (the decode pass's, ``qa/fingerprint.py``), None when it has no samples."""
    fp = analysis.fingerprint
    return fp if fp is not None and len(fp.hashes) else None


@dataclass
class QaService:
    """Verdicts for videos. Its only state is the fingerprint index, rebuilt from the store (:meth:`load_index`)."""

    docs: DocumentStore
    bus: Bus | None
    store: ObjectStore
    thresholds: Thresholds = field(default_factory=Thresholds)
    policy: RegenerationPolicy = field(default_factory=RegenerationPolicy)
    critic: VlmClient | None = None
    critic_defaults: CriticDefaults = field(default_factory=CriticDefaults)
    source: str = "/worldmill/qa"
    index: FingerprintIndex = field(default_factory=FingerprintIndex)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _index_loaded: bool = False

    async def load_index(self) -> int:
        """(Re)build the fingerprint index from every stored ``fingerprint`` document; how many it holds."""
        items: list[tuple[str, FingerprintLike, dict[str, Any]]] = []
        after: str | None = None
        while True:
            page = await self.docs.find(FINGERPRINT, limit=PAGE, after=after)
            items += [
                (d.doc_id, StoredFingerprint.from_body(d.body), _meta(d.body))
                for d in page
                if not d.body.get("deleted")
            ]
            if len(page) < PAGE:
                break
            after = page[-1].doc_id
        index = FingerprintIndex(self.index.rate, self.index.params)
        await asyncio.to_thread(index.add_many, items)
        self.index, self._index_loaded = index, True
        return len(index)

    async def on_asset_deleted(self, event: AssetDeleted) -> bool:
        """Forget a deleted asset's fingerprint: a new video of its spec is not a copy of what is gone.

        The fingerprint document gets a new version marked deleted (so a restart's index skips it);
        True when there was one to forget.
        """
        async with self._lock:
            self.index.remove(event.asset_id)
            doc = await self.docs.get(FINGERPRINT, event.asset_id)
            if doc is None or doc.body.get("deleted"):
                return False
            marker = NewDocument(
                kind=FINGERPRINT,
                doc_id=event.asset_id,
                version=doc.version + 1,
                content_hash=f"deleted-{doc.content_hash}"[:128],
                body={"asset_id": event.asset_id, "deleted": True, "deleted_at": event.deleted_at.isoformat()},
            )
            try:
                await self.docs.commit([marker])
            except VersionConflictError:
                return False  # another replica marked it meanwhile
            return True

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
        critique, critic_record = await self._critique(event)  # may raise VlmUnavailable: retried
        with tempfile.TemporaryDirectory(prefix="wm-qa-") as tmp:
            path = Path(tmp) / "video.mp4"
            await self.store.download(event.video.bucket, event.video.key, path)
            analysis = await asyncio.to_thread(analyze, path)
        findings = check(analysis, Expectation.from_plan(event.plan), self.thresholds)
        group = sibling_group(event.prompt_id, event.asset_id)
        fp = fingerprint_of(analysis)
        async with self._lock:
            if not self._index_loaded:
                await self.load_index()
            findings += await self._cross_checks(
                event.asset_id, group, event.video.sha256, analysis, prompt_id=event.prompt_id
            )
            findings.append(self._copy_check(event, fp))
            findings += critique
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
                critic=critic_record,
            )
            docs, events = self._records(event, verdict, analysis, group)
            meta = {
                "prompt_id": event.prompt_id,
                "seeds": list(event.provenance.seeds),
                "group": group,
                "sha256": event.video.sha256,
                "inputs": sorted({ref.sha256 for ref in event.provenance.inputs if ref.sha256}),
            }
            if fp is not None:
                stored = StoredFingerprint(float(fp.rate), tuple(int(h) for h in fp.hashes))
                docs.append(
                    NewDocument(
                        kind=FINGERPRINT,
                        doc_id=event.asset_id,
                        version=1,
                        content_hash=event.video.sha256,
                        body={"asset_id": event.asset_id, **meta, **stored.to_body()},
                        index={"prompt_id": (event.prompt_id,)},
                    )
                )
            if isinstance(verdict, QaFailed):
                regen = await self._regeneration(event, findings)
                if regen is not None:
                    events.append(regen)
            try:
                await self.docs.commit(docs, events)
            except VersionConflictError:
                await self._index_stored(event.asset_id)  # another replica checked it meanwhile
                return None
            if fp is not None:
                self.index.add(event.asset_id, fp, meta)
        if self.bus is not None and self.bus.connected:
            await OutboxRelay(self.docs, self.bus).flush()
        return verdict

    async def _cross_checks(
        self, asset_id: str, group: str, sha256: str, analysis: Analysis, *, prompt_id: str | None = None
    ) -> list[Finding]:
        out: list[Finding] = []
        found = [d for d in await self.docs.find(ASSET, where={"sha256": sha256}, limit=20) if d.doc_id != asset_id]
        # The same bytes under another spec is the copied clip of docs/background.md#security-cameras (an error); a
        # re-run of the same spec
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
        # to look alike; the failure of docs/background.md#security-cameras is another duration or variant looking
        # the same.
        siblings = [
            d
            for d in await self.docs.find(ASSET, where={"group": group}, limit=200)
            if d.doc_id != asset_id and (prompt_id is None or d.body.get("prompt_id") != prompt_id)
        ]
        near: list[str] = []
        for doc in siblings:
            theirs = [int(h) for h in doc.body.get("phash", [])]
            # Strict: a stored sibling hashed at other positions (another checker, a clip under 8 frames) is no match.
            bits = self.thresholds.near_duplicate_bits
            if near_duplicate(analysis.phash, theirs, bits=bits, equal_length=True).duplicate:
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

    async def _index_stored(self, asset_id: str) -> None:
        doc = await self.docs.get(FINGERPRINT, asset_id)
        if doc is not None and not doc.body.get("deleted"):
            self.index.add(asset_id, StoredFingerprint.from_body(doc.body), _meta(doc.body))

    def _copy_check(self, event: VideoReady, fp: FingerprintLike | None) -> Finding:
        """``copy_of``: the same picture as any other asset (equal, inside it, containing it, overlapping)."""
        if fp is None:
            return Finding(check="copy_of", passed=True, severity=Severity.INFO, message="not checked: no fingerprint")
        matches = self.index.lookup(fp, exclude={event.asset_id}, limit=20)
        if not matches:
            return Finding(
                check="copy_of",
                passed=True,
                severity=Severity.ERROR,
                message=f"shares no frames with any of {len(self.index)} other asset(s)",
            )
        # A video made from another asset's video (a Transfer of it, uploaded as an input: the same bytes)
        # is meant to follow its picture: that match is its lineage, not a copy.
        inputs = {ref.sha256 for ref in event.provenance.inputs if ref.sha256}
        derived = [m for m in matches if m.meta.get("sha256") in inputs]
        matches = [m for m in matches if m.meta.get("sha256") not in inputs]
        if not matches:
            return Finding(
                check="copy_of",
                passed=True,
                severity=Severity.ERROR,
                message="follows only its own input: " + "; ".join(m.describe() for m in derived[:3]),
            )
        severities = [
            copy_severity(
                event.prompt_id, m.meta.get("prompt_id"), shared_input=bool(inputs & set(m.meta.get("inputs") or ()))
            )
            for m in matches
        ]
        errors = [m for m, s in zip(matches, severities, strict=True) if s is Severity.ERROR]
        shown = errors or matches
        top = shown[0]
        label = "a copy of" if errors else "a copy of earlier run(s) of the same spec:"
        return Finding(
            check="copy_of",
            passed=False,
            severity=Severity.ERROR if errors else Severity.WARNING,
            measured=_measured(top),
            expected=None,
            message=f"{label} " + "; ".join(m.describe() for m in shown[:5]),
        )

    async def _critique(self, event: VideoReady) -> tuple[list[Finding], CriticRecord | None]:
        """The critic's finding and record under the gate the plan and the settings give (none when off).

        With gate ``fail``: an unreachable critic raises (:class:`VlmUnavailable`, transient: the message
        is retried) and a refused request too (:class:`VlmError`, permanent: dead-lettered with the
        reason, to replay once the critic is fixed); answers without a valid trial, or a video over the
        model's context, fail the video with the reason. With ``warn`` each of these is a passing info.
        """
        requested = event.plan.qa.critic if event.plan.qa is not None else None
        gate = resolve(self.critic_defaults, requested, configured=self.critic is not None)
        if gate is None:
            return [], None
        if self.critic is None:
            finding, record = not_configured(gate)
            return [finding], record
        config = self.critic.config
        url = self.store.presigned_url(event.video.bucket, event.video.key)
        try:
            result = await self.critic.critique_video(url, kind=gate.kind)
        except MalformedCritique as exc:
            finding, record = malformed(gate, exc, fps=config.fps)
        except ContextTooLong as exc:
            finding, record = unjudged(gate, str(exc), model=config.model, fps=config.fps)
        except (VlmUnavailable, VlmError) as exc:
            if gate.mode == "fail":
                raise
            finding, record = unjudged(gate, str(exc), model=config.model, fps=config.fps)
        else:
            finding, record = judged(gate, result)
        return [finding], record

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
        """``generation.requested`` for a new video of the failed one's spec, with a new seed; None when not wanted.

        The request says which regeneration it is (the spec's failed videos before this one, + 1),
        which asset it replaces and the checks that asset failed: planning derives the new seed from
        them (``generate/planning.py`` ``regeneration_seed``), as the spec's own seed would make the
        same video again. Its ids are the failed asset's, so a redelivery asks for nothing new.
        """
        done = len(await self.docs.find(VERDICT, where={"prompt_id": event.prompt_id, "passed": "false"}, limit=100))
        if not self.policy.wants(findings, done):
            return None
        previous = event.plan.regeneration.number if event.plan.regeneration is not None else None
        request = GenerationRequested(
            request_id=f"regen-{event.asset_id}"[:128],
            prompt_ids=(event.prompt_id,),
            max_attempts=1,
            requested_by=f"qa:{event.asset_id}",
            regeneration=Regeneration(
                number=self.policy.number(done, previous),
                replaces=event.asset_id,
                failed_checks=failed_checks(findings),
            ),
        )
        return self._event(request, f"generation.requested-regen-{event.asset_id}")


def _meta(body: dict[str, Any]) -> dict[str, Any]:
    return {k: body.get(k) for k in ("prompt_id", "seeds", "group", "sha256", "inputs")}


def _measured(m: Match) -> list[str | int | float]:
    """The best match, machine-readable: other asset, relation, ranges here and there (s), similarity."""
    return [m.asset_id, m.relation, *m.query_range, *m.other_range, m.similarity]
