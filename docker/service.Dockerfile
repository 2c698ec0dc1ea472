# The CPU image of worldmill: one image for prompt, upsample, generate, augment, qa and catalog.
# compose.yaml picks the service with `command: ["worldmill", "serve", "<name>", ...]`.
#
#   docker build -f docker/service.Dockerfile -t worldmill-service .     (context: the repo root)
#
# No torch here: the services never import it (import-linter forbids it outside the gpu-runner),
# so the `models` extra stays out and the image stays small.

FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# The venv belongs to root and is read-only for the user the services run as.
RUN python -m venv /opt/venv

WORKDIR /src

# Step 1: the dependencies only, read from pyproject.toml. This layer is rebuilt only when
# pyproject.toml changes, not on every source edit. The list is `dependencies` plus the extras
# below, i.e. what `pip install ".[video,postgres]"` would install.
ARG EXTRAS=video,postgres
COPY pyproject.toml ./
RUN python -c 'import sys, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; extras = [e for e in sys.argv[1].split(",") if e]; print("\n".join(p["dependencies"] + [d for e in extras for d in p["optional-dependencies"][e]]))' "$EXTRAS" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Step 2: the package itself (its dependencies are already there, hence --no-deps), then prove
# that nothing is missing and that the CLI starts.
COPY README.md ./
COPY contracts/ contracts/
COPY services/ services/
COPY gpu-runner/ gpu-runner/
RUN pip install --no-deps ".[${EXTRAS}]" \
    && pip check \
    && worldmill --help > /dev/null

# An unprivileged user with a fixed uid (Kubernetes runAsNonRoot wants a numeric USER).
# WM_DATA_DIR in compose.yaml points at its home.
RUN groupadd --system --gid 10001 worldmill \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/worldmill --create-home \
        --shell /usr/sbin/nologin worldmill
USER 10001:10001
WORKDIR /var/lib/worldmill

EXPOSE 8000

# No ENTRYPOINT on purpose: compose's `command` is the whole argv (`worldmill serve <name> ...`),
# and `worldmill` runs as PID 1 or under compose's `init: true`. It handles SIGTERM by draining.
CMD ["worldmill", "--help"]
