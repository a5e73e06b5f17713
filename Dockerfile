# vault server image: Python 3.11, the locked environment, `vault serve` as PID 1, non-root.
#
#   docker build -t vault .
#   docker run -p 50051:50051 \
#     -v vault-data:/var/lib/vault \                          # database (state directory)
#     -v vault-keys:/var/lib/vault-keys \                     # key file: its own volume, never the data's
#     -v $PWD/site/pki:/etc/vault/pki:ro \                    # ca.crt, server.crt, server.key, healthcheck.crt/.key
#     -v $PWD/site/secrets/passphrase:/run/secrets/vault-key-passphrase:ro \
#     vault
#
# The key file is sealed under the passphrase mounted as a secret (or use an HSM: --hsm-module and
# VAULT_HSM_PIN_FILE); an unsealed key file is refused with TLS. Metrics stay on loopback.
FROM python:3.11-slim-bookworm

RUN python3 -m pip install --no-cache-dir uv==0.9.* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin vault \
 && install -d -o vault -g vault -m 0700 /var/lib/vault /var/lib/vault-keys
WORKDIR /app

# Dependencies first: a code change does not reinstall them.
COPY pyproject.toml uv.lock README.md ./
COPY clients/python/pyproject.toml clients/python/README.md ./clients/python/
RUN uv sync --locked --no-dev --no-install-workspace --no-cache
COPY protos ./protos
COPY clients/python ./clients/python
COPY vault ./vault
RUN uv sync --locked --no-dev --no-cache && chown -R vault:vault /app

USER vault
ENV VAULT_STATE_DIR=/var/lib/vault \
    VAULT_KEY_FILE=/var/lib/vault-keys/keys.json \
    VAULT_KEY_PASSPHRASE_FILE=/run/secrets/vault-key-passphrase \
    PATH=/app/.venv/bin:$PATH
VOLUME ["/var/lib/vault", "/var/lib/vault-keys"]
EXPOSE 50051
# Through the gRPC health service, with a client certificate of the site's CA (any tenant and role).
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
  CMD ["vault", "health", "--server", "127.0.0.1:50051", "--tls-dir", "/etc/vault/pki", "--identity", "healthcheck"]
# exec form: vault is PID 1 and gets SIGTERM directly (graceful drain, vault/server.py).
CMD ["vault", "serve", "--tls-dir", "/etc/vault/pki", "--listen", "0.0.0.0:50051", \
     "--metrics-listen", "127.0.0.1:9464"]
