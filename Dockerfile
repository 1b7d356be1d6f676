# liverank worker, CPU. Build: docker build -t liverank:0.1.0 .
# The model package is baked in at /app/models (LIVERANK_MODEL_PATH=/app/models/seqrank-1); mount a
# volume over /app/models to serve another without rebuilding.
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY schemas ./schemas
RUN python -m venv /opt/venv && /opt/venv/bin/pip install .

FROM python:3.11-slim-bookworm
# libgomp: faiss and onnxruntime use OpenMP.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 liverank \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin liverank \
    && mkdir -p /var/lib/liverank && chown 10001:10001 /var/lib/liverank
COPY --from=build /opt/venv /opt/venv
COPY models /app/models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LIVERANK_MODEL_PATH=/app/models/seqrank-1 \
    LIVERANK_DATA_DIR=/var/lib/liverank \
    LIVERANK_HTTP_HOST=0.0.0.0 \
    LIVERANK_HTTP_PORT=8080
WORKDIR /app
USER 10001:10001
EXPOSE 8080
# SIGTERM reaches python directly (exec form): the worker flushes, commits and leaves the group.
ENTRYPOINT ["python", "-m", "app"]
CMD ["worker"]
