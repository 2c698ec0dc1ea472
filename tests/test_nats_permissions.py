"""Least privilege on the bus (issue #16 item 6): one NATS user per service, limited to its subjects.

The grants (``contracts.permissions``) are checked against the code: what each service package
constructs to publish, and the durable consumers its ``app`` module declares. Then on a real
nats-server configured with ``runtime.nats_auth.render_config``: a service publishes what it owns
and is refused what it does not own (another service's events or jobs), cannot pull another's
queue, read the bus raw, delete a stream or set cancel flags it may only read; a wrong password is
refused at login. The local stack test (``test_stack``) shows every service process logged in as
its own user, and the demo test that the grants are enough for the whole pipeline.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest

from tests.helpers.factories import synthetic_job
from worldmill.contracts.envelope import wrap
from worldmill.contracts.generation import JobProgress
from worldmill.contracts.permissions import ADMIN_USER, grant_for, service_grants
from worldmill.contracts.registry import MESSAGE_CLASSES
from worldmill.contracts.subjects import ALL_STREAMS, GPU_JOBS, ConsumerSpec
from worldmill.runtime.bus import Bus
from worldmill.runtime.cancel import CancelFlags
from worldmill.runtime.errors import BusPermissionError
from worldmill.runtime.nats_auth import all_users, inbox_prefix, permissions_table, publish_allowed, render_config
from worldmill.runtime.servers import NatsEndpoint, start_nats

REPO = Path(__file__).resolve().parent.parent
PACKAGES = {
    "prompt": REPO / "services/worldmill/prompt",
    "upsample": REPO / "services/worldmill/upsample",
    "generate": REPO / "services/worldmill/generate",
    "qa": REPO / "services/worldmill/qa",
    "augment": REPO / "services/worldmill/augment",
    "catalog": REPO / "services/worldmill/catalog",
    "gpu-runner": REPO / "gpu-runner/worldmill/gpu_runner",
}
#: Runtime modules that publish on a service's behalf (the uploads poller and MinIO's normaliser: augment).
HELPERS = {
    "augment": (REPO / "services/worldmill/runtime/poller.py", REPO / "services/worldmill/runtime/notifications.py")
}
#: Published as received, not built: the export command posts its DatasetExported to the catalog (POST /exports).
RELAYED = {"catalog": {"DatasetExported"}}
#: Built but never published: MinIO's raw notification is decoded into this class, then normalised.
DECODE_ONLY = {"S3Notification"}


def _constructed(paths: list[Path]) -> set[str]:
    """Names of message classes constructed in these files: called, or picked to be called (``A if ok else B``)."""
    names = {cls.__name__ for cls in MESSAGE_CLASSES} - DECODE_ONLY - {"DeadLetter"}
    found: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names:
                found.add(node.func.id)
            if isinstance(node, ast.IfExp):
                found |= {b.id for b in (node.body, node.orelse) if isinstance(b, ast.Name) and b.id in names}
    return found


def _service_files(user: str) -> list[Path]:
    """The service's own modules, without its command-line modules (the CLI logs in as ``admin``)."""
    files = [p for p in PACKAGES[user].rglob("*.py") if p.name != "cli.py" and not p.name.endswith("_cli.py")]
    return [*files, *HELPERS.get(user, ())]


@pytest.mark.parametrize("user", sorted(PACKAGES))
def test_each_service_is_granted_exactly_the_messages_its_code_makes(user: str) -> None:
    granted = {cls.__name__ for cls in grant_for(user).publishes}
    assert _constructed(_service_files(user)) | RELAYED.get(user, set()) == granted


def test_the_scan_would_see_a_message_a_service_makes_without_a_grant(tmp_path: Path) -> None:
    """The check above can fail: a module constructing an ungranted message shows up in the scan."""
    rogue = tmp_path / "rogue.py"
    rogue.write_text("from x import GpuJob\n\ndef f():\n    return GpuJob(run_id='r')\n")
    assert "GpuJob" in _constructed([*_service_files("qa"), rogue]) - {c.__name__ for c in grant_for("qa").publishes}


def _module_name(path: Path) -> str:
    root = REPO / ("gpu-runner" if "gpu-runner" in path.parts else "services")
    return ".".join(path.relative_to(root).with_suffix("").parts)


def _spec_names(tree: ast.Module) -> list[str]:
    """Names given as the spec of ``Consumer[…](bus, SPEC, …)`` / ``JobQueue(bus, SPEC, …)``; a parameter counts as its default."""
    names: list[str] = []
    for fn in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]:
        params = [*fn.args.posonlyargs, *fn.args.args]
        defaults = dict(
            zip([a.arg for a in params][len(params) - len(fn.args.defaults) :], fn.args.defaults, strict=True)
        )
        defaults |= {a.arg: d for a, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults, strict=True) if d is not None}
        for node in ast.walk(fn):
            if not isinstance(node, ast.Call):
                continue
            # ``Consumer(...)`` or, typed by what it accepts, ``Consumer[QaPassed | QaFailed](...)``.
            func = node.func.value if isinstance(node.func, ast.Subscript) else node.func
            if not isinstance(func, ast.Name):
                continue
            if func.id in ("Consumer", "JobQueue") and len(node.args) >= 2 and isinstance(node.args[1], ast.Name):
                name = node.args[1].id
                default = defaults.get(name)
                names.append(default.id if isinstance(default, ast.Name) else name)
    return names


