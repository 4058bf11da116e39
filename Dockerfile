# Three images from one file, as the layers install apart:
#   docker build --target api -t lmtune-api .        the HTTP API: no torch, small, starts fast
#   docker build --target worker -t lmtune-worker .  the trainer; torch with CUDA (PyPI's build on Linux x86_64)
#   docker build --target models -t lmtune-models .  the model server (torch and an HTTP server)
# Every package comes from the lock (requirements/, docs/dependencies.md) at its pinned version and
# hash. torch is the accelerator's build, named by TORCH: PyPI's torch==2.13.0 carries CUDA on
# Linux x86_64; the lock's CPU build is TORCH="-r requirements/torch.txt" with
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu.
FROM python:3.11-slim AS base
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ARG TORCH="torch==2.13.0"
ARG PIP_EXTRA_INDEX_URL=""
COPY requirements requirements
COPY pyproject.toml README.md ./
COPY lmtune lmtune
COPY service service
COPY workers workers
COPY cli cli
COPY configs configs
ENV LMTUNE_DATA_DIR=/data
# the service's files are private to its user
RUN useradd --create-home --uid 1000 lmtune && mkdir /data && chown lmtune /data

FROM base AS api
# lmtune[api] as locked; editable: configs/ is read from /app
RUN pip install --no-cache-dir --no-deps --require-hashes -r requirements/api.txt && pip install --no-cache-dir --no-deps -e .
USER lmtune
CMD ["lmtune", "serve", "--host", "0.0.0.0", "--port", "8000"]

FROM base AS worker
# lmtune[worker,trackers] as locked (the `cosine` grader's embedding model included), after torch
# (whose own CUDA packages its build pins)
RUN pip install --no-cache-dir $TORCH \
    && pip install --no-cache-dir --no-deps --require-hashes -r requirements/worker.txt -r requirements/trackers.txt \
    && pip install --no-cache-dir --no-deps -e .
USER lmtune
CMD ["lmtune", "worker"]

FROM base AS models
# lmtune[api,worker] as locked, after torch
RUN pip install --no-cache-dir $TORCH \
    && pip install --no-cache-dir --no-deps --require-hashes -r requirements/api.txt -r requirements/worker.txt \
    && pip install --no-cache-dir --no-deps -e .
USER lmtune
CMD ["lmtune", "serve-models", "--host", "0.0.0.0", "--port", "8001"]
