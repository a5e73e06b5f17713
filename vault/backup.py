"""Backups that hold nothing reusable, and restores into either backend.

An archive holds what the store holds and nothing more: template rows with their AES-GCM sealed
codes, API tokens as HMACs, and the audit chain. Never key material: a backup opens nothing
without the deployment's key store, which is backed up apart (it is a secret, the archive is not
much of one). A restore loads an archive into an empty SQLite or PostgreSQL store, so the same two
commands back up a vault and move it between backends or clouds.

Format (gzip, JSON lines): a header line, one line per row (bytes as base64), and a trailer with
the row counts and a SHA-256 over the row lines, so a truncated or edited archive is refused before
anything is written.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from vault.exceptions import FailedPrecondition, InvalidArgument
from vault.store.sql import BACKUP_TABLES

__all__ = ["FORMAT", "BackupSummary", "write_backup", "restore_backup"]

FORMAT = "vault-backup"
FORMAT_VERSION = 1
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


def write_backup(store, path: str | os.PathLike) -> BackupSummary:
    """Write an archive of `store` (online: one consistent snapshot while the vault serves).
    Written beside `path` first and renamed into place, so `path` never names half an archive."""
    path = Path(path)
    partial = path.with_name(path.name + ".part")
    digest, counts = hashlib.sha256(), dict.fromkeys(BACKUP_TABLES, 0)
    schema_version = store.schema_version()
    with gzip.open(partial, "wt", encoding="utf-8") as out:
        out.write(json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "schema_version": schema_version,
                              "created_at": time.time(), "contents": CONTENTS}) + "\n")
        for table, values in store.export_rows():
            line = json.dumps({"table": table, "row": _encode(values)}) + "\n"
            digest.update(line.encode())
            out.write(line)
            counts[table] += 1
        out.write(json.dumps({"end": True, "counts": counts, "sha256": digest.hexdigest()}) + "\n")
    with open(partial, "rb") as written:
        os.fsync(written.fileno())
    os.replace(partial, path)
    return BackupSummary(path, counts, schema_version)


def _lines(path: Path) -> Iterator[str]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as archive:
            yield from archive
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise InvalidArgument(f"{path.name} is not a readable vault backup ({error.__class__.__name__})") from None


def _rows(path: Path, header: dict) -> Iterator[tuple[str, tuple]]:
    """The archive's rows; at the end, raises unless they match the trailer's digest and counts
    (the restore's transaction then rolls back: nothing of a damaged archive is kept)."""
    digest, counts, trailer = hashlib.sha256(), dict.fromkeys(BACKUP_TABLES, 0), None
    lines = _lines(path)
    next(lines)  # the header
    for line in lines:
        record = _json(path, line)
        if trailer is not None:
            raise InvalidArgument(f"{path.name} has data after its end")
        if record.get("end"):
            trailer = record
            continue
        if record.get("table") not in BACKUP_TABLES:
            raise InvalidArgument(f"{path.name} holds an unknown table")
        digest.update(line.encode())
        counts[record["table"]] += 1
        yield record["table"], _decode(record["row"])
    if trailer is None:
        raise InvalidArgument(f"{path.name} is truncated (no end record)")
    if trailer.get("sha256") != digest.hexdigest() or trailer.get("counts") != counts:
        raise InvalidArgument(f"{path.name} does not match its own checksum: edited or damaged")


def _json(path: Path, line: str) -> dict:
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise InvalidArgument(f"{path.name} is not a vault backup (unreadable line)")
    return record


def restore_backup(path: str | os.PathLike, store) -> BackupSummary:
    """Load an archive into an empty store (either backend) in one transaction: all or nothing."""
    path = Path(path)
    header = _json(path, next(_lines(path), ""))
    if header.get("format") != FORMAT or header.get("version") != FORMAT_VERSION:
        raise InvalidArgument(f"{path.name} is not a version {FORMAT_VERSION} vault backup")
    if header["schema_version"] > store.schema_version():
        raise FailedPrecondition(f"{path.name} comes from a newer vault (schema {header['schema_version']}); "
                                 "upgrade this vault first")
    counts = store.import_rows(_rows(path, header))
    return BackupSummary(path, counts, header["schema_version"])