def _bound_consumers(user: str) -> set[tuple[str, str]]:
    """The consumer specs the service's code binds (each named spec resolved in its module)."""
    bound: set[tuple[str, str]] = set()
    for path in PACKAGES[user].rglob("*.py"):
        names = _spec_names(ast.parse(path.read_text()))
        if names:
            namespace = vars(importlib.import_module(_module_name(path)))
            for name in names:
                spec = namespace.get(name)
                assert isinstance(spec, ConsumerSpec), f"{path.name}: {name} is not a module-level ConsumerSpec"
                bound.add((spec.stream, spec.durable))
    return bound


@pytest.mark.parametrize("user", sorted(PACKAGES))
def test_each_service_is_granted_exactly_the_consumers_its_code_binds(user: str) -> None:
    bound = _bound_consumers(user)
    assert bound, f"no consumer found for {user}: the scan is broken"
    assert set(grant_for(user).consumers) == bound


def test_the_runner_is_granted_only_the_gpu_job_queue() -> None:
    assert grant_for("gpu-runner").consumers == ((GPU_JOBS.stream, GPU_JOBS.durable),)


def test_no_two_services_own_one_event_and_only_generate_writes_cancel_flags() -> None:
    owners: dict[str, list[str]] = {}
    for grant in service_grants():
        if grant.user in PACKAGES:
            for cls in grant.publishes:
                owners.setdefault(cls.subject(), []).append(grant.user)
    shared = {s: u for s, u in owners.items() if len(u) > 1}
    # Asking for generation is open to the prompt service (augmentation specs) and QA (regenerations).
    assert shared == {"wm.evt.generation.requested": ["prompt", "qa"]}
    assert [g.user for g in service_grants() if g.cancel == "write"] == ["generate"]
    assert all(
        "$JS.API.STREAM.CREATE" not in s and "DELETE" not in s for g in service_grants() for s in publish_allowed(g)
    )


def test_the_committed_configurations_are_the_generated_one() -> None:
    """compose and Kubernetes use the same users and permissions as the code (passwords from secrets)."""
    expected = render_config()
    for path in (REPO / "docker/nats-auth.conf", REPO / "deploy/base/nats-auth.conf"):
        assert path.read_text() == expected, f"{path} is stale: run `worldmill bus permissions > {path}`"


def generated_block(text: str, marker: str) -> str:
    """The text between ``<!-- generated: MARKER -->`` and ``<!-- end generated -->``."""
    start = text.index(f"<!-- generated: {marker} -->\n") + len(f"<!-- generated: {marker} -->\n")
    return text[start : text.index("<!-- end generated -->", start)]


def test_the_architecture_document_shows_the_grants_as_the_code_has_them() -> None:
    doc = (REPO / "docs/architecture.md").read_text()
    block = generated_block(doc, "worldmill bus permissions --markdown")
    assert block == permissions_table(), (
        "docs/architecture.md §19 is stale: paste `worldmill bus permissions --markdown`"
    )
    # The table names every user and every subject a grant publishes, so a changed grant shows.
    for grant in service_grants():
        row = next(line for line in block.splitlines() if line.startswith(f"| `{grant.user}` |"))
        assert all(f"`{subject}`" in row for subject in grant.subjects)
    assert permissions_table().replace("`wm.evt.qa.passed`", "`wm.evt.qa.ok`") != block


# --- on a real nats-server with the generated users ----------------------------------------------


@pytest.fixture(scope="module")
def passwords() -> dict[str, str]:
    return {u: secrets.token_urlsafe(16) for u in all_users()}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, passwords: dict[str, str]) -> Iterator[NatsEndpoint]:
    folder = tmp_path_factory.mktemp("nats-auth")
    config = folder / "auth.conf"
    config.write_text(render_config(passwords))
    proc, endpoint = start_nats(folder, config=config)
    try:
        yield endpoint
    finally:
        proc.stop()


@pytest.fixture
async def admin(secured: NatsEndpoint, passwords: dict[str, str]) -> AsyncIterator[Bus]:
    bus = Bus(secured.url, name="admin-test", user=ADMIN_USER, password=passwords[ADMIN_USER])
    await bus.connect()
    await bus.ensure_streams(ALL_STREAMS)
    await bus.ensure_consumer(GPU_JOBS)
    await CancelFlags(bus).ensure()
    try:
        yield bus
    finally:
        await bus.close()


