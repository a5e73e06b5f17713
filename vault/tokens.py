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
    def __init__(self, store):
        self.store = store
        self._verified: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def create(self, tenant: str, role: str, name: str, audit: AuditEntry) -> tuple[str, TokenInfo]:
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        info = TokenInfo(token_id, tenant, role, name, time.time(), None)
        with self.store._audit_lock, self.store._transaction() as cur:
            self.store._execute(
                cur, "INSERT INTO tokens (token_id, tenant, role, name, secret_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (token_id, tenant, role, name, _hasher.hash(secret), info.created_at))
            audit.detail = f"token {token_id} role={role} name={name}"
            self.store._append_audit(cur, audit)
        return f"{PREFIX}{token_id}.{secret}", info

    def list(self, tenant: str) -> list[TokenInfo]:
        with self.store._transaction() as cur:
            rows = self.store._execute(
                cur, "SELECT token_id, tenant, role, name, created_at, revoked_at FROM tokens WHERE tenant = ? ORDER BY created_at",
                (tenant,)).fetchall()
        return [TokenInfo(*row) for row in rows]

    def revoke(self, tenant: str, token_id: str, audit: AuditEntry) -> None:
        with self.store._audit_lock, self.store._transaction() as cur:
            cur = self.store._execute(cur, "UPDATE tokens SET revoked_at = ? WHERE tenant = ? AND token_id = ? AND revoked_at IS NULL",
                                      (time.time(), tenant, token_id))
            if cur.rowcount != 1:
                raise NotFound("no live token with that id")
            audit.detail = f"token {token_id} revoked"
            self.store._append_audit(cur, audit)
        with self._lock:
            self._verified.pop(token_id, None)

    def authenticate(self, token: str) -> TokenInfo:
        """The token's identity, or Unauthenticated. Never says which part was wrong."""
        refused = Unauthenticated("invalid or revoked token")
        if not token.startswith(PREFIX) or "." not in token or len(token) > 200:
            raise refused
        token_id, secret = token[len(PREFIX):].split(".", 1)
        with self.store._transaction() as cur:
            row = self.store._execute(
                cur, "SELECT token_id, tenant, role, name, created_at, revoked_at, secret_hash FROM tokens WHERE token_id = ?",
                (token_id,)).fetchone()
        if row is None or row[5] is not None:
            raise refused
        info, secret_hash = TokenInfo(*row[:6]), row[6]
        fingerprint = hashlib.sha256(secret.encode()).digest()
        with self._lock:
            cached = self._verified.get(token_id)
        if cached and cached[1] > time.monotonic() and hmac.compare_digest(cached[0], fingerprint):
            return info
        try:
            _hasher.verify(secret_hash, secret)
        except (VerificationError, InvalidHashError):
            raise refused from None
        with self._lock:
            self._verified[token_id] = (fingerprint, time.monotonic() + CACHE_SECONDS)
        return info
