"""Template store: the interface the service uses, and its SQLite (embedded) implementation.

What is stored per template: ids, metadata, a random salt and the AES-GCM sealed IoM code. Never an
image, a feature vector or an unsealed code.
"""

from vault.store.base import LIVE, REVOKED, TemplateRow, TemplateStore

__all__ = ["LIVE", "REVOKED", "TemplateRow", "TemplateStore", "open_reader", "open_store"]


def open_store(url: str, audit_key: bytes | None = None) -> TemplateStore:
    """`sqlite:///path/to/vault.db` or a path (embedded); `postgresql://...` (scale-out). Without
    the audit key the store cannot append audit records (backup and restore need none)."""
    if url.startswith(("postgresql://", "postgres://")):
        from vault.store.postgres import PostgresStore

        return PostgresStore(url, audit_key)
    from vault.store.sqlite import SqliteStore

    return SqliteStore(url.removeprefix("sqlite:///"), audit_key)


def open_reader(url: str) -> TemplateStore:
    """A store that only reads, with one connection and no migration: a start-up worker's
    (vault.startup), on a store the server has opened (its `reader_url`)."""
    if url.startswith(("postgresql://", "postgres://")):
        from vault.store.postgres import PostgresStore

        return PostgresStore(url, None, max_connections=1, migrate=False)
    from vault.store.sqlite import SqliteStore

    store = SqliteStore(url.removeprefix("sqlite:///"), None, migrate=False)
    # Pages read through a memory map, not a system call a page (SQLite maps at most its build's
    # limit, 2 GiB here): a 4 KiB sealed code spans two pages. Only readers map; writes go as before.
    store.database.connection.execute("PRAGMA mmap_size = 68719476736")
    return store
