"""compose.yaml checked against the code: no Docker engine is needed (or available) to run these.

Each check is a small function that takes the parsed compose file and returns a list of problems;
the real file must give none, and ``test_checks_report_broken_compose`` feeds broken copies to prove
that every check can fail. The same checks run on compose.yaml merged with each override file of
``docker/`` (one GPU runner per GPU), plus checks that the override only adds runners identical to
compose.yaml's but for their GPU and name.
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
from worldmill.gpu_runner.settings import RunnerSettings
from worldmill.runtime.settings import SHARED_PREFIX, RuntimeSettings, service_prefix
from worldmill.upsample.settings import UpsampleSettings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "compose.yaml"
#: One GPU runner per GPU on an 8-GPU host: ``-f compose.yaml -f docker/compose.gpus-8.yaml --profile gpus-8``.
GPUS_8_FILE = ROOT / "docker" / "compose.gpus-8.yaml"
GPUS_8_PROFILE = "gpus-8"

Compose = dict[str, Any]
Checker = Callable[[Compose], list[str]]

WORLDMILL_SERVICES = frozenset(s.value for s in ServiceName)
GPU_SERVICES = frozenset({ServiceName.GPU_RUNNER.value, "vllm"})
RUNNER = ServiceName.GPU_RUNNER.value
#: Profiles that start GPU containers: ``gpu`` (compose.yaml) and ``gpus-<n>`` (docker/compose.gpus-<n>.yaml).
GPU_PROFILE = re.compile(r"gpu|gpus-[0-9]+")
#: What a runner service sets itself over the shared ``x-gpu-runner`` block: its profile, its GPU, its name.
RUNNER_OWN_KEYS = frozenset({"profiles", "deploy"})
RUNNER_OWN_ENV = frozenset({"WM_GPU_RUNNER_NAME"})
RUNNER_DEVICE = re.compile(r"cuda(?::(?P<index>[0-9]+))?")
DEFAULTED_VAR = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-(?P<default>[^}]*))?\}")
SETUP_SERVICE = "minio-setup"
#: Settings every worldmill process reads, as field names of RuntimeSettings.
REQUIRED_SETTINGS = ("nats_url", "s3_endpoint", "s3_access_key", "s3_secret_key")
#: Extra settings per service: the catalog keeps its index in PostgreSQL in production.
EXTRA_REQUIRED = {"catalog": ("database_url",)}
DOCUMENTED_EXTRAS: dict[str, frozenset[str]] = {
    "upsample": frozenset(UpsampleSettings.model_fields) - frozenset(RuntimeSettings.model_fields),
    "augment": frozenset(AugmentSettings.model_fields) - frozenset(RuntimeSettings.model_fields),
    RUNNER: frozenset(RunnerSettings.model_fields) - frozenset(RuntimeSettings.model_fields),
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


def merge_compose(base: Compose, override: Compose) -> Compose:
    """``docker compose -f base -f override`` as compose merges them (compose-go ``override.Merge``).

    Mappings merge key by key, sequences are appended, ``command``, ``entrypoint`` and
    ``healthcheck.test`` are replaced, ``environment`` merges as a mapping. (The uniqueness rules for
    ports, volumes and the like are left out: the override file only adds services, see
    ``check_override_only_adds``.)
    """

    def merge(left: Any, right: Any, path: tuple[str, ...]) -> Any:
        inside = path[2:] if path[:1] == ("services",) else None
        if right is None:
            return copy.deepcopy(left)
        if inside in (("command",), ("entrypoint",), ("healthcheck", "test")):
            return copy.deepcopy(right)
        if inside == ("environment",):
            return {**env_of({"environment": left}), **env_of({"environment": right})}
        if isinstance(left, dict) and isinstance(right, dict):
            out = copy.deepcopy(left)
            for key, value in right.items():
                out[key] = merge(left[key], value, (*path, str(key))) if key in left else copy.deepcopy(value)
            return out
        if isinstance(left, list) and isinstance(right, list):
            return copy.deepcopy(left) + copy.deepcopy(right)
        return copy.deepcopy(right)

    merged = merge(base, override, ())
    assert isinstance(merged, dict)
    return merged


def is_runner(service: dict[str, Any]) -> bool:
    """Whether a service runs ``worldmill serve gpu-runner``."""
    return argv(service.get("command"))[:3] == ["worldmill", "serve", RUNNER]


def started_with(compose: Compose, profile: str | None) -> dict[str, dict[str, Any]]:
    """The services ``docker compose [--profile P] up`` starts: those without profiles, and P's."""
    return {
        name: svc
        for name, svc in services(compose).items()
        if not svc.get("profiles") or (profile is not None and profile in svc["profiles"])
    }


