"""compose.yaml checked against the code: no Docker engine is needed (or available) to run these.

Each check is a small function that takes the parsed compose file and returns a list of problems;
the real file must give none, and ``test_checks_report_broken_compose`` feeds broken copies to prove
that every check can fail.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from worldmill.augment.settings import AugmentSettings
from worldmill.cli.main import app
from worldmill.cli.serve_command import ServiceName
from worldmill.contracts.keys import ALL_BUCKETS, INPUTS_BUCKET
from worldmill.contracts.subjects import ALL_STREAMS, MINIO_NOTIFICATIONS
from worldmill.runtime.settings import SHARED_PREFIX, RuntimeSettings, service_prefix
from worldmill.upsample.settings import UpsampleSettings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "compose.yaml"

Compose = dict[str, Any]
Checker = Callable[[Compose], list[str]]

WORLDMILL_SERVICES = frozenset(s.value for s in ServiceName)
GPU_SERVICES = frozenset({ServiceName.GPU_RUNNER.value, "vllm"})
SETUP_SERVICE = "minio-setup"
#: Settings every worldmill process reads, as field names of RuntimeSettings.
REQUIRED_SETTINGS = ("nats_url", "s3_endpoint", "s3_access_key", "s3_secret_key")
#: Extra settings per service: the catalog keeps its index in PostgreSQL in production.
EXTRA_REQUIRED = {"catalog": ("database_url",)}
DOCUMENTED_EXTRAS: dict[str, frozenset[str]] = {
    "upsample": frozenset(UpsampleSettings.model_fields) - frozenset(RuntimeSettings.model_fields),
    "augment": frozenset(AugmentSettings.model_fields) - frozenset(RuntimeSettings.model_fields),
}
SECRET_KEY = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY")
REQUIRED_VAR = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]+\}")
URL_PASSWORD = re.compile(r"://[^/@:\s]+:(?P<password>(?:\$\{[^}]*\}|[^@\s$])+)@")
SECRET_FLAGS = frozenset({"--auth", "--pass", "--password", "--token", "--api-key"})
HEALTHY = "service_healthy"
COMPLETED = "service_completed_successfully"


# -- helpers ------------------------------------------------------------------------------------


def load_compose(path: Path = COMPOSE_FILE) -> Compose:
    """Parse a compose file (PyYAML resolves the ``<<`` merge keys and anchors)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path}: not a mapping"
    return data


def services(compose: Compose) -> dict[str, dict[str, Any]]:
    """The ``services`` mapping (empty if missing)."""
    found = compose.get("services") or {}
    return found if isinstance(found, dict) else {}


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, whether written as a mapping or as ``KEY=VALUE`` items."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return dict(pairs)
    # A YAML boolean (unquoted `on`) stays visible as "True", so checks comparing to "on" catch it.
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def argv(value: Any) -> list[str]:
    """``command``/``entrypoint`` as a list of strings (a string form is split on whitespace)."""
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    return [str(v) for v in value]


def script_lines(service: dict[str, Any]) -> list[str]:
    """Shell lines of a service's entrypoint and command, with backslash continuations joined."""
    text = "\n".join(argv(service.get("entrypoint")) + argv(service.get("command")))
    return [line.strip() for line in text.replace("\\\n", " ").splitlines() if line.strip()]


def is_worldmill(service: dict[str, Any]) -> bool:
    """Whether a service runs the worldmill CLI."""
    cmd = argv(service.get("command"))
    return bool(cmd) and cmd[0] == "worldmill"


def option_value(cmd: list[str], option: str) -> str | None:
    """The value after ``option`` in an argv, or None."""
    return cmd[cmd.index(option) + 1] if option in cmd[:-1] else None


