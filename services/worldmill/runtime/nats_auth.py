"""nats-server users from the grants of ``worldmill.contracts.permissions``: least privilege on the bus.

Every user may publish its own data subjects (its messages, its consumers' dead letters) and the
JetStream API calls its work needs, and nothing else:

* stream and account *information* only (``bus init`` as ``admin`` creates and updates streams;
  no service can create, change, purge or delete one);
* create, look up and pull from *its own* durable consumers (so no service can take another's
  jobs), ack what they deliver; on the event log, ephemeral consumers too (replays, follows);
* the cancel flags: the generate service puts them, the runners read and watch them;
* replies only on its own inbox prefix (``_INBOX_<user>.>``): nobody reads another's replies,
  which carry pulled messages.

Pure functions; :func:`render_config` gives the ``authorization`` block of a nats-server
configuration file, with the passwords given or as ``$VARIABLE`` references (compose, Kubernetes:
nats-server reads them from its environment).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from worldmill.contracts.permissions import ADMIN_USER, NatsGrant, service_grants
from worldmill.contracts.subjects import CANCEL_BUCKET, EVENTS

API = "$JS.API"
KV_STREAM = f"KV_{CANCEL_BUCKET}"


def inbox_prefix(user: str) -> str:
    """The reply-subject prefix of ``user``'s connections (nats-py ``inbox_prefix``)."""
    return f"_INBOX_{user}"


def password_variable(user: str) -> str:
    """The environment variable nats-server reads ``user``'s password from: ``WM_NATS_PASSWORD_GPU_RUNNER``."""
    return f"WM_NATS_PASSWORD_{user.upper().replace('-', '_')}"


def publish_allowed(grant: NatsGrant) -> list[str]:
    """Every subject ``grant``'s user may publish on (data subjects first, then the JetStream API)."""
    allowed = [*grant.subjects, f"{API}.INFO", f"{API}.STREAM.NAMES", f"{API}.STREAM.LIST", f"{API}.STREAM.INFO.*"]
    for stream, durable in grant.consumers:
        allowed += [
            f"{API}.CONSUMER.CREATE.{stream}.{durable}",
            f"{API}.CONSUMER.CREATE.{stream}.{durable}.>",
            f"{API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
            f"{API}.CONSUMER.INFO.{stream}.{durable}",
            f"{API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
            f"$JS.ACK.{stream}.{durable}.>",
        ]
    if grant.reads_events or grant.own_event_consumers:
        ev = EVENTS.name
        allowed += [
            # Ephemeral readers of the log (replays, follows): nats-py names them at random.
            f"{API}.CONSUMER.CREATE.{ev}",
            f"{API}.CONSUMER.CREATE.{ev}.*",
            f"{API}.CONSUMER.CREATE.{ev}.*.>",
            f"{API}.CONSUMER.INFO.{ev}.*",
            f"{API}.CONSUMER.MSG.NEXT.{ev}.*",
            f"$JS.ACK.{ev}.>",
        ]
    if grant.own_event_consumers:
        allowed += [f"{API}.CONSUMER.DURABLE.CREATE.{EVENTS.name}.*"]
    if grant.cancel in ("read", "write"):
        allowed += [
            f"{API}.CONSUMER.CREATE.{KV_STREAM}",  # the watch's ordered consumer
            f"{API}.CONSUMER.CREATE.{KV_STREAM}.>",
            f"{API}.DIRECT.GET.{KV_STREAM}",
            f"{API}.DIRECT.GET.{KV_STREAM}.>",
            f"{API}.STREAM.MSG.GET.{KV_STREAM}",
            f"$JS.FC.{KV_STREAM}.>",
        ]
    if grant.cancel == "write":
        allowed.append(f"$KV.{CANCEL_BUCKET}.>")
    return list(dict.fromkeys(allowed))


def subscribe_allowed(grant: NatsGrant) -> list[str]:
    """What ``grant``'s user may subscribe to: its own inbox (API replies, pulled messages, the watch).

    A client that cannot set an inbox prefix (MinIO waits for its JetStream acks on the default
    ``_INBOX.``) also gets that one; every worldmill process uses its own prefix, so nothing of
    theirs is delivered there.
    """
    own = [f"{inbox_prefix(grant.user)}.>"]
    return [*own, "_INBOX.>"] if grant.default_inbox else own


def user_entries(passwords: Mapping[str, str] | None = None) -> list[dict[str, object]]:
    """One nats-server user entry per grant plus ``admin``; passwords given, else ``$VARIABLE`` references.

    A password given as ``None`` for a user (or no mapping) is written as the reference to
    :func:`password_variable`; the rendering marks references so they are written unquoted.
    """
    entries: list[dict[str, object]] = [
        {"user": ADMIN_USER, "password": _password(ADMIN_USER, passwords), "permissions": None}
    ]
    for grant in service_grants():
        entries.append(
            {
                "user": grant.user,
                "password": _password(grant.user, passwords),
                "permissions": {
                    "publish": {"allow": publish_allowed(grant)},
                    "subscribe": {"allow": subscribe_allowed(grant)},
                },
            }
        )
    return entries


class _Reference(str):
    """A ``$VARIABLE`` the configuration names instead of a password."""


def _password(user: str, passwords: Mapping[str, str] | None) -> str:
    if passwords is not None and user in passwords:
        return passwords[user]
    return _Reference(password_variable(user))


def render_config(passwords: Mapping[str, str] | None = None) -> str:
    """The ``authorization { users = [...] }`` block of a nats-server configuration file.

    With ``passwords`` (user → password, every user) the passwords are written in; without, each is
    a ``$WM_NATS_PASSWORD_<USER>`` reference nats-server resolves from its environment.
    """
    lines = [
        "# worldmill's NATS users: generated by `worldmill bus permissions` from",
        "# worldmill.contracts.permissions; do not edit by hand (tests compare it with the code).",
        "authorization {",
        "  users = [",
    ]
    for entry in user_entries(passwords):
        password = entry["password"]
        shown = f"${password}" if isinstance(password, _Reference) else json.dumps(password)
        lines.append(f"    {{user: {json.dumps(entry['user'])}, password: {shown}")
        permissions = entry["permissions"]
        if isinstance(permissions, dict):
            lines.append("     permissions: {")
            for direction in ("publish", "subscribe"):
                subjects = permissions[direction]["allow"]
                lines.append(f"      {direction}: {{allow: [")
                lines += [f"        {json.dumps(s)}," for s in subjects]
                lines.append("      ]}")
            lines.append("     }")
        lines.append("    }")
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def permissions_table() -> str:
    """A Markdown table of every grant (docs/architecture.md holds this output; a test compares)."""
    rows = [
        "| user | publishes | binds (stream/durable) | event log | cancel flags |",
        "| --- | --- | --- | --- | --- |",
        f"| `{ADMIN_USER}` | anything (`bus init`, the CLI, set-up) | any | any | write |",
    ]
    for grant in service_grants():
        published = ", ".join(f"`{s}`" for s in grant.subjects) or "none"
        bound = ", ".join(f"{stream}/`{durable}`" for stream, durable in grant.consumers) or "none"
        events = "read, own durables" if grant.own_event_consumers else "read" if grant.reads_events else "none"
        rows.append(f"| `{grant.user}` | {published} | {bound} | {events} | {grant.cancel} |")
    return "\n".join(rows) + "\n"


def all_users() -> list[str]:
    """Every NATS user: ``admin`` first, then each grant's."""
    return [ADMIN_USER, *(g.user for g in service_grants())]
