"""A JetStream consumer's autoscaling signal, computed the way KEDA's ``nats-jetstream`` scaler does.

What KEDA does (kedacore/keda v2.20.2, commit 68a5b50, ``pkg/scalers/nats_jetstream_scaler.go``):

* It reads ``GET http(s)://<natsServerMonitoringEndpoint>/jsz?acc=<account>&config=true&consumers=true``
  and finds the account (by id or by name), the stream and the consumer.
* The metric is the consumer's **lag = num_pending + num_ack_pending**: messages not delivered yet plus
  messages delivered and not acked (a job a runner is working on counts, so a busy runner is not scaled
  away). The scaler is active when lag > ``activationLagThreshold``; the HPA target is ``lagThreshold``
  per replica (an ``AverageValue``).
* In a cluster (``meta_cluster.cluster_size`` > 1) only the consumer's *leader* has the real numbers (a
  follower's ``/jsz`` says ``num_pending: 0``). KEDA asks ``/varz`` on the endpoint for the cluster's
  nodes: the advertised client URLs (``connect_urls``), whose host it asks for ``/varz`` (its
  ``server_name``) and ``/jsz`` on the endpoint's port; or, when servers do not advertise (the NATS Helm
  chart's default), the route URLs (``cluster.urls``), whose first DNS label is taken as the server name
  and prefixed to the endpoint's host (``nats-0`` + ``nats-headless.ns.svc:8222``). The node whose name
  is the consumer's ``cluster.leader`` gives the numbers; none → an error, as KEDA reports it.

The pure functions below do each step on parsed JSON; :func:`read_signal` is the only one that does I/O
(HTTP GETs through the client it is given), so the same code can back an admin endpoint or a CLI.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from worldmill.runtime.errors import InvalidInputError, WorldmillError

#: Trigger metadata the scaler reads (``natsJetStreamMetadata``'s ``keda:"name=…"`` tags in v2.20.2).
TRIGGER_FIELDS = frozenset(
    {
        "natsServerMonitoringEndpoint",
        "account",
        "accountID",
        "stream",
        "consumer",
        "lagThreshold",
        "activationLagThreshold",
        "useHttps",
    }
)
#: Metadata KEDA refuses a trigger without (``account`` or ``accountID`` is checked separately).
REQUIRED_FIELDS = frozenset({"natsServerMonitoringEndpoint", "stream", "consumer"})
#: KEDA's defaults (``defaultJetStreamLagThreshold`` and the tag defaults).
DEFAULT_LAG_THRESHOLD = 10
DEFAULT_ACTIVATION_LAG_THRESHOLD = 0
#: The account of a server without configured accounts.
GLOBAL_ACCOUNT = "$G"


class ScalerError(WorldmillError):
    """The signal cannot be computed: what KEDA would log as a scaler error (stream, consumer or leader missing)."""


@dataclass(frozen=True)
class Trigger:
    """A ``nats-jetstream`` trigger: where to read, whose consumer, and its thresholds."""

    endpoint: str
    stream: str
    consumer: str
    account: str = GLOBAL_ACCOUNT
    account_id: str = ""
    lag_threshold: int = DEFAULT_LAG_THRESHOLD
    activation_lag_threshold: int = DEFAULT_ACTIVATION_LAG_THRESHOLD
    use_https: bool = False

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> Trigger:
        """The trigger a ScaledObject's ``metadata`` block describes (values are strings, as in the CRD)."""
        unknown = sorted(set(metadata) - TRIGGER_FIELDS)
        if unknown:
            raise InvalidInputError("metadata", f"the nats-jetstream scaler has no field {', '.join(unknown)}")
        missing = sorted(REQUIRED_FIELDS - set(metadata))
        if missing:
            raise InvalidInputError("metadata", f"needs {', '.join(missing)}")
        if not metadata.get("account") and not metadata.get("accountID"):
            raise InvalidInputError("metadata", "needs account or accountID (KEDA: no account name or id given)")
        return cls(
            endpoint=metadata["natsServerMonitoringEndpoint"],
            stream=metadata["stream"],
            consumer=metadata["consumer"],
            account=metadata.get("account", ""),
            account_id=metadata.get("accountID", ""),
            lag_threshold=_integer(metadata, "lagThreshold", DEFAULT_LAG_THRESHOLD),
            activation_lag_threshold=_integer(metadata, "activationLagThreshold", DEFAULT_ACTIVATION_LAG_THRESHOLD),
            use_https=_boolean(metadata, "useHttps"),
        )

    @property
    def account_key(self) -> str:
        """The id asked for in ``?acc=``: ``accountID``, else ``account`` (as KEDA does)."""
        return self.account_id or self.account

    @property
    def scheme(self) -> str:
        """``https`` with ``useHttps``, else ``http``."""
        return "https" if self.use_https else "http"


@dataclass(frozen=True)
class ConsumerReading:
    """One node's view of the consumer in ``/jsz``."""

    pending: int
    ack_pending: int
    leader: str

    @property
    def lag(self) -> int:
        """KEDA's metric: ``num_pending + num_ack_pending``."""
        return self.pending + self.ack_pending


@dataclass(frozen=True)
class Signal:
    """What the scaler would report: the lag, whether it activates, and which node it was read from."""

    lag: int
    pending: int
    ack_pending: int
    active: bool
    leader: str
    read_from: str


@dataclass(frozen=True)
class Node:
    """A cluster node to ask: its server name when known from its URL, its ``/varz`` and ``/jsz`` URLs."""

    name: str | None
    varz_url: str
    jsz_url: str