def nats_subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard match: ``*`` is exactly one token, ``>`` (last) is one or more tokens."""
    p_tokens, s_tokens = pattern.split("."), subject.split(".")
    for i, token in enumerate(p_tokens):
        if token == ">":
            return i == len(p_tokens) - 1 and len(s_tokens) > i
        if i >= len(s_tokens) or (token not in ("*", s_tokens[i])):
            return False
    return len(p_tokens) == len(s_tokens)


def serve_command_names() -> set[str]:
    """Names of the commands registered on the typer app."""
    return {cmd.name or (cmd.callback.__name__ if cmd.callback else "") for cmd in app.registered_commands}


def serve_options() -> set[str]:
    """Every option string (``--host`` ...) the ``serve`` command accepts, from its click form."""
    group = typer.main.get_command(app)
    serve = group.commands["serve"]  # type: ignore[attr-defined]
    return {opt for param in serve.params if param.param_type_name == "option" for opt in param.opts}


def one_shot_services(compose: Compose) -> set[str]:
    """Services others wait on to *finish* (``service_completed_successfully``)."""
    waited: set[str] = set()
    for svc in services(compose).values():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, dict):
            waited |= {name for name, cond in deps.items() if (cond or {}).get("condition") == COMPLETED}
    return waited


def walk_strings(value: Any) -> Iterator[str]:
    """Every string inside a nested YAML value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from walk_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk_strings(v)


# -- checks: each returns a list of problems -----------------------------------------------------


def check_images_and_builds(compose: Compose, root: Path = ROOT) -> list[str]:
    """Every service has an image with a pinned tag or a build whose Dockerfile exists."""
    problems: list[str] = []
    if not services(compose):
        problems.append("compose file has no services")
    for name, svc in services(compose).items():
        image, build = svc.get("image"), svc.get("build")
        if not image and not build:
            problems.append(f"{name}: neither image nor build")
        if image:
            ref = str(image).split("@", 1)[0]
            tag = ref.rsplit(":", 1)[1] if ":" in ref.rsplit("/", 1)[-1] else ""
            if "@" not in str(image) and tag in ("", "latest"):
                problems.append(f"{name}: image {image!r} is not pinned to a tag")
        if build:
            spec = {"context": build} if isinstance(build, str) else build
            context = root / str(spec.get("context", "."))
            dockerfile = context / str(spec.get("dockerfile", "Dockerfile"))
            if not context.is_dir():
                problems.append(f"{name}: build context {context} does not exist")
            if not dockerfile.is_file():
                problems.append(f"{name}: Dockerfile {dockerfile} does not exist")
    return problems


def check_worldmill_commands(compose: Compose) -> list[str]:
    """Each ServiceName is a compose service running ``worldmill serve <its name>`` with real options."""
    problems: list[str] = []
    if "serve" not in serve_command_names():
        problems.append(f"'serve' is not a command of the worldmill CLI: {sorted(serve_command_names())}")
    known_options = serve_options()
    all_services = services(compose)
    for missing in sorted(WORLDMILL_SERVICES - all_services.keys()):
        problems.append(f"service {missing!r} (ServiceName) is missing from compose")
    for name, svc in all_services.items():
        cmd = argv(svc.get("command"))
        if name not in WORLDMILL_SERVICES and not is_worldmill(svc):
            continue
        if cmd[:2] != ["worldmill", "serve"] or len(cmd) < 3:
            problems.append(f"{name}: command {cmd} is not 'worldmill serve <service> ...'")
            continue
        if cmd[2] not in WORLDMILL_SERVICES:
            problems.append(f"{name}: {cmd[2]!r} is not a ServiceName ({sorted(WORLDMILL_SERVICES)})")
        elif cmd[2] != name:
            problems.append(f"{name}: runs 'worldmill serve {cmd[2]}', not its own name")
        for arg in cmd[3:]:
            if arg.startswith("-") and arg.split("=", 1)[0] not in known_options:
                problems.append(f"{name}: 'worldmill serve' has no option {arg}")
    return problems


