"""Private servers a test may kill and bring back: nats-server and SeaweedFS, same ports, same data.

The session's servers are shared by every test, so an outage test starts its own pair
(``worldmill.runtime.servers``, as ``worldmill up`` and the fixtures do), kills a server by PID
(SIGKILL: a crash, not a shutdown), waits, and starts it again on the same ports with the same
data folder (nats-server's JetStream file store, SeaweedFS's volumes and filer), so clients
reconnect to the same address and find their streams, consumers, buckets and objects.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from pathlib import Path

from worldmill.runtime.servers import ManagedProcess, NatsEndpoint, S3Endpoint, start_nats, start_seaweedfs


def _kill(proc: ManagedProcess) -> None:
    """SIGKILL by PID and reap."""
    if proc.proc.poll() is None:
        proc.proc.kill()
        proc.proc.wait(10)


@dataclass
class KillableServers:
    """A nats-server and a SeaweedFS of one test, each killed and restarted in place."""

    root: Path
    nats_proc: ManagedProcess
    nats: NatsEndpoint
    s3_proc: ManagedProcess
    s3: S3Endpoint

    @classmethod
    def start(cls, root: Path) -> KillableServers:
        """Start both (SeaweedFS with random credentials that it checks)."""
        nats_proc, nats = start_nats(root / "nats")
        try:
            s3_proc, s3 = start_seaweedfs(
                root / "s3", access_key=f"k{secrets.token_hex(4)}", secret_key=secrets.token_urlsafe(24)
            )
        except BaseException:
            nats_proc.stop()
            raise
        return cls(root, nats_proc, nats, s3_proc, s3)

    def stop(self) -> None:
        """Stop both for good (SIGTERM, SIGKILL after 3 s: their data is thrown away anyway)."""
        self.nats_proc.stop(timeout_s=3)
        self.s3_proc.stop(timeout_s=3)

    def kill_nats(self) -> None:
        """Crash nats-server (its file store stays)."""
        _kill(self.nats_proc)

    def restart_nats(self) -> None:
        """nats-server again on its ports and file store."""
        self.nats_proc, again = start_nats(self.root / "nats", port=self.nats.port, monitor_port=self.nats.monitor_port)
        assert again == self.nats, (again, self.nats)

    def kill_s3(self) -> None:
        """Crash SeaweedFS (its data folder stays)."""
        _kill(self.s3_proc)

    def restart_s3(self) -> None:
        """SeaweedFS again on its ports (all five, so its parts find each other) and data folder."""
        self.s3_proc, again = start_seaweedfs(
            self.root / "s3", access_key=self.s3.access_key, secret_key=self.s3.secret_key, ports=self.s3.ports
        )
        assert again == self.s3, (again.ports, self.s3.ports)

    async def outage(self, what: str, seconds: float) -> None:
        """Kill ``nats`` or ``s3``, keep it down ``seconds``, start it again (the event loop keeps running)."""
        kill, restart = (self.kill_nats, self.restart_nats) if what == "nats" else (self.kill_s3, self.restart_s3)
        await asyncio.to_thread(kill)
        await asyncio.sleep(seconds)
        await asyncio.to_thread(restart)
