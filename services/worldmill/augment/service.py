"""The augment service's work: from an upload (or a request) to ``{name}_aug.mp4`` with a QA verdict.

::

    object.created (poller / MinIO) ─┐
    POST /augmentations, CLI ────────┼─> record "received" + augment.requested      (one transaction)
    augment.requested (others) ──────┘
    augment.requested ─> download, probe, controls: provided files checked against the input,
                         edge/vis computed on CPU, all stored under augmented/<path>_control_<type>.mp4
                      ─> record "queued" + job input_spec (prompt service)         (one transaction)
    prompt service     ─> Transfer spec + generation.requested ─> generate ─> gpu-runner ─> video.ready
    video.ready        ─> copied to augmented/<path>_aug.mp4 (+ _aug.json)  ─> record "generated"
    qa.passed/failed   ─> record "passed"/"failed" + augment.completed

Bad input never reaches a GPU: the record ends "rejected" with the field and the rule, and
``augment.rejected`` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from worldmill.augment.controls import ControlRequest, compute_controls, control_frames_match
from worldmill.augment.inputs import (
    ChosenControl,
    ControlsError,
    augmentation_id,
    check_params,
    choose_controls,
    classify,
    control_files,
    params_from_sidecar,
    sidecar_key,
    split,
)
from worldmill.augment.settings import AugmentSettings
from worldmill.contracts.augment import (
    AUGMENT_FINAL_STATES,
    AugmentAccepted,
    Augmentation,
    AugmentationPage,
    AugmentCompleted,
    AugmentControl,
    AugmentOutcome,
    AugmentParams,
    AugmentRejected,
    AugmentRequested,
    AugmentState,
    AugmentSubmission,
    ControlSpec,
    InputSpecRequested,
)
from worldmill.contracts.base import Message, ObjectLocation, ObjectRef
from worldmill.contracts.cards import Preset
from worldmill.contracts.generation import GenerationRejected, VideoReady
from worldmill.contracts.keys import (
    InvalidKeyError,
    augment_output_key,
    augment_provenance_key,
    check_key,
    control_video_key,
)
from worldmill.contracts.objects import ObjectCreated
from worldmill.contracts.qa import QaFailed, QaPassed
from worldmill.runtime.bus import Bus
from worldmill.runtime.docstore import (
    Document,
    DocumentStore,
    NewDocument,
    OutboxItem,
    OutboxRelay,
    VersionConflictError,
)
from worldmill.runtime.errors import InvalidInputError, ObjectNotFoundError, TransientError
from worldmill.runtime.logs import get_logger
from worldmill.runtime.media import VideoInfo, probe
from worldmill.runtime.store import ObjectStore, sha256_file

log = get_logger(__name__)

KIND = "augmentation"
MAX_PAGE = 500
FILTERS = ("state", "request", "input", "prompt", "asset", "base")


class Rejected(Exception):  # noqa: N818 - an outcome, like the others
    """This input cannot be augmented: ``field`` and ``rule`` say why."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


def _params_problem(params: AugmentParams) -> Rejected | None:
    """What the model card refuses in the parameters (model, tier, guidance), as a rejection; None when fine."""
    try:
        check_params(params)
    except ControlsError as exc:
        return Rejected(exc.field, exc.rule)
    return None


