"""The service base: one FastAPI app per service, with the bus, the store and its consumers.

``create_service_app`` wires, for every service alike:

* a lifespan that connects NATS (ensuring the streams) and S3 (ensuring the buckets), opens the
  service's database, runs its ``on_startup`` (which returns the service's own typed state, read by
  routes through :func:`service_of` and by consumers as ``ctx.service``), starts its consumers, and
  on shutdown (uvicorn turns SIGTERM into it) stops fetching, lets in-flight messages finish, then
  drains the connection. Every resource is registered on one ``AsyncExitStack`` as it is acquired
  (``ctx.resources`` for what ``on_startup`` opens), so a start that fails half-way closes what it
  had opened, in reverse order, as a normal shutdown does;
* ``GET /healthz`` (liveness, no auth) and ``GET /readyz`` (bus connected, store reachable, and
  every work loop — the consumers, the runner's job queue — alive and making progress; no auth).
  A loop that holds work or has work waiting and settles nothing for ``stall_ready_s`` makes
  ``/readyz`` fail with the reason; after ``stall_live_s`` (or when a loop has ended) ``/healthz``
  fails too, so an orchestrator restarts the process. The loops heal outages by themselves; this
  is for what they cannot heal;
* bearer-token auth on every other route: 401 with a message that says what is missing (the
  ``public_routers`` a service may add serve pages and static files only, never data);
* one error shape: every 422 is a ``ValidationErrorBody`` (a list of ``{loc, msg, type}``, with
  ``line``/``column`` for manifest problems) made in one place from an ``InvalidInputError`` (a
  route raises one, with every problem, rather than building a 422), FastAPI's request validation
  and ``HTTPException(422)``; every other error an ``ErrorBody`` (``{detail}``), and
  the OpenAPI document says so for every status a route can answer: 401 on every protected route,
  422 wherever there is input, and what a route adds with ``responses=error_responses(404, ...)``;
* request bodies bounded (``WM_HTTP_MAX_BODY_BYTES``): 413 naming the limit, listed on every route with a body.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, cast

import structlog
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException
from typing_extensions import TypeVar

from worldmill.contracts.http_errors import ErrorBody, ValidationErrorBody, ValidationProblem
from worldmill.contracts.keys import ALL_BUCKETS
from worldmill.contracts.subjects import ALL_STREAMS
from worldmill.runtime.body_limit import BodyLimit
from worldmill.runtime.bus import Bus
from worldmill.runtime.consumer import Consumer
from worldmill.runtime.docstore import DocumentStore, OutboxRelay
from worldmill.runtime.errors import InvalidInputError, WorldmillError, problem_from
from worldmill.runtime.logs import configure_logging, get_logger
from worldmill.runtime.settings import RuntimeSettings
from worldmill.runtime.store import ObjectStore
from worldmill.runtime.versions import package_version
from worldmill.runtime.watchdog import Watchdog

log = get_logger(__name__)


#: A service's own state: what its ``on_startup`` returns (its service object, or a small dataclass).
S = TypeVar("S", default=None)
_NOT_STARTED: Any = object()


@dataclass
class ServiceContext(Generic[S]):
    """What a service's routes and handlers share: settings, bus, store, a stop event, its state."""

    settings: RuntimeSettings
    bus: Bus
    store: ObjectStore
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    consumers: list[Consumer[Any]] = field(default_factory=list)
    #: The lifespan's exit stack: ``on_startup`` registers here what it opens (closed in reverse order
    #: at shutdown, or at once when the start fails), e.g. ``ctx.resources.push_async_callback(db.close)``.
    resources: AsyncExitStack = field(default_factory=AsyncExitStack)
    service_: S = _NOT_STARTED
    docs_: DocumentStore | None = None
    #: Work loops reported by the health routes (the consumers' are added by the service base).
    watchdogs: list[Watchdog] = field(default_factory=list)
    #: Long-running tasks that must not end before ``stop`` (consumers; the runner adds its loop).
    loops: dict[str, asyncio.Task[Any]] = field(default_factory=dict)

    @property
    def service(self) -> S:
        """The service's state, as its ``on_startup`` returned it."""
        if self.service_ is _NOT_STARTED:
            raise RuntimeError(f"the {self.settings.service} service has not started (its on_startup has not returned)")
        return self.service_

    @property
    def docs(self) -> DocumentStore:
        """The service's own database (apps created with ``documents=True``)."""
        if self.docs_ is None:
            raise RuntimeError("this service was created without documents=True")
        return self.docs_

    @property
    def source(self) -> str:
        """CloudEvents ``source`` of this service's messages."""
        return f"/worldmill/{self.settings.service}"


