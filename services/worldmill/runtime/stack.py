"""The local stack: nats-server, SeaweedFS and the services under one data folder.

``.worldmill/`` (by default) holds the servers' data, their logs, ``credentials.json`` (created
once, mode 0600, reused by every later ``up``: S3 keys, the API token, a password per NATS user),
``nats-auth.conf`` (nats-server's users with their permissions, from ``runtime.nats_auth``; mode
0600) and ``stack.json`` (the running stack's endpoints, ports and PIDs, removed on a clean stop).
Each service logs in to NATS as its own user and may publish only what it owns; the CLI and the
stack's set-up use ``admin``. A second ``up`` reuses the data and, when they are still
free, the same ports. Several processes may run the same service (one GPU runner per GPU): each is
its own ``ServiceCommand`` with its own name, port and environment.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import secrets
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from worldmill.contracts.keys import ALL_BUCKETS
from worldmill.contracts.permissions import ADMIN_USER
from worldmill.contracts.subjects import ALL_STREAMS
from worldmill.runtime.bus import Bus
from worldmill.runtime.cancel import CancelFlags
from worldmill.runtime.nats_auth import all_users, render_config
from worldmill.runtime.servers import (
    ManagedProcess,
    NatsCluster,
    ServerStartError,
    free_port,
    pid_alive,
    port_is_free,
    spawn,
    start_nats,
    start_nats_cluster,
    start_seaweedfs,
    stop_pid,
    wait_for_port,
)
from worldmill.runtime.settings import service_prefix
from worldmill.runtime.store import ObjectStore

STATE_FILE = "stack.json"
CREDENTIALS_FILE = "credentials.json"
NATS_AUTH_FILE = "nats-auth.conf"


class Credentials(BaseModel):
    """Local secrets, generated once per data folder."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    s3_access_key: str
    s3_secret_key: str
    api_token: str
    #: NATS user → password (every user of ``runtime.nats_auth.all_users``; added to older files on load).
    nats_passwords: dict[str, str] = {}


