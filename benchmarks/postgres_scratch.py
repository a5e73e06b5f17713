"""Throw-away PostgreSQL schemas for tests and benchmarks (not part of the product)."""

from __future__ import annotations

import uuid
from contextlib import contextmanager

import psycopg
from psycopg import sql

from vault.store.postgres import with_schema


@contextmanager
def scratch_schema(url: str, prefix: str = "vault_scratch"):
    """A fresh, empty schema; dropped with everything in it afterwards. Yields the URL that points
    at it (vault.store.postgres.with_schema)."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield with_schema(url, schema)
    finally:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
