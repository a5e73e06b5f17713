"""A replica's start-up: every live template read, unsealed and put into the match index, on every core.

The store is cut into shares of about SHARE_ROWS rows by template id (SqlStore.share_bounds). Each
share is read (its live rows and their shred secrets, by id range) and unsealed by `unseal_share`,
in worker processes when the store is large (one per core), else in the server's own process:
the same function either way, so both give the same index. Every row is authenticated as
Protector.unseal does it (vault.templates.protection.open_sealed): an edited, swapped or
foreign-key row is refused and reported by template id, never indexed.

A worker writes the codes of one-code templates, laid out as the galleries hold them (interleaved,
vault.templates.matching), into a shared buffer, and sends back only ids and small columns; the
server copies each share into its galleries in bulk (MatchIndex.add_many). Pickling the codes
through a pipe cost more than unsealing them (~20 us a 4 KiB code on the 2-core machine).

Workers get the tenant keys and the shred ledger's epoch keys from the server when they start,
through the pool's pipe; they hold them only while the load runs. Nothing they send back holds a
key or a secret, and nothing they log holds a code.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Collection

import numpy as np

from vault.custody.keys import TenantKey
from vault.custody.shredding import open_ledger_reader, unwrap_rows, wrapped_between
from vault.exceptions import KeyStoreError, NotFound, VaultError
from vault.templates.layout import interleave
from vault.templates.normalisation import cohort_order
from vault.templates.profiles import PROFILES
from vault.templates.protection import Protector, associated_data, open_sealed

__all__ = ["PARALLEL_FROM", "SHARE_ROWS", "Group", "Share", "ShareJob", "load_shares", "unseal_share", "workers_for"]

SHARE_ROWS = 8192  # a share's rows: 32 MiB of 4 KiB codes in its buffer
PARALLEL_FROM = 50_000  # smaller stores load in the server's process: starting workers takes ~1 s
BUFFERS_PER_WORKER = 2  # a worker fills one buffer while the server copies the other into the index
CODE_BYTES = max(p.template_bytes for p in PROFILES.values())  # the largest code: a row of a share's buffer
CODE_WORDS = CODE_BYTES // 8


@dataclass(frozen=True)
class ShareJob:
    """Live rows whose template id is after `after` and at most `upto` (None: to the last), the
    first `limit` of them: a share that grew since its bounds were read is resumed (Share.resume_after)."""

    after: str
    upto: str | None
    limit: int


@dataclass
class Group:
    """One-code templates of one (tenant, modality, profile, key version) group of a share: their
    codes lie interleaved in the share's buffer, rows [start, stop)."""

    tenant: str
    modality: int
    profile: str
    key_version: int
    start: int
    stop: int
    template_ids: list[str]
    subject_ids: list[str]
    fingers: np.ndarray
    fused: np.ndarray
    offsets: np.ndarray
    orders: np.ndarray  # each one's cohort_order (vault.templates.normalisation)


@dataclass
class Share:
    """What unsealing a share gives the server."""

    groups: list[Group] = field(default_factory=list)
    # Templates kept as several codes (ProtectionProfile.keeps_sample_codes): few, sent whole:
    # (tenant, modality, profile, key version, template id, subject id, finger, sample count, codes, offsets)
    kept_apart: list[tuple] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (template id, why): failed authentication
    retired: list[str] = field(default_factory=list)  # template ids of retired profiles: never indexed
    # (tenant, template id) whose shred secret did not open with the epoch keys the worker was given:
    # a revocation rotated its ledger bucket meanwhile; the server opens these itself, reading afresh.
    unopened: list[tuple[str, str]] = field(default_factory=list)
    resume_after: str | None = None  # the share held more rows than its limit: read on after this id

    def live_ids(self) -> list[str]:
        """Every live template id the share read (the shred ledger's sweep keeps their secrets)."""
        return ([t for g in self.groups for t in g.template_ids] + [k[4] for k in self.kept_apart]
                + [t for t, _ in self.refused] + self.retired + [t for _, t in self.unopened])


