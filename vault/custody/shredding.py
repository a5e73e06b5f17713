"""Revoke = erase, backups included: a shred secret per template, kept on the key side.

A template's row key is derived from three things: the tenant's storage key (key store), the row's
salt (template store) and a 32-byte shred secret of its own, held in this ledger. The ledger lives
with the keys, never with the data: beside the key file by default, or in a database of its own
(`--shred-store postgresql://...`, shared by replicas). Revoking or reissuing a template deletes its
secret, so the sealed row in any copy of the data (a backup from before the revocation, a stolen
disk) can never be opened again, even by someone who later gets the key store. Back the ledger up
with the key store, on the key store's (short) retention, not with the data.

Deleting a row is not erasing it everywhere: PostgreSQL keeps the old version in a dead tuple until
vacuum, and in the WAL (and its archive) for good. So the ledger never holds a secret in clear: each
is wrapped (AES-256-GCM) under an epoch key of its bucket (one of BUCKETS, by template id), and
the epoch keys live in the key store (vault.custody.keys), where deletion is a rewrite of one small file.
Shredding a template deletes its row, then rotates its bucket: a new epoch key, the bucket's other
secrets re-wrapped under it, in one ledger transaction; once that commits, the old epoch keys are
destroyed. What the database still holds of the shredded secret (dead tuples, TOAST, WAL) is
wrapped under a key that no longer exists (issue 24, finding 3). A revocation costs two writes of
the key file and the re-wrap of 1/BUCKETS of the ledger.

The ledger's secrets are useless without the key store, and the key store's keys are useless
against a revoked row without the ledger.

The ledger also keeps the ids of revoked API tokens (vault.access.tokens): a token row copied back from an
older copy of the database, or a restored backup, authenticates nothing once its id is here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault.exceptions import StoreUnavailable
from vault.store.connections import open_database

__all__ = ["BUCKETS", "ShredLedger", "bucket_of", "ledger_path", "open_ledger", "open_ledger_reader", "unwrap", "unwrap_rows",
           "wrap", "wrapped_between"]

log = logging.getLogger("vault.shredding")

SECRET_BYTES = 32
BUCKETS = 256  # a revocation re-wraps 1/BUCKETS of the ledger; the key file holds up to BUCKETS epoch keys
SCHEMA = ("CREATE TABLE IF NOT EXISTS shred_secrets (template_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, "
          "secret BYTEA NOT NULL, created_at DOUBLE PRECISION NOT NULL, bucket INTEGER, epoch INTEGER)")
# `secret` holds nonce || AES-GCM(epoch key, secret); bucket and epoch NULL: a secret in clear, from a
# ledger made before epoch keys (wrapped when the ledger is next opened).
EPOCH_COLUMNS = ("bucket", "epoch")
BUCKET_INDEX = "CREATE INDEX IF NOT EXISTS shred_secrets_bucket ON shred_secrets (bucket)"
TOKEN_SCHEMA = ("CREATE TABLE IF NOT EXISTS revoked_tokens (token_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, "
                "revoked_at DOUBLE PRECISION NOT NULL)")
META_SCHEMA = "CREATE TABLE IF NOT EXISTS ledger_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"
SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(hashtext('vault/shred-schema/' || current_schema()))"
BUCKET_LOCK = "SELECT pg_advisory_xact_lock(hashtext('vault/shred/' || current_schema()), %s::int)"
# The start-up sweep never shreds this large a share of the ledger (see ShredLedger.retain).
SWEEP_MOST = 0.5
SWEEP_FEW = 10
# Deleted secrets are overwritten in the file, not left in free pages; no WAL copies.
SQLITE_PRAGMAS = ("secure_delete=ON", "journal_mode=DELETE")


def ledger_path(key_file: str | os.PathLike) -> Path:
    """The default ledger: beside the key file, on the keys' volume."""
    return Path(f"{key_file}.shred.db")


def bucket_of(template_id: str) -> int:
    return int.from_bytes(hashlib.sha256(template_id.encode()).digest()[:4], "big") % BUCKETS


def _aad(template_id: str, tenant: str, bucket: int, epoch: int) -> bytes:
    # Binds the wrapped secret to its row: moved to another template id, it does not open.
    return b"vault/shred/v1\0" + "\0".join((tenant, template_id, str(bucket), str(epoch))).encode()


