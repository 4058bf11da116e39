# One image for the API and the workers. The default torch wheel on Linux x86_64 carries CUDA.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY lmtune lmtune
COPY service service
COPY workers workers
COPY configs configs
RUN pip install --no-cache-dir torch && pip install --no-cache-dir -e .
ENV LMTUNE_DATA_DIR=/data