def check_healthchecks(compose: Compose) -> list[str]:
    """Every long-running service has a healthcheck; HTTP services probe /healthz on their port."""
    problems: list[str] = []
    one_shot = one_shot_services(compose)
    for name, svc in services(compose).items():
        check = svc.get("healthcheck") or {}
        test = argv(check.get("test"))
        if name in one_shot:
            if svc.get("restart") not in ("no", None):
                problems.append(f"{name}: one-shot service must not restart (restart: 'no')")
            continue
        if not test or test[0] == "NONE" or check.get("disable"):
            problems.append(f"{name}: no healthcheck")
            continue
        cmd = argv(svc.get("command"))
        port = option_value(cmd, "--port")
        if is_worldmill(svc) and port is not None and not any(f":{port}/healthz" in t for t in test):
            problems.append(f"{name}: healthcheck {test} does not probe /healthz on port {port}")
    expectations = {"nats": "/healthz?js-enabled-only=true", "vllm": "/health", "postgres": "pg_isready"}
    for name, needle in expectations.items():
        test = argv((services(compose).get(name, {}).get("healthcheck") or {}).get("test"))
        if name in services(compose) and not any(needle in t for t in test):
            problems.append(f"{name}: healthcheck should use {needle!r}, has {test}")
    return problems


def check_depends_on(compose: Compose) -> list[str]:
    """Dependencies exist, wait on health (or completion) and never pull a GPU service into the defaults."""
    problems: list[str] = []
    all_services = services(compose)
    one_shot = one_shot_services(compose)
    for name, svc in all_services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            problems.append(f"{name}: depends_on without conditions {deps}")
            continue
        for dep, spec in deps.items():
            condition = (spec or {}).get("condition")
            wanted = COMPLETED if dep in one_shot else HEALTHY
            if dep not in all_services:
                problems.append(f"{name}: depends on unknown service {dep!r}")
            elif condition != wanted:
                problems.append(f"{name}: depends on {dep} with {condition!r}, want {wanted!r}")
            if dep in GPU_SERVICES and name not in GPU_SERVICES:
                problems.append(f"{name}: depends on GPU-profile service {dep}")
        if is_worldmill(svc):
            for infra in ("nats", "minio"):
                if infra not in deps:
                    problems.append(f"{name}: does not wait for {infra}")
    if "postgres" not in (all_services.get("catalog", {}).get("depends_on") or {}):
        problems.append("catalog: does not wait for postgres")
    return problems


def _field_of(env_name: str, service: str) -> str | None:
    """The settings field an env var sets for a service, or None if it is not a WM_ variable."""
    for prefix in (service_prefix(service), SHARED_PREFIX):
        if env_name.startswith(prefix):
            return env_name[len(prefix) :].lower()
    return None


def check_environment(compose: Compose) -> list[str]:
    """Each worldmill process gets the settings it needs, and sets only real settings fields."""
    problems: list[str] = []
    fields = set(RuntimeSettings.model_fields)
    for name, svc in services(compose).items():
        if not is_worldmill(svc):
            continue
        service = argv(svc.get("command"))[2] if len(argv(svc.get("command"))) > 2 else name
        env = env_of(svc)
        given = {f for key in env if (f := _field_of(key, service)) is not None}
        allowed = fields | DOCUMENTED_EXTRAS.get(service, frozenset())
        for key in env:
            field = _field_of(key, service)
            if field is not None and field not in allowed:
                prefix = service_prefix(service)
                problems.append(f"{name}: {key} is not a settings field (after stripping WM_ or {prefix})")
        required = list(REQUIRED_SETTINGS) + list(EXTRA_REQUIRED.get(service, ()))
        if service != ServiceName.GPU_RUNNER.value:
            required.append("api_tokens")
        for field in required:
            if field not in given:
                override = f"{service_prefix(service)}{field.upper()}"
                problems.append(f"{name}: needs WM_{field.upper()} (or {override})")
            elif not any(env[k] for k in env if _field_of(k, service) == field):
                problems.append(f"{name}: WM_{field.upper()} is empty")
    return problems


