"""Settings from the environment: a shared ``WM_`` prefix, overridden per service.

``WM_NATS_URL`` sets the NATS URL for everything; ``WM_PROMPT_NATS_URL`` overrides it for the
prompt service only. That is how production gives each service its own credentials while a laptop
sets one variable. Secrets are ``SecretStr``: they never appear in logs or reprs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SHARED_PREFIX = "WM_"


def service_prefix(service: str) -> str:
    """``WM_PROMPT_`` for ``prompt``; ``WM_GPU_RUNNER_`` for ``gpu-runner``."""
    return f"{SHARED_PREFIX}{service.upper().replace('-', '_')}_"


class RuntimeSettings(BaseSettings):
    """What every service needs to reach NATS, S3 and its callers."""

    model_config = SettingsConfigDict(env_prefix=SHARED_PREFIX, extra="ignore", frozen=True)

    service: str = "worldmill"
    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        description="One NATS URL, or every node of a cluster comma-separated (the client fails over between them).",
    )
    stream_replicas: int = Field(
        default=1, ge=1, le=5, description="Copies of each stream: 1 on one nats-server, 3 on a JetStream cluster."
    )
    nats_token: SecretStr | None = None
    nats_user: str | None = Field(
        default=None,
        description="NATS user (one per service: contracts.permissions); WM_<SERVICE>_NATS_USER per service.",
    )
    nats_password: SecretStr | None = None
    s3_endpoint: str = "http://127.0.0.1:8333"
    s3_public_endpoint: str | None = Field(
        default=None, description="Endpoint put in presigned URLs handed to people; defaults to s3_endpoint."
    )
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_region: str = "us-east-1"
    api_tokens: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(), description="Bearer tokens that may call every route (operate), comma-separated."
    )
    api_read_tokens: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(), description="Bearer tokens that may only read (GET, HEAD): others get 403."
    )
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=0, ge=0, le=65535)
    http_max_body_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="Largest request body a service reads; larger ones get 413."
    )
    log_level: str = "INFO"
    log_json: bool | None = Field(default=None, description="JSON logs; default: JSON unless on a TTY.")
    connect_timeout_s: float = Field(default=10.0, gt=0)
    drain_timeout_s: float = Field(default=30.0, gt=0)
    nats_reconnect_wait_s: float = Field(
        default=0.5, gt=0, description="Pause between reconnect attempts once connected (they go on without limit)."
    )
    s3_timeout_s: float = Field(default=30.0, gt=0, description="Read timeout of one S3 request.")
    s3_connect_timeout_s: float = Field(default=5.0, gt=0, description="Connect timeout of one S3 request.")
    s3_retries: int = Field(
        default=2, ge=0, le=10, description="Retries of one S3 request on connection errors and 5xx (with backoff)."
    )
    outage_patience_s: float = Field(
        default=300.0,
        gt=0,
        description="How long a message in hand waits out NATS or the store being down before that counts as "
        "a failed delivery (the work is retried meanwhile, no delivery spent).",
    )
    stall_ready_s: float = Field(
        default=300.0,
        gt=0,
        description="A consumer that holds work (or has work waiting) and settles nothing for this long makes "
        "/readyz answer 503 with the reason.",
    )
    stall_live_s: float = Field(
        default=900.0,
        gt=0,
        description="... and after this long /healthz answers 503 too, so an orchestrator restarts the process.",
    )
    data_dir: Path = Path(".worldmill")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the service's own database; default: SQLite under data_dir.",
    )

    @field_validator("api_tokens", "api_read_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(t.strip() for t in value.split(",") if t.strip())
        return value

    def database_url_or_default(self) -> str:
        """The configured database URL, or ``sqlite:///<data_dir>/<service>.sqlite3``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / f'{self.service}.sqlite3').resolve()}"

    @classmethod
    def specialize(cls, settings: RuntimeSettings) -> Self:
        """These settings as ``cls`` (a service's subclass), reading its extra fields from the environment."""
        if isinstance(settings, cls):
            return settings
        given = {k: getattr(settings, k) for k in settings.model_fields_set if k != "service"}
        return cls.for_service(settings.service, **given)

    @classmethod
    def for_service(cls, service: str, **overrides: Any) -> Self:
        """Settings for ``service``: ``WM_<SERVICE>_*`` over ``WM_*`` over defaults."""
        specific = cls(_env_prefix=service_prefix(service))
        from_env = {name: getattr(specific, name) for name in specific.model_fields_set}
        return cls(**{"service": service, **from_env, **overrides})
