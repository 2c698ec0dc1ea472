"""The error tree. A handler's exception decides what happens to its message.

::

    WorldmillError
    ├── TransientError          retry: nak with exponential backoff, dead-letter after max deliveries
    │   └── UnavailableError    a dependency is down: the consumer waits it out, no delivery spent
    │       ├── BusUnavailableError
    │       └── StoreUnavailableError
    ├── PermanentError          never retry: dead-letter with the reason, then term
    │   ├── InvalidInputError   bad input, named field and rule (HTTP 422, CLI exit 2)
    │   ├── StoreAuthError      the object store refused our credentials
    │   └── BusPermissionError  NATS refused a publish this service's user is not granted
    ├── ObjectNotFoundError
    └── BusError                stream/consumer set-up problems

Any other exception escaping a handler is treated as transient: it is retried with backoff and
dead-lettered at the delivery limit, so a bug never loses a message and never blocks a consumer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from worldmill.contracts.http_errors import ValidationProblem


class WorldmillError(Exception):
    """Base of every error raised on purpose by worldmill."""


class TransientError(WorldmillError):
    """Might succeed later (a server restarting, a timeout): retry with backoff."""


class PermanentError(WorldmillError):
    """Will never succeed as sent: dead-letter it with this message as the reason."""


class InvalidInputError(PermanentError):
    """Input breaks a rule. ``field`` names where, the message says which rule.

    It carries every problem found (``issues``: where, what, which rule, and ``line``/``column`` in a
    manifest), so one raise can refuse a whole request: the service base answers it as the one 422
    body (``ValidationErrorBody``), naming ``manifest`` and its ``sha256`` when given. ``field`` and
    ``rule`` are the first problem's, for the CLI and dead letters.
    """

    def __init__(
        self,
        field: str,
        rule: str,
        *,
        issues: Sequence[ValidationProblem] = (),
        manifest: str | None = None,
        sha256: str | None = None,
    ) -> None:
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        super().__init__(f"{field}: {rule}{more}")
        self.field = field
        self.rule = rule
        self.issues: tuple[ValidationProblem, ...] = tuple(issues) or (
            ValidationProblem(loc=list(field.split(".")), msg=rule, type="invalid"),
        )
        self.manifest = manifest
        self.sha256 = sha256

    @classmethod
    def of(
        cls, issues: Iterable[ValidationProblem], *, manifest: str | None = None, sha256: str | None = None
    ) -> InvalidInputError:
        """One error for several problems (at least one)."""
        listed = tuple(issues)
        if not listed:
            raise ValueError("InvalidInputError.of needs at least one problem")
        first = listed[0]
        return cls(".".join(str(p) for p in first.loc), first.msg, issues=listed, manifest=manifest, sha256=sha256)

    @classmethod
    def from_errors(cls, errors: Iterable[Any], *, within: Sequence[str | int] = ()) -> InvalidInputError:
        """From pydantic/FastAPI error dicts (``loc``, ``msg``, ``type``), each ``loc`` prefixed by ``within``."""
        return cls.of(problem_from(e) for e in errors).located(*within)

    def located(self, *prefix: str | int) -> InvalidInputError:
        """The same problems, each ``loc`` starting with ``prefix`` (e.g. ``"body"`` for a route's input)."""
        if not prefix:
            return self
        return InvalidInputError.of(
            (p.model_copy(update={"loc": [*prefix, *p.loc]}) for p in self.issues),
            manifest=self.manifest,
            sha256=self.sha256,
        )


def problem_from(item: Any) -> ValidationProblem:
    """A ``ValidationProblem`` from a pydantic/FastAPI error dict (or anything else, as its message)."""
    if isinstance(item, ValidationProblem):
        return item
    if not isinstance(item, Mapping):
        return ValidationProblem(loc=[], msg=str(item), type="invalid")
    loc = item.get("loc", [])
    if isinstance(loc, str):
        loc = loc.split(".")
    line, column = item.get("line"), item.get("column")
    return ValidationProblem(
        loc=[p if isinstance(p, int) else str(p) for p in loc],
        msg=str(item.get("msg", item.get("message", ""))),
        type=str(item.get("type", item.get("rule", "invalid"))),
        line=line if isinstance(line, int) else None,
        column=column if isinstance(column, int) else None,
    )


class BusError(WorldmillError):
    """NATS stream or consumer set-up failed (for instance an incompatible existing stream)."""


class UnavailableError(TransientError):
    """A dependency (NATS, the object store) is down: waiting, not the message, is what helps.

    The consume loop keeps such a message in hand and calls its handler again once the outage is
    over (up to its patience), so an outage of seconds or minutes spends none of its deliveries.
    """


class BusUnavailableError(UnavailableError):
    """NATS could not be reached."""


class StoreUnavailableError(UnavailableError):
    """The object store could not be reached."""


class StoreAuthError(PermanentError):
    """The object store refused the credentials or the signature."""


class BusPermissionError(PermanentError):
    """NATS refused a publish (or the login): the service's user is not granted it (``contracts.permissions``)."""


class ObjectNotFoundError(WorldmillError):
    """The object (or bucket) does not exist."""
