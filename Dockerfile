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
EXPOSE 50051
# Plaintext is refused off loopback: give the server TLS certificates to listen on 0.0.0.0.
CMD ["uv", "run", "--no-dev", "vault", "serve", "--listen", "127.0.0.1:50051"]
