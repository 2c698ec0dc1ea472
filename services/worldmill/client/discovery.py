"""Where the services and the object store are: explicit URLs, the environment, or a running local stack.

The rules are :meth:`worldmill.runtime.client.ServiceClient.locate`'s: ``WM_<SERVICE>_URL`` (and
``WM_API_TOKEN``) when set, else the service's URL in the local stack's ``stack.json`` (started by
``worldmill up``) with the stack's token. The object store (for uploads, and downloads without a
presigned link) is ``WM_S3_*`` when set, else the stack's SeaweedFS.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from worldmill.client.errors import UnavailableError
from worldmill.runtime.settings import RuntimeSettings, service_prefix
from worldmill.runtime.stack import running_state
from worldmill.runtime.store import ObjectStore

#: The services with an HTTP API the client speaks to.
SERVICES: tuple[str, ...] = ("prompt", "upsample", "generate", "augment", "qa", "catalog")
STORE = "object store"


@dataclass(frozen=True)
class StoreConfig:
    """S3 endpoint and credentials (for uploads to the inputs bucket, and downloads)."""

    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    region: str = "us-east-1"

    def open(self) -> ObjectStore:
        """An :class:`ObjectStore` (cheap, no I/O until used)."""
        return ObjectStore(self.endpoint, self.access_key, self.secret_key, region=self.region)


@dataclass(frozen=True)
class Endpoints:
    """Base URL per service, the bearer token, and the object store (each optional)."""

    urls: Mapping[str, str]
    token: str | None = field(default=None, repr=False)
    store: StoreConfig | None = None
    #: Said when a service that is not in ``urls`` is asked for (``{prefix}``: its ``WM_<SERVICE>_``).
    hint: str = "pass its URL in urls={...}"

    def url(self, service: str) -> str:
        """The service's base URL, or :class:`UnavailableError` saying how to configure it."""
        url = self.urls.get(service)
        if not url:
            raise UnavailableError(
                service, None, f"no URL is configured: {self.hint.replace('{prefix}', service_prefix(service))}"
            )
        return url.rstrip("/")

    def store_config(self) -> StoreConfig:
        """The object store, or :class:`UnavailableError` saying how to configure it."""
        if self.store is None:
            raise UnavailableError(
                STORE,
                None,
                "no S3 endpoint and credentials: set WM_S3_ENDPOINT, WM_S3_ACCESS_KEY, "
                "WM_S3_SECRET_KEY, pass store=..., or start the stack with `worldmill up`",
            )
        return self.store


def _env_store() -> StoreConfig | None:
    settings = RuntimeSettings.for_service("client")
    if settings.s3_access_key is None or settings.s3_secret_key is None:
        return None
    return StoreConfig(
        settings.s3_endpoint,
        settings.s3_access_key.get_secret_value(),
        settings.s3_secret_key.get_secret_value(),
        settings.s3_region,
    )


def from_env() -> Endpoints:
    """``WM_<SERVICE>_URL`` per service, ``WM_API_TOKEN``, ``WM_S3_*``; services without a URL are left out."""
    urls = {name: url for name in SERVICES if (url := os.environ.get(f"{service_prefix(name)}URL"))}
    return Endpoints(
        urls=urls,
        token=os.environ.get("WM_API_TOKEN"),
        store=_env_store(),
        hint="set {prefix}URL and WM_API_TOKEN",
    )


def local(data_dir: Path | str = ".worldmill") -> Endpoints:
    """The environment first (as :func:`from_env`), then the local stack running in ``data_dir``.

    Raises :class:`UnavailableError` when no stack runs there and the environment names no service.
    """
    env = from_env()
    state = running_state(Path(data_dir))
    if state is None:
        if not env.urls:
            raise UnavailableError(
                "worldmill", None, f"no stack is running in {data_dir} (start it with `worldmill up`, or set WM_*_URL)"
            )
        return env
    urls = {**state.services, **env.urls}
    store = env.store or StoreConfig(state.s3_endpoint, state.s3_access_key, state.s3_secret_key)
    return Endpoints(
        urls={k: v for k, v in urls.items() if k in SERVICES},
        token=env.token or state.api_token,
        store=store,
        hint="it is not running: start the stack with `worldmill up` (or set {prefix}URL and WM_API_TOKEN)",
    )