def profiles_of(compose: Compose) -> list[str]:
    """Every profile a service of the file belongs to."""
    return sorted({p for svc in services(compose).values() for p in svc.get("profiles") or []})


def with_defaults(value: str) -> str:
    """A value as compose interpolates it when no variable is set (``${VAR:-default}`` → ``default``)."""
    return DEFAULTED_VAR.sub(lambda m: m["default"] or "", value)


def reserved_gpus(service: dict[str, Any]) -> list[str] | None:
    """The NVIDIA GPU ids a service reserves (defaults interpolated); None when reserved by count."""
    resources = (service.get("deploy") or {}).get("resources") or {}
    ids: list[str] = []
    for device in (resources.get("reservations") or {}).get("devices") or []:
        if device.get("driver") != "nvidia" or "gpu" not in (device.get("capabilities") or []):
            continue
        if "device_ids" not in device:
            return None
        ids += [with_defaults(str(i)) for i in device["device_ids"]]
    return ids


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
        elif cmd[2] != name and not re.fullmatch(rf"{re.escape(cmd[2])}-[0-9]+", name):
            problems.append(f"{name}: runs 'worldmill serve {cmd[2]}', not its own name (or <name>-<n>)")
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
    """GPU services are only in a GPU profile and reserve an NVIDIA device; nothing else is in one.

    compose.yaml's own (gpu-runner, vllm) are in ``gpu``; the runners an override file adds
    (``gpu-runner-<n>``) are each in one ``gpus-<n>`` profile.
    """
    problems: list[str] = []
    all_services = services(compose)
    for name in sorted(GPU_SERVICES - all_services.keys()):
        problems.append(f"GPU service {name!r} is missing")
    for name, svc in all_services.items():
        profiles = svc.get("profiles") or []
        if name not in GPU_SERVICES and not is_runner(svc):
            if any(GPU_PROFILE.fullmatch(str(p)) for p in profiles):
                problems.append(f"{name}: a CPU service in a GPU profile {profiles}")
            continue
        if name in GPU_SERVICES and profiles != ["gpu"]:
            problems.append(f"{name}: profiles {profiles}, want ['gpu']")
        elif name not in GPU_SERVICES and (len(profiles) != 1 or not GPU_PROFILE.fullmatch(str(profiles[0]))):
            problems.append(f"{name}: profiles {profiles}, want one GPU profile ('gpus-<n>')")
        resources = (svc.get("deploy") or {}).get("resources") or {}
        devices = (resources.get("reservations") or {}).get("devices") or []
        if not any(d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or []) for d in devices):
            problems.append(f"{name}: no NVIDIA GPU device reservation")
    return problems


def check_gpu_runners(compose: Compose) -> list[str]:
    """Every GPU runner runs the real backends on CUDA, on exactly one GPU reserved by id."""
    problems: list[str] = []
    for name, svc in services(compose).items():
        if not is_runner(svc):
            continue
        env = env_of(svc)
        gpus = reserved_gpus(svc)
        if gpus is None or len(gpus) != 1:
            problems.append(f"{name}: reserves GPUs {gpus} (None: by count), want exactly one GPU by device_ids")
        device = env.get("WM_GPU_RUNNER_DEVICE")
        match = RUNNER_DEVICE.fullmatch(device or "")
        if match is None:
            problems.append(f"{name}: WM_GPU_RUNNER_DEVICE is {device!r}, want 'cuda' (set explicitly)")
        elif match["index"] is not None and gpus is not None and int(match["index"]) >= len(gpus):
            problems.append(f"{name}: WM_GPU_RUNNER_DEVICE {device} but the container sees {len(gpus)} GPU(s)")
        if env.get("WM_GPU_RUNNER_BACKEND") != "auto":
            problems.append(f"{name}: WM_GPU_RUNNER_BACKEND is {env.get('WM_GPU_RUNNER_BACKEND')!r}, want 'auto'")
    return problems


