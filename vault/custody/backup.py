"""Backups that hold nothing reusable, and restores into either backend.

An archive holds what the store holds and nothing more: template rows with their AES-GCM sealed
codes, API tokens as HMACs, and the audit chain. Never key material: a backup opens nothing
without the deployment's key store, which is backed up apart (it is a secret, the archive is not
much of one). A restore loads an archive into an empty SQLite or PostgreSQL store, so the same two
commands back up a vault and move it between backends or clouds.

Format (gzip, JSON lines): a header line, one line per row (bytes as base64), and a trailer with
the row counts and an HMAC-SHA256 over the header, the row lines and the counts, under a key from the
key store (HKDF of its audit secret, info "vault/custody/backup/v1"). A truncated, edited or forged archive
is refused and nothing is kept: an unkeyed checksum would not do, since whoever edits an archive can
recompute it. Writing and restoring an archive therefore need the key store; the archive is written
0600. Version 1 archives (an unkeyed SHA-256) are refused.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from vault.exceptions import FailedPrecondition, InvalidArgument
from vault.private_files import create_private
from vault.store.base import BACKUP_TABLES, Backups

__all__ = ["FORMAT", "BackupSummary", "backup_key", "write_backup", "restore_backup"]

FORMAT = "vault-backup"
FORMAT_VERSION = 2  # 2: HMAC under a key-store key; 1 (unkeyed SHA-256) is refused
BACKUP_KEY_INFO = b"vault/custody/backup/v1"
CONTENTS = ("sealed template rows, API token HMACs and the audit chain; no key material: "
            "restoring needs the deployment's key store")


@dataclass(frozen=True)
class BackupSummary:
    path: Path
    counts: dict[str, int]
    schema_version: int


def _encode(values: tuple) -> list:
    return [{"b64": base64.b64encode(v).decode()} if isinstance(v, bytes) else v for v in values]


def _decode(values: list) -> tuple:
    return tuple(base64.b64decode(v["b64"]) if isinstance(v, dict) else v for v in values)


def backup_key(keys) -> bytes:
    """The key that authenticates archives: derived from the key store's audit secret."""
    from vault.custody.keys import derive

    return derive(keys.audit_key(), BACKUP_KEY_INFO)


def _counts_line(counts: dict[str, int]) -> bytes:
    return json.dumps(counts, sort_keys=True).encode()


def write_backup(store: Backups, path: str | os.PathLike, key: bytes) -> BackupSummary:
    """Write an archive of `store` (online: one consistent snapshot while the vault serves),
    authenticated under `key` (backup_key). Written 0600 beside `path` first and renamed into
    place, so `path` never names half an archive."""
    path = Path(path)
    partial = path.with_name(path.name + ".part")
    mac, counts = hmac.new(key, digestmod=hashlib.sha256), dict.fromkeys(BACKUP_TABLES, 0)
    schema_version = store.schema_version()
    with os.fdopen(create_private(partial), "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb") as zipped, io.TextIOWrapper(zipped, encoding="utf-8") as out:
            header = json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "schema_version": schema_version,
                                 "created_at": time.time(), "contents": CONTENTS}) + "\n"
            mac.update(header.encode())
            out.write(header)
            for table, values in store.export_rows():
                line = json.dumps({"table": table, "row": _encode(values)}) + "\n"
                mac.update(line.encode())
                out.write(line)
                counts[table] += 1
            mac.update(_counts_line(counts))
            out.write(json.dumps({"end": True, "counts": counts, "hmac_sha256": mac.hexdigest()}) + "\n")
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(partial, path)
    return BackupSummary(path, counts, schema_version)


def _lines(path: Path) -> Iterator[str]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as archive:
            yield from archive
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise InvalidArgument(f"{path.name} is not a readable vault backup ({error.__class__.__name__})") from None


def _rows(path: Path, key: bytes) -> Iterator[tuple[str, tuple]]:
    """The archive's rows; at the end, raises unless the trailer's HMAC under `key` covers them and
    their counts (the restore's transaction then rolls back: nothing of a bad archive is kept)."""
    mac, counts, trailer = hmac.new(key, digestmod=hashlib.sha256), dict.fromkeys(BACKUP_TABLES, 0), None
    lines = _lines(path)
    mac.update(next(lines).encode())  # the header
    for line in lines:
        record = _json(path, line)
        if trailer is not None:
            raise InvalidArgument(f"{path.name} has data after its end")
        if record.get("end"):
            trailer = record
            continue
        if record.get("table") not in BACKUP_TABLES:
            raise InvalidArgument(f"{path.name} holds an unknown table")
        mac.update(line.encode())
        counts[record["table"]] += 1
        yield record["table"], _decode(record["row"])
    if trailer is None:
        raise InvalidArgument(f"{path.name} is truncated (no end record)")
    mac.update(_counts_line(counts))
    if trailer.get("counts") != counts or not hmac.compare_digest(str(trailer.get("hmac_sha256", "")),
                                                                   mac.hexdigest()):
        raise InvalidArgument(f"{path.name} is not authenticated by this key store: edited or damaged, or written "
                              "by another deployment (restore needs the key file the backup was made with)")


def _json(path: Path, line: str) -> dict:
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise InvalidArgument(f"{path.name} is not a vault backup (unreadable line)")
    return record


def restore_backup(path: str | os.PathLike, store: Backups, key: bytes) -> BackupSummary:
    """Load an archive into an empty store (either backend) in one transaction, all or nothing,
    once its HMAC under `key` (backup_key of the deployment's key store) checks out."""
    path = Path(path)
    header = _json(path, next(_lines(path), ""))
    if header.get("format") != FORMAT:
        raise InvalidArgument(f"{path.name} is not a vault backup")
    if header.get("version") == 1:
        raise InvalidArgument(f"{path.name} is a version 1 backup, whose unkeyed checksum anyone who edits it can "
                              "recompute: it is not restored. Take a new backup with this vault")
    if header.get("version") != FORMAT_VERSION or not isinstance(header.get("schema_version"), int):
        raise InvalidArgument(f"{path.name} is not a version {FORMAT_VERSION} vault backup")
    if header["schema_version"] > store.schema_version():
        raise FailedPrecondition(f"{path.name} comes from a newer vault (schema {header['schema_version']}); "
                                 "upgrade this vault first")
    counts = store.import_rows(_rows(path, key))
    return BackupSummary(path, counts, header["schema_version"])
