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

Replica groups (`ReplicaGroup`): when one machine cannot hold every tenant, each tenant is assigned to
one group in the store (vault.store.base.TenantGroups), and a replica started with a group loads,
follows, reconciles and answers only its group's tenants; any other tenant's call is refused before
anything is counted (vault.rpc.interceptor), with the right group's name for the client to go there.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable

from vault.access.auth import check_name
from vault.exceptions import GroupLoading, WrongGroup
from vault.store.base import ADD, LIVE, REMOVE, Assignment, ChangeFeed, TemplateRow, TenantGroups

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
        # The tenants followed (a replica group's: ReplicaGroup); None: every tenant. Changes of
        # other tenants are passed over, and reconciliation compares only these tenants' templates.
        self.tenants: set[str] | None = None
        self.applied = 0  # changes handed to apply_change (for tests and metrics)
        self._lock = threading.Lock()  # one poll or reconciliation at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener = None

    def mark(self) -> int:
        """Start following from the feed's current head. Call BEFORE loading the index from
        the store (Vault.load_index): whatever changes during the load is then replayed, never lost."""
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
                    self.cursor = change.id
                    if self.tenants is not None and change.row.tenant not in self.tenants:
                        continue  # another replica group's tenant
                    # The row is current, so its status decides: an ADD for a template revoked
                    # since then removes it (its REMOVE entry follows and is harmless).
                    self.apply_change(ADD if change.row.status == LIVE else REMOVE, change.row)
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
            followed = None if self.tenants is None else set(self.tenants)
            live = self.store.live_template_ids(followed)
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
                elif followed is not None and row.tenant not in followed:
                    continue  # a tenant this replica is loading or dropping (ReplicaGroup): not followed now
                elif row.status == LIVE and template_id not in held:
                    self.apply_change(ADD, row)
                    added += 1
                elif row.status != LIVE and template_id in held:
                    self.apply_change(REMOVE, row)
                    removed += 1
            if added or removed:
                log.warning("reconciliation repaired the index: %d added, %d removed", added, removed)
            return added, removed

    def head(self) -> int:
        """The feed's newest change id now (a mark for `follow`)."""
        return self.store.change_head()

    def follow(self, tenants: set[str], since: int) -> int:
        """Start following `tenants`, whose templates were just loaded from the store after `since`
        was the feed's head: their changes since then are replayed first (the load may have missed
        them or read rows that changed under it), then they are followed like the others. The
        number of changes replayed."""
        with self._lock:
            replayed, cursor = 0, since
            while True:
                changes = self.store.changes_after(cursor, self.batch)
                for change in changes:
                    cursor = change.id
                    if change.row.tenant in tenants:
                        self.apply_change(ADD if change.row.status == LIVE else REMOVE, change.row)
                        replayed += 1
                if len(changes) < self.batch:
                    break
            if self.tenants is not None:
                self.tenants |= tenants
            return replayed

    def unfollow(self, tenants: set[str]) -> None:
        """Stop applying these tenants' changes (their templates are about to leave the index)."""
        with self._lock:
            if self.tenants is not None:
                self.tenants -= tenants

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


