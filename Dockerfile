# parkmon services image (gateway, streams worker, alerts): `docker compose build`.
# The command is the parkmon subcommand, e.g. `docker run parkmon:latest gateway`.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# dependencies first (cached layer), then the code
COPY pyproject.toml README.md ./
COPY parkmon/__init__.py parkmon/__init__.py
RUN pip install --upgrade pip && pip install . && pip uninstall -y parkmon
COPY parkmon ./parkmon
COPY ingest ./ingest
COPY streams ./streams
COPY alerts ./alerts
COPY simulators ./simulators
COPY grafana ./grafana
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home-dir /var/lib/parkmon parkmon \
    && mkdir -p /var/lib/parkmon && chown parkmon /var/lib/parkmon

USER parkmon
VOLUME ["/var/lib/parkmon"]
ENTRYPOINT ["parkmon"]
CMD ["--help"]