def check_gpu_sharing(compose: Compose) -> list[str]:
    """Within each profile, the GPU services started together use distinct GPUs, the runners distinct names."""
    problems: list[str] = []
    for profile in [None, *profiles_of(compose)]:
        started = started_with(compose, profile)
        owner: dict[str, str] = {}
        gpu_services = [name for name, svc in started.items() if reserved_gpus(svc) != []]
        for name, svc in started.items():
            if reserved_gpus(svc) is None and len(gpu_services) > 1:
                problems.append(
                    f"profile {profile}: {name} reserves GPUs by count, so it may share one: use device_ids"
                )
            for gpu in reserved_gpus(svc) or []:
                if gpu in owner:
                    problems.append(f"profile {profile}: GPU {gpu} is reserved by both {owner[gpu]} and {name}")
                owner.setdefault(gpu, name)
        runners = {name: svc for name, svc in started.items() if is_runner(svc)}
        if len(runners) > 1:
            names = {name: with_defaults(env_of(svc).get("WM_GPU_RUNNER_NAME", "")) for name, svc in runners.items()}
            for name, runner_name in names.items():
                if not runner_name:
                    problems.append(f"profile {profile}: {name} sets no WM_GPU_RUNNER_NAME next to other runners")
                elif list(names.values()).count(runner_name) > 1:
                    problems.append(f"profile {profile}: {name}: WM_GPU_RUNNER_NAME {runner_name!r} is not unique")
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
    check_gpu_runners,
    check_gpu_sharing,
    check_minio_notifications,
    check_buckets,
)


# -- the override file for one runner per GPU: checks on (compose.yaml, override) -----------------


def check_override_only_adds(base: Compose, override: Compose) -> list[str]:
    """The override adds services (and volumes, x- blocks) only: a redefined service would get its lists appended."""
    problems = [
        f"override redefines service {name!r} of compose.yaml (its lists, device_ids too, would be appended)"
        for name in sorted(services(override).keys() & services(base).keys())
    ]
    problems += [
        f"override sets top-level {key!r} (only services, volumes and x- blocks)"
        for key in override
        if key not in ("services", "volumes") and not str(key).startswith("x-")
    ]
    problems += [
        f"override volume {name!r} is not a volume of compose.yaml"
        for name in (override.get("volumes") or {})
        if name not in (base.get("volumes") or {})
    ]
    return problems


def check_override_matches_base(base: Compose, override: Compose) -> list[str]:
    """The override's x- blocks are compose.yaml's, and each runner is compose.yaml's but for profile, GPU, name."""
    problems = [
        f"override's {key} differs from compose.yaml's (anchors do not cross files: keep the copies identical)"
        for key in override
        if str(key).startswith("x-") and override[key] != base.get(key)
    ]
    reference = services(base).get(RUNNER, {})

    def shared(svc: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in svc.items() if k not in RUNNER_OWN_KEYS}
        out["environment"] = {k: v for k, v in env_of(svc).items() if k not in RUNNER_OWN_ENV}
        return out

    for name, svc in services(override).items():
        if not is_runner(svc):
            problems.append(f"override: {name} is not a GPU runner (worldmill serve {RUNNER})")
        elif shared(svc) != shared(reference):
            keys = sorted(
                k
                for k in shared(svc).keys() | shared(reference).keys()
                if shared(svc).get(k) != shared(reference).get(k)
            )
            problems.append(f"override: {name} differs from compose.yaml's {RUNNER} in {keys}")
    return problems


def check_gpus_8_layout(merged: Compose) -> list[str]:
    """``--profile gpus-8`` starts eight runners on GPUs 0–7, with eight names, and no other GPU service."""
    started = started_with(merged, GPUS_8_PROFILE)
    gpu_services = {name: svc for name, svc in started.items() if reserved_gpus(svc) != []}
    runners = {name: svc for name, svc in gpu_services.items() if is_runner(svc)}
    problems = [
        f"{name}: a GPU service that is not a runner starts with {GPUS_8_PROFILE}"
        for name in gpu_services
        if name not in runners
    ]
    gpus = sorted(g for svc in runners.values() for g in reserved_gpus(svc) or ["by count"])
    if gpus != [str(i) for i in range(8)]:
        problems.append(f"{GPUS_8_PROFILE}: runners reserve GPUs {gpus}, want 0–7 once each")
    names = {with_defaults(env_of(svc).get("WM_GPU_RUNNER_NAME", "")) for svc in runners.values()}
    if len(runners) != 8 or len(names - {""}) != 8:
        problems.append(f"{GPUS_8_PROFILE}: {len(runners)} runners with names {sorted(names)}, want 8 distinct")
    return problems


# -- tests ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> Compose:
    """The parsed compose.yaml of the repo."""
    return load_compose()


@pytest.fixture(scope="module")
def gpus_8() -> Compose:
    """The parsed docker/compose.gpus-8.yaml (an override: not a whole compose file)."""
    return load_compose(GPUS_8_FILE)


