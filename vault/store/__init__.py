"""Template store: the interface the service uses, and its SQLite (embedded) implementation.

What is stored per template: ids, metadata, a random salt and the AES-GCM sealed IoM code. Never an
image, a feature vector or an unsealed code.
"""

from vault.store.base import LIVE, REVOKED, TemplateRow, TemplateStore

__all__ = ["LIVE", "REVOKED", "TemplateRow", "TemplateStore", "open_store"]


def open_store(url: str, audit_key: bytes | None = None) -> TemplateStore:
    """`sqlite:///path/to/vault.db` or a path (embedded); `postgresql://...` (scale-out). Without
    the audit key the store cannot append audit records (backup and restore need none)."""
    if url.startswith(("postgresql://", "postgres://")):
        from vault.store.postgres import PostgresStore

        return PostgresStore(url, audit_key)
    from vault.store.sqlite import SqliteStore

    return SqliteStore(url.removeprefix("sqlite:///"), audit_key)
