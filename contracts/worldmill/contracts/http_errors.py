"""The error bodies every service answers with, whatever the route (the service base makes them so).

* 422: :class:`ValidationErrorBody`, a list of :class:`ValidationProblem` — where (``loc``), what
  is wrong (``msg``) and which rule (``type``); a scenario manifest's problems add ``line`` and
  ``column`` in its YAML, and the body names the manifest and its sha256.
* every other 4xx/5xx: :class:`ErrorBody`, one sentence in ``detail``.

Every route's OpenAPI document references these two for its error statuses, so a client
generated from it parses every error it can get.
"""

from __future__ import annotations

from pydantic import Field

from worldmill.contracts.base import Contract


class ValidationProblem(Contract):
    """One thing wrong with a request: where, what and which rule."""

    loc: list[str | int] = Field(
        description="Where: the request part (body, query, path, header) then the field path, "
        "or the path inside a manifest; empty when the whole request is meant."
    )
    msg: str = Field(description="What is wrong, in a sentence.")
    type: str = Field(description="The rule that is broken, e.g. missing, int_parsing, unknown prompt.")
    line: int | None = Field(default=None, description="Line in the submitted manifest (manifest problems).")
    column: int | None = Field(default=None, description="Column in the submitted manifest.")


class ValidationErrorBody(Contract):
    """A 422: every problem found in the request at once."""

    detail: list[ValidationProblem] = Field(min_length=1)
    manifest: str | None = Field(default=None, description="The refused manifest's name (manifest problems).")
    sha256: str | None = Field(default=None, description="sha256 of the refused manifest's text.")


class ErrorBody(Contract):
    """Any other error (401, 404, 409, 413, 500, 503, ...): what happened, in a sentence."""

    detail: str