def wrap(key: bytes, template_id: str, tenant: str, bucket: int, epoch: int, secret: bytes) -> bytes:
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(key).encrypt(nonce, secret, _aad(template_id, tenant, bucket, epoch))


def unwrap(key: bytes, template_id: str, tenant: str, bucket: int, epoch: int, blob: bytes) -> bytes | None:
    """The secret, or None if `blob` does not open under this epoch key."""
    try:
        return AESGCM(key).decrypt(blob[:12], blob[12:], _aad(template_id, tenant, bucket, epoch))
    except (InvalidTag, ValueError):
        return None


class ShredLedger:
    """Shred secrets by template id, in SQLite (one host) or PostgreSQL (replicas), wrapped under
    epoch keys from `keys` (vault.custody.keys.KeyStore)."""

    def __init__(self, url: str, keys):
        self.url = url
        self.keys = keys
        # The template store's connection handling (vault.store.connections), on a database of its own.
        self._database = open_database(url, name="vault-shreds", sqlite_pragmas=SQLITE_PRAGMAS, max_connections=4,
                                       what="the shred ledger")
        self._postgres = self._database.postgres
        try:
            self._run(self._create)
            self._wrap_clear_secrets()
            self._finish_rotations()
        except BaseException:
            self._database.close()
            raise

    def _create(self, cur) -> None:
        if self._postgres:
            cur.execute(SCHEMA_LOCK)  # replicas starting together
        for statement in (SCHEMA, TOKEN_SCHEMA, META_SCHEMA):
            cur.execute(statement)
        if self._postgres:
            cur.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                        "AND table_name = 'shred_secrets'")
            columns = {c for c, in cur.fetchall()}
        else:
            cur.execute("PRAGMA table_info(shred_secrets)")
            columns = {r[1] for r in cur.fetchall()}
        for column in EPOCH_COLUMNS:
            if column not in columns:
                cur.execute(f"ALTER TABLE shred_secrets ADD COLUMN {column} INTEGER")
        cur.execute(BUCKET_INDEX)

    def _run(self, work):
        """Run work(cursor) in one transaction."""
        with self._database.transaction() as cur:
            return work(cur)

    def _sql(self, text: str) -> str:
        return text.replace("?", self._database.placeholder)

    def _lock_buckets(self, cur, buckets) -> None:
        """Serialise writers of these buckets (a rotation must not miss a secret put meanwhile).
        SQLite: the transaction already holds the file's write lock."""
        if self._postgres:
            for bucket in sorted(set(buckets)):
                cur.execute(BUCKET_LOCK, (bucket,))

    def _current_epochs(self, buckets) -> dict[int, tuple[int, bytes]]:
        """{bucket: (current epoch, its key)}, making the first epoch of buckets that have none."""
        current, missing = {}, []
        for bucket in set(buckets):
            epochs = self.keys.shred_epochs(bucket)
            if epochs:
                current[bucket] = (max(epochs), epochs[max(epochs)])
            else:
                missing.append(bucket)
        if missing:
            current.update(self.keys.new_shred_epochs(sorted(missing)))
        return current

    # -- the ledger -------------------------------------------------------------------------------
    @staticmethod
    def new_secret() -> bytes:
        return secrets.token_bytes(SECRET_BYTES)

    def put(self, template_id: str, tenant: str, secret: bytes) -> None:
        """Keep a template's secret. Written before the template commits: a crash between the two
        leaves an orphan secret, which `retain` removes later."""
        bucket = bucket_of(template_id)

        def insert(cur):
            self._lock_buckets(cur, [bucket])
            epoch, key = self._current_epochs([bucket])[bucket]
            cur.execute(self._sql("INSERT INTO shred_secrets (template_id, tenant, secret, created_at, bucket, epoch) "
                                  "VALUES (?, ?, ?, ?, ?, ?)"),
                        (template_id, tenant, wrap(key, template_id, tenant, bucket, epoch, secret), time.time(),
                         bucket, epoch))

        self._run(insert)

    def secrets(self, template_ids: list[str] | None = None) -> dict[str, bytes]:
        """{template id: secret} of these templates (all of them when None: start-up)."""
        def read(cur):
            columns = "template_id, tenant, secret, bucket, epoch"
            if template_ids is None:
                cur.execute(f"SELECT {columns} FROM shred_secrets")
                return cur.fetchall()
            found = []
            for start in range(0, len(template_ids), 500):
                batch = template_ids[start:start + 500]
                cur.execute(self._sql(f"SELECT {columns} FROM shred_secrets WHERE template_id IN "
                                      f"({', '.join('?' * len(batch))})"), batch)
                found += cur.fetchall()
            return found

        for attempt in range(4):
            try:
                rows = self._run(read)
            except Exception as error:
                raise StoreUnavailable("the shred ledger cannot be read; retry shortly") from error
            found, unopened = self._unwrap_rows(rows)
            if not unopened:
                return found
            # A rotation committed after our read and destroyed the epoch we read under: read again.
            time.sleep(0.02 * (attempt + 1))
        log.error("%d shred secrets do not open with the key store's epoch keys (edited rows, or a ledger and a "
                  "key file that do not belong together): their templates cannot be unsealed", len(unopened))
        return found

    def _unwrap_rows(self, rows) -> tuple[dict[str, bytes], list[str]]:
        return unwrap_rows(rows, self.keys.shred_epochs)

    def wrapped_between(self, after: str, upto: str | None, tenants=None) -> list[tuple]:
        """One start-up share's ledger rows, still wrapped (module function wrapped_between)."""
        return wrapped_between(self._database, after, upto, tenants)

    def epoch_keys(self) -> dict[int, dict[int, bytes]]:
        """Every bucket's {epoch: key}: what a start-up worker unwraps its share's secrets with
        (vault.startup); a secret rotated meanwhile does not open, and the server reads it again."""
        return {bucket: epochs for bucket in range(BUCKETS) if (epochs := self.keys.shred_epochs(bucket))}

    def shred(self, template_ids: list[str]) -> int:
        """Delete these templates' secrets: their sealed rows, wherever copies are, open no more. The
        buckets they were in move to a new epoch, and the old epoch keys are destroyed."""
        if not template_ids:
            return 0

        def delete(cur):
            self._lock_buckets(cur, [bucket_of(t) for t in template_ids])
            count, emptied = 0, set()
            for template_id in template_ids:
                cur.execute(self._sql("DELETE FROM shred_secrets WHERE template_id = ?"), (template_id,))
                if cur.rowcount:
                    count += cur.rowcount
                    emptied.add(bucket_of(template_id))
            return count, self._rotate(cur, sorted(emptied)) if emptied else {}

        count, rotated = self._run(delete)
        if rotated:  # committed: the old epochs wrap nothing the ledger needs any more
            self.keys.destroy_shred_epochs(rotated)
        return count

    def _rotate(self, cur, buckets: list[int]) -> dict[int, int]:
        """In the caller's transaction (holding the buckets' locks): a new epoch for each bucket, and
        every secret of the bucket re-wrapped under it. {bucket: new epoch}; the old epoch keys must
        be destroyed only once this has committed."""
        fresh = self.keys.new_shred_epochs(buckets)
        for bucket, (epoch, key) in fresh.items():
            old = self.keys.shred_epochs(bucket)
            cur.execute(self._sql("SELECT template_id, tenant, secret, epoch FROM shred_secrets WHERE bucket = ? "
                                  "AND epoch <> ?"), (bucket, epoch))
            updates, lost = [], 0
            for template_id, tenant, blob, was in cur.fetchall():
                secret = unwrap(old[was], template_id, tenant, bucket, was, bytes(blob)) if was in old else None
                if secret is None:
                    lost += 1  # already unreadable (edited, or its epoch gone): nothing to keep
                    continue
                updates.append((wrap(key, template_id, tenant, bucket, epoch, secret), epoch, template_id))
            if updates:
                cur.executemany(self._sql("UPDATE shred_secrets SET secret = ?, epoch = ? WHERE template_id = ?"),
                                updates)
            if lost:
                log.error("%d shred secrets in ledger bucket %d do not open with their epoch keys", lost, bucket)
        return {bucket: epoch for bucket, (epoch, _) in fresh.items()}

    def _wrap_clear_secrets(self) -> None:
        """Wrap the clear secrets of a ledger from before epoch keys under their buckets' epochs."""
        def wrap_all(cur):
            cur.execute("SELECT template_id FROM shred_secrets WHERE epoch IS NULL")
            buckets = {bucket_of(t) for t, in cur.fetchall()}
            if not buckets:
                return 0
            self._lock_buckets(cur, buckets)
            cur.execute("SELECT template_id, tenant, secret FROM shred_secrets WHERE epoch IS NULL")
            rows = cur.fetchall()
            current = self._current_epochs({bucket_of(t) for t, _, _ in rows})
            updates = []
            for template_id, tenant, secret in rows:
                bucket = bucket_of(template_id)
                epoch, key = current[bucket]
                updates.append((wrap(key, template_id, tenant, bucket, epoch, bytes(secret)), bucket, epoch,
                                template_id))
            cur.executemany(self._sql("UPDATE shred_secrets SET secret = ?, bucket = ?, epoch = ? "
                                      "WHERE template_id = ?"), updates)
            return len(updates)

        if wrapped := self._run(wrap_all):
            log.warning("%d shred secrets were kept in clear (a ledger from before epoch keys) and are now wrapped "
                        "under epoch keys in the key store%s", wrapped,
                        ": on PostgreSQL their clear copies stay in dead tuples until VACUUM and in the WAL already "
                        "written (and its archive); VACUUM the ledger and let that WAL expire" if self._postgres else "")

    def _finish_rotations(self) -> None:
        """Buckets with more than one epoch key: a shredding a crash interrupted (before the old epoch
        was destroyed, or before the new one was used). Rotate them again and destroy the rest."""
        unfinished = sorted(b for b, count in self.keys.shred_epoch_buckets().items() if count > 1)
        if unfinished:
            def rotate(cur):
                self._lock_buckets(cur, unfinished)
                return self._rotate(cur, unfinished)

            self.keys.destroy_shred_epochs(self._run(rotate))
            log.warning("finished the shredding of %d ledger buckets a crash had interrupted", len(unfinished))

    def retain(self, live_ids: set[str], store_identity: str | None, older_than_s: float = 3600.0) -> int:
        """Shred every secret older than `older_than_s` whose template is not live: revocations whose
        shredding a crash interrupted, and enrolments that never committed. Younger secrets stay:
        another replica may be enrolling them right now.

        Only against the store the ledger belongs to: `store_identity` names the template store
        (vault.core.store_identity; None for a store with no audit trail, a new one). The ledger
        pairs with the first store it sweeps against and refuses any other, an empty one, and any
        sweep of most of the ledger: a server started on the right keys but the wrong or an empty
        store would otherwise destroy every template's secret."""
        paired = self.pair(store_identity) if store_identity is not None else self._meta("store")
        stale = [t for t, _ in self._created_before(time.time() - older_than_s) if t not in live_ids]
        if not stale:
            return 0
        if store_identity is None or paired != store_identity:
            log.error("not shredding %d secrets of templates absent from the template store: %s. They stay until a "
                      "start on the store this ledger belongs to", len(stale),
                      "the store is new or empty (no audit trail)" if store_identity is None else
                      "the store is not the one this ledger belongs to (another deployment's, or a restore of "
                      "another's backup)")
            return 0
        held = self._count()
        if len(stale) > SWEEP_FEW and len(stale) > SWEEP_MOST * held:
            log.error("not shredding %d of the ledger's %d secrets, whose templates the store does not hold: more "
                      "than a crash leaves behind. Check that the server runs on its own store; the secrets stay",
                      len(stale), held)
            return 0
        return self.shred(stale)

    def pair(self, store_identity: str) -> str:
        """Record the store this ledger belongs to, unless it already names one: the one named."""
        self._set_meta("store", store_identity)
        return self._meta("store")

    def _created_before(self, moment: float) -> list[tuple[str, float]]:
        return self._run(lambda cur: _fetch(
            cur, self._sql("SELECT template_id, created_at FROM shred_secrets WHERE created_at < ?"), (moment,)))

    def _count(self) -> int:
        return self._run(lambda cur: _fetch(cur, "SELECT count(*) FROM shred_secrets", ()))[0][0]

    def _meta(self, name: str) -> str | None:
        found = self._run(lambda cur: _fetch(cur, self._sql("SELECT value FROM ledger_meta WHERE name = ?"), (name,)))
        return found[0][0] if found else None

    def _set_meta(self, name: str, value: str) -> None:
        self._run(lambda cur: cur.execute(self._sql("INSERT INTO ledger_meta (name, value) VALUES (?, ?) "
                                                    "ON CONFLICT (name) DO NOTHING"), (name, value)))

    # -- revoked API tokens ------------------------------------------------------------------------
    def revoke_tokens(self, revoked: list[tuple[str, str]]) -> None:
        """Record (token id, tenant) pairs as revoked, for good: no database write undoes it."""
        def insert(cur):
            for token_id, tenant in revoked:
                cur.execute(self._sql("INSERT INTO revoked_tokens (token_id, tenant, revoked_at) VALUES (?, ?, ?) "
                                      "ON CONFLICT (token_id) DO NOTHING"), (token_id, tenant, time.time()))

        if revoked:
            self._run(insert)

    def token_revoked(self, token_id: str) -> bool:
        try:
            return bool(self._run(lambda cur: _fetch(
                cur, self._sql("SELECT 1 FROM revoked_tokens WHERE token_id = ?"), (token_id,))))
        except Exception as error:
            raise StoreUnavailable("the token revocation ledger cannot be read; retry shortly") from error

    def revoked_token_ids(self) -> set[str]:
        return {t for t, in self._run(lambda cur: _fetch(cur, "SELECT token_id FROM revoked_tokens", ()))}

    def close(self) -> None:
        self._database.close()


