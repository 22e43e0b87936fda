# sync-worker: one image for every role (receiver, worker, scheduler); the CLI is the entry point.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sync_worker ./sync_worker
COPY connectors ./connectors
COPY mappings ./mappings
RUN pip install --no-cache-dir --upgrade pip build \
 && python -m build --wheel --outdir /dist .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SYNC_LOG_FORMAT=json
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin sync
COPY --from=build /dist/*.whl /tmp/
RUN pip install --no-cache-dir /tmp/*.whl && rm /tmp/*.whl
# Health checks of the roles that serve no HTTP (worker, scheduler) and the migration gate.
COPY deploy/healthcheck.py /opt/sync-worker/healthcheck.py
USER sync
WORKDIR /home/sync
EXPOSE 8000
# The receiver's check; the worker and scheduler services set their own (healthcheck.py).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"
ENTRYPOINT ["sync-worker"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