@pytest.fixture(scope="module")
def merged(compose: Compose, gpus_8: Compose) -> Compose:
    """compose.yaml merged with docker/compose.gpus-8.yaml, as ``docker compose -f … -f …`` does."""
    return merge_compose(compose, gpus_8)


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
def test_compose_passes_check(compose: Compose, check: Checker) -> None:
    """The real compose.yaml gives no problem for this check."""
    assert check(compose) == []


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
def test_compose_with_gpus_8_passes_check(merged: Compose, check: Checker) -> None:
    """compose.yaml with docker/compose.gpus-8.yaml gives no problem for this check either."""
    assert check(merged) == []


def test_gpus_8_override_adds_eight_runners_like_compose_yamls(
    compose: Compose, gpus_8: Compose, merged: Compose
) -> None:
    """The override parses, only adds, copies compose.yaml's blocks, and lays out one runner per GPU."""
    assert check_override_only_adds(compose, gpus_8) == []
    assert check_override_matches_base(compose, gpus_8) == []
    assert check_gpus_8_layout(merged) == []
    assert sorted(started_with(merged, GPUS_8_PROFILE).keys() - started_with(merged, None).keys()) == [
        f"gpu-runner-{i}" for i in range(8)
    ]
    # The one-runner profile of compose.yaml is unchanged by the override (gpu-runner on 1, vllm on 0).
    gpu = {n: reserved_gpus(s) for n, s in started_with(merged, "gpu").items() if reserved_gpus(s)}
    assert gpu == {RUNNER: ["1"], "vllm": ["0"]}


def test_merge_follows_compose_rules() -> None:
    """The merge used above: mappings merged, lists appended, commands and environments as compose does."""
    base = {"services": {"a": {"command": ["x"], "dns": ["1.1.1.1"], "environment": ["A=1"], "deploy": {"k": 1}}}}
    over = {"services": {"a": {"command": ["y"], "dns": ["8.8.8.8"], "environment": {"B": 2}}, "b": {"image": "i:1"}}}
    assert merge_compose(base, over) == {
        "services": {
            "a": {
                "command": ["y"],
                "dns": ["1.1.1.1", "8.8.8.8"],
                "environment": {"A": "1", "B": "2"},
                "deploy": {"k": 1},
            },
            "b": {"image": "i:1"},
        }
    }
    assert base["services"]["a"]["dns"] == ["1.1.1.1"]  # inputs untouched


def test_with_defaults_interpolates_like_compose_without_variables() -> None:
    """``${VAR:-d}`` and ``${VAR-d}`` give d, ``${VAR}`` gives nothing, text stays."""
    assert with_defaults("${GPU_RUNNER_GPU_DEVICE:-1}") == "1"
    assert with_defaults("${H-box}-gpu3") == "box-gpu3"
    assert with_defaults("${H}-gpu3") == "-gpu3"
    assert with_defaults("7") == "7"


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


def _drop_env(service: str, key: str) -> Callable[[Compose], None]:
    """A mutation that removes a variable from one service only."""

    def mutate(doc: Compose) -> None:
        svc = doc["services"][service]
        svc["environment"] = {k: v for k, v in svc["environment"].items() if k != key}

    return mutate


def _gpus(service: str, *ids: str) -> Callable[[Compose], None]:
    """A mutation that reserves other GPU ids for one service."""

    def mutate(doc: Compose) -> None:
        svc = doc["services"][service]
        device = {"driver": "nvidia", "device_ids": list(ids), "capabilities": ["gpu"]}
        svc["deploy"] = {"resources": {"reservations": {"devices": [device]}}}

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
        _drop_env(RUNNER, "WM_GPU_RUNNER_DEVICE"), check_gpu_runners, "WM_GPU_RUNNER_DEVICE", id="runner device unset"
    ),
    pytest.param(_add_env(RUNNER, "WM_GPU_RUNNER_DEVICE", "cpu"), check_gpu_runners, "want 'cuda'", id="runner on cpu"),
    pytest.param(
        _add_env(RUNNER, "WM_GPU_RUNNER_DEVICE", "cuda:1"), check_gpu_runners, "sees 1 GPU", id="runner on unseen GPU"
    ),
    pytest.param(
        _add_env(RUNNER, "WM_GPU_RUNNER_BACKEND", "synthetic"),
        check_gpu_runners,
        "WM_GPU_RUNNER_BACKEND",
        id="runner on the stand-in",
    ),
    pytest.param(_gpus(RUNNER, "1", "2"), check_gpu_runners, "exactly one GPU", id="runner on two GPUs"),
    pytest.param(
        _set(
            "services.vllm.deploy.resources.reservations.devices",
            [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}],
        ),
        check_gpu_sharing,
        "vllm reserves GPUs by count",
        id="vllm by count may share a GPU",
    ),
    pytest.param(
        _gpus("vllm", "${VLLM_GPU_DEVICE:-1}"), check_gpu_sharing, "GPU 1 is reserved by both", id="vllm on runner GPU"
    ),
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


