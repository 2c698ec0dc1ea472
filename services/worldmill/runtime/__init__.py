"""worldmill runtime: the one library that talks to NATS, S3 and SQL.

Services and the CLI use it; it uses ``worldmill.contracts``; nothing here imports a service.
tests/test_docs.py checks that the list below names every module of the package, and only those.

Modules:
    errors          the error tree that decides acks and HTTP answers
    settings        pydantic-settings with a shared ``WM_`` prefix and a per-service override prefix
    logs            structlog JSON logging with correlation and job ids bound via contextvars
    bus             NATS JetStream: connect, ensure streams and consumers, publish with dedup ids
    decode          message bytes → typed message, or the dead-letter reason
    consumer        the consume loop: ack / nak with backoff / dead-letter, heartbeats, drain
    admission       a consumer's way in: decode, the delivery limit, dead-letter or hand back with backoff
    dead_letters    dead letters written: payload in the letter or the store, published before ``term``
    outage          a dependency's outage noticed once, waited out, logged once
    watchdog        is a work loop getting anything done (for ``/readyz`` and ``/healthz``)
    jobqueue        hold, reorder and settle jobs (the GPU runner's way in)
    cancel          cancel flags in a NATS key-value bucket
    nats_auth       nats-server users and permissions from the grants of ``contracts.permissions``
    scaling         a consumer's autoscaling signal, computed as KEDA's ``nats-jetstream`` scaler does
    sql             SQL engines for the services' own databases (SQLite, PostgreSQL)
    docstore        versioned immutable documents and a transactional outbox
    spec_copies     a service's own copy of the prompt specs it has seen
    store           S3 object storage through ``minio<8``: streaming, multipart, sha256, presigned URLs
    digest          content digests and canonical JSON (the one place that hashes)
    notifications   upload notifications (MinIO's bucket events) normalised into ``object.created``
    poller          a bucket poller for S3 stores that cannot push notifications
    media           what a video file is (PyAV probe)
    mp4             writing H.264 MP4: the one encoder every video worldmill makes goes through
    vlm             a vision-language model behind vLLM's OpenAI-compatible API
    versions        the installed version of a distribution
    service         the service base: FastAPI app, bearer-token auth, health/readiness, lifespan
    body_limit      the bound on request bodies (413 before any route runs)
    client          HTTP client of the services, for the CLI
    cli_support     what every command-line module shares: consoles, exit codes, service errors
    servers         local nats-server and SeaweedFS processes (the local stack and the tests)
    stack           the local stack: data folder, credentials, state file, start and stop
    checks          health checks of a stack, in plain words (``worldmill doctor``)
"""
