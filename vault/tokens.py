"""API tokens: `vt_<token id>.<secret>`, sent as `authorization: Bearer <token>` call metadata.

The secret is 32 random bytes; the store keeps only its argon2id hash (argon2-cffi), verified in
constant time. A verified token is remembered in memory for a few seconds (argon2 is deliberately
slow), but its revocation status is read from the store on every call.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from vault.audit import AuditEntry
from vault.exceptions import NotFound, Unauthenticated
from vault.store.base import TemplateStore, TokenRow

PREFIX = "vt_"
CACHE_SECONDS = 30.0
_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile defaults


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    tenant: str
    role: str
    name: str
    created_at: float
    revoked_at: float | None


class TokenRegistry:
    def __init__(self, store: TemplateStore):
        self.store = store
        self._verified: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def create(self, tenant: str, role: str, name: str, audit: AuditEntry) -> tuple[str, TokenInfo]:
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        row = TokenRow(token_id, tenant, role, name, _hasher.hash(secret), time.time())
        audit.detail = f"token {token_id} role={role} name={name}"
        self.store.insert_token(row, audit)
        return f"{PREFIX}{token_id}.{secret}", info_of(row)

    def list(self, tenant: str) -> list[TokenInfo]:
        return [info_of(row) for row in self.store.tokens(tenant)]

    def revoke(self, tenant: str, token_id: str, audit: AuditEntry) -> None:
        audit.detail = f"token {token_id} revoked"
        if not self.store.revoke_token(tenant, token_id, time.time(), audit):
            raise NotFound("no live token with that id")
        with self._lock:
            self._verified.pop(token_id, None)

    def authenticate(self, token: str) -> TokenInfo:
        """The token's identity, or Unauthenticated. Never says which part was wrong."""
        refused = Unauthenticated("invalid or revoked token")
        if not token.startswith(PREFIX) or "." not in token or len(token) > 200:
            raise refused
        token_id, secret = token[len(PREFIX):].split(".", 1)
        row = self.store.token(token_id)
        if row is None or row.revoked_at is not None:
            raise refused
        fingerprint = hashlib.sha256(secret.encode()).digest()
        with self._lock:
            cached = self._verified.get(token_id)
        if cached and cached[1] > time.monotonic() and hmac.compare_digest(cached[0], fingerprint):
            return info_of(row)
        try:
            _hasher.verify(row.secret_hash, secret)
        except (VerificationError, InvalidHashError):
            raise refused from None
        with self._lock:
            self._verified[token_id] = (fingerprint, time.monotonic() + CACHE_SECONDS)
        return info_of(row)


def info_of(row: TokenRow) -> TokenInfo:
    return TokenInfo(row.token_id, row.tenant, row.role, row.name, row.created_at, row.revoked_at)