def check_secrets(compose: Compose) -> list[str]:
    """No secret is a literal: secret variables, URL passwords and secret flags all use ``${VAR:?...}``."""
    problems: list[str] = []
    for name, svc in services(compose).items():
        for key, value in env_of(svc).items():
            if SECRET_KEY.search(key.upper()) and not REQUIRED_VAR.fullmatch(value):
                problems.append(f"{name}: {key} must be '${{VAR:?message}}', not a literal")
        for text in walk_strings(svc.get("environment")):
            for match in URL_PASSWORD.finditer(text):
                if not REQUIRED_VAR.fullmatch(match["password"]):
                    problems.append(f"{name}: a URL carries a literal password")
        cmd = argv(svc.get("command")) + argv(svc.get("entrypoint"))
        for flag, value in itertools.pairwise(cmd):
            if flag in SECRET_FLAGS and not REQUIRED_VAR.fullmatch(value):
                problems.append(f"{name}: {flag} takes a literal secret")
    return problems


def check_gpu_profile(compose: Compose) -> list[str]:
    """GPU services are only in the gpu profile and reserve an NVIDIA device; nothing else is profiled."""
    problems: list[str] = []
    all_services = services(compose)
    for name in sorted(GPU_SERVICES - all_services.keys()):
        problems.append(f"GPU service {name!r} is missing")
    for name, svc in all_services.items():
        profiles = svc.get("profiles") or []
        if name not in GPU_SERVICES:
            if "gpu" in profiles:
                problems.append(f"{name}: a CPU service in the gpu profile")
            continue
        if profiles != ["gpu"]:
            problems.append(f"{name}: profiles {profiles}, want ['gpu']")
        resources = (svc.get("deploy") or {}).get("resources") or {}
        devices = (resources.get("reservations") or {}).get("devices") or []
        if not any(d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or []) for d in devices):
            problems.append(f"{name}: no NVIDIA GPU device reservation")
    return problems


def check_minio_notifications(compose: Compose) -> list[str]:
    """MinIO publishes to JetStream on a subject a stream covers; minio-setup binds wm-inputs puts to it."""
    problems: list[str] = []
    env = env_of(services(compose).get("minio", {}))
    enable = "MINIO_NOTIFY_NATS_ENABLE_"
    target_ids = [k.removeprefix(enable) for k in env if k.startswith(enable)]
    if len(target_ids) != 1:
        return [f"minio: want exactly one NATS target (MINIO_NOTIFY_NATS_ENABLE_<ID>), found {target_ids}"]
    tid = target_ids[0]

    def setting(key: str) -> str:
        return env.get(f"MINIO_NOTIFY_NATS_{key}_{tid}", "")

    for key in ("ENABLE", "JETSTREAM"):
        if setting(key) != "on":
            problems.append(f"minio: MINIO_NOTIFY_NATS_{key}_{tid} is {setting(key)!r}, want 'on' (quoted)")
    host, _, port = setting("ADDRESS").rpartition(":")
    if host not in services(compose) or not port.isdigit():
        problems.append(f"minio: NATS address {setting('ADDRESS')!r} is not <compose service>:<port>")
    if not setting("QUEUE_DIR").startswith("/"):
        problems.append(f"minio: MINIO_NOTIFY_NATS_QUEUE_DIR_{tid} must be an absolute path")
    subject = setting("SUBJECT")
    if subject != MINIO_NOTIFICATIONS:
        problems.append(f"minio: subject {subject!r} is not {MINIO_NOTIFICATIONS!r} (contracts.subjects)")
    covering = [s.name for s in ALL_STREAMS for pat in s.subjects if nats_subject_matches(pat, subject)]
    if not covering:
        problems.append(f"minio: no stream in ALL_STREAMS covers subject {subject!r}")

    arn = f"arn:minio:sqs::{tid.lower()}:nats"
    bindings = [
        line.split()
        for line in script_lines(services(compose).get(SETUP_SERVICE, {}))
        if line.startswith("mc event add")
    ]
    ok = any(
        any(t.endswith(f"/{INPUTS_BUCKET}") for t in tokens)
        and arn in tokens
        and "put" in (option_value(tokens, "--event") or "put,delete,get").split(",")
        for tokens in bindings
    )
    if not ok:
        problems.append(f"{SETUP_SERVICE}: no 'mc event add <alias>/{INPUTS_BUCKET} {arn} --event put'")
    return problems


