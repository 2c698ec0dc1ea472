"""worldmill runtime: the one library that talks to NATS, S3 and SQL.

Services and the CLI use it; it uses ``worldmill.contracts``; nothing here imports a service.

Modules:
    errors      the error tree that decides acks and HTTP answers
    settings    pydantic-settings with a shared ``WM_`` prefix and a per-service override prefix
    logs        structlog JSON logging with correlation and job ids bound via contextvars
    bus         NATS JetStream: connect, ensure streams and consumers, publish with dedup ids
    decode      message bytes → typed message, or the dead-letter reason
    consumer    the consume loop: ack / nak with backoff / dead-letter, heartbeats, drain
    jobqueue    hold, reorder and settle jobs (the GPU runner's way in)
    cancel      cancel flags in a NATS key-value bucket
    docstore    versioned immutable documents and a transactional outbox (SQLite, PostgreSQL)
    media       what a video file is (PyAV probe)
    vlm         a vision-language model behind vLLM's OpenAI-compatible API
    client      HTTP client of the services, for the CLI
    store       S3 object storage through ``minio<8``: streaming, multipart, sha256, presigned URLs
    service     the service base: FastAPI app, bearer-token auth, health/readiness, lifespan
    servers     local nats-server and SeaweedFS processes (the local stack and the tests)
    stack       the local stack: data folder, credentials, state file, start and stop
    checks      health checks of a stack, in plain words (``worldmill doctor``)
"""