#: The service's consumers, built once ``on_startup`` has returned (``ctx.service`` is set).
ConsumerFactory = Callable[[ServiceContext[S]], Sequence[Consumer[Any]]]
#: ``on_startup``: opens what the service needs (registering it on ``ctx.resources``) and returns its state.
Startup = Callable[[ServiceContext[S]], Awaitable[S]]
Hook = Callable[[ServiceContext[S]], Awaitable[None]]

T = TypeVar("T")


def service_of(request: Request, kind: type[T]) -> T:
    """The state of the service serving ``request`` (what its ``on_startup`` returned), checked to be a ``kind``.

    Routes take it as a dependency: ``Annotated[PromptService, Depends(provided(PromptService))]``.
    """
    ctx: ServiceContext[Any] | None = getattr(request.app.state, "ctx", None)
    service = ctx.service if ctx is not None else None
    if not isinstance(service, kind):
        raise RuntimeError(f"this app's service state is {type(service).__name__}, not {kind.__name__}")
    return service


def provided(kind: type[T]) -> Callable[[Request], T]:
    """A route dependency answering :func:`service_of` ``(request, kind)``."""

    def dependency(request: Request) -> T:
        return service_of(request, kind)

    dependency.__name__ = f"provided_{kind.__name__}"
    return dependency


def bus_from(settings: RuntimeSettings) -> Bus:
    """A bus for these settings (not connected yet)."""
    token = settings.nats_token.get_secret_value() if settings.nats_token else None
    return Bus(
        settings.nats_url,
        name=settings.service,
        token=token,
        user=settings.nats_user,
        password=settings.nats_password.get_secret_value() if settings.nats_password else None,
        connect_timeout_s=settings.connect_timeout_s,
        reconnect_wait_s=settings.nats_reconnect_wait_s,
        stream_replicas=settings.stream_replicas,
    )


def store_from(settings: RuntimeSettings) -> ObjectStore:
    """An object store for these settings (no I/O yet)."""
    if settings.s3_access_key is None or settings.s3_secret_key is None:
        raise InvalidInputError(
            "s3_access_key/s3_secret_key", "must be set (WM_S3_ACCESS_KEY, WM_S3_SECRET_KEY or per service)"
        )
    return ObjectStore(
        settings.s3_endpoint,
        settings.s3_access_key.get_secret_value(),
        settings.s3_secret_key.get_secret_value(),
        region=settings.s3_region,
        public_endpoint=settings.s3_public_endpoint,
        timeout_s=settings.s3_timeout_s,
        connect_timeout_s=settings.s3_connect_timeout_s,
        retries=settings.s3_retries,
    )


_bearer = HTTPBearer(auto_error=False)


#: Methods a read-only token may use: everything else changes state and needs an operate token.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def token_checker(settings: RuntimeSettings) -> Callable[..., Awaitable[None]]:
    """A dependency that accepts only ``Authorization: Bearer <token>`` with a token of the service.

    Two scopes: ``api_tokens`` (``WM_API_TOKENS``) operate — every route; ``api_read_tokens``
    (``WM_API_READ_TOKENS``) only read — GET and HEAD; a state-changing call with one gets 403
    naming the scope it needs. A token in both lists operates.
    """
    operate = [t.get_secret_value().encode() for t in settings.api_tokens]
    read_only = [t.get_secret_value().encode() for t in settings.api_read_tokens]
    prefix = f"WM_{settings.service.upper().replace('-', '_')}_API_TOKENS"

    async def require_token(
        request: Request,
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        challenge = {"WWW-Authenticate": "Bearer"}
        if not operate and not read_only:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                f"no API tokens are configured for the {settings.service} service; set WM_API_TOKENS or {prefix}",
                headers=challenge,
            )
        if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing bearer token: send the header 'Authorization: Bearer <token>'",
                headers=challenge,
            )
        given = creds.credentials.encode()
        # Compare with every token (no early exit), so timing does not tell which list matched.
        operates = [hmac.compare_digest(given, t) for t in operate]
        reads = [hmac.compare_digest(given, t) for t in read_only]
        if any(operates):
            return
        if not any(reads):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid bearer token", headers=challenge)
        if request.method not in READ_METHODS:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this token may only read (WM_API_READ_TOKENS); {request.method} {request.url.path} "
                "changes state and needs an operate token (WM_API_TOKENS)",
            )

    return require_token