def check_buckets(compose: Compose) -> list[str]:
    """The buckets minio-setup creates are exactly ``contracts.keys.ALL_BUCKETS``."""
    created: set[str] = set()
    for line in script_lines(services(compose).get(SETUP_SERVICE, {})):
        tokens = line.split()
        if tokens[:2] == ["mc", "mb"]:
            created |= {t.split("/", 1)[1] for t in tokens[2:] if not t.startswith("-") and "/" in t}
    if created != set(ALL_BUCKETS):
        return [f"{SETUP_SERVICE}: creates buckets {sorted(created)}, contracts want {sorted(ALL_BUCKETS)}"]
    return []


ALL_CHECKS: tuple[Checker, ...] = (
    check_images_and_builds,
    check_worldmill_commands,
    check_healthchecks,
    check_depends_on,
    check_environment,
    check_secrets,
    check_gpu_profile,
    check_minio_notifications,
    check_buckets,
)


# -- tests ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> Compose:
    """The parsed compose.yaml of the repo."""
    return load_compose()


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
def test_compose_passes_check(compose: Compose, check: Checker) -> None:
    """The real compose.yaml gives no problem for this check."""
    assert check(compose) == []


def test_compose_runs_every_service_of_the_cli(compose: Compose) -> None:
    """Every ServiceName value is a compose service, and every worldmill compose service is a ServiceName."""
    runs = {name for name, svc in services(compose).items() if is_worldmill(svc)}
    assert runs == WORLDMILL_SERVICES


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("wm.s3.>", "wm.s3.minio", True),
        ("wm.s3.>", "wm.s3", False),
        ("wm.*.minio", "wm.s3.minio", True),
        ("wm.*", "wm.s3.minio", False),
        ("wm.evt.>", "wm.s3.minio", False),
        ("wm.s3.minio", "wm.s3.minio", True),
    ],
)
def test_nats_subject_matching(pattern: str, subject: str, expected: bool) -> None:
    """The wildcard matcher used for stream coverage follows NATS rules for ``*`` and ``>``."""
    assert nats_subject_matches(pattern, subject) is expected


def _set(path: str, value: Any) -> Callable[[Compose], None]:
    """A mutation that sets a dotted path (``services.minio.image``) in a compose dict."""

    def mutate(doc: Compose) -> None:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


def _delete(path: str) -> Callable[[Compose], None]:
    """A mutation that deletes a dotted path from a compose dict."""

    def mutate(doc: Compose) -> None:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


def _add_env(service: str, key: str, value: str) -> Callable[[Compose], None]:
    """A mutation that adds a variable to one service only (anchored env blocks are shared objects)."""

    def mutate(doc: Compose) -> None:
        svc = doc["services"][service]
        svc["environment"] = {**svc["environment"], key: value}

    return mutate


def _setup_script(old: str, new: str) -> Callable[[Compose], None]:
    """A mutation that edits the minio-setup shell script."""

    def mutate(doc: Compose) -> None:
        entry = doc["services"][SETUP_SERVICE]["entrypoint"]
        entry[-1] = entry[-1].replace(old, new)

    return mutate


Mutation = Callable[[Compose], None]