@dataclass
class AugmentService:
    """Uploads and requests in, Transfer augmentations with lineage out."""

    docs: DocumentStore
    bus: Bus | None
    store: ObjectStore
    settings: AugmentSettings
    source: str = "/worldmill/augment"

    def _event(self, message: Message, event_id: str) -> OutboxItem:
        return OutboxItem.of(message, source=self.source, event_id=event_id[:200])

    async def publish_pending(self) -> None:
        """Send stored events and jobs now (the background relay would, a moment later)."""
        await OutboxRelay.flush_now(self.docs, self.bus)

    # -- records --------------------------------------------------------------------------------

    async def get(self, augmentation_id: str) -> Augmentation | None:
        """The latest state of an augmentation."""
        doc = await self.docs.get(KIND, augmentation_id)
        return Augmentation.model_validate(doc.body) if doc else None

    async def history(self, augmentation_id: str) -> list[Augmentation]:
        """Every state an augmentation went through, oldest first."""
        return [Augmentation.model_validate(d.body) for d in await self.docs.history(KIND, augmentation_id)]

    async def find(
        self, filters: dict[str, str | Sequence[str]], *, limit: int = 100, cursor: str | None = None
    ) -> AugmentationPage:
        """Augmentations matching every filter, by id, one page at a time, with counts per state."""
        unknown = set(filters) - set(FILTERS)
        if unknown:
            raise InvalidInputError(sorted(unknown)[0], f"is not a filter (filters: {', '.join(FILTERS)})")
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInputError("limit", f"must be between 1 and {MAX_PAGE}")
        docs = await self.docs.find(KIND, where=filters, limit=limit + 1, after=cursor)
        items = tuple(Augmentation.model_validate(d.body) for d in docs[:limit])
        counts: dict[str, int] = {}
        for item in items:
            counts[item.state] = counts.get(item.state, 0) + 1
        return AugmentationPage(
            counts=counts, items=items, next_cursor=items[-1].augmentation_id if len(docs) > limit else None
        )

    async def _record(
        self, aug: Augmentation, *, latest: Document | None = None, events: Sequence[OutboxItem] = ()
    ) -> None:
        """Store a new version of the record (with ``events`` in the same transaction)."""
        if latest is None:
            latest = await self.docs.get(KIND, aug.augmentation_id)
        index: dict[str, tuple[str, ...]] = {
            "state": (aug.state,),
            "request": (aug.request_id,),
            "input": (f"{aug.input.bucket}/{aug.input.key}",),
            "base": (aug.augmentation_id.split("-r")[0],),
        }
        if aug.prompt_id:
            index["prompt"] = (aug.prompt_id,)
        if aug.asset_id:
            index["asset"] = (aug.asset_id,)
        doc = NewDocument(
            kind=KIND,
            doc_id=aug.augmentation_id,
            version=(latest.version + 1) if latest else 1,
            body=aug.model_dump(mode="json"),
            content_hash=aug.state,
            index=index,
        )
        await self.docs.commit([doc], events)
        await self.publish_pending()

    async def _update(self, aug: Augmentation, events: Sequence[OutboxItem] = (), **changes: object) -> Augmentation:
        updated = aug.model_copy(update={**changes, "updated_at": datetime.now(UTC)})
        await self._record(updated, events=events)
        return updated

    # -- starting -------------------------------------------------------------------------------

    async def on_upload(self, event: ObjectCreated, *, event_id: str | None = None) -> AugmentOutcome | None:
        """An object appeared: a video in the inputs bucket is augmented (parameters from its sidecar JSON)."""
        if event.bucket != self.settings.inputs_bucket or event.key.endswith("/"):
            return None
        request_id = f"upl-{(event_id or secrets.token_hex(8))[-40:]}".replace(".", "-")
        try:
            check_key(event.key)
        except InvalidKeyError as exc:  # before any store call: such a key is refused for good, not retried
            request = AugmentRequested(
                request_id=request_id,
                input_bucket=event.bucket,
                input_key=event.key,
                input_etag=event.etag,
                requested_by=f"upload:{event.origin}",
                upload_event_id=event_id,
            )
            return await self.start(request, problem=Rejected("input.key", str(exc)))
        folder, _, _ = split(event.key)
        siblings = [o.key for o in await self.store.list(event.bucket, f"{folder}/" if folder else "")]
        kind = classify(event.key, siblings)
        if kind in ("control", "sidecar"):
            return None  # used by the video next to it
        params = AugmentParams()
        problem: Rejected | None = None
        if kind == "other":
            suffix = split(event.key)[2] or "(none)"
            problem = Rejected("input", f"is not a video (suffix {suffix}); upload .mp4, .mov, .mkv, .webm or .avi")
        else:
            try:
                params = await self._sidecar(event.bucket, event.key)
            except ControlsError as exc:
                problem = Rejected(exc.field, exc.rule)
        request = AugmentRequested(
            request_id=request_id,
            input_bucket=event.bucket,
            input_key=event.key,
            input_etag=event.etag,
            params=params,
            requested_by=f"upload:{event.origin}",
            upload_event_id=event_id,
        )
        return await self.start(request, problem=problem)

    async def _sidecar(self, bucket: str, key: str) -> AugmentParams:
        try:
            text = await self.store.get_bytes(bucket, sidecar_key(key), max_bytes=1024 * 1024)
        except ObjectNotFoundError:
            return AugmentParams()
        return params_from_sidecar(text)

    async def submit(self, req: AugmentSubmission) -> AugmentAccepted:
        """``POST /augmentations``: each listed input (or every video under the prefix) started or skipped."""
        request_id = req.request_id or f"augreq-{secrets.token_hex(8)}"
        locations = list(req.inputs)
        if req.prefix is not None:
            try:
                listed = await self.store.list(req.prefix.bucket, req.prefix.prefix)
            except ObjectNotFoundError as exc:  # NoSuchBucket: the caller's mistake, not the server's
                raise InvalidInputError("prefix.bucket", f"bucket {req.prefix.bucket!r} does not exist") from exc
            keys = [o.key for o in listed]
            locations += [ObjectLocation(bucket=req.prefix.bucket, key=k) for k in keys if classify(k, keys) == "video"]
        outcomes = []
        for loc in dict.fromkeys(locations):
            # Parameters given in the request win; without any, the sidecar next to the input gives
            # them, as for an upload (so the CLI's upload and its request describe one augmentation).
            params, problem = req.params, None
            if req.params == AugmentParams():
                try:
                    check_key(loc.key)
                    params = await self._sidecar(loc.bucket, loc.key)
                except ControlsError as exc:
                    problem = Rejected(exc.field, exc.rule)
                except (InvalidKeyError, InvalidInputError):
                    pass  # start() names the key's problem
            request = AugmentRequested(
                request_id=request_id,
                input_bucket=loc.bucket,
                input_key=loc.key,
                params=params,
                force=req.force,
                requested_by=req.requested_by,
            )
            outcomes.append(await self.start(request, problem=problem, batch=req.prefix is not None))
        return AugmentAccepted(request_id=request_id, outcomes=tuple(outcomes))

    async def start(
        self, req: AugmentRequested, *, problem: Rejected | None = None, batch: bool = False
    ) -> AugmentOutcome:
        """Record a new augmentation and queue its preparation; or say why not (skipped, in progress, rejected)."""
        loc = ObjectLocation(bucket=req.input_bucket, key=req.input_key)
        etag = req.input_etag
        problem = problem or _params_problem(req.params)
        if problem is None:
            try:
                check_key(req.input_key)
                if etag is None:
                    etag = (await self.store.stat(req.input_bucket, req.input_key)).etag
            except InvalidKeyError as exc:
                problem = Rejected("input.key", str(exc))
            except (ObjectNotFoundError, InvalidInputError):
                problem = Rejected("input", f"{loc.uri()} does not exist")
        base = augmentation_id(req.input_bucket, req.input_key, etag or "-", req.params)
        existing = await self.docs.find(KIND, where={"base": base}, latest_only=True, limit=1000)
        current = [Augmentation.model_validate(d.body) for d in existing]
        passed = [a for a in current if a.state == "passed"]
        running = [a for a in current if a.state not in AUGMENT_FINAL_STATES]
        if not req.force:
            if passed:
                return AugmentOutcome(
                    input=loc, outcome="skipped", augmentation_id=passed[0].augmentation_id, reason="augmented already"
                )
            if running:
                return AugmentOutcome(input=loc, outcome="in_progress", augmentation_id=running[0].augmentation_id)
            if current and not batch and all(a.state == "rejected" for a in current):
                last = current[-1]
                return AugmentOutcome(
                    input=loc, outcome="rejected", augmentation_id=last.augmentation_id, reason=last.reason or ""
                )
        aug_id = base if not current else f"{base}-r{len(current)}"
        now = datetime.now(UTC)
        aug = Augmentation(
            augmentation_id=aug_id,
            request_id=req.request_id,
            requested_by=req.requested_by,
            state="received",
            input=loc,
            params=req.params,
            upload_event_id=req.upload_event_id,
            created_at=now,
            updated_at=now,
        )
        if problem is not None:
            with contextlib.suppress(VersionConflictError):  # the upload trigger and a request, at once
                await self._reject(aug, problem, latest=None)
            return AugmentOutcome(input=loc, outcome="rejected", augmentation_id=aug_id, reason=str(problem))
        job = req.model_copy(update={"augmentation_id": aug_id, "input_etag": etag})
        try:
            await self._record(aug, events=[self._event(job, f"augment.requested-{aug_id}")])
        except VersionConflictError:  # the same upload notified twice, at the same moment
            return AugmentOutcome(input=loc, outcome="in_progress", augmentation_id=aug_id)
        return AugmentOutcome(input=loc, outcome="queued", augmentation_id=aug_id)

    async def _reject(self, aug: Augmentation, problem: Rejected, *, latest: Document | None) -> Augmentation:
        log.warning("augment_rejected", augmentation_id=aug.augmentation_id, field=problem.field, rule=problem.rule)
        rejected = aug.model_copy(update={"state": "rejected", "reason": str(problem), "updated_at": datetime.now(UTC)})
        event = AugmentRejected(
            augmentation_id=aug.augmentation_id,
            request_id=aug.request_id,
            input_bucket=aug.input.bucket,
            input_key=aug.input.key,
            field=problem.field,
            rule=problem.rule,
        )
        await self._record(
            rejected, latest=latest, events=[self._event(event, f"augment.rejected-{aug.augmentation_id}")]
        )
        return rejected

    # -- preparing ------------------------------------------------------------------------------

    async def on_request(self, req: AugmentRequested) -> Augmentation | None:
        """Prepare a recorded augmentation (requests from other systems are recorded first)."""
        if req.augmentation_id is None:
            outcome = await self.start(req)
            if outcome.outcome != "queued" or outcome.augmentation_id is None:
                return None
            return await self.get(outcome.augmentation_id)  # its own augment.requested prepares it
        aug = await self.get(req.augmentation_id)
        if aug is None or aug.state != "received":
            return aug  # a redelivery of work done already
        try:
            return await self._prepare(aug)
        except Rejected as problem:
            return await self._reject(aug, problem, latest=None)

    async def _prepare(self, aug: Augmentation) -> Augmentation:
        loc = aug.input
        with tempfile.TemporaryDirectory(prefix="wm-augment-") as tmp_name:
            tmp = Path(tmp_name)
            path, input_ref, info = await self._input(loc, tmp)
            folder, stem, _ = split(loc.key)
            siblings = [o.key for o in await self.store.list(loc.bucket, f"{folder}/" if folder else "")]
            try:
                chosen = choose_controls(aug.params, control_files(loc.key, siblings))
            except ControlsError as exc:
                raise Rejected(exc.field, exc.rule) from exc
            controls = await self._controls(loc, chosen, path, info, tmp=tmp, stem=stem)
        queued = aug.model_copy(
            update={
                "state": "queued",
                "input_ref": input_ref,
                "input_frames": info.frames,
                "input_fps": float(info.fps),
                "input_width": info.width,
                "input_height": info.height,
                "controls": tuple(controls),
                "generation_request_id": aug.augmentation_id,
                "updated_at": datetime.now(UTC),
            }
        )
        job = InputSpecRequested(
            augmentation_id=aug.augmentation_id,
            input=input_ref,
            width=info.width,
            height=info.height,
            fps=float(info.fps),
            frames=info.frames,
            params=aug.params,
            controls=tuple(
                ControlSpec(type=c.type, weight=c.normalized_weight, preset=c.preset, video=c.video) for c in controls
            ),
            generation_request_id=aug.augmentation_id,
            requested_by=f"augment:{aug.augmentation_id}",
        )
        await self._record(queued, events=[self._event(job, f"input_spec-{aug.augmentation_id}")])
        return queued

    async def _input(self, loc: ObjectLocation, tmp: Path) -> tuple[Path, ObjectRef, VideoInfo]:
        try:
            stat = await self.store.stat(loc.bucket, loc.key)
        except ObjectNotFoundError as exc:
            raise Rejected("input", f"{loc.uri()} does not exist (deleted after the upload?)") from exc
        if stat.size == 0:
            raise Rejected("input", "is empty (0 bytes)")
        if stat.size > self.settings.max_input_bytes:
            raise Rejected("input", f"is {stat.size} bytes; the limit is {self.settings.max_input_bytes}")
        await self._settle(stat.last_modified)
        path = tmp / f"input{split(loc.key)[2] or '.mp4'}"
        await self.store.download(loc.bucket, loc.key, path)
        try:
            info = await asyncio.to_thread(probe, path)
        except InvalidInputError as exc:
            raise Rejected("input", f"is not a readable video: {exc.rule}") from exc
        if info.frames < 1:
            raise Rejected("input", "is shorter than one frame (no video frames)")
        digest = stat.sha256 or (await asyncio.to_thread(sha256_file, path))[0]
        ref = ObjectRef(
            bucket=loc.bucket, key=loc.key, size=stat.size, sha256=digest, content_type="video/mp4", etag=stat.etag
        )
        return path, ref, info

    async def _settle(self, uploaded: datetime | None) -> None:
        """Wait until the input is ``settle_s`` old: files uploaded right after it belong to it too."""
        if uploaded is None:
            return
        age = (datetime.now(UTC) - uploaded).total_seconds()
        if age < self.settings.settle_s:
            await asyncio.sleep(self.settings.settle_s - max(0.0, age))

    async def _controls(
        self,
        loc: ObjectLocation,
        chosen: list[ChosenControl],
        path: Path,
        info: VideoInfo,
        *,
        tmp: Path,
        stem: str,
    ) -> list[AugmentControl]:
        out_bucket = self.settings.outputs_bucket
        used: list[AugmentControl] = []
        to_compute = [c for c in chosen if c.provided_key is None]
        computed = {}
        if to_compute:
            requests = [ControlRequest(type=c.type, preset=c.preset or Preset.MEDIUM) for c in to_compute]
            try:
                outputs = await asyncio.to_thread(compute_controls, path, requests, tmp, stem=stem)
            except InvalidInputError as exc:
                raise Rejected("input", exc.rule) from exc
            computed = {o.type: o for o in outputs}
        for control in chosen:
            key = control_video_key(loc.key, control.type.value)
            if control.provided_key is None:
                output = computed[control.type]
                ref = await self.store.put_file(out_bucket, key, output.path, content_type="video/mp4")
                source = "computed"
            else:
                provided = await self._provided(loc, control, info, tmp)
                ref = await self.store.copy(provided, out_bucket, key)
                source = "provided"
            used.append(
                AugmentControl(
                    type=control.type,
                    weight=control.weight,
                    normalized_weight=control.normalized_weight,
                    preset=control.preset,
                    source=source,
                    video=ref,
                )
            )
        return used

    async def _provided(self, loc: ObjectLocation, control: ChosenControl, info: VideoInfo, tmp: Path) -> ObjectRef:
        """A provided control video, checked: it must have the input's frame count and size.

        A video named in the request (``controls[].video``) may be in any bucket and must have the size
        and sha256 the request gave; one found next to the input is in the input's bucket.
        """
        key = control.provided_key
        assert key is not None  # noqa: S101 - only called for provided controls
        given = control.given
        bucket = given.bucket if given is not None else loc.bucket
        field = f"controls.{control.type.value}" + (".video" if given is not None else "")
        path = tmp / f"provided-{control.type.value}{split(key)[2]}"
        try:
            stat = await self.store.download(bucket, key, path)
            control_info = await asyncio.to_thread(probe, path)
        except ObjectNotFoundError as exc:
            gone = "does not exist" if given is not None else "disappeared"
            raise Rejected(field, f"s3://{bucket}/{key} {gone}") from exc
        except InvalidInputError as exc:
            raise Rejected(field, f"s3://{bucket}/{key} is not a readable video: {exc.rule}") from exc
        mismatch = control_frames_match(control_info, info)
        if mismatch is not None:
            raise Rejected(field, f"s3://{bucket}/{key} {mismatch}")
        digest = stat.sha256 or (await asyncio.to_thread(sha256_file, path))[0]
        if given is not None and (digest != given.sha256 or stat.size != given.size):
            raise Rejected(
                field,
                f"s3://{bucket}/{key} is {stat.size} bytes with sha256 {digest}, not the {given.size} bytes with "
                f"sha256 {given.sha256} the request gave (changed since?)",
            )
        return ObjectRef(bucket=bucket, key=key, size=stat.size, sha256=digest, content_type="video/mp4")

    # -- results --------------------------------------------------------------------------------

    async def _by(self, field: str, value: str) -> Augmentation | None:
        docs = await self.docs.find(KIND, where={field: value}, limit=1000)
        found = [Augmentation.model_validate(d.body) for d in docs]
        return max(found, key=lambda a: a.created_at) if found else None

    async def on_generation_rejected(self, m: GenerationRejected) -> Augmentation | None:
        """The generate service refused an augmentation's spec (no backend can run it): rejected, with its reason."""
        if not m.requested_by.startswith("augment:"):
            return None
        aug = await self.get(m.requested_by.removeprefix("augment:"))
        if aug is None or aug.state in AUGMENT_FINAL_STATES or aug.state == "generated":
            return None
        reason = next(iter(m.problems.values()), "refused by the generate service")
        field, _, rule = reason.partition(": ")
        return await self._reject(aug, Rejected(field if rule else "generation", rule or reason), latest=None)

    async def on_video_ready(self, m: VideoReady) -> Augmentation | None:
        """A video of an augmentation's spec: stored as ``{name}_aug.mp4`` with its lineage next to it."""
        aug: Augmentation | None = None
        if m.requested_by and m.requested_by.startswith("augment:"):
            aug = await self.get(m.requested_by.removeprefix("augment:"))
        if aug is None:  # a QA regeneration of an augmentation's spec
            aug = await self._by("prompt", m.prompt_id)
        if aug is None or aug.state == "rejected" or aug.asset_id == m.asset_id:
            return None
        out_bucket = self.settings.outputs_bucket
        output = await self.store.copy(m.video, out_bucket, augment_output_key(aug.input.key))
        lineage = {
            "augmentation_id": aug.augmentation_id,
            "upload_event_id": aug.upload_event_id,
            "input": aug.input_ref.model_dump(mode="json") if aug.input_ref else aug.input.model_dump(mode="json"),
            "params": aug.params.model_dump(mode="json"),
            "controls": [c.model_dump(mode="json") for c in aug.controls],
            "prompt_id": m.prompt_id,
            "run_id": m.run_id,
            "attempt": m.attempt,
            "asset_id": m.asset_id,
            "video": m.video.model_dump(mode="json"),
            "plan": m.plan.model_dump(mode="json"),
            "provenance": m.provenance.model_dump(mode="json"),
        }
        provenance = await self.store.put_bytes(
            out_bucket,
            augment_provenance_key(aug.input.key),
            json.dumps(lineage, indent=2, sort_keys=True).encode(),
            content_type="application/json",
        )
        return await self._update(
            aug,
            state="generated",
            prompt_id=m.prompt_id,
            run_id=m.run_id,
            asset_id=m.asset_id,
            output=output,
            provenance=provenance,
            qa_passed=None,
            qa_failed_checks=(),
        )

    async def on_verdict(self, m: QaPassed | QaFailed) -> Augmentation | None:
        """QA's verdict on an augmentation's output: passed or failed, announced with augment.completed."""
        aug = await self._by("asset", m.asset_id)
        if aug is None:
            if m.prompt_id and await self._by("prompt", m.prompt_id) is not None:
                raise TransientError(f"the video of asset {m.asset_id} has not been recorded here yet")
            return None
        passed = isinstance(m, QaPassed)
        state: AugmentState = "passed" if passed else "failed"
        if aug.state == state:
            return aug
        failed = tuple(f.check for f in m.findings if not f.passed and f.severity == "error")
        done = aug.model_copy(
            update={
                "state": state,
                "qa_passed": passed,
                "qa_failed_checks": failed,
                "reason": None if passed else f"QA failed: {', '.join(failed) or 'see the verdict'}",
                "updated_at": datetime.now(UTC),
            }
        )
        event = AugmentCompleted(augmentation=done)
        await self._record(done, events=[self._event(event, f"augment.completed-{aug.augmentation_id}-{m.asset_id}")])
        return done
