# susee as a container that runs next to MariaDB (see README, "Deployment").
#   docker build -t susee .
#   docker run --rm --network host -v $PWD/site.yaml:/etc/susee/site.yaml:ro \
#       -v susee-spool:/var/lib/susee/spool \
#       -v $PWD/secrets/susee_database__password:/run/secrets/susee_database__password:ro susee
# (or -e SUSEE_DATABASE__PASSWORD=...): no secret is ever baked into the image.
# Where no registry is reachable, build on a local base with Python 3.10+ and
# pip first on PATH: docker build --build-arg BASE=localhost/susee-base .
ARG BASE=python:3.12-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY migrations ./migrations
# The web extra: the live page, /healthz and /metrics (http: settings).
RUN pip install --no-cache-dir ".[web]" && rm -rf /src

# Unprivileged user; sampling needs no privileges, only outbound Modbus/TCP.
RUN useradd --system --home-dir /var/lib/susee --create-home susee \
    && mkdir -p /var/lib/susee/spool /etc/susee && chown susee:susee /var/lib/susee/spool
USER susee
WORKDIR /var/lib/susee
# The config folder is a read-only mount: the spool (rows kept while the
# database is down) lives on a volume, so that it outlives the container.
ENV SUSEE_SPOOL__PATH=/var/lib/susee/spool
VOLUME ["/var/lib/susee/spool"]

# The service's HTTP endpoint (setting http.listen, default 127.0.0.1:8050):
# /healthz answers 200 while the event loop runs and the service is not
# stopping. Set SUSEE_HEALTHZ_URL when http.listen is elsewhere. No HTTP
# client in the image: Python's urllib.
ENV SUSEE_HEALTHZ_URL=http://127.0.0.1:8050/healthz
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['SUSEE_HEALTHZ_URL'], timeout=4)"]

# susee stops cleanly on SIGTERM (flushes its queue, spills the rest to the
# spool) within shutdown_timeout (10 s by default): give docker stop more,
# e.g. docker stop -t 30, or stop_grace_period in compose.
STOPSIGNAL SIGTERM
ENTRYPOINT ["susee"]
CMD ["run", "--config", "/etc/susee/site.yaml"]
