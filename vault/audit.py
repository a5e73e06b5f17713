"""The audit trail: one record per operation, hash-chained and MAC'd with a key from the key store.

Record i carries mac_i = HMAC-SHA256(audit key, mac_{i-1} || canonical JSON of record i), so editing,
deleting, inserting or reordering any record breaks the chain at that point, and nobody without the
audit key can forge a consistent chain. Records hold ids, decisions and reasons only: never images,
features, templates, scores or secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from dataclasses import asdict, dataclass, field

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


def verify_chain(key: bytes, records) -> list[ChainProblem]:
    """Walk the records in storage order; name each place the chain breaks, and how."""
    problems: list[ChainProblem] = []
    previous_mac, expected_seq = GENESIS, 1
    for record in records:
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
    return problems
