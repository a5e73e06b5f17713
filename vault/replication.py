"""Keeping a replica's in-memory match index in step with a shared store.

Every template change (enrol, revoke, reissue, re-enrolment after key rotation) appends entries to
the store's change feed in the transaction that makes it (vault.store: `changes`, ids that commit
in order). `IndexSync` follows that feed from a cursor on a background thread:

- PostgreSQL sends a NOTIFY at each change commit: the follower wakes at once (milliseconds);
- it polls every `interval_s` anyway (notifications can be lost with a dropped connection; SQLite
  has none);
- every `reconcile_s` it compares the index's template ids with the store's live ids and repairs
  any difference, so whatever slipped past the feed (a pruned feed, a bug) cannot last;
- every `prune_every_s` it drops feed entries older than `keep_changes_s` (a replica further
  behind than that catches up by reconciliation), so the feed does not grow forever. Every
  replica prunes; deleting what another replica already deleted is harmless.

The callback `apply_change(kind, row)` gets ADD for a template that is live now, REMOVE for one that
is not: `row` is the template's current row and its status decides, whatever the entry recorded,
so a revoked template is never (re)added however late a follower is. Applying a change twice must
be harmless: a replica also sees the changes it made itself.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable

from vault.store.base import ADD, LIVE, REMOVE, ChangeFeed, TemplateRow

log = logging.getLogger("vault.replication")

ApplyChange = Callable[[str, TemplateRow], None]


class IndexSync:
    def __init__(self, store: ChangeFeed, apply_change: ApplyChange, interval_s: float = 0.5,
                 index_ids: Callable[[], Iterable[str]] | None = None, reconcile_s: float = 60.0,
                 batch: int = 1000, keep_changes_s: float = 7 * 86400.0, prune_every_s: float = 3600.0):
        """`index_ids` returns the template ids the index holds now (for reconciliation; without it
        only the feed is followed)."""
        self.store = store
        self.apply_change = apply_change
        self.interval_s = interval_s
        self.index_ids = index_ids
        self.reconcile_s = reconcile_s
        self.batch = batch
        self.keep_changes_s = keep_changes_s
        self.prune_every_s = prune_every_s
        self.pruned = 0  # feed entries this replica deleted (for tests and metrics)
        self.cursor: int | None = None
        self.applied = 0  # changes handed to apply_change (for tests and metrics)
        self._lock = threading.Lock()  # one poll or reconciliation at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener = None

    def mark(self) -> int:
        """Start following from the feed's current head. Call BEFORE loading the index from
        store.live_rows(): whatever changes during the load is then replayed, never lost."""
        self.cursor = self.store.change_head()
        return self.cursor

    def poll(self) -> int:
        """Apply every change after the cursor; returns how many were applied."""
        with self._lock:
            if self.cursor is None:
                self.mark()
            done = 0
            while True:
                changes = self.store.changes_after(self.cursor, self.batch)
                for change in changes:
                    # The row is current, so its status decides: an ADD for a template revoked
                    # since then removes it (its REMOVE entry follows and is harmless).
                    self.apply_change(ADD if change.row.status == LIVE else REMOVE, change.row)
                    self.cursor = change.id
                    done += 1
                if len(changes) < self.batch:
                    break
            self.applied += done
            return done

    def reconcile(self) -> tuple[int, int]:
        """Make the index hold exactly the store's live templates: (added, removed).

        A difference is re-read from the store before it is acted on, so a template that changed
        while the ids were being compared is judged by its state now, not by a stale snapshot."""
        if self.index_ids is None:
            raise RuntimeError("IndexSync was made without index_ids: it cannot reconcile")
        with self._lock:
            live = self.store.live_template_ids()
            held = set(self.index_ids())
            suspects = sorted((live - held) | (held - live))
            added = removed = 0
            if not suspects:
                return 0, 0
            current = {row.template_id: row for row in self.store.rows(suspects)}
            held = set(self.index_ids())
            for template_id in suspects:
                row = current.get(template_id)
                if row is None:  # rows are never deleted; nothing to build a REMOVE from
                    log.warning("the index holds a template id the store does not know")
                elif row.status == LIVE and template_id not in held:
                    self.apply_change(ADD, row)
                    added += 1
                elif row.status != LIVE and template_id in held:
                    self.apply_change(REMOVE, row)
                    removed += 1
            if added or removed:
                log.warning("reconciliation repaired the index: %d added, %d removed", added, removed)
            return added, removed

    # -- background thread ----------------------------------------------------------------------
    def start(self) -> None:
        if self.cursor is None:
            self.mark()
        self._listener = self.store.change_listener()
        self._thread = threading.Thread(target=self._run, name="vault-index-sync", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_reconcile = time.monotonic() + self.reconcile_s
        next_prune = time.monotonic() + self.prune_every_s
        while not self._stop.is_set():
            try:
                self._listener.wait(self.interval_s)
                if self._stop.is_set():
                    break
                self.poll()
                if self.index_ids is not None and time.monotonic() >= next_reconcile:
                    self.reconcile()
                    next_reconcile = time.monotonic() + self.reconcile_s
                if time.monotonic() >= next_prune:
                    self.pruned += self.store.prune_changes(self.keep_changes_s)
                    next_prune = time.monotonic() + self.prune_every_s
            except Exception:
                if self._stop.is_set():  # stop() closed the listener under a wait
                    break
                # Keep following: a database restart must not leave a replica stale for good.
                log.exception("index sync failed; retrying")
                self._reopen_listener()

    def _reopen_listener(self) -> None:
        try:
            self._listener.close()
        except Exception:
            pass
        while not self._stop.wait(self.interval_s):
            try:
                self._listener = self.store.change_listener()
                return
            except Exception:
                log.warning("index sync: cannot reach the store yet")

    def stop(self) -> None:
        self._stop.set()
        if self._listener is not None:
            try:
                self._listener.close()  # wakes a PostgreSQL wait
            except Exception:
                pass
        if self._thread is not None:
            self._thread.join(timeout=10)
