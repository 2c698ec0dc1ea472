"""HTTP client for worldmill services, used by the CLI.

Where a service is: ``WM_<SERVICE>_URL`` (and ``WM_API_TOKEN``) when set, else the local stack's
``stack.json`` (started by ``worldmill up``) in the data folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from worldmill.contracts.prompts import ManifestResult, PromptPage, PromptSpec
from worldmill.runtime.errors import TransientError, WorldmillError
from worldmill.runtime.settings import RuntimeSettings, service_prefix
from worldmill.runtime.stack import running_state
from worldmill.runtime.store import ObjectStore


class ServiceUnavailableError(TransientError):
    """The service cannot be found or reached."""


class ServiceClient:
    """A small synchronous client for one service's HTTP API, with its bearer token."""

    def __init__(self, name: str, base_url: str, token: str | None, *, timeout_s: float = 60.0) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)

    @classmethod
    def locate(cls, name: str, data_dir: Path) -> ServiceClient:
        """Find the service from the environment or from a running local stack."""
        url = os.environ.get(f"{service_prefix(name)}URL")
        token = os.environ.get("WM_API_TOKEN")
        if url:
            return cls(name, url, token)
        state = running_state(data_dir)
        if state is None or name not in state.services:
            raise ServiceUnavailableError(
                f"the {name} service is not running: start the stack with `worldmill up` "
                f"(or set {service_prefix(name)}URL and WM_API_TOKEN)"
            )
        return cls(name, state.services[name], token or state.api_token)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; connection problems become :class:`ServiceUnavailableError`."""
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServiceUnavailableError(f"cannot reach the {self.name} service at {self.base_url}: {exc}") from exc

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def error_detail(response: httpx.Response) -> str:
    """The ``detail`` of an error answer, as text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return str(detail)


class RequestFailedError(WorldmillError):
    """A service answered with an error status; ``response`` holds the answer."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}: {error_detail(response)}")
        self.response = response


def submit_manifest(prompts: ServiceClient, content: str) -> tuple[ManifestResult, list[str]]:
    """Submit a manifest to the prompt service (unchanged specs stay as they are) and list its prompt ids."""
    resp = prompts.request("POST", "/manifests", json={"content": content})
    if resp.status_code >= 400:
        raise RequestFailedError(resp)
    result = ManifestResult.model_validate(resp.json())
    return result, list_manifest_prompt_ids(prompts, result.manifest)


def list_manifest_prompt_ids(prompts: ServiceClient, name: str) -> list[str]:
    """The prompt ids the prompt service holds for manifest ``name`` (latest versions; none if unknown)."""
    return [spec.prompt_id for spec in list_manifest_specs(prompts, name)]


def list_manifest_specs(prompts: ServiceClient, name: str) -> list[PromptSpec]:
    """The specs (latest versions) the prompt service holds for manifest ``name``; none if unknown."""
    specs: list[PromptSpec] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"manifest": name, "limit": 500}
        if cursor:
            params["cursor"] = cursor
        listed = prompts.request("GET", "/prompts", params=params)
        if listed.status_code >= 400:
            raise RequestFailedError(listed)
        page = PromptPage.model_validate(listed.json())
        specs.extend(page.items)
        cursor = page.next_cursor
        if not cursor:
            return specs


def locate_store(data_dir: Path) -> ObjectStore:
    """The object store from ``WM_S3_*`` settings when set, else the running local stack's."""
    settings = RuntimeSettings.for_service("cli")
    if settings.s3_access_key is not None and settings.s3_secret_key is not None:
        return ObjectStore(
            settings.s3_endpoint,
            settings.s3_access_key.get_secret_value(),
            settings.s3_secret_key.get_secret_value(),
            region=settings.s3_region,
        )
    state = running_state(data_dir)
    if state is None:
        raise ServiceUnavailableError("no object store: start the stack with `worldmill up` (or set WM_S3_*)")
    return ObjectStore(state.s3_endpoint, state.s3_access_key, state.s3_secret_key)