BROKEN_MERGED = [
    pytest.param(_gpus("gpu-runner-5", "4"), check_gpu_sharing, "GPU 4 is reserved by both", id="two runners on a GPU"),
    pytest.param(_gpus("gpu-runner-5", "4"), check_gpus_8_layout, "want 0–7 once each", id="layout misses a GPU"),
    pytest.param(_delete("services.gpu-runner-7"), check_gpus_8_layout, "7 runners", id="layout misses a runner"),
    pytest.param(
        _add_env("gpu-runner-6", "WM_GPU_RUNNER_NAME", "${GPU_RUNNER_HOST:-worldmill}-gpu2"),
        check_gpu_sharing,
        "'worldmill-gpu2' is not unique",
        id="two runners share a name",
    ),
    pytest.param(
        _drop_env("gpu-runner-6", "WM_GPU_RUNNER_NAME"), check_gpu_sharing, "sets no WM_GPU_RUNNER_NAME", id="no name"
    ),
    pytest.param(
        _drop_env("gpu-runner-3", "WM_GPU_RUNNER_DEVICE"),
        check_gpu_runners,
        "gpu-runner-3",
        id="a runner without device",
    ),
    pytest.param(
        _set("services.gpu-runner-1.profiles", ["gpu"]),
        check_gpu_sharing,
        "profile gpu: GPU 1 is reserved by both gpu-runner and gpu-runner-1",
        id="runner in gpu profile",
    ),
    pytest.param(
        _set("services.gpu-runner-2.profiles", ["gpus"]),
        check_gpu_profile,
        "want one GPU profile",
        id="bad profile name",
    ),
]


@pytest.mark.parametrize(("mutate", "check", "expected"), BROKEN_MERGED)
def test_checks_report_broken_gpus_8_layout(merged: Compose, mutate: Mutation, check: Checker, expected: str) -> None:
    """A broken copy of compose.yaml + docker/compose.gpus-8.yaml makes the check report the problem."""
    broken = copy.deepcopy(merged)
    mutate(broken)
    problems = check(broken)
    assert any(expected in p for p in problems), problems


PairCheck = Callable[[Compose, Compose], list[str]]

BROKEN_OVERRIDE = [
    pytest.param(
        "override",
        _set("services.gpu-runner", {"profiles": [GPUS_8_PROFILE]}),
        check_override_only_adds,
        "redefines service 'gpu-runner'",
        id="override redefines the runner",
    ),
    pytest.param(
        "override",
        _set("networks", {"gpu": {}}),
        check_override_only_adds,
        "top-level 'networks'",
        id="override networks",
    ),
    pytest.param(
        "base",
        _set("services.gpu-runner.shm_size", "16gb"),
        check_override_matches_base,
        "differs from compose.yaml's gpu-runner in ['shm_size']",
        id="runner drifted from compose.yaml",
    ),
    pytest.param(
        "override",
        _add_env("gpu-runner-4", "WM_GPU_RUNNER_WINDOW", "1"),
        check_override_matches_base,
        "gpu-runner-4 differs from compose.yaml's gpu-runner in ['environment']",
        id="one runner configured differently",
    ),
    pytest.param(
        "override",
        _set("x-service-env.WM_S3_REGION", "eu-west-1"),
        check_override_matches_base,
        "x-service-env differs",
        id="copied block drifted",
    ),
]


@pytest.mark.parametrize(("which", "mutate", "check", "expected"), BROKEN_OVERRIDE)
def test_checks_report_broken_override(
    compose: Compose, gpus_8: Compose, which: str, mutate: Mutation, check: PairCheck, expected: str
) -> None:
    """A broken compose.yaml or docker/compose.gpus-8.yaml makes the override check report the problem."""
    docs = {"base": copy.deepcopy(compose), "override": copy.deepcopy(gpus_8)}
    mutate(docs[which])
    problems = check(docs["base"], docs["override"])
    assert any(expected in p for p in problems), problems
