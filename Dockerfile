# callbridge: one instance per container (DESIGN.md §10). Build: docker build -t callbridge .
# Installed by scripts/install.sh, the same script `make` runs for the tests.
FROM python:3.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/callbridge/bin:$PATH \
    CALLBRIDGE_HOST=0.0.0.0 \
    CALLBRIDGE_PORT=8080 \
    CALLBRIDGE_DATA_DIR=/data \
    CALLBRIDGE_ASSISTANT=/app/examples/assistant.yaml

WORKDIR /app
COPY pyproject.toml README.md ./
COPY scripts/install.sh scripts/fetch_smart_turn.py scripts/
COPY src src
RUN bash scripts/install.sh venv /opt/callbridge
COPY examples examples

# Non-root, with a writable data dir (SQLite, recordings, the generated stream secret).
RUN useradd --system --uid 10001 --home-dir /data --create-home callbridge
USER 10001
RUN mkdir -p /data/recordings

EXPOSE 8080
# SIGTERM drains: readiness turns 503, live calls run to their end (up to
# CALLBRIDGE_DRAIN_TIMEOUT_S, default 600 s), then the process exits 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]

# One instance per container; run more containers (or pods) to use more cores.
CMD ["callbridge", "serve", "--workers", "1"]