BROKEN = [
    pytest.param(
        _delete("services.postgres.image"), check_images_and_builds, "neither image nor build", id="no image or build"
    ),
    pytest.param(_set("services.nats.image", "nats:latest"), check_images_and_builds, "not pinned", id="latest tag"),
    pytest.param(
        _set("services.qa.build", {"context": ".", "dockerfile": "docker/nope.Dockerfile"}),
        check_images_and_builds,
        "does not exist",
        id="missing Dockerfile",
    ),
    pytest.param(
        _set("services.qa.command", ["worldmill", "serve", "qq", "--port", "8000"]),
        check_worldmill_commands,
        "not a ServiceName",
        id="unknown service name",
    ),
    pytest.param(
        _set("services.qa.command", ["worldmill", "serve", "qa", "--listen", "8000"]),
        check_worldmill_commands,
        "no option --listen",
        id="unknown serve option",
    ),
    pytest.param(_delete("services.augment"), check_worldmill_commands, "missing from compose", id="service missing"),
    pytest.param(_delete("services.prompt.healthcheck"), check_healthchecks, "no healthcheck", id="no healthcheck"),
    pytest.param(
        _set("services.nats.healthcheck.test", ["CMD", "true"]),
        check_healthchecks,
        "js-enabled-only",
        id="nats healthcheck ignores JetStream",
    ),
    pytest.param(
        _set("services.prompt.depends_on", {"nats": {"condition": "service_started"}, "minio": {"condition": HEALTHY}}),
        check_depends_on,
        "want 'service_healthy'",
        id="waits for start, not health",
    ),
    pytest.param(
        _set("services.qa.depends_on", {"vllm": {"condition": HEALTHY}}),
        check_depends_on,
        "GPU-profile service",
        id="CPU service needs a GPU one",
    ),
    pytest.param(
        _set("services.qa.environment", {"WM_NATS_URL": "nats://nats:4222"}),
        check_environment,
        "needs WM_S3_ENDPOINT",
        id="missing setting",
    ),
    pytest.param(
        _add_env("qa", "WM_QA_S3_BUCKET", "x"),
        check_environment,
        "qa: WM_QA_S3_BUCKET is not a settings field",
        id="unknown setting",
    ),
    pytest.param(
        _delete("services.catalog.environment.WM_CATALOG_DATABASE_URL"),
        check_environment,
        "catalog: needs WM_DATABASE_URL",
        id="catalog without database URL",
    ),
    pytest.param(
        _set("services.minio.environment.MINIO_ROOT_PASSWORD", "minio123"),
        check_secrets,
        "MINIO_ROOT_PASSWORD",
        id="literal secret",
    ),
    pytest.param(
        _set(
            "services.catalog.environment.WM_CATALOG_DATABASE_URL",
            "postgresql+psycopg://worldmill:hunter2@postgres/worldmill",
        ),
        check_secrets,
        "literal password",
        id="literal password in a URL",
    ),
    pytest.param(
        _set("services.nats.command", ["nats-server", "--auth", "s3cret"]),
        check_secrets,
        "--auth",
        id="literal NATS token flag",
    ),
    pytest.param(
        _delete("services.vllm.profiles"), check_gpu_profile, "want ['gpu']", id="GPU service without profile"
    ),
    pytest.param(_delete("services.gpu-runner.deploy"), check_gpu_profile, "NVIDIA", id="GPU service without device"),
    pytest.param(
        _set("services.minio.environment.MINIO_NOTIFY_NATS_JETSTREAM_PRIMARY", True),
        check_minio_notifications,
        "want 'on'",
        id="unquoted on is a boolean",
    ),
    pytest.param(
        _set("services.minio.environment.MINIO_NOTIFY_NATS_SUBJECT_PRIMARY", "minio.events"),
        check_minio_notifications,
        "no stream in ALL_STREAMS covers",
        id="subject outside streams",
    ),
    pytest.param(
        _setup_script("wm/wm-inputs arn:", "wm/wm-exports arn:"),
        check_minio_notifications,
        "mc event add",
        id="event bound to the wrong bucket",
    ),
    pytest.param(
        _setup_script("mc mb --ignore-existing wm/wm-exports", "true"),
        check_buckets,
        "creates buckets",
        id="bucket missing",
    ),
]


@pytest.mark.parametrize(("mutate", "check", "expected"), BROKEN)
def test_checks_report_broken_compose(compose: Compose, mutate: Mutation, check: Checker, expected: str) -> None:
    """A deliberately broken copy of compose.yaml makes the check report the problem."""
    broken = copy.deepcopy(compose)
    mutate(broken)
    problems = check(broken)
    assert any(expected in p for p in problems), problems
