# Mirrors the README's install: Python 3.11, uv, the locked environment, then `vault serve`.
FROM python:3.11-slim-bookworm
WORKDIR /app
RUN python3 -m pip install --no-cache-dir uv
COPY pyproject.toml uv.lock README.md build_protos.py ./
COPY protos ./protos
COPY vault ./vault
RUN uv sync --locked --no-dev
ENV VAULT_STATE_DIR=/var/lib/vault
VOLUME /var/lib/vault
EXPOSE 50051 9464
# Mutual TLS: mount ca.crt, server.crt and server.key (e.g. from `vault pki init`) at /etc/vault/pki,
# and give the key-file passphrase as VAULT_KEY_PASSPHRASE or VAULT_KEY_PASSPHRASE_FILE.
CMD ["uv", "run", "--no-dev", "vault", "serve", "--tls-dir", "/etc/vault/pki", "--listen", "0.0.0.0:50051", \
     "--metrics-listen", "0.0.0.0:9464"]