def unwrap_rows(rows, epochs_of) -> tuple[dict[str, bytes], list[str]]:
    """({template id: secret}, ids whose secret does not open) of ledger rows (template_id, tenant,
    secret, bucket, epoch), with each bucket's {epoch: key} from `epochs_of(bucket)` (read once a bucket)."""
    aeads: dict[tuple[int, int], AESGCM | None] = {}
    epochs: dict[int, dict[int, bytes]] = {}
    found, unopened = {}, []
    for template_id, tenant, blob, bucket, epoch in rows:
        blob = bytes(blob)
        if epoch is None:  # a clear secret of an older ledger (or an older replica's write)
            found[template_id] = blob
            continue
        if (bucket, epoch) not in aeads:
            if bucket not in epochs:
                epochs[bucket] = epochs_of(bucket)
            key = epochs[bucket].get(epoch)
            aeads[bucket, epoch] = AESGCM(key) if key else None
        aead = aeads[bucket, epoch]
        try:
            if aead is None:
                raise InvalidTag()
            found[template_id] = aead.decrypt(blob[:12], blob[12:], _aad(template_id, tenant, bucket, epoch))
        except (InvalidTag, ValueError):
            unopened.append(template_id)
    return found, unopened


def open_ledger_reader(url: str):
    """The ledger's database (a ShredLedger's `url`), opened only to read: a start-up worker's (vault.startup)."""
    return open_database(url, name="vault-shreds-reader", max_connections=1, what="the shred ledger")