class StackState(BaseModel):
    """What a running local stack looks like from outside (``stack.json``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: str
    started_at: datetime
    owner_pid: int
    nats_url: str
    nats_monitor_url: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    api_token: str
    #: NATS user → password: ``admin`` for the CLI and set-up, one per service (``contracts.permissions``).
    nats_passwords: dict[str, str] = {}
    ports: dict[str, int]
    pids: dict[str, int]
    services: dict[str, str] = {}
    #: Service process name → the GPU it is pinned to (``CUDA_VISIBLE_DEVICES``); unpinned ones are absent.
    gpus: dict[str, str] = {}
    #: Replicas of each stream: 1 on one nats-server, 3 on a cluster (``up --cluster 3``).
    stream_replicas: int = 1

    def env(self) -> dict[str, str]:
        """Environment that points worldmill settings at this stack (NATS as ``admin``: the CLI's user)."""
        login = (
            {"WM_NATS_USER": ADMIN_USER, "WM_NATS_PASSWORD": self.nats_passwords[ADMIN_USER]}
            if ADMIN_USER in self.nats_passwords
            else {}
        )
        return {
            **login,
            "WM_NATS_URL": self.nats_url,
            "WM_S3_ENDPOINT": self.s3_endpoint,
            "WM_S3_ACCESS_KEY": self.s3_access_key,
            "WM_S3_SECRET_KEY": self.s3_secret_key,
            "WM_API_TOKENS": self.api_token,
            "WM_DATA_DIR": self.data_dir,
            "WM_STREAM_REPLICAS": str(self.stream_replicas),
        }

    def service_env(self, service: str) -> dict[str, str]:
        """:meth:`env` for a process of ``service``: it logs in to NATS as its own user when it has one."""
        env = self.env()
        if service in self.nats_passwords and service != ADMIN_USER:
            prefix = service_prefix(service)
            env |= {f"{prefix}NATS_USER": service, f"{prefix}NATS_PASSWORD": self.nats_passwords[service]}
        return env

    def bus(self, name: str, *, user: str = ADMIN_USER, **kwargs: Any) -> Bus:
        """A bus (not connected) on this stack's NATS, logged in as ``user`` (``admin`` by default)."""
        return Bus(
            self.nats_url,
            name=name,
            user=user if user in self.nats_passwords else None,
            password=self.nats_passwords.get(user),
            stream_replicas=self.stream_replicas,
            **kwargs,
        )

    def alive(self) -> dict[str, bool]:
        """Which of its processes are still running."""
        return {name: pid_alive(pid) for name, pid in self.pids.items()}


def load_credentials(data_dir: Path) -> Credentials:
    """The data folder's credentials, created on first use (file mode 0600); NATS users added when new."""
    path = data_dir / CREDENTIALS_FILE
    if path.exists():
        creds = Credentials.model_validate_json(path.read_text())
        missing = [u for u in all_users() if u not in creds.nats_passwords]
        if not missing:
            return creds
        creds = creds.model_copy(
            update={"nats_passwords": {**creds.nats_passwords, **{u: secrets.token_urlsafe(24) for u in missing}}}
        )
        _write_private(path, creds.model_dump_json(indent=2), replace=True)
        return creds
    data_dir.mkdir(parents=True, exist_ok=True)
    creds = Credentials(
        s3_access_key=f"wm{secrets.token_hex(8)}",
        s3_secret_key=secrets.token_urlsafe(30),
        api_token=secrets.token_urlsafe(24),
        nats_passwords={u: secrets.token_urlsafe(24) for u in all_users()},
    )
    _write_private(path, creds.model_dump_json(indent=2), replace=False)
    return creds


def _write_private(path: Path, text: str, *, replace: bool) -> None:
    """Write a secret file readable by its owner only (replacing it atomically when ``replace``)."""
    target = path.with_name(f".{path.name}.tmp") if replace else path
    if replace:
        target.unlink(missing_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    if replace:
        target.replace(path)


def write_nats_auth(data_dir: Path, creds: Credentials) -> Path:
    """``nats-auth.conf``: nats-server's users (passwords written in, mode 0600) for this data folder."""
    path = data_dir / NATS_AUTH_FILE
    _write_private(path, render_config(creds.nats_passwords), replace=True)
    return path


def load_state(data_dir: Path) -> StackState | None:
    """The state file of a stack started in ``data_dir``, if there is one."""
    path = data_dir / STATE_FILE
    if not path.exists():
        return None
    try:
        return StackState.model_validate_json(path.read_text())
    except ValueError:
        return None


def running_state(data_dir: Path) -> StackState | None:
    """The state of a stack that is running now (all its processes alive), else None."""
    state = load_state(data_dir)
    if state is None or not all(state.alive().values()):
        return None
    return state


@dataclass(frozen=True)
class ServiceCommand:
    """How to start one service process of the stack.

    ``name`` names the process (state, logs, PIDs) and is unique in a stack; ``service`` is the
    service it runs, whose ``WM_<SERVICE>_*`` settings it reads (default: ``name``), so that
    ``gpu-runner-1`` is a second ``gpu-runner``. ``gpu`` is the GPU it is pinned to, if any.
    """

    name: str
    argv: tuple[str, ...]
    port: int
    env: tuple[tuple[str, str], ...] = ()
    service: str = ""
    gpu: str | None = None

    @property
    def settings_service(self) -> str:
        """The service whose settings prefix this process reads."""
        return self.service or self.name


@dataclass
class LocalStack:
    """A stack this process started: it owns the processes and stops them."""

    data_dir: Path
    state: StackState
    processes: list[ManagedProcess] = field(default_factory=list)
    #: The nodes of ``up --cluster N`` (N > 1), to kill and restart one in place; None on one nats-server.
    nats_cluster: NatsCluster | None = None

    def stop(self) -> None:
        """Stop services first, then SeaweedFS and NATS; remove the state file."""
        for proc in reversed(self.processes):
            proc.stop()
        (self.data_dir / STATE_FILE).unlink(missing_ok=True)


def _previous_ports(data_dir: Path) -> dict[str, int]:
    path = data_dir / "ports.json"
    try:
        return {k: int(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError):
        return {}


def _start_nats(
    data_dir: Path, before: dict[str, int], nodes: int, config: Path
) -> tuple[list[ManagedProcess], NatsCluster | None, str, str, dict[str, int]]:
    """One nats-server (previous ports when free) or a cluster of ``nodes``: processes, cluster, URL(s), ports."""
    if nodes > 1:
        cluster = start_nats_cluster(data_dir / "nats-cluster", nodes=nodes, config=config)
        ports = {f"nats_{n.role.short_name}": n.endpoint.port for n in cluster.nodes}
        monitor_url = cluster.nodes[0].endpoint.monitor_url
        return [n.proc for n in cluster.nodes], cluster, cluster.urls, monitor_url, ports
    nats_port = before.get("nats") if before.get("nats") and port_is_free(before["nats"]) else None
    mon = before.get("nats_monitor") if before.get("nats_monitor") and port_is_free(before["nats_monitor"]) else None
    proc, endpoint = start_nats(data_dir, port=nats_port, monitor_port=mon, config=config)
    ports = {"nats": endpoint.port, "nats_monitor": endpoint.monitor_port}
    return [proc], None, endpoint.url, endpoint.monitor_url, ports


def start_stack(data_dir: Path, services: list[ServiceCommand] | None = None, *, nats_nodes: int = 1) -> LocalStack:
    """Start NATS (one server, or a JetStream cluster of ``nats_nodes``) and SeaweedFS, then the services.

    With a cluster, services are given every node's URL and ``WM_STREAM_REPLICAS`` (3, or fewer
    nodes), so streams are replicated and a node's loss is survived; ``stack.json`` is written last.
    """
    data_dir = data_dir.resolve()
    names = [svc.name for svc in services or []]
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"service process names must be unique in a stack: {', '.join(duplicates)}")
    if running_state(data_dir) is not None:
        raise ServerStartError(f"a stack is already running from {data_dir} (see `worldmill doctor`)")
    creds = load_credentials(data_dir)
    before = _previous_ports(data_dir)
    processes: list[ManagedProcess] = []
    try:
        auth = write_nats_auth(data_dir, creds)
        nats_procs, cluster, nats_url, nats_monitor_url, nats_ports = _start_nats(data_dir, before, nats_nodes, auth)
        processes += nats_procs
        s3_ports = {k.removeprefix("s3_"): v for k, v in before.items() if k.startswith("s3_")}
        weed_proc, s3_ep = start_seaweedfs(
            data_dir, access_key=creds.s3_access_key, secret_key=creds.s3_secret_key, ports=s3_ports
        )
        processes.append(weed_proc)
        ports = {**nats_ports, **{f"s3_{k}": v for k, v in s3_ep.ports.items()}}
        state = StackState(
            data_dir=str(data_dir),
            started_at=datetime.now(UTC),
            owner_pid=os.getpid(),
            nats_url=nats_url,
            nats_monitor_url=nats_monitor_url,
            stream_replicas=min(3, nats_nodes),
            s3_endpoint=s3_ep.url,
            s3_access_key=creds.s3_access_key,
            s3_secret_key=creds.s3_secret_key,
            api_token=creds.api_token,
            nats_passwords=creds.nats_passwords,
            ports=ports,
            pids={p.name: p.pid for p in processes},
        )
        # Streams, the cancel bucket and the buckets exist before any service starts: services may
        # only read the streams' settings, not create them (contracts.permissions).
        set_up(state)
        services_urls: dict[str, str] = {}
        for svc in services or []:
            env = {
                **state.service_env(svc.settings_service),
                f"{service_prefix(svc.settings_service)}HTTP_PORT": str(svc.port),
                **dict(svc.env),
            }
            proc = spawn(svc.name, list(svc.argv), data_dir / "logs" / f"{svc.name}.log", env)
            processes.append(proc)
            wait_for_port(svc.port, 60.0, proc.proc)
            services_urls[svc.name] = f"http://127.0.0.1:{svc.port}"
            ports[f"svc_{svc.name}"] = svc.port
        state = state.model_copy(
            update={
                "pids": {p.name: p.pid for p in processes},
                "services": services_urls,
                "ports": ports,
                "gpus": {svc.name: svc.gpu for svc in services or [] if svc.gpu is not None},
            }
        )
    except BaseException:
        for proc in reversed(processes):
            proc.stop()
        raise
    (data_dir / "ports.json").write_text(json.dumps(ports))
    (data_dir / STATE_FILE).write_text(state.model_dump_json(indent=2))
    return LocalStack(data_dir=data_dir, state=state, processes=processes, nats_cluster=cluster)


def stop_stack_by_state(state: StackState) -> dict[str, bool]:
    """Stop a stack another process started, by PID (services first). Returns name → stopped."""
    result = {}
    for name, pid in reversed(list(state.pids.items())):
        result[name] = stop_pid(pid)
    Path(state.data_dir, STATE_FILE).unlink(missing_ok=True)
    return result


async def bootstrap(bus: Bus, store: ObjectStore) -> None:
    """Create the streams, the cancel flags' bucket and the buckets worldmill needs (as ``admin``). Idempotent."""
    await bus.ensure_streams(ALL_STREAMS)
    await CancelFlags(bus).ensure()
    await store.ensure_buckets(ALL_BUCKETS)


async def bootstrap_state(state: StackState) -> None:
    """:func:`bootstrap` on a running stack, as its ``admin``."""
    bus = state.bus("worldmill-up")
    await bus.connect()
    try:
        await bootstrap(bus, ObjectStore(state.s3_endpoint, state.s3_access_key, state.s3_secret_key))
    finally:
        await bus.close()


def set_up(state: StackState) -> None:
    """Run :func:`bootstrap_state` to completion from sync code, inside a running event loop or not."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, bootstrap_state(state)).result()


def service_port() -> int:
    """A free port for a service of the local stack."""
    return free_port()


def python_module_argv(module: str, *args: str) -> tuple[str, ...]:
    """argv that runs ``python -m module args…`` with this interpreter."""
    return (sys.executable, "-m", module, *args)
