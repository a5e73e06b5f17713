#!/bin/sh
# Entrypoint of container/postgres.Dockerfile: on first start (an empty PGDATA) make the cluster,
# the role POSTGRES_USER with the password read from POSTGRES_PASSWORD_FILE (never from the
# environment or the command line) and its database POSTGRES_DB; then run PostgreSQL as PID 1,
# user postgres. Connections: any address, SCRAM-SHA-256 only (a private compose network; across
# hosts, add TLS: ssl=on and hostssl lines).
set -eu
if [ "$(id -u)" = 0 ]; then
  install -d -o postgres -g postgres -m 0700 "$PGDATA"
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    [ -s "$POSTGRES_PASSWORD_FILE" ] || { echo "postgres: $POSTGRES_PASSWORD_FILE is missing or empty" >&2; exit 2; }
    case "$POSTGRES_USER$POSTGRES_DB" in *[!a-z0-9_]*) echo "postgres: user and database names: a-z, 0-9, _" >&2; exit 2;; esac
    as_postgres="setpriv --reuid=postgres --regid=postgres --init-groups"
    $as_postgres initdb --pgdata="$PGDATA" --username=postgres --encoding=UTF8 --locale=C.UTF-8 \
      --auth-local=peer --auth-host=scram-sha-256 >/dev/null
    printf "listen_addresses = '*'\npassword_encryption = 'scram-sha-256'\n" >> "$PGDATA/postgresql.conf"
    printf 'host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
    # The password as an SQL literal (quotes doubled), fed on stdin to a single-user backend: it
    # appears in no process list or log; PostgreSQL stores its SCRAM verifier only.
    password="$(head -n 1 "$POSTGRES_PASSWORD_FILE" | sed "s/'/''/g")"
    # Its messages are shown without any line that could quote the statement.
    errors="$(printf "CREATE ROLE %s LOGIN PASSWORD '%s';\n\nCREATE DATABASE %s OWNER %s;\n\n" \
      "$POSTGRES_USER" "$password" "$POSTGRES_DB" "$POSTGRES_USER" \
      | $as_postgres postgres --single -D "$PGDATA" -j postgres 2>&1 >/dev/null | grep -v -i -e password -e statement || true)"
    unset password
    case "$errors" in *ERROR*|*FATAL*) echo "postgres: $errors" >&2; rm -rf "${PGDATA:?}"/*; exit 2;; esac
    echo "postgres: cluster made, role and database $POSTGRES_DB created" >&2
  fi
  exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA"
fi
exec postgres -D "$PGDATA"