def create_service_app(
    settings: RuntimeSettings,
    *,
    title: str,
    routers: Sequence[APIRouter] = (),
    public_routers: Sequence[APIRouter] = (),
    consumers: ConsumerFactory[S] | None = None,
    on_startup: Startup[S] | None = None,
    on_shutdown: Hook[S] | None = None,
    bootstrap: bool = True,
    documents: bool = False,
) -> FastAPI:
    """Build a service's FastAPI app; all I/O happens in its lifespan, none at build time.

    ``on_startup`` returns the service's state (``ctx.service``; ``None`` without it) and registers
    what it opens on ``ctx.resources``; ``on_shutdown`` runs after the consumers drained, before those
    resources close (and only when the start got that far).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bus, store = bus_from(settings), store_from(settings)
        async with AsyncExitStack() as stack:
            ctx: ServiceContext[S] = ServiceContext(settings=settings, bus=bus, store=store, resources=stack)
            app.state.ctx = ctx
            try:
                await _start(ctx, stack, bootstrap=bootstrap, documents=documents)
                ctx.service_ = await on_startup(ctx) if on_startup else cast(S, None)
                if on_shutdown:
                    stack.push_async_callback(on_shutdown, ctx)
                _start_consumers(ctx, stack, consumers)
                log.info("service.started", service=settings.service, consumers=[c.spec.durable for c in ctx.consumers])
                yield
            finally:
                # Whether stopping or failing to start: every loop is told first, then the stack closes
                # what was opened, last first (consumers drained, the service's resources, relay, database, bus).
                ctx.stop.set()
        log.info("service.stopped", service=settings.service)

    # The OpenAPI document and its UI are routes too: served below, behind the token.
    app = FastAPI(title=title, lifespan=lifespan, version=_version(), openapi_url=None, docs_url=None, redoc_url=None)

    _add_request_logging(app)
    app.add_middleware(BodyLimit, max_bytes=settings.http_max_body_bytes)
    _add_error_handlers(app)
    _add_health_routes(app, settings)

    guard = [Depends(token_checker(settings))]
    for router in routers:
        app.include_router(router, dependencies=guard, responses=error_responses(401))
    # Pages and static files that hold no data (a web page asks for its data with the token).
    for router in public_routers:
        app.include_router(router)

    _document_errors(app)

    @app.get("/openapi.json", include_in_schema=False, dependencies=guard)
    async def openapi() -> JSONResponse:
        """The service's OpenAPI document."""
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=guard)
    async def docs() -> HTMLResponse:
        """Swagger UI (the browser must send the token, e.g. through a proxy or an extension)."""
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{title} API")

    return app


async def _start(ctx: ServiceContext[Any], stack: AsyncExitStack, *, bootstrap: bool, documents: bool) -> None:
    """Connect the bus, ensure streams and buckets, open the database and start its outbox relay, each
    registered on ``stack`` as it is acquired."""
    stack.push_async_callback(ctx.bus.close)  # safe before (or after a failed) connect
    await ctx.bus.connect()
    if bootstrap:
        await ctx.bus.ensure_streams(ALL_STREAMS)
        await ctx.store.ensure_buckets(ALL_BUCKETS)
    if documents:
        # The service's own database, and the relay that publishes what its transactions wrote
        # to the outbox (a request is answered only after it is stored; events follow at least once).
        docs = ctx.docs_ = DocumentStore(ctx.settings.database_url_or_default())
        stack.push_async_callback(docs.close)
        await docs.open()
        relay = asyncio.create_task(OutboxRelay(docs, ctx.bus).run(ctx.stop), name="outbox-relay")
        stack.push_async_callback(_finish, ctx, [relay], 10.0, "relay")


