# vault server image: Debian 12's Python 3.11, the locked environment, `vault serve` as PID 1,
# numeric non-root user, code owned by root (read-only to the server; run with --read-only).
#
# The base is made locally from Debian packages, no registry needed (container/base-image.sh);
# any Debian 12 image with python3 and python3-venv does (--build-arg BASE=debian:bookworm-slim
# plus those two packages). README "Container image" for the volumes, certificates and secrets:
#
#   container/base-image.sh                                # localhost/vault-base:bookworm
#   podman build --format docker -t vault .                # docker format: keeps the HEALTHCHECK
#
# Ports: 50051 mutual TLS (client certificates, tokens with them), 50052 TLS for token-only
# clients and the health check (no client certificate asked), 9464 Prometheus /metrics (publish
# it to the scrape network only).
ARG BASE=localhost/vault-base:bookworm

FROM ${BASE} AS build
ARG UV_VERSION=0.13.9
# Never a downloaded interpreter: the base's /usr/bin/python3.11 is the one the image runs. pip and
# uv trust the system CA bundle (a build behind a TLS-inspecting proxy mounts the host's over it:
# -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro).
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    UV_PYTHON_DOWNLOADS=never UV_PYTHON=/usr/bin/python3.11 UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"
WORKDIR /src
# Dependencies first: a code change does not reinstall them. (A build may mount a uv cache at
# /root/.cache/uv: `podman build -v "$(uv cache dir)":/root/.cache/uv ...`, as the e2e test does.)
COPY pyproject.toml uv.lock README.md ./
COPY clients/python/pyproject.toml clients/python/README.md ./clients/python/
RUN /opt/uv/bin/uv sync --locked --no-dev --no-install-workspace
COPY protos ./protos
COPY clients/python ./clients/python
COPY vault ./vault
# --no-editable: vault and vault_client go into the environment itself; /src is not needed after.
RUN /opt/uv/bin/uv sync --locked --no-dev --no-editable \
 && /app/.venv/bin/python -c "import vault.server, vault_client.v1.vault_pb2"

FROM ${BASE}
# The environment as root's files (0755/0644): the server's user reads it and can change nothing.
COPY --from=build /app/.venv /app/.venv
# Only the two volumes' mount points belong to the server's user; created empty, so named volumes
# start with that owner.
RUN install -d -o 10001 -g 10001 -m 0700 /var/lib/vault /var/lib/vault-keys
USER 10001:10001
WORKDIR /var/lib/vault
ENV VAULT_STATE_DIR=/var/lib/vault \
    VAULT_KEY_FILE=/var/lib/vault-keys/keys.json \
    VAULT_KEY_PASSPHRASE_FILE=/run/secrets/vault-key-passphrase \
    VAULT_TLS_DIR=/etc/vault/tls \
    VAULT_LOG_FORMAT=json \
    HOME=/tmp NUMBA_CACHE_DIR=/tmp/numba PYTHONDONTWRITEBYTECODE=1 \
    PATH=/app/.venv/bin:/usr/sbin:/usr/bin:/sbin:/bin
VOLUME ["/var/lib/vault", "/var/lib/vault-keys"]
EXPOSE 50051 50052 9464
# The gRPC health service over the token port's TLS: the site CA (ca.crt, already mounted for the
# server) is all it needs; no client certificate or key is mounted for it.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
  CMD ["vault", "health", "--server", "localhost:50052"]
# exec form: vault is PID 1 and gets SIGTERM directly (graceful drain, vault/server.py).
CMD ["vault", "serve", "--listen", "0.0.0.0:50051", "--token-listen", "0.0.0.0:50052", \
     "--metrics-listen", "0.0.0.0:9464"]
