# susee as a container that runs next to MariaDB.
#   docker build -t susee .
#   docker run --rm -v $PWD/site.yaml:/etc/susee/site.yaml:ro \
#       -v susee-spool:/var/lib/susee/spool \
#       -e SUSEE_DATABASE__PASSWORD=... susee
# Secrets may also be mounted in /run/secrets (file susee_database__password).
# The spool (rows kept while the database is down) must outlive the container: a volume.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY migrations ./migrations
RUN pip install --no-cache-dir . && rm -rf /src

# Unprivileged user; sampling needs no privileges, only outbound Modbus/TCP.
RUN useradd --system --home-dir /var/lib/susee --create-home susee
USER susee
WORKDIR /var/lib/susee
# The config folder is a read-only mount: the spool lives in the user's home.
ENV SUSEE_SPOOL__PATH=/var/lib/susee/spool

ENTRYPOINT ["susee"]
CMD ["run", "--config", "/etc/susee/site.yaml"]
