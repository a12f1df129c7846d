# susee as a container that runs next to MariaDB.
#   docker build -t susee .
#   docker run --rm -v $PWD/site.yaml:/etc/susee/site.yaml:ro \
#       -e SUSEE_DATABASE__PASSWORD=... susee
# Secrets may also be mounted in /run/secrets (file susee_database__password).
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

ENTRYPOINT ["susee"]
CMD ["run", "--config", "/etc/susee/site.yaml"]
