"""API tokens: `vt_<token id>.<secret>`, sent as `authorization: Bearer <token>` call metadata.

The secret is 32 random bytes, so a slow password hash buys nothing (nobody guesses 256 bits) and
costs a denial of service (argon2 on every call). The store keeps HMAC-SHA256 under a key from the
key store, never from the database, over the token's id, tenant, role, name and secret:

- a database thief cannot check a guessed secret offline;
- someone with write access to the database cannot add a token row, nor move a token to another
  tenant or role: without the key no row verifies;
- revocation erases the stored MAC, so setting `revoked_at` back to NULL revives nothing;
- a token expires (90 days by default): its expiry is under the MAC too, so no write extends it
  (tokens made before expiry existed keep the older MAC, without one, and do not expire);
- revocation is also recorded on the key side (the ledger beside the key file, vault.custody.shredding),
  before the database changes: a row copied back from an older copy of the database (MAC intact,
  `revoked_at` NULL), or a backup from before the revocation restored, still authenticates nothing.

Checking a token costs microseconds (an HMAC and one ledger lookup); revocation takes effect on the
next call.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from vault.access.audit import AuditEntry
from vault.exceptions import InvalidArgument, NotFound, Unauthenticated

log = logging.getLogger("vault.tokens")

PREFIX = "vt_"
SCHEME = "hmac-sha256:"  # rows of tokens made before tokens expired: the MAC covers no expiry
EXPIRING = SCHEME + "exp:"  # the MAC covers the expiry too; any other secret_hash is refused (the first
# token rows held argon2id hashes of their secrets; tokens have used HMAC since)
DEFAULT_LIFETIME_S = 90 * 24 * 3600
MIN_LIFETIME_S, MAX_LIFETIME_S = 60, 2 * 365 * 24 * 3600


@dataclass(frozen=True)
class TokenRow:
    """An API token as stored: only an HMAC of its secret under a key-store key (vault.access.tokens)."""

    token_id: str
    tenant: str
    role: str
    name: str
    secret_hash: str
    created_at: float
    revoked_at: float | None = None
    expires_at: float | None = None  # None: a token made before tokens expired


@runtime_checkable
class Tokens(Protocol):
    """The store's token role (vault.store.base): token rows, only MACs of their secrets."""

    def insert_token(self, token: TokenRow, audit: AuditEntry) -> None: ...
    def token(self, token_id: str) -> TokenRow | None: ...
    def tokens(self, tenant: str) -> list[TokenRow]: ...
    def revoke_token(self, tenant: str, token_id: str, at: float, audit: AuditEntry) -> bool: ...
    def revoked_tokens(self) -> list[tuple[str, str]]: ...


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    tenant: str
    role: str
    name: str
    created_at: float
    revoked_at: float | None
    expires_at: float | None = None  # None: made before tokens expired


class TokenRegistry:
    def __init__(self, store: Tokens, key: bytes, revocations=None):
        """`key`: 32 secret bytes from the key store (vault.custody.keys.KeyStore.token_key); `revocations`:
        the key side's ledger of revoked token ids (vault.custody.shredding.ShredLedger), None for none."""
        self.store = store
        self._key = key
        self.revocations = revocations
        self.clock = time.time  # what expiry is measured against

    def reconcile(self) -> int:
        """Copy into the key side's ledger every revocation the database records and the ledger
        lacks (tokens revoked before the ledger kept them): the number added."""
        if self.revocations is None:
            return 0
        known = self.revocations.revoked_token_ids()
        missing = [(token_id, tenant) for token_id, tenant in self.store.revoked_tokens() if token_id not in known]
        self.revocations.revoke_tokens(missing)
        return len(missing)

    def create(self, tenant: str, role: str, name: str, audit: AuditEntry,
               lifetime_s: int = DEFAULT_LIFETIME_S) -> tuple[str, TokenInfo]:
        """A new token that authenticates for `lifetime_s` seconds: (the token, its metadata)."""
        if not MIN_LIFETIME_S <= lifetime_s <= MAX_LIFETIME_S:
            raise InvalidArgument(f"a token's lifetime must be {MIN_LIFETIME_S} s to {MAX_LIFETIME_S // 86400} days")
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        now = self.clock()
        expires_at = float(int(now) + int(lifetime_s))
        row = TokenRow(token_id, tenant, role, name, self._mac(token_id, tenant, role, name, secret, expires_at), now,
                       expires_at=expires_at)
        audit.detail = f"token {token_id} role={role} name={name} expires_at={int(expires_at)}"
        self.store.insert_token(row, audit)
        return f"{PREFIX}{token_id}.{secret}", info_of(row)

    def list(self, tenant: str) -> list[TokenInfo]:
        return [info_of(row) for row in self.store.tokens(tenant)]

    def revoke(self, tenant: str, token_id: str, audit: AuditEntry) -> None:
        audit.detail = f"token {token_id} revoked"
        row = self.store.token(token_id)
        if row is None or row.tenant != tenant or row.revoked_at is not None:
            raise NotFound("no live token with that id")
        if self.revocations is not None:  # first on the key side: a crash after this leaves it revoked
            self.revocations.revoke_tokens([(token_id, tenant)])
        if not self.store.revoke_token(tenant, token_id, time.time(), audit):
            raise NotFound("no live token with that id")

    def authenticate(self, token: str) -> TokenInfo:
        """The token's identity, or Unauthenticated. Never says which part was wrong."""
        refused = Unauthenticated("invalid or revoked token")
        if not token.startswith(PREFIX) or "." not in token or len(token) > 200:
            raise refused
        token_id, secret = token[len(PREFIX):].split(".", 1)
        row = self.store.token(token_id)
        if row is None or row.revoked_at is not None or not row.secret_hash.startswith(SCHEME):
            raise refused  # (EXPIRING starts with SCHEME: a plain MAC's hex never starts with "exp:")
        expires_at = row.expires_at if row.secret_hash.startswith(EXPIRING) else None
        if row.secret_hash.startswith(EXPIRING) and expires_at is None:
            raise refused
        expected = self._mac(row.token_id, row.tenant, row.role, row.name, secret, expires_at)
        if not hmac.compare_digest(expected.encode(), row.secret_hash.encode()):
            raise refused
        if expires_at is not None and self.clock() >= expires_at:
            raise Unauthenticated("token expired: ask your tenant's admin for a new one")
        if self.revocations is not None and self.revocations.token_revoked(row.token_id):
            log.error("token %s was revoked (the ledger on the key side says so) but its row in the database is "
                      "live again: the database was edited or restored from an older copy", row.token_id)
            raise refused
        return info_of(row)

    def _mac(self, token_id: str, tenant: str, role: str, name: str, secret: str, expires_at: float | None = None) -> str:
        fields = (token_id, tenant, role, name, secret) + (() if expires_at is None else (str(int(expires_at)),))
        message = "\x1f".join(fields).encode()
        return (SCHEME if expires_at is None else EXPIRING) + hmac.new(self._key, message, hashlib.sha256).hexdigest()


def info_of(row: TokenRow) -> TokenInfo:
    return TokenInfo(row.token_id, row.tenant, row.role, row.name, row.created_at, row.revoked_at, row.expires_at)
