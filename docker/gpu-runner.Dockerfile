# The GPU image of worldmill: `worldmill serve gpu-runner` with CUDA torch and the model libraries.
#
#   docker build -f docker/gpu-runner.Dockerfile -t worldmill-gpu-runner .    (context: the repo root)
#
# Why torch is not the one pyproject.toml pins for development:
#   The `models` extra pins `torch==2.13.0` exactly. On a developer machine and in CI that pin resolves
#   to the local CPU wheel (2.13.0+cpu). Here we want the CUDA build, and we want to choose which
#   CUDA: plain PyPI would hand out its own default CUDA variant, several GB, whichever that is.
#   So torch is installed first from the PyTorch CUDA index (TORCH_INDEX_URL), the same version as
#   the pin, and every later install runs with a constraint that keeps it. If TORCH_VERSION ever
#   disagrees with the `models` pin, pip cannot satisfy both and the build fails loudly instead
#   of silently swapping torch.
#
# cu129 (CUDA 12.9) runs on CUDA 12 drivers and matches vllm/vllm-openai:*-cu129 in compose.yaml,
# so one host driver serves both GPU containers. For CUDA 13 (driver 580+) use a 13.x base image
# and https://download.pytorch.org/whl/cu130 together.

ARG CUDA_IMAGE=nvidia/cuda:12.9.1-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}

ARG TORCH_VERSION=2.13.0
# The torchvision release built against TORCH_VERSION (tests/test_gpu_image.py keeps the pair right).
# With it the Cosmos diffusers code runs its real transforms; the CPU stand-in
# (gpu_runner/backends/torchvision_stand_in.py) is for CPU machines without torchvision only.
ARG TORCHVISION_VERSION=0.28.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu129
# The model libraries, pinned for a reproducible image (latest releases when this file was
# written). Cosmos-Reason1 needs transformers >= 4.51.3.
ARG MODEL_LIBS="diffusers==0.42.1 transformers==5.23.0 accelerate==1.15.0"

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CONSTRAINT=/etc/pip-constraints.txt \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/var/cache/huggingface

# Ubuntu 24.04's python3 is 3.12 (the project needs >= 3.11). procps gives pgrep, which the
# compose healthcheck uses while the runner has no HTTP endpoint.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates procps \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && touch /etc/pip-constraints.txt

# Step 1: CUDA torch from the PyTorch index, then pin it for every later pip call (PIP_CONSTRAINT).
# `torch==2.13.0` matches the installed 2.13.0+cu129: pip ignores the local label in `==`.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
    && printf 'torch==%s\ntorchvision==%s\n' "${TORCH_VERSION}" "${TORCHVISION_VERSION}" > /etc/pip-constraints.txt \
    && python -c "import torch, torchvision; assert torch.version.cuda, 'torch has no CUDA: ' + torch.__version__"

WORKDIR /src

# Step 2: the other dependencies (`dependencies` + video + models, as `pip install ".[video,models]"`
# would install them) and the model libraries. Rebuilt only when pyproject.toml changes.
ARG EXTRAS=video,models
COPY pyproject.toml ./
RUN python -c 'import sys, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; extras = [e for e in sys.argv[1].split(",") if e]; print("\n".join(p["dependencies"] + [d for e in extras for d in p["optional-dependencies"][e]]))' "$EXTRAS" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt ${MODEL_LIBS} \
    && rm /tmp/requirements.txt

# Step 3: the package itself.
COPY README.md ./
COPY contracts/ contracts/
COPY services/ services/
COPY gpu-runner/ gpu-runner/
RUN pip install --no-deps ".[${EXTRAS}]" \
    && pip check \
    && worldmill --help > /dev/null \
    && python -c "from worldmill.gpu_runner.backends.torchvision_stand_in import apply_torchvision_stand_in as stand_in; assert not stand_in(), 'the torchvision stand-in is active in the GPU image'"

RUN groupadd --system --gid 10001 worldmill \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/worldmill --create-home \
        --shell /usr/sbin/nologin worldmill \
    && mkdir -p "${HF_HOME}" \
    && chown 10001:10001 "${HF_HOME}"
USER 10001:10001
WORKDIR /var/lib/worldmill

# No ENTRYPOINT: compose's `command` is the whole argv (`worldmill serve gpu-runner`).
CMD ["worldmill", "serve", "gpu-runner"]