async def _login(endpoint: NatsEndpoint, passwords: dict[str, str], user: str) -> Bus:
    bus = Bus(endpoint.url, name=f"{user}-test", user=user, password=passwords[user])
    await bus.connect()
    return bus


async def test_a_service_publishes_what_it_owns_and_is_refused_what_it_does_not(
    admin: Bus, secured: NatsEndpoint, passwords: dict[str, str]
) -> None:
    qa = await _login(secured, passwords, "qa")
    runner = await _login(secured, passwords, "gpu-runner")
    try:
        job = synthetic_job("run-perm-0", 0)
        progress = JobProgress(
            job_id=job.job_id, run_id=job.run_id, attempt=1, phase="generating", fraction=0.5, runner="test"
        )
        ok = await runner.publish(wrap(progress, source="/worldmill/gpu-runner"))
        assert ok.stream == "WM_EVENTS" and not ok.duplicate

        started = time.monotonic()
        with pytest.raises(BusPermissionError, match=r"user qa publish on wm\.job\.gpu"):
            await qa.publish(wrap(job, source="/worldmill/qa"))
        assert time.monotonic() - started < 10  # refused, not retried as an outage
        with pytest.raises(BusPermissionError, match=r"user gpu-runner publish on wm\.evt\.qa\.passed"):
            await runner.publish_raw("wm.evt.qa.passed", b"{}", {"Nats-Msg-Id": "x"})
        # Nothing reached the job queue: only what admin could see.
        info = await admin.js.stream_info("WM_JOBS")
        assert info.state.messages == 0
    finally:
        await qa.close()
        await runner.close()


async def test_a_service_cannot_take_anothers_jobs_read_the_bus_raw_or_delete_a_stream(
    admin: Bus, secured: NatsEndpoint, passwords: dict[str, str]
) -> None:
    await admin.publish(wrap(synthetic_job("run-perm-q", 0), source="/test"))
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(
        secured.url, user="qa", password=passwords["qa"], inbox_prefix=inbox_prefix("qa"), error_cb=on_error
    )
    try:
        with pytest.raises(nats.errors.TimeoutError):
            await nc.request(f"$JS.API.CONSUMER.MSG.NEXT.{GPU_JOBS.stream}.{GPU_JOBS.durable}", b"1", timeout=1.5)
        with pytest.raises(nats.errors.TimeoutError):
            await nc.request("$JS.API.STREAM.DELETE.WM_EVENTS", b"", timeout=1.5)
        await nc.subscribe("wm.evt.>")
        await nc.flush()
        await asyncio.sleep(0.3)
    finally:
        await nc.close()
    denied = " | ".join(errors).lower()  # nats-py lower-cases the server's words
    assert f'publish to "$js.api.consumer.msg.next.{GPU_JOBS.stream}.{GPU_JOBS.durable}"'.lower() in denied
    assert 'publish to "$js.api.stream.delete.wm_events"' in denied
    assert 'subscription to "wm.evt.>"' in denied
    # The job is still queued for the runners, the stream still there.
    assert (await admin.js.consumer_info(GPU_JOBS.stream, GPU_JOBS.durable)).num_pending >= 1
    assert (await admin.js.stream_info("WM_EVENTS")).config.name == "WM_EVENTS"


async def test_the_runner_reads_cancel_flags_that_only_generate_may_set(
    admin: Bus, secured: NatsEndpoint, passwords: dict[str, str]
) -> None:
    generate = await _login(secured, passwords, "generate")
    runner = await _login(secured, passwords, "gpu-runner")
    try:
        await CancelFlags(generate).cancel("run-perm-1", "by test")
        assert await CancelFlags(runner).fetch("run-perm-1")
        kv = await runner.js.key_value("wm_cancel")
        with pytest.raises(nats.errors.TimeoutError):
            await kv.put("run-perm-2", b"forged")
        assert not await CancelFlags(admin).fetch("run-perm-2")
    finally:
        await generate.close()
        await runner.close()


async def test_a_wrong_password_is_refused_at_login_with_the_user_named(admin: Bus, secured: NatsEndpoint) -> None:
    bus = Bus(secured.url, name="intruder", user="catalog", password="not-the-password", connect_timeout_s=3)
    with pytest.raises(BusPermissionError, match="refused the login of user catalog"):
        await bus.connect()


def test_the_consumer_scan_sees_plain_and_typed_consumers() -> None:
    """``Consumer(bus, A)`` and ``Consumer[X | Y](bus, B)`` both count (the scan missed the typed form once)."""
    tree = ast.parse(
        "def consumers(ctx, spec=C):\n"
        "    return [Consumer(ctx.bus, A, f), Consumer[X | Y](ctx.bus, B, g), JobQueue(ctx.bus, spec)]\n"
    )
    assert sorted(_spec_names(tree)) == ["A", "B", "C"]