def _start_consumers(ctx: ServiceContext[Any], stack: AsyncExitStack, factory: ConsumerFactory[Any] | None) -> None:
    """Build the service's consumers, give them the store (for payloads too big for a dead letter) and the
    outage patience, register them with the health routes and start them (drained when ``stack`` closes)."""
    ctx.consumers = list(factory(ctx)) if factory else []
    tasks: list[asyncio.Task[None]] = []
    stack.push_async_callback(_finish, ctx, tasks, ctx.settings.drain_timeout_s, "consumer")
    for consumer in ctx.consumers:
        consumer.store = consumer.store or ctx.store
        consumer.patience_s = ctx.settings.outage_patience_s
        ctx.watchdogs.append(consumer.watchdog)
        name = f"consumer:{consumer.spec.durable}"
        ctx.loops[name] = task = asyncio.create_task(consumer.run(ctx.stop), name=name)
        tasks.append(task)


async def _finish(ctx: ServiceContext[Any], tasks: list[asyncio.Task[None]], timeout_s: float, what: str) -> None:
    """Set ``stop``, give ``tasks`` up to ``timeout_s`` to return, cancel the rest, log any that crashed."""
    ctx.stop.set()
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.error(f"{what}.crashed", error=repr(task.exception()))


def _add_request_logging(app: FastAPI) -> None:
    """One canonical log line per request, with a request id bound for everything it logs."""

    @app.middleware("http")
    async def bind_request(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(request_id=request_id, correlation_id=request_id):
            response = await call_next(request)
            response.headers["x-request-id"] = request_id
            log.info(
                "http.request",
                method=request.method,
                path=request.url.path,
                status=response.status_code,
                ms=round((time.perf_counter() - started) * 1000, 1),
            )
            return response


#: What each error status means, for the OpenAPI document (a route may say more with its own ``responses``).
ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Bad request",
    401: "Missing or invalid bearer token (or none configured)",
    403: "The token may only read: this call needs an operate token",
    404: "Not found",
    409: "Refused in the current state",
    413: "Request body larger than the limit",
    503: "A dependency is unavailable",
}


