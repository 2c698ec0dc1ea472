"""Health checks of a worldmill stack, each with a verdict in plain words and a hint.

Used by ``worldmill doctor``. They talk to the real servers: NATS (version, JetStream, streams),
S3 (reachable, our credentials accepted, a wrong secret refused, buckets present) and the
services' readiness endpoints.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from worldmill.contracts.keys import ALL_BUCKETS
from worldmill.contracts.subjects import ALL_STREAMS
from worldmill.runtime.bus import MIN_SERVER_VERSION, Bus
from worldmill.runtime.errors import StoreAuthError, WorldmillError
from worldmill.runtime.store import ObjectStore


@dataclass(frozen=True)
class CheckResult:
    """One check: what, whether it passed, what was seen, what to do about it."""

    name: str
    ok: bool
    detail: str
    hint: str = ""


async def check_nats(
    url: str, token: str | None = None, *, user: str | None = None, password: str | None = None
) -> list[CheckResult]:
    """NATS reachable (logged in as ``user`` when given), recent enough, JetStream on, worldmill's streams present."""
    out: list[CheckResult] = []
    bus = Bus(url, name="worldmill-doctor", token=token, user=user, password=password, connect_timeout_s=3.0)
    try:
        await bus.connect()
    except WorldmillError as exc:
        return [CheckResult("nats", False, str(exc), "start the stack with `worldmill up`")]
    try:
        version = ".".join(map(str, bus.server_version()))
        out.append(
            CheckResult(
                "nats",
                True,
                f"nats-server {version} at {url} (>= {'.'.join(map(str, MIN_SERVER_VERSION))} required)",
            )
        )
        try:
            info = await bus.jetstream_info()
            out.append(
                CheckResult("jetstream", True, f"enabled: {info['streams']} streams, {info['consumers']} consumers")
            )
        except Exception as exc:
            out.append(
                CheckResult("jetstream", False, f"JetStream is not available: {exc!r}", "run nats-server with -js")
            )
            return out
        missing = []
        for spec in ALL_STREAMS:
            try:
                await bus.js.stream_info(spec.name)
            except Exception:
                missing.append(spec.name)
        if missing:
            out.append(
                CheckResult(
                    "streams",
                    False,
                    f"missing: {', '.join(missing)}",
                    "`worldmill up` (or any service start) creates them",
                )
            )
        else:
            out.append(CheckResult("streams", True, ", ".join(s.name for s in ALL_STREAMS)))
    finally:
        await bus.close()
    return out


async def check_s3(endpoint: str, access_key: str, secret_key: str) -> list[CheckResult]:
    """S3 reachable with our credentials, a wrong secret refused, buckets present."""
    out: list[CheckResult] = []
    store = ObjectStore(endpoint, access_key, secret_key, timeout_s=5.0)
    try:
        await store.check()
        out.append(CheckResult("s3", True, f"reachable at {endpoint}, credentials accepted"))
    except WorldmillError as exc:
        return [CheckResult("s3", False, str(exc), "start the stack with `worldmill up`")]
    forged = ObjectStore(endpoint, access_key, secret_key + "-wrong", timeout_s=5.0)
    try:
        await forged.check()
        out.append(
            CheckResult(
                "s3 signatures",
                False,
                "a request signed with a wrong secret was accepted",
                "this server does not check signatures; use SeaweedFS or real S3, not a mock",
            )
        )
    except StoreAuthError:
        out.append(CheckResult("s3 signatures", True, "checked: a wrong secret is refused"))
    except WorldmillError as exc:
        out.append(CheckResult("s3 signatures", False, f"unexpected answer to a wrong secret: {exc}"))
    missing = []
    for bucket in ALL_BUCKETS:
        try:
            await store.list(bucket, "probes/")
        except WorldmillError:
            missing.append(bucket)
    if missing:
        out.append(
            CheckResult(
                "buckets",
                False,
                f"missing: {', '.join(missing)}",
                "`worldmill up` (or any service start) creates them",
            )
        )
    else:
        out.append(CheckResult("buckets", True, ", ".join(ALL_BUCKETS)))
    return out


async def check_services(urls: dict[str, str]) -> list[CheckResult]:
    """Each service's ``/readyz``."""

    async def one(name: str, url: str) -> CheckResult:
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                resp = await client.get(f"{url}/readyz")
            body = resp.json()
            if resp.status_code == 200:
                return CheckResult(f"service {name}", True, f"ready at {url}")
            return CheckResult(
                f"service {name}",
                False,
                f"not ready: {body.get('checks')}",
                f"see .worldmill/logs/{name}.log",
            )
        except (httpx.HTTPError, ValueError) as exc:
            return CheckResult(
                f"service {name}",
                False,
                f"no answer at {url}: {type(exc).__name__}",
                f"see .worldmill/logs/{name}.log",
            )

    return list(await asyncio.gather(*(one(n, u) for n, u in urls.items())))