def unseal_share(rows: list[tuple], secrets: dict[str, bytes], unopened: Collection[str],
                 keys: dict[tuple[str, int], TenantKey], buffer: np.ndarray, protector: Protector) -> Share:
    """Unseal a share's rows (vault.store.sql.LOAD_COLUMNS tuples) with their shred secrets, writing
    one-code templates' codes into `buffer` (uint64, room for every row's code), interleaved as the
    galleries hold them. `unopened`: template ids whose secret did not open (see Share.unopened)."""
    share = Share()
    groups: dict[tuple, list] = {}  # group -> [template ids, subject ids, fingers, fused, staged rows, key]
    one_code = {name: p.template_bytes for name, p in PROFILES.items()}  # a property: computed once, not a row
    # Plaintexts are copied into a staging area this process keeps (touched once): a fresh 32 MiB a
    # share (b"".join) cost ~3 us a row in page faults alone.
    staging = _staging(len(rows))
    staged = 0
    for template_id, tenant, subject_id, modality, finger, name, key_version, salt, sealed, sample_count in rows:
        profile = PROFILES.get(name)
        if profile is None or profile.retired:
            share.retired.append(template_id)
            continue
        if template_id in unopened:
            share.unopened.append((tenant, template_id))
            continue
        try:
            key = keys.get((tenant, key_version))
            if key is None:  # as the key store says it (LocalKeyFile.tenant_key)
                raise (KeyStoreError(f"tenant key version {key_version} is not in the key store")
                       if any(t == tenant for t, _ in keys) else NotFound("unknown tenant"))
            plain = open_sealed(key, tenant, template_id, key_version,
                                associated_data(tenant, template_id, subject_id, modality, finger, name, key_version,
                                                profile.sealed_sample_count(sample_count)),
                                profile, bytes(salt), bytes(sealed), secrets.get(template_id))
        except VaultError as error:  # IntegrityError: edited, swapped or foreign-key row
            share.refused.append((template_id, error.message))
            continue
        if len(plain) != one_code[name]:  # several codes kept apart: a template of its own
            codes = np.frombuffer(plain, dtype="<u8").reshape(-1, profile.planes, profile.words)
            share.kept_apart.append((tenant, modality, name, key_version, template_id, subject_id, finger,
                                     sample_count, codes, _offsets(protector, key, profile, codes)))
            continue
        group = groups.get((tenant, modality, name, key_version))
        if group is None:
            group = groups[(tenant, modality, name, key_version)] = [[], [], [], [], [], key]
        group[0].append(template_id)
        group[1].append(subject_id)
        group[2].append(finger)
        group[3].append(sample_count > 1)
        group[4].append(staged)
        staging[staged * CODE_BYTES:staged * CODE_BYTES + len(plain)] = plain
        staged += 1
    staged_codes = np.frombuffer(staging, dtype="<u8").reshape(-1, CODE_WORDS)
    start = 0
    for (tenant, modality, name, key_version), (ids, subjects, fingers, fused, at, key) in groups.items():
        profile = PROFILES[name]
        picked = (staged_codes[at[0]:at[-1] + 1] if at[-1] - at[0] == len(at) - 1  # one group: as it lies
                  else staged_codes[at])
        codes = picked[:, :profile.planes * profile.words].reshape(len(at), profile.planes, profile.words)
        stop = start + len(codes)
        rows_of = buffer[start * CODE_WORDS:stop * CODE_WORDS].reshape(len(codes), CODE_WORDS)
        interleaved = rows_of[:, :profile.planes * profile.words].reshape(len(codes), profile.words, profile.planes)
        interleave(codes, interleaved)
        offsets = _offsets(protector, key, profile, codes)
        share.groups.append(Group(
            tenant, modality, name, key_version, start, stop, ids, subjects, np.asarray(fingers, np.uint8),
            np.asarray(fused, bool), np.zeros(len(ids), np.float32) if offsets is None else offsets,
            np.fromiter((cohort_order(t) for t in ids), np.uint64, len(ids))))
        start = stop
    return share


_STAGING: list[memoryview] = []  # this process's staging area (unseal_share), grown as shares need


def _staging(rows: int) -> memoryview:
    if not _STAGING or len(_STAGING[0]) < rows * CODE_BYTES:
        _STAGING[:] = [memoryview(bytearray(max(rows, SHARE_ROWS) * CODE_BYTES))]
    return _STAGING[0]


def share_codes(buffer: np.ndarray, group: Group) -> np.ndarray:
    """A group's codes in a share's buffer, as (n, planes, words): a view of the interleaved rows,
    which Gallery.add_many copies as they lie."""
    profile = PROFILES[group.profile]
    n = group.stop - group.start
    rows = buffer[group.start * CODE_WORDS:group.stop * CODE_WORDS].reshape(n, CODE_WORDS)
    return rows[:, :profile.planes * profile.words].reshape(n, profile.words, profile.planes).transpose(0, 2, 1)


def _offsets(protector: Protector, key: TenantKey, profile, codes: np.ndarray) -> np.ndarray | None:
    """The codes' cohort offsets (vault.templates.cohort.TemplateCohort), where the profile has them."""
    if profile.template_cohort is None:
        return None
    from vault.templates.cohort import TemplateCohort  # the fingerprint cohort: only where such rows are

    return np.asarray(TemplateCohort(protector).offsets(key, profile, codes), np.float32)