def error_responses(*codes: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status with the :class:`ErrorBody` schema.

    ``descriptions`` override the generic text per status, keyed ``s404="unknown run"``.
    """
    return {
        code: {"model": ErrorBody, "description": descriptions.get(f"s{code}", ERROR_DESCRIPTIONS.get(code, "Error"))}
        for code in codes
    }


def unprocessable(exc: InvalidInputError) -> JSONResponse:
    """The one 422 answer, for every service: every problem, each with where, what and which rule."""
    body = ValidationErrorBody(detail=list(exc.issues), manifest=exc.manifest, sha256=exc.sha256)
    return JSONResponse(status_code=422, content=body.model_dump(mode="json", exclude_none=True))


#: The ``detail`` of FastAPI's 400 for a request body it cannot decode.
_FASTAPI_UNPARSABLE_BODY = "There was an error parsing the body"


def _add_error_handlers(app: FastAPI) -> None:
    """Bad input → 422 naming field and rule (one shape); other errors → ``{detail}``; worldmill errors → 500."""

    @app.exception_handler(RequestValidationError)
    async def request_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return unprocessable(InvalidInputError.from_errors(exc.errors()))

    @app.exception_handler(InvalidInputError)
    async def invalid_input(_: Request, exc: InvalidInputError) -> JSONResponse:
        return unprocessable(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 422:
            items = exc.detail if isinstance(exc.detail, list) else [exc.detail]
            response = unprocessable(InvalidInputError.of(problem_from(item) for item in items))
        elif exc.status_code == 400 and exc.detail == _FASTAPI_UNPARSABLE_BODY:
            # FastAPI's answer to a body it cannot even decode (not UTF-8 JSON): bad input like any other.
            problem = ValidationProblem(loc=["body"], msg="the body is not valid UTF-8 JSON", type="json_invalid")
            response = unprocessable(InvalidInputError.of([problem]))
        else:
            detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
            response = JSONResponse(status_code=exc.status_code, content=ErrorBody(detail=detail).model_dump())
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(WorldmillError)
    async def worldmill_error(_: Request, exc: WorldmillError) -> JSONResponse:
        return JSONResponse(status_code=500, content={"detail": f"{type(exc).__name__}: {exc}"})


_FASTAPI_VALIDATION = "#/components/schemas/HTTPValidationError"


def _document_errors(app: FastAPI) -> None:
    """Make the OpenAPI document describe the 422 the handlers send (not FastAPI's ``HTTPValidationError``)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, routes=app.routes, description=app.description)
        _, defs = models_json_schema(
            [(ValidationErrorBody, "serialization"), (ErrorBody, "serialization")],
            ref_template="#/components/schemas/{model}",
        )
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(defs.get("$defs", {}))
        for schema_name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(schema_name, None)
        too_large = {
            "description": ERROR_DESCRIPTIONS[413],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        }
        read_only = {
            "description": ERROR_DESCRIPTIONS[403],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        }
        for path_item in doc.get("paths", {}).values():
            for method, operation in path_item.items():
                if "requestBody" in operation:  # the body limit (BodyLimit) answers before the route
                    operation.setdefault("responses", {}).setdefault("413", too_large)
                protected = "401" in operation.get("responses", {})
                if protected and method.upper() not in READ_METHODS:  # a read-only token is refused here
                    operation["responses"].setdefault("403", read_only)
                invalid = operation.get("responses", {}).get("422")
                if invalid is None:
                    continue
                content = invalid.setdefault("content", {}).setdefault("application/json", {})
                if content.get("schema", {}).get("$ref") in (None, _FASTAPI_VALIDATION):
                    content["schema"] = {"$ref": "#/components/schemas/ValidationErrorBody"}
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


async def loop_problems(ctx: ServiceContext[Any], *, threshold_s: float) -> dict[str, str]:
    """Work loops that ended before ``stop``, or that are stalled for at least ``threshold_s``: name → reason."""
    problems: dict[str, str] = {}
    if not ctx.stop.is_set():
        for name, task in ctx.loops.items():
            if task.done():
                error = None if task.cancelled() else task.exception()
                problems[name] = f"stopped: {type(error).__name__}: {error}" if error else "stopped"
    stalls = await asyncio.gather(*(dog.check(timeout_s=1.0) for dog in ctx.watchdogs))
    for dog, stall in zip(ctx.watchdogs, stalls, strict=True):
        if stall.seconds >= threshold_s:
            problems.setdefault(dog.name, f"stalled: {stall.reason}")
    return problems


def _add_health_routes(app: FastAPI, settings: RuntimeSettings) -> None:
    """Liveness and readiness, the only routes without a token."""

    @app.get("/healthz", tags=["health"], responses={503: {"description": "A work loop has ended or is stalled"}})
    async def healthz(request: Request) -> JSONResponse:
        """Liveness: the process answers and no work loop has ended or been stuck for ``stall_live_s``."""
        ctx: ServiceContext[Any] | None = getattr(request.app.state, "ctx", None)
        problems = await loop_problems(ctx, threshold_s=settings.stall_live_s) if ctx is not None else {}
        body: dict[str, Any] = {"status": "ok" if not problems else "stalled", "service": settings.service}
        if problems:
            body["loops"] = problems
        return JSONResponse(status_code=200 if not problems else 503, content=body)

    @app.get("/readyz", tags=["health"], responses={503: {"description": "Not ready: each check says why"}})
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: NATS connected, the object store reachable with our credentials, every work loop moving."""
        ctx: ServiceContext[Any] | None = getattr(request.app.state, "ctx", None)
        checks: dict[str, str] = {}
        if ctx is None:
            checks["startup"] = "not finished"
        else:
            checks["nats"] = "ok" if ctx.bus.connected else "disconnected"
            try:
                await asyncio.wait_for(ctx.store.check(), timeout=5)
                checks["s3"] = "ok"
            except (WorldmillError, TimeoutError) as exc:
                checks["s3"] = f"{type(exc).__name__}: {exc}"
            problems = await loop_problems(ctx, threshold_s=settings.stall_ready_s)
            for dog in ctx.watchdogs:
                checks[f"loop:{dog.name}"] = problems.pop(dog.name, "ok")
            checks.update({f"loop:{name}": reason for name, reason in problems.items()})
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            status_code=200 if ready else 503,
            content={"ready": ready, "service": settings.service, "checks": checks},
        )


def _version() -> str:
    return package_version()


def run_service(app: FastAPI, settings: RuntimeSettings) -> None:
    """Serve the app with uvicorn until SIGINT/SIGTERM, logging through structlog."""
    configure_logging(settings.log_level, settings.log_json, service=settings.service)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.drain_timeout_s),
    )
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run()
