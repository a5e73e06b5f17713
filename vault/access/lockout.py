"""Probing defence: failure limits per (client, subject) and per client, with lockout.

A panel gets one bit (match / no match) per attempt; hill-climbing and brute-force identification
need many failed attempts, so failures are counted in a sliding window and a caller that exceeds a
limit is locked out for a while (RESOURCE_EXHAUSTED, reason `locked-out`), with an audit record.

A try counts from the moment it is admitted (`begin`), not only once it has failed, so concurrent
tries cannot slip past the limit: a try is admitted only while failures plus tries in flight stay
below it.

Every answer that tells the caller something, or costs the server an extraction, is spent from the
client's budget (per_client): a failed verification (NO_MATCH, which also counts for the subject),
and, for the client only (SPENT), an identification that named candidates, a verification that
returned a score band, and a probe whose extraction failed (no face, too few minutiae, an image that
does not decode). A match with no band, and a call refused before extraction, spend nothing.

There is one rule, and it is kept where the attempts are: the template store's attempts role
(`Attempts` below, written once in SQL in vault.store.sql for SQLite and PostgreSQL), so
every replica of one store counts the same attempts, and the embedded default and the fast tests
run the rule production runs. `FailureLimiter` is the core's handle on it. Its calls block (a lock
and a database transaction): the core makes them off the event loop.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from vault.exceptions import Overloaded

__all__ = ["PER_CLIENT", "PER_SUBJECT", "SPENT", "Attempts", "FailureLimiter", "Limits", "LockedOut"]

SPENT = "spent"  # an attempt's outcome that counts toward the client's budget only (see above)
PER_SUBJECT, PER_CLIENT = "per-subject", "per-client"  # the limits a lockout can trip


class LockedOut(Overloaded):
    """Too many failed attempts."""

    reason = "locked-out"


@dataclass(frozen=True)
class Limits:
    per_subject: int = 5  # failed verifications of one subject by one client
    per_client: int = 50  # informative answers and failed extractions for one client (module docstring)
    window_s: float = 300.0
    lockout_s: float = 300.0

    def describe(self, tripped: tuple[str, ...]) -> str:
        """The limits a lockout tripped, as its audit record says them ('per-client limit 50')."""
        values = {PER_SUBJECT: self.per_subject, PER_CLIENT: self.per_client}
        return ", ".join(f"{name} limit {values[name]}" for name in tripped)


@runtime_checkable
class Attempts(Protocol):
    """The store's attempts role (vault.store.base; the rule in SQL, vault.store.sql): attempts and
    lockouts, shared by every replica of one store."""

    def begin_attempt(self, tenant: str, client: str, subject: str, limits: Limits,
                      now: float) -> tuple[str | None, str]: ...
    def end_attempt(self, attempt_id: str, tenant: str, client: str, subject: str, matched: bool | str | None,
                    limits: Limits, now: float) -> tuple[str, ...]: ...


class FailureLimiter:
    """The limits over a store's attempts (Attempts). With R replicas of one store
    an attacker gets the limit, not R times it. Each attempt costs two small writes, serialised with
    the store's other writes."""

    def __init__(self, attempts: Attempts, limits: Limits = Limits(), clock=time.time):
        self.attempts = attempts
        self.limits = limits
        self.clock = clock
        self._open: dict[tuple, list[str]] = {}  # (tenant, client, subject) -> attempt ids, oldest first
        self._lock = threading.Lock()

    def begin(self, tenant: str, client: str, subject: str | None = None) -> None:
        """Admit a try, or raise LockedOut; every admitted try must end with `end`."""
        attempt_id, refusal = self.attempts.begin_attempt(tenant, client, subject or "", self.limits, self.clock())
        if attempt_id is None:
            raise LockedOut(refusal)
        with self._lock:
            self._open.setdefault((tenant, client, subject or ""), []).append(attempt_id)

    def end(self, tenant: str, client: str, subject: str | None = None,
            matched: bool | str | None = False) -> tuple[str, ...]:
        """Close an admitted try: a failure counts, a match clears the subject's failures, SPENT
        counts for the client only, None (the try ended without a decision) counts nothing. The
        limits this try tripped (PER_SUBJECT, PER_CLIENT; empty: no lockout)."""
        key = (tenant, client, subject or "")
        with self._lock:
            open_ids = self._open.get(key)
            attempt_id = open_ids.pop(0) if open_ids else None
            if open_ids == []:
                del self._open[key]
        if attempt_id is None:
            return ()
        return self.attempts.end_attempt(attempt_id, tenant, client, subject or "", matched, self.limits,
                                         self.clock())