def workers_for(shares: int, workers: int | None) -> int:
    """Worker processes for a load of `shares` shares: `workers` where given (0: none), else one a
    core once the store is large enough to repay starting them."""
    if workers is not None:
        return workers
    if shares * SHARE_ROWS < PARALLEL_FROM:
        return 0
    return min(len(os.sched_getaffinity(0)), shares)


# -- worker processes ----------------------------------------------------------------------------------
_WORKER: dict = {}  # one worker process's readers, keys and buffers, set when it starts


def _start_worker(server_pid: int, store_url: str, ledger_url: str | None, keys: dict, epochs: dict, tenants,
                  buffers) -> None:
    from vault.intake.extraction import exit_with_server
    from vault.store import open_reader

    exit_with_server(server_pid)  # a server killed mid-load leaves no worker behind holding its keys
    _WORKER.update(store=open_reader(store_url), ledger=open_ledger_reader(ledger_url) if ledger_url else None,
                   keys=keys, epochs=epochs, tenants=tenants, protector=Protector(),
                   buffers=[np.frombuffer(b, dtype=np.uint64) for b in buffers])


def _work(job: ShareJob, slot: int) -> Share:
    epochs, ledger, tenants = _WORKER["epochs"], _WORKER["ledger"], _WORKER["tenants"]
    secrets = None if ledger is None else (lambda after, upto: wrapped_between(ledger, after, upto, tenants))
    return read_and_unseal(job, _WORKER["store"], secrets, _WORKER["keys"], lambda b: epochs.get(b, {}), tenants,
                           _WORKER["buffers"][slot], _WORKER["protector"])


def read_and_unseal(job: ShareJob, store, wrapped_secrets, keys, epochs_of, tenants, buffer, protector) -> Share:
    """Read one share (its live rows, then their shred secrets: wrapped_secrets(after, upto), None
    without a ledger) and unseal it. Rows first: a template's secret is kept before it commits."""
    rows = store.live_share(job.after, job.upto, job.limit, tenants)
    resume_after = rows[-1][0] if len(rows) == job.limit and rows[-1][0] != job.upto else None
    secrets, unopened = {}, []
    if wrapped_secrets is not None and rows:
        secrets, unopened = unwrap_rows(wrapped_secrets(job.after, rows[-1][0]), epochs_of)
    share = unseal_share(rows, secrets, set(unopened), keys, buffer, protector)
    share.resume_after = resume_after
    return share


def load_shares(bounds: list[str], workers: int, take, *, store, ledger, keys, tenants, protector) -> None:
    """Read and unseal every share the bounds make, `workers` at a time in worker processes (0: in
    this process), calling take(share, buffer) in this process for each as it is done (in any order)."""
    edges = [""] + bounds
    pending = [ShareJob(after, upto, SHARE_ROWS) for after, upto in zip(edges, bounds + [None])]
    epochs = ledger.epoch_keys() if ledger is not None else {}
    tenants = tuple(sorted(set(tenants))) if tenants is not None else None
    if not workers:
        buffer = np.zeros(SHARE_ROWS * CODE_WORDS, np.uint64)
        secrets = None if ledger is None else (lambda after, upto: ledger.wrapped_between(after, upto, tenants))
        while pending:
            job = pending.pop(0)
            share = read_and_unseal(job, store, secrets, keys, lambda b: epochs.get(b, {}), tenants, buffer, protector)
            if share.resume_after is not None:
                pending.append(ShareJob(share.resume_after, job.upto, job.limit))
            take(share, buffer)
        return
    context = multiprocessing.get_context("spawn")  # not fork: the server runs threads (gRPC, pools)
    slots = workers * BUFFERS_PER_WORKER
    shared = [context.RawArray("B", SHARE_ROWS * CODE_WORDS * 8) for _ in range(slots)]
    buffers = [np.frombuffer(b, dtype=np.uint64) for b in shared]
    ledger_url = ledger.url if ledger is not None else None
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                             initargs=(os.getpid(), store.reader_url, ledger_url, keys, epochs, tenants, shared)) as pool:
        free, running = list(range(slots)), {}
        try:
            while pending or running:
                while pending and free:
                    job, slot = pending.pop(0), free.pop()
                    running[pool.submit(_work, job, slot)] = (job, slot)
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    job, slot = running.pop(future)
                    share = future.result()
                    if share.resume_after is not None:
                        pending.append(ShareJob(share.resume_after, job.upto, job.limit))
                    take(share, buffers[slot])
                    free.append(slot)
        finally:
            for future in running:
                future.cancel()
