# Cosmos-Transfer2.5 native worker: NVIDIA's cosmos-transfer2.5 at a pinned commit, plus worldmill's
# worker program (docker/native_transfer_worker.py, standard library only) in front of it.
# NOT BUILT OR RUN in worldmill's CI or development environment (no GPU there); see docs/native-transfer.md.
#
#   docker build -f docker/cosmos-transfer-native.Dockerfile -t worldmill/transfer-native docker/
#   docker run --gpus all -p 8700:8700 -v hf:/root/.cache/huggingface -e HF_TOKEN worldmill/transfer-native
#   # 8 GPUs, context parallel:  ... worldmill/transfer-native torchrun --nproc_per_node=8 \
#   #     /opt/worldmill/native_transfer_worker.py --port 8700
ARG COSMOS_TRANSFER_COMMIT=2ff49d0717af02057ae79bc75c00fbff9da1b4e7
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04
ARG COSMOS_TRANSFER_COMMIT
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl ffmpeg git git-lfs \
    && rm -rf /var/lib/apt/lists/*
COPY --from=ghcr.io/astral-sh/uv:0.8.12 /uv /uvx /usr/local/bin/
ENV UV_LINK_MODE=copy
# NVIDIA's code, at the pinned commit, installed with NVIDIA's own lockfile (their pins, not ours).
RUN git clone https://github.com/nvidia-cosmos/cosmos-transfer2.5.git /workspace \
    && cd /workspace && git checkout ${COSMOS_TRANSFER_COMMIT} && git lfs pull || true
WORKDIR /workspace
RUN uv sync --locked --extra=cu128
ENV PATH="/workspace/.venv/bin:$PATH" \
    COSMOS_TRANSFER_COMMIT=${COSMOS_TRANSFER_COMMIT}
COPY native_transfer_worker.py /opt/worldmill/native_transfer_worker.py
EXPOSE 8700
VOLUME ["/spool"]
# edge/distilled needs COSMOS_EXPERIMENTAL_CHECKPOINTS=1 and --model edge/distilled.
CMD ["python", "/opt/worldmill/native_transfer_worker.py", "--port", "8700", "--root", "/spool"]
