"""The audit trail: one record per operation, hash-chained and MAC'd with a key from the key store.

Record i carries mac_i = HMAC-SHA256(audit key, mac_{i-1} || canonical JSON of record i), so editing,
deleting, inserting or reordering any record breaks the chain at that point, and nobody without the
audit key can forge a consistent chain. Deleting the newest records leaves a shorter chain that is
still consistent, so each server also keeps the chain's head (seq and MAC of the newest record it
appended) in an `AuditAnchor` file beside its keys, outside the database: a chain that ends before
the anchor, or holds another record at the anchor's seq, lost its tail. Before the anchor moves on,
it checks that the record it held is still in the database: a tail cut and then buried under new
records (whose seqs reuse the deleted ones) is recorded as an alarm in the anchor file, which every
later verification reports, however many records follow. Records hold ids,
decisions and reasons only: never images, features, templates, scores or secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from vault.private_files import create_private

log = logging.getLogger("vault.audit")

GENESIS = b"\x00" * 32


@dataclass
class AuditEntry:
    rpc: str
    tenant: str
    actor: str
    subject_id: str = ""
    template_id: str = ""
    decision: str = ""
    detail: str = ""
    decision_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    entry: AuditEntry
    mac: bytes


def canonical(seq: int, entry: AuditEntry) -> bytes:
    return json.dumps({"seq": seq, **asdict(entry)}, sort_keys=True, separators=(",", ":")).encode()


def chain_mac(key: bytes, previous_mac: bytes, seq: int, entry: AuditEntry) -> bytes:
    return hmac.new(key, previous_mac + canonical(seq, entry), hashlib.sha256).digest()


@dataclass(frozen=True)
class ChainProblem:
    seq: int
    problem: str


def anchor_path(key_file: str | os.PathLike) -> Path:
    """Where a server keeps its audit anchor: beside its key file."""
    key_file = Path(key_file)
    return key_file.with_name(key_file.name + ".audit-head")


class AuditAnchor:
    """The newest audit record's (seq, MAC) a server appended, in a small file outside the
    database (atomically replaced after each commit; a crash can only leave it behind, never ahead),
    and the alarms raised when the record it held was found gone: the chain's tail was cut."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()

    def advance(self, record: AuditRecord, mac_at: Callable[[int], bytes | None] | None = None) -> None:
        """Move the head to `record`, just committed. `mac_at(seq)` reads the MAC stored at a seq
        (None: no such record): the record the anchor held must still be there. If it is not, the
        newest records were deleted (or a restore went back in time) and the new record reuses
        their seqs: an alarm, kept in the file for good, and the head moves to the new record.
        A record at or below the head whose head record is intact is a concurrent appender's, late."""
        with self._lock:
            saved = self._read()
            head = (int(saved["seq"]), bytes.fromhex(saved["mac"])) if saved else None
            alarms = list(saved.get("alarms", [])) if saved else []
            if head is not None:
                try:
                    found = mac_at(head[0]) if mac_at is not None else head[1]
                except Exception as error:  # the store is unreachable right now: check on the next append
                    log.warning("audit anchor not checked against the store: %s", error.__class__.__name__)
                    found = head[1]
                if found is None or not hmac.compare_digest(bytes(found), head[1]):
                    alarms.append({
                        "seq": head[0], "at": time.time(),
                        "problem": f"the record at seq {head[0]} that the anchor outside the database held was "
                                   f"{'deleted' if found is None else 'replaced'}, and the chain went on from seq "
                                   f"{record.seq}: its tail was cut (or an older backup restored)"})
                    log.error("audit chain: the record at seq %d the anchor held is gone; the tail was cut", head[0])
                elif head[0] >= record.seq:
                    return
            self._write({"seq": record.seq, "mac": record.mac.hex(), "alarms": alarms})

    def head(self) -> tuple[int, bytes] | None:
        saved = self._read()
        return (int(saved["seq"]), bytes.fromhex(saved["mac"])) if saved else None

    def alarms(self) -> list[ChainProblem]:
        """Every tail cut this anchor has seen, oldest first (by the seq of the record it lost)."""
        saved = self._read()
        return [ChainProblem(int(a["seq"]), str(a["problem"])) for a in (saved or {}).get("alarms", [])]

    def _read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None

    def _write(self, document: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Replicas on one host share the file, and in containers each is PID 1: a random name.
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
        with os.fdopen(create_private(tmp), "w") as handle:
            json.dump(document, handle)
        os.replace(tmp, self.path)


def verify_chain(key: bytes, records, anchor: tuple[int, bytes] | None = None) -> list[ChainProblem]:
    """Walk the records in storage order; name each place the chain breaks, and how. `anchor`:
    the head an AuditAnchor holds, to catch a deleted tail."""
    problems: list[ChainProblem] = []
    previous_mac, expected_seq = GENESIS, 1
    anchored = False
    for record in records:
        if anchor is not None and record.seq == anchor[0]:
            anchored = True
            if not hmac.compare_digest(record.mac, anchor[1]):
                problems.append(ChainProblem(record.seq, "not the record the anchor outside the database holds"))
        if record.seq != expected_seq:
            kind = "missing records (deleted)" if record.seq > expected_seq else "out of order or inserted"
            problems.append(ChainProblem(record.seq, f"{kind}: expected seq {expected_seq}"))
        elif not hmac.compare_digest(chain_mac(key, previous_mac, record.seq, record.entry), record.mac):
            if hmac.compare_digest(chain_mac(key, GENESIS if record.seq == 1 else previous_mac,
                                             record.seq, record.entry), record.mac):
                problems.append(ChainProblem(record.seq, "link to the previous record broken"))
            else:
                problems.append(ChainProblem(record.seq, "record edited, or its predecessor was"))
        previous_mac, expected_seq = record.mac, record.seq + 1
    if anchor is not None and not anchored:
        problems.append(ChainProblem(anchor[0], f"records up to seq {anchor[0]} existed (the anchor outside the "
                                                f"database holds it); the chain ends at seq {expected_seq - 1}: "
                                                "its tail was deleted"))
    return problems
