"""Probing defence: failure limits per (client, subject) and per client, with lockout.

A panel gets one bit (match / no match) per attempt; hill-climbing and brute-force identification
need many failed attempts, so failures are counted in a sliding window and a caller that exceeds a
limit is locked out for a while (RESOURCE_EXHAUSTED, reason `locked-out`), with an audit record.

A try counts from the moment it is admitted (`begin`), not only once it has failed, so concurrent
tries cannot slip past the limit: a try is admitted only while failures plus tries in flight stay
below it. `FailureLimiter` keeps the counts in memory (one process); `StoreFailureLimiter`, which
the server uses, keeps them in the template store, so all replicas of one store share them.

Every answer that tells the caller something, or costs the server an extraction, is spent from the
client's budget (per_client): a failed verification (NO_MATCH, which also counts for the subject),
and, for the client only (SPENT), an identification that named candidates, a verification that
returned a score band, and a probe whose extraction failed (no face, too few minutiae, an image that
does not decode). A match with no band, and a call refused before extraction, spend nothing.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from vault.exceptions import Overloaded


SPENT = "spent"  # an attempt's outcome that counts toward the client's budget only (see above)


class LockedOut(Overloaded):
    """Too many failed attempts."""

    reason = "locked-out"


@dataclass(frozen=True)
class Limits:
    per_subject: int = 5  # failed verifications of one subject by one client
    per_client: int = 50  # informative answers and failed extractions for one client (module docstring)
    window_s: float = 300.0
    lockout_s: float = 300.0


class FailureLimiter:
    def __init__(self, limits: Limits = Limits(), clock=time.monotonic):
        self.limits = limits
        self.clock = clock
        self._failures: dict[tuple, deque] = {}
        self._locked_until: dict[tuple, float] = {}
        self._in_flight: dict[tuple, int] = {}
        self._lock = threading.Lock()

    def _keys(self, tenant: str, client: str, subject: str | None):
        keys = [("client", tenant, client)]
        if subject is not None:
            keys.append(("subject", tenant, client, subject))
        return keys

    def begin(self, tenant: str, client: str, subject: str | None = None) -> None:
        """Admit a try, or raise LockedOut; every admitted try must end with `end`."""
        now = self.clock()
        with self._lock:
            self._refuse_if_locked(tenant, client, subject, now)
            keys = self._keys(tenant, client, subject)
            for key in keys:
                window = self._window(key, now)
                if len(window) + self._in_flight.get(key, 0) >= self._limit(key):
                    raise LockedOut(f"too many attempts in flight or failed for {self._what(key)}; retry later")
            for key in keys:
                self._in_flight[key] = self._in_flight.get(key, 0) + 1

    def end(self, tenant: str, client: str, subject: str | None = None, matched: bool | str | None = False) -> bool:
        """Close an admitted try: a failure counts (True when it triggers a lockout), a match
        clears the subject's failures, SPENT counts for the client only, None (the try ended
        without a decision) counts nothing."""
        with self._lock:
            for key in self._keys(tenant, client, subject):
                left = self._in_flight.get(key, 0) - 1
                if left > 0:
                    self._in_flight[key] = left
                else:
                    self._in_flight.pop(key, None)
        if matched is None:
            return False
        if matched == SPENT:
            return self.failed(tenant, client, None)
        if matched:
            if subject is not None:
                self.succeeded(tenant, client, subject)
            return False
        return self.failed(tenant, client, subject)

    def _refuse_if_locked(self, tenant: str, client: str, subject: str | None, now: float) -> None:
        for key in self._keys(tenant, client, subject):
            until = self._locked_until.get(key, 0.0)
            if until > now:
                raise LockedOut(f"too many failed attempts for {self._what(key)}; locked for {int(until - now) + 1} s more")

    def _window(self, key, now: float) -> deque:
        window = self._failures.setdefault(key, deque())
        while window and window[0] < now - self.limits.window_s:
            window.popleft()
        return window

    def _limit(self, key) -> int:
        return self.limits.per_subject if key[0] == "subject" else self.limits.per_client

    @staticmethod
    def _what(key) -> str:
        return "this subject from this client" if key[0] == "subject" else "this client"

    def failed(self, tenant: str, client: str, subject: str | None = None) -> bool:
        """Count a failure; True when it triggers a lockout."""
        now, locked = self.clock(), False
        with self._lock:
            for key in self._keys(tenant, client, subject):
                window = self._window(key, now)
                window.append(now)
                if len(window) >= self._limit(key):
                    self._locked_until[key] = now + self.limits.lockout_s
                    window.clear()
                    locked = True
        return locked

    def succeeded(self, tenant: str, client: str, subject: str) -> None:
        with self._lock:
            self._failures.pop(("subject", tenant, client, subject), None)


class StoreFailureLimiter:
    """The same limits kept in the template store (vault.store: attempts, lockouts), so every
    replica of one store counts the same attempts: with R replicas an attacker gets the limit, not
    R times it. Each attempt costs two small writes, serialised with the store's other writes."""

    def __init__(self, store, limits: Limits = Limits(), clock=time.time):
        self.store = store
        self.limits = limits
        self.clock = clock
        self._open: dict[tuple, list[str]] = {}  # (tenant, client, subject) -> attempt ids, oldest first
        self._lock = threading.Lock()

    def begin(self, tenant: str, client: str, subject: str | None = None) -> None:
        attempt_id, refusal = self.store.begin_attempt(tenant, client, subject or "", self.limits, self.clock())
        if attempt_id is None:
            raise LockedOut(refusal)
        with self._lock:
            self._open.setdefault((tenant, client, subject or ""), []).append(attempt_id)

    def end(self, tenant: str, client: str, subject: str | None = None, matched: bool | str | None = False) -> bool:
        key = (tenant, client, subject or "")
        with self._lock:
            attempts = self._open.get(key)
            attempt_id = attempts.pop(0) if attempts else None
            if attempts == []:
                del self._open[key]
        if attempt_id is None:
            return False
        return self.store.end_attempt(attempt_id, tenant, client, subject or "", matched, self.limits, self.clock())