def jsz_url(trigger: Trigger, host: str | None = None) -> str:
    """``/jsz`` with the account, consumers and config, on ``host`` (default: the trigger's endpoint)."""
    query = urlencode({"acc": trigger.account_key, "config": "true", "consumers": "true"})
    return f"{trigger.scheme}://{host or trigger.endpoint}/jsz?{query}"


def varz_url(trigger: Trigger, host: str | None = None) -> str:
    """``/varz`` on ``host`` (default: the trigger's endpoint)."""
    return f"{trigger.scheme}://{host or trigger.endpoint}/varz"


def cluster_size(jsz: Mapping[str, Any]) -> int:
    """``meta_cluster.cluster_size`` (0 for a server that is not clustered)."""
    return int((jsz.get("meta_cluster") or {}).get("cluster_size") or 0)


def find_consumer(jsz: Mapping[str, Any], trigger: Trigger) -> ConsumerReading | None:
    """The trigger's consumer in a ``/jsz`` answer, or None when this node does not list it.

    The account matches by id (``accountID``, else ``account``) or by name, as KEDA's ``IsAccount``.
    """
    for account in jsz.get("account_details") or []:
        if account.get("id") != trigger.account_key and account.get("name") != trigger.account:
            continue
        for stream in account.get("stream_detail") or []:
            if stream.get("name") != trigger.stream:
                continue
            for consumer in stream.get("consumer_detail") or []:
                if consumer.get("name") == trigger.consumer:
                    return ConsumerReading(
                        pending=int(consumer.get("num_pending") or 0),
                        ack_pending=int(consumer.get("num_ack_pending") or 0),
                        leader=str((consumer.get("cluster") or {}).get("leader") or ""),
                    )
    return None


def has_stream(jsz: Mapping[str, Any], trigger: Trigger) -> bool:
    """Whether the trigger's stream is listed in the trigger's account."""
    return any(
        stream.get("name") == trigger.stream
        for account in jsz.get("account_details") or []
        if account.get("id") == trigger.account_key or account.get("name") == trigger.account
        for stream in account.get("stream_detail") or []
    )


def cluster_nodes(varz: Mapping[str, Any], trigger: Trigger) -> list[Node]:
    """The nodes KEDA asks for the leader, from the endpoint's ``/varz``.

    Advertised client URLs (``connect_urls``: ``host:4222``): the host, on the endpoint's port; the
    name is each node's own ``server_name`` (ask its ``/varz``). Otherwise the route URLs
    (``cluster.urls``: ``nats-0.nats-headless:6222``): the first DNS label is the name, and the
    node's address is that label in front of the endpoint's host.
    """
    port = urlsplit(f"//{trigger.endpoint}").port
    advertised = [str(u) for u in varz.get("connect_urls") or []]
    if advertised:
        hosts = [url.split(":")[0] for url in advertised]
        with_port = [f"{h}:{port}" if port else h for h in hosts]
        return [Node(None, varz_url(trigger, h), jsz_url(trigger, h)) for h in with_port]
    nodes = []
    for url in (varz.get("cluster") or {}).get("urls") or []:
        name = str(url).split(".")[0]
        host = f"{name}.{trigger.endpoint}"
        nodes.append(Node(name, varz_url(trigger, host), jsz_url(trigger, host)))
    return nodes


def signal_from(reading: ConsumerReading, trigger: Trigger, read_from: str) -> Signal:
    """The scaler's answer from the leader's (or a lone server's) reading."""
    return Signal(
        lag=reading.lag,
        pending=reading.pending,
        ack_pending=reading.ack_pending,
        active=reading.lag > trigger.activation_lag_threshold,
        leader=reading.leader,
        read_from=read_from,
    )


async def read_signal(client: httpx.AsyncClient, trigger: Trigger) -> Signal:
    """Read the signal over HTTP as the scaler does, following the consumer's leader in a cluster.

    KEDA also caches the leader's URL between polls; a fresh search gives the same answer. Raises
    :class:`ScalerError` when the stream, the consumer or (in a cluster) its leader is not found.
    """
    first_url = jsz_url(trigger)
    jsz = await _get(client, first_url)
    if cluster_size(jsz) > 1:
        for node in cluster_nodes(await _get(client, varz_url(trigger)), trigger):
            name = node.name if node.name is not None else str((await _get(client, node.varz_url)).get("server_name"))
            reading = find_consumer(await _get(client, node.jsz_url), trigger)
            if reading is not None and reading.leader == name:
                return signal_from(reading, trigger, node.jsz_url)
        raise ScalerError(f"leader node not found for consumer {trigger.consumer}")
    if not has_stream(jsz, trigger):
        raise ScalerError(f"stream {trigger.stream} not found in account {trigger.account_key}")
    reading = find_consumer(jsz, trigger)
    if reading is None:
        raise ScalerError(f"consumer {trigger.consumer!r} not found in stream {trigger.stream!r}")
    return signal_from(reading, trigger, first_url)


async def _get(client: httpx.AsyncClient, url: str) -> Mapping[str, Any]:
    try:
        resp = await client.get(url)
        resp.raise_for_status()
        body = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ScalerError(f"GET {url}: {exc!r}") from exc
    if not isinstance(body, dict):
        raise ScalerError(f"GET {url}: not a JSON object")
    return body


def _integer(metadata: Mapping[str, str], key: str, default: int) -> int:
    raw = metadata.get(key)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidInputError(f"metadata.{key}", f"must be an integer, got {raw!r}") from None


def _boolean(metadata: Mapping[str, str], key: str) -> bool:
    raw = metadata.get(key, "false").strip().lower()
    if raw not in ("true", "false"):
        raise InvalidInputError(f"metadata.{key}", f"must be true or false, got {raw!r}")
    return raw == "true"
