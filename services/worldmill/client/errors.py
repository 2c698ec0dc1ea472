"""What the client raises: one tree under :class:`ClientError` (itself a ``WorldmillError``).

::

    WorldmillError                   (worldmill.runtime.errors)
    └── ClientError
        ├── UnavailableError         a service (or the object store) is not configured or cannot be reached
        ├── APIError                 a service answered with an error status (``status_code``, ``detail``)
        │   ├── RequestRejectedError 422: ``problems`` (loc, msg, type, line, column), ``manifest``, ``sha256``
        │   ├── NotFoundError        404
        │   ├── ConflictError        409 (e.g. cancelling a finished run)
        │   ├── UnauthorizedError    401/403 (no token, or a wrong one)
        │   └── ServerError          5xx
        ├── WaitTimeoutError         ``wait`` ran out of time; ``runs`` holds what was seen last
        ├── GenerationFailedError    ``quick_generate``: a run ended other than ``ready``; ``runs`` holds them
        └── ChecksumMismatchError    a download's sha256 is not the expected one (nothing is left at ``dest``)

``UnavailableError`` is also a :class:`worldmill.runtime.client.ServiceUnavailableError`, so code that
already catches the CLI's error keeps working.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import ValidationError

from worldmill.contracts.http_errors import ValidationErrorBody, ValidationProblem
from worldmill.runtime.client import ServiceUnavailableError
from worldmill.runtime.errors import WorldmillError

if TYPE_CHECKING:
    from worldmill.contracts.generation import RunRecord


class ClientError(WorldmillError):
    """Base of everything :mod:`worldmill.client` raises on purpose."""


class UnavailableError(ClientError, ServiceUnavailableError):
    """The named service is not configured, or cannot be reached at ``url``."""

    def __init__(self, service: str, url: str | None, reason: str) -> None:
        where = f" at {url}" if url else ""
        super().__init__(f"the {service} service{where} is unavailable: {reason}")
        self.service = service
        self.url = url
        self.reason = reason


class APIError(ClientError):
    """A service answered with an error status."""

    def __init__(self, service: str, status_code: int, detail: str, *, url: str = "") -> None:
        super().__init__(f"{service}: HTTP {status_code}: {detail}")
        self.service = service
        self.status_code = status_code
        self.detail = detail
        self.url = url


class RequestRejectedError(APIError):
    """422: every problem with the request, each with where (``loc``), what (``msg``) and which rule (``type``)."""

    def __init__(
        self,
        service: str,
        problems: Sequence[ValidationProblem],
        *,
        manifest: str | None = None,
        sha256: str | None = None,
        url: str = "",
        status_code: int = 422,
    ) -> None:
        self.problems: tuple[ValidationProblem, ...] = tuple(problems)
        self.manifest = manifest
        self.sha256 = sha256
        super().__init__(service, status_code, "; ".join(_describe(p) for p in self.problems), url=url)


class NotFoundError(APIError):
    """404: the prompt, run, asset, manifest or augmentation does not exist."""


class ConflictError(APIError):
    """409: the request contradicts the current state (e.g. the run has finished)."""


class UnauthorizedError(APIError):
    """401/403: no bearer token, or one the service does not accept."""


class ServerError(APIError):
    """5xx: the service failed (or is restarting); the same request may succeed later."""


class WaitTimeoutError(ClientError):
    """Not every run was final when the time was up; ``runs`` is the last view of them."""

    def __init__(self, message: str, runs: Sequence[RunRecord] = ()) -> None:
        super().__init__(message)
        self.runs = list(runs)


class GenerationFailedError(ClientError):
    """Some runs ended ``failed``, ``canceled`` or ``lost``; ``runs`` holds every run of the request."""

    def __init__(self, runs: Sequence[RunRecord]) -> None:
        bad = [r for r in runs if r.state != "ready"]
        summary = ", ".join(f"{r.run_id} {r.state}" + (f" ({r.error})" if r.error else "") for r in bad)
        super().__init__(f"{len(bad)} of {len(runs)} run(s) did not finish ready: {summary}")
        self.runs = list(runs)


class ChecksumMismatchError(ClientError):
    """The downloaded bytes' sha256 is not the one expected."""

    def __init__(self, what: str, expected: str, actual: str) -> None:
        super().__init__(f"{what}: sha256 {actual} does not match the expected {expected}")
        self.expected = expected
        self.actual = actual


def _describe(problem: ValidationProblem) -> str:
    where = ".".join(str(p) for p in problem.loc)
    line = f" (line {problem.line})" if problem.line is not None else ""
    return f"{where}{line}: {problem.msg} [{problem.type}]" if where else f"{problem.msg} [{problem.type}]"


def _detail_text(body: Any, fallback: str) -> str:
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return fallback


def error_for(service: str, response: httpx.Response) -> APIError:
    """The :class:`APIError` for an error answer (``response.status_code >= 400``)."""
    try:
        url = str(response.request.url)
    except RuntimeError:  # a response built by hand has no request
        url = ""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    code = response.status_code
    if code == 422 and isinstance(body, dict):
        try:
            parsed = ValidationErrorBody.model_validate(body)
        except ValidationError:
            pass
        else:
            return RequestRejectedError(service, parsed.detail, manifest=parsed.manifest, sha256=parsed.sha256, url=url)
    detail = _detail_text(body, response.text[:500])
    kinds: dict[int, type[APIError]] = {
        404: NotFoundError,
        409: ConflictError,
        401: UnauthorizedError,
        403: UnauthorizedError,
    }
    kind = kinds.get(code, ServerError if code >= 500 else APIError)
    return kind(service, code, detail, url=url)
