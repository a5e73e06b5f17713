# PostgreSQL for compose.yaml: Debian 12's `postgresql` package on the same local base as the
# server's image (container/base-image.sh), so no registry is needed.
#
#   podman build --format docker -t vault-postgres -f container/postgres.Dockerfile container
#
# First start: a cluster in /var/lib/postgresql/data (a volume), a role POSTGRES_USER (not a
# superuser) with the password in the file POSTGRES_PASSWORD_FILE (SCRAM-SHA-256), and a database
# POSTGRES_DB it owns (container/postgres-entrypoint.sh). Later starts use the cluster as it is.
ARG BASE=localhost/vault-base:bookworm
FROM ${BASE}
# postgresql-common would make a cluster "main" at install: drop it, the entrypoint makes its own.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null \
 && pg_dropcluster 15 main \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data \
 && install -d -o postgres -g postgres -m 2775 /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV PATH=/usr/lib/postgresql/15/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data POSTGRES_USER=vault POSTGRES_DB=vault \
    POSTGRES_PASSWORD_FILE=/run/secrets/postgres-password
VOLUME ["/var/lib/postgresql/data"]
EXPOSE 5432
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["pg_isready", "--quiet", "--host", "127.0.0.1"]
# SIGINT: PostgreSQL's fast shutdown (SIGTERM would wait for every client to leave).
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