class ReplicaGroup:
    """This replica's share of the tenants: those the store assigns to its group (`name`).

    - At start-up (`load`, between IndexSync.mark and IndexSync.start) it loads the live templates
      of its tenants only, and has the IndexSync follow and reconcile only them.
    - A background thread re-reads the assignment every `poll_s`. A tenant newly assigned to the group,
      or joining it ahead of a move (Assignment.joining), is loaded and then followed from the feed's
      head as it was before the load (IndexSync.follow): nothing changed meanwhile is lost. A tenant
      that left the group stops being answered at once, and its templates leave the index
      `drop_after_s` later (calls admitted before still search a complete index); if it comes back
      before then, it is still complete and followed.
    - `serves(tenant)` (in memory) says whether this replica answers a tenant: assigned here and
      completely loaded. When it says no, `admit(tenant)` re-reads the tenant's assignment (the view
      may be a poll old) and raises WrongGroup (another group, named for the client, or none) or
      GroupLoading (ours, still loading: UNAVAILABLE, retry), or returns if the tenant is ours after all.

    A move without a refused or wrong decision (`vault group move`): the new group loads the tenant
    while the old one serves it (joining), the assignment flips, the old group drops it on seeing the
    flip. Until a replica of the new group sees the flip, it sends clients back to the old group, which
    still answers them from a complete index; a replica that has not finished loading answers
    UNAVAILABLE (retryable), never from a partial index.
    """

    def __init__(self, name: str, assignments: TenantGroups, sync: IndexSync,
                 load: Callable[[set[str]], tuple[int, int]], drop: Callable[[str], int],
                 poll_s: float = 1.0, drop_after_s: float = 60.0):
        """`load(tenants)` adds those tenants' live templates to the index ((loaded, refused));
        `drop(tenant)` takes every template of a tenant out of it (how many)."""
        self.name = check_group(name)
        self.assignments = assignments
        self.sync = sync
        self._load, self._drop = load, drop
        self.poll_s = poll_s
        self.drop_after_s = drop_after_s
        self._view: dict[str, Assignment] = {}  # the assignment as last read
        self._held: set[str] = set()  # tenants complete in the index and followed
        self._loading: set[str] = set()
        self._dropping: dict[str, float] = {}  # tenant -> when (monotonic) its templates leave the index
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def _wanted(self, view: dict[str, Assignment]) -> set[str]:
        return {t for t, a in view.items() if self.name in (a.group, a.joining)}

    def load(self) -> tuple[int, int]:
        """At start-up, after IndexSync.mark() and before IndexSync.start(): load this group's
        tenants into the index and follow only them. (loaded, refused) templates."""
        view = {a.tenant: a for a in self.assignments.assignments()}
        wanted = self._wanted(view)
        self.sync.tenants = set(wanted)
        done = self._load(wanted) if wanted else (0, 0)
        with self._lock:
            self._view, self._held = view, set(wanted)
        log.info("replica group %s: %d tenants, %d live templates loaded", self.name, len(wanted), done[0])
        return done

    def tenants(self) -> set[str]:
        """The tenants this replica answers now."""
        with self._lock:
            return {t for t in self._held if (a := self._view.get(t)) is not None and a.group == self.name}

    def serves(self, tenant: str) -> bool:
        """Whether this replica answers the tenant (no I/O: safe on the event loop)."""
        assigned = self._view.get(tenant)
        return assigned is not None and assigned.group == self.name and tenant in self._held

    def admit(self, tenant: str) -> None:
        """For a tenant `serves` refused: re-read its assignment from the store, then raise
        WrongGroup or GroupLoading, or return when it is this group's and loaded after all."""
        current = self.assignments.assignment(tenant)
        with self._lock:
            if current is None:
                self._view.pop(tenant, None)
            else:
                self._view[tenant] = current
            held = tenant in self._held
        if current is None:
            raise WrongGroup(f"tenant {tenant} is assigned to no replica group, and this replica serves group "
                             f"{self.name} only: an operator assigns it (vault group assign)")
        if current.group != self.name:
            raise WrongGroup(f"tenant {tenant} is served by replica group {current.group}, not by this replica's "
                             f"group {self.name}: send its calls there", current.group)
        if not held:
            self._wake.set()  # load it now rather than at the next poll
            raise GroupLoading(f"tenant {tenant} has just come to replica group {self.name} and its templates are "
                               "still loading here: retry shortly")

    def refresh(self) -> None:
        """Re-read the assignment; load the tenants that came to this group, drop those that left it
        (after drop_after_s)."""
        view = {a.tenant: a for a in self.assignments.assignments()}
        wanted = self._wanted(view)
        now = time.monotonic()
        with self._lock:
            self._view = view
            for tenant in wanted:
                self._dropping.pop(tenant, None)  # back before its drop: still complete and followed
            for tenant in self._held - wanted:
                self._dropping.setdefault(tenant, now + self.drop_after_s)
            due = {t for t, at in self._dropping.items() if at <= now}
            for tenant in due:
                del self._dropping[tenant]
                self._held.discard(tenant)
            arriving = wanted - self._held - self._loading
            self._loading |= arriving
        if due:
            self.sync.unfollow(due)
            for tenant in sorted(due):
                log.info("replica group %s: tenant %s left the group; %d templates dropped from the index",
                         self.name, tenant, self._drop(tenant))
        if arriving:
            self._take(arriving)

    def _take(self, tenants: set[str]) -> None:
        try:
            since = self.sync.head()
            loaded, refused = self._load(tenants)
            replayed = self.sync.follow(tenants, since)
        except BaseException:
            with self._lock:
                self._loading -= tenants  # tried again at the next poll
            raise
        with self._lock:
            self._held |= tenants
            self._loading -= tenants
        log.info("replica group %s: tenants %s loaded (%d templates, %d refused, %d changes replayed)", self.name,
                 ", ".join(sorted(tenants)), loaded, refused, replayed)

    # -- background thread ----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vault-replica-group", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:
                if self._stop.is_set():
                    break
                log.exception("replica group %s: following the assignment failed; retrying", self.name)
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def check_group(name: str) -> str:
    """A replica group's name: as a tenant's (1-63 characters of a-z, 0-9, '.', '_', '-')."""
    return check_name(name, "replica group")