def wrapped_between(database, after: str, upto: str | None, tenants=None) -> list[tuple]:
    """The ledger's rows (template_id, tenant, secret, bucket, epoch) of template ids after `after`
    and at most `upto` (None: no bound), of `tenants` only when given: one start-up share's
    secrets, still wrapped (unwrap_rows)."""
    query = "SELECT template_id, tenant, secret, bucket, epoch FROM shred_secrets WHERE template_id > ?"
    params: tuple = (after,)
    if upto is not None:
        query, params = query + " AND template_id <= ?", (*params, upto)
    if tenants is not None:
        query, params = query + f" AND tenant IN ({', '.join('?' * len(tenants))})", (*params, *tenants)
    # A read takes no write lock on SQLite (BEGIN DEFERRED): workers read their shares side by side.
    reading = database.transaction() if database.postgres else database.transaction("BEGIN DEFERRED")
    with reading as cur:
        return _fetch(cur, query.replace("?", database.placeholder), params)


def _fetch(cur, sql: str, params) -> list:
    cur.execute(sql, params)
    return cur.fetchall()


def open_ledger(url_or_path: str | os.PathLike, keys) -> ShredLedger:
    """A ledger at `postgresql://...`, `sqlite:///path` or a plain path, its secrets wrapped under
    epoch keys kept in `keys` (vault.custody.keys.KeyStore: the key file it belongs to)."""
    text = str(url_or_path)
    return ShredLedger(text if text.startswith(("postgresql://", "postgres://", "sqlite:///")) else f"sqlite:///{text}",
                       keys)
