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


class WorldmillError(Exception):
    """Base of every error raised on purpose by worldmill."""


class TransientError(WorldmillError):
    """Might succeed later (a server restarting, a timeout): retry with backoff."""


class PermanentError(WorldmillError):
    """Will never succeed as sent: dead-letter it with this message as the reason."""


class InvalidInputError(PermanentError):
    """Input breaks a rule. ``field`` names where, the message says which rule."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


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
