"""The vault's application core: enrol, verify, identify, revoke, reissue, list. No protobuf, no
gRPC: the servicers (vault.rpc) translate messages and call this; tests and tools may call it
directly. Each operation reads top to bottom:

    validate -> extract (worker processes) -> protect (tenant key) -> store + audit (one
    transaction) -> update the in-memory index -> a decision or metadata

Nothing that blocks runs on the event loop: every store, limiter, key, protection and matching
step runs through `off_loop` (a worker thread), in Verify and Identify alike; the loop only awaits.

Who the caller is and whether their role allows the operation is settled before the core is
called (vault.rpc.interceptor); the core receives the caller's Identity to scope every read and
write to its tenant. Nothing it returns, logs or stores holds an image, a feature vector, a code or
a score (except an auditor's coarse score band, when the site enables it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from typing import Collection, Protocol

import numpy as np

from vault.access.audit import AuditEntry
from vault.templates.cohort import CohortShifts, TemplateCohort
from vault.access.auth import AUDITOR, LOCAL_OPERATOR, Identity
from vault.exceptions import FailedPrecondition, InvalidArgument, InvalidSample, NotFound, PoorSample, VaultError
from vault.custody.shredding import ShredLedger
from vault.intake.extraction import IMAGE, ISO_19794_2, Extractor
from vault.intake.features import SampleReport, fuse, unit
from vault.intake.features.sface import embedding_features
from vault.templates.identification import Capacity, capacity
from vault.custody.keys import KeyStore, TenantKey
from vault.access.lockout import SPENT, Attempts, FailureLimiter
from vault.templates.matching import MatchIndex
from vault.modalities import FACE, FINGERPRINT, MODALITY_NAMES
from vault.templates.profiles import CURRENT, PROFILES
from vault.templates.protection import Protector, RowIdentity
from vault.startup import SHARE_ROWS, load_shares, share_codes, workers_for
from vault.store.base import ADD, LIVE, AuditTrail, TemplateRow, Templates

__all__ = ["FACE_EMBEDDING", "IMAGE", "ISO_19794_2", "Candidate", "Enrolment", "Identification",
           "IdentifyPolicy", "Reissue", "Sample", "Vault", "Verification"]

log = logging.getLogger("vault.core")

FACE_EMBEDDING = "face_embedding"
MAX_SAMPLES = 10
MAX_ID_LENGTH = 128
MAX_REASON_LENGTH = 500
MAX_CANDIDATES = 100
FINGER_POSITIONS = range(0, 11)  # ISO/IEC 19794-2: 0 unknown, 1-10 right thumb .. left little


@dataclass(frozen=True)
class Sample:
    """One biometric sample as received: `kind` IMAGE (encoded bytes), ISO_19794_2 (a minutiae
    record) or FACE_EMBEDDING (128 floats, where the site allows them); None when it carries none."""

    kind: str | None
    data: bytes | tuple[float, ...] = b""


@dataclass(frozen=True)
class IdentifyPolicy:
    """The site's 1:N promise: the FPIR Identify holds at any gallery size, and the expected
    FNIR beyond which the operator is told the modality cannot keep it usefully."""

    fpir: float = 1e-2
    max_fnir: float = 0.2


@dataclass(frozen=True)
class Enrolment:
    template_id: str
    profile: str
    key_version: int
    reports: list[SampleReport]


@dataclass(frozen=True)
class Reissue(Enrolment):
    revoked_template_id: str = ""


@dataclass(frozen=True)
class Verification:
    matched: bool
    decision_id: str
    report: SampleReport
    score_band: int = 0  # 1-10 for auditors where the site enables it, else 0


@dataclass(frozen=True)
class Candidate:
    subject_id: str
    template_id: str
    rank: int


@dataclass(frozen=True)
class Identification:
    candidates: list[Candidate]
    decision_id: str
    report: SampleReport


class VaultStore(Templates, AuditTrail, Attempts, Protocol):
    """The store roles the core uses (vault.store.base): templates, the audit trail, and the
    attempts its default limiter counts."""


@dataclass
class Vault:
    """Templates of every tenant: the store, the tenant keys, the extraction pool and the
    in-memory match index, under one set of rules."""

    store: VaultStore
    keys: KeyStore
    extractor: Extractor
    index: MatchIndex = field(default_factory=MatchIndex)
    limiter: FailureLimiter | None = None  # default: the default limits over this store's attempts
    identification: IdentifyPolicy = field(default_factory=IdentifyPolicy)
    allow_face_embeddings: bool = False
    auditor_score_bands: bool = False
    protector: Protector = field(default_factory=Protector)
    shreds: ShredLedger | None = None  # per-template shred secrets (vault.custody.shredding); None: rows sealed without
    load_workers: int | None = None  # start-up worker processes (vault.startup); None: one a core for a large store

    def __post_init__(self):
        if self.limiter is None:
            self.limiter = FailureLimiter(self.store)
        self._ledger_paired = False  # the shred ledger knows which store it belongs to (pair_ledger)
        self.cohort_shifts = CohortShifts(self.protector)  # each key's operating point (vault.templates.cohort)
        self.template_cohort = TemplateCohort(self.protector)  # each fingerprint template's offset

    # -- enrolment ------------------------------------------------------------------------------
    async def enroll(self, caller: Identity, subject_id: str, modality: int, finger: int, samples: list[Sample],
                     require_single_face: bool = False) -> Enrolment:
        subject_id = check_id(subject_id, "subject_id")
        modality = check_modality(modality)
        finger = check_finger(modality, finger)
        vectors, reports = await self._features(modality, samples, require_single_face, client=caller_key(caller))
        row, code, key, shred = await off_loop(self._new_template, caller.tenant, subject_id, modality, finger,
                                               vectors)
        audit = AuditEntry("Enroll", caller.tenant, caller.name, subject_id, row.template_id, "enrolled",
                           f"samples={len(vectors)} profile={row.profile} key_version={row.key_version}")

        def commit():
            self._keep_secret(row, shred)
            self.store.insert(row, audit)
            self._pair_ledger()
            self._index_row(row, code, key)

        await committed(commit)
        return Enrolment(row.template_id, row.profile, row.key_version, reports)

    async def reissue(self, caller: Identity, template_id: str, samples: list[Sample], reason: str = "",
                      require_single_face: bool = False) -> Reissue:
        old_id = check_id(template_id, "template_id")
        reason = check_reason(reason)
        old = await off_loop(self.store.get, caller.tenant, old_id)
        if old is None or old.status != LIVE:
            raise NotFound("no live template with that template_id")
        vectors, reports = await self._features(old.modality, samples, require_single_face,
                                                client=caller_key(caller))
        row, code, key, shred = await off_loop(self._new_template, caller.tenant, old.subject_id, old.modality,
                                               old.finger, vectors)
        audit = AuditEntry("Reissue", caller.tenant, caller.name, old.subject_id, f"{old_id}->{row.template_id}",
                           "reissued", reason)

        def commit():
            self._keep_secret(row, shred)
            if not self.store.reissue(old_id, row, reason, audit):
                return False
            self._shred([old_id])
            self.index.remove(caller.tenant, old.modality, old_id)
            self._index_row(row, code, key)
            return True

        if not await committed(commit):
            raise NotFound("no live template with that template_id")  # revoked meanwhile
        return Reissue(row.template_id, row.profile, row.key_version, reports, revoked_template_id=old_id)

    async def revoke(self, caller: Identity, reason: str = "", *, template_id: str | None = None,
                     subject_id: str | None = None) -> list[str]:
        """Revoke one template, or every live template of a subject: the revoked template ids."""
        if (template_id is None) == (subject_id is None):
            raise InvalidArgument("template_id or subject_id is required")
        target = "template_id" if template_id is not None else "subject_id"
        value = check_id(template_id if template_id is not None else subject_id, target)
        reason = check_reason(reason)
        if target == "template_id":
            candidates = [value]
        else:
            candidates = [r.template_id for r in await off_loop(self.store.list, caller.tenant, value)]
        audit = AuditEntry("Revoke", caller.tenant, caller.name, value if target == "subject_id" else "",
                           "", "revoked", reason)

        def commit():
            revoked = self.store.revoke(caller.tenant, candidates, reason, audit) if candidates else []
            self._shred(revoked)
            for revoked_id in revoked:
                for modality in (FACE, FINGERPRINT):
                    self.index.remove(caller.tenant, modality, revoked_id)
            return revoked

        revoked = await committed(commit)
        if not revoked:
            raise NotFound(f"no live template for that {target}")
        return revoked

    async def list_templates(self, caller: Identity, subject_id: str = "", include_revoked: bool = False,
                             only_old_key_versions: bool = False) -> list[TemplateRow]:
        subject = check_id(subject_id, "subject_id") if subject_id else None
        rows = await off_loop(self.store.list, caller.tenant, subject, include_revoked)
        if only_old_key_versions:
            current = await off_loop(self.keys.current_version, caller.tenant)
            rows = [r for r in rows if r.status == LIVE and r.key_version < current]
        return rows

    # -- decisions ------------------------------------------------------------------------------
    async def verify(self, caller: Identity, probe: Sample | None, *, subject_id: str | None = None,
                     template_id: str | None = None, modality: int = 0, finger: int = 0,
                     require_single_face: bool = False) -> Verification:
        """1:1 against a subject's templates (of `modality`, optionally one finger) or one template."""
        if (subject_id is None) == (template_id is None):
            raise InvalidArgument("subject_id or template_id is required")
        claim = "subject_id" if subject_id is not None else "template_id"
        claimed = check_id(subject_id if subject_id is not None else template_id, claim)
        if claim == "subject_id" or modality:
            check_modality(modality)
        if finger not in FINGER_POSITIONS:
            raise InvalidArgument("finger must be an ISO/IEC 19794-2 finger position (0-10)")
        if probe is None:
            raise InvalidArgument("probe is required")
        person = claimed  # whose failures count towards the lockout
        if claim == "subject_id":
            check_finger(modality, finger)
            where = {"subject_id": claimed, "finger": finger}
        else:
            # The probe's modality comes from the request, or from the probe itself (an ISO/IEC
            # 19794-2 record is a fingerprint, anything else a face), never from the stored row: how
            # the probe is read, and so every error it can cause, is the same whether the template
            # exists or not (issue 24, finding 6).
            modality = modality or (FINGERPRINT if probe.kind == ISO_19794_2 else FACE)
            row = await off_loop(self.store.get, caller.tenant, claimed)
            # Unknown, another tenant's, revoked, other-modality and other-finger templates all
            # answer NO_MATCH, audited and counted alike: no oracle for what exists.
            live = (row is not None and row.status == LIVE and modality == row.modality
                    and finger in (0, row.finger))
            where = {"template_id": claimed} if live else None
            person = row.subject_id if live else claimed
        async with self._attempt(caller, person) as attempt:
            # Extract even when nothing can match, so the answer's timing does not reveal enrolment.
            (vector,), (report,) = await self._features(
                modality, [probe], require_single_face, await off_loop(self._probe_features, caller.tenant, modality),
                attempt.spent, client=caller_key(caller))
            # An id that selects nothing (unknown, revoked) still has its probe transformed, as every
            # claim does in MatchIndex.verify: the time taken does not tell enrolled from unknown.
            matched, best = await off_loop(self.index.verify, caller.tenant, modality,
                                           self._probe_codes(caller.tenant, vector), **(where or {"nothing": True}))
            # An auditor's score band (where the site enables them) only comes with a MATCH: a band
            # for NO_MATCH would tell a climber which way is warmer (issue 24, finding 5: deciles
            # let one climb from another person's face to a MATCH in ~500 calls). A banded answer
            # is spent from the client's budget.
            band = 0
            if matched and self.auditor_score_bands and AUDITOR in caller.roles:
                # The tenth of the current profile's genuine scores the match falls in: face scores
                # are normalised (threshold ~4), so a band of the raw 0-1 scale said 10 for all.
                model = CURRENT[modality].score_model(1)
                band = model.genuine_band(best) if model else max(1, min(10, int(best * 10) + 1))
            audit = AuditEntry("Verify", caller.tenant, caller.name, decision="MATCH" if matched else "NO_MATCH",
                               **{claim: claimed})
            await off_loop(self.store.record, audit)
            attempt.outcome = SPENT if band else matched
        return Verification(matched, audit.decision_id, report, band)

    async def identify(self, caller: Identity, probe: Sample | None, *, modality: int, finger: int = 0,
                       max_candidates: int = 1, require_single_face: bool = False) -> Identification:
        """1:N over the tenant's templates of `modality`, at the FPIR of the site's IdentifyPolicy."""
        modality = check_modality(modality)
        finger = check_finger(modality, finger)
        if probe is None:
            raise InvalidArgument("probe is required")
        limit = max_candidates or 1
        if not 1 <= limit <= MAX_CANDIDATES:
            raise InvalidArgument(f"max_candidates must be 1-{MAX_CANDIDATES}")
        async with self._attempt(caller, None) as attempt:
            (vector,), (report,) = await self._features(
                modality, [probe], require_single_face, await off_loop(self._probe_features, caller.tenant, modality),
                attempt.spent, client=caller_key(caller))
            winners = await off_loop(self.index.identify, caller.tenant, modality,
                                     self._probe_codes(caller.tenant, vector), limit, finger, self.identification.fpir)
            audit = AuditEntry("Identify", caller.tenant, caller.name, ",".join(h.subject_id for h in winners),
                               ",".join(h.template_id for h in winners),
                               "CANDIDATES" if winners else "NO_CANDIDATE", f"max_candidates={limit}")
            await off_loop(self.store.record, audit)
            # Candidates are an answer like a NO_MATCH (vault.access.lockout)
            attempt.outcome = SPENT if winners else False
        return Identification([Candidate(h.subject_id, h.template_id, i + 1) for i, h in enumerate(winners)],
                              audit.decision_id, report)

    # -- what Identify can promise ---------------------------------------------------------------
    def identify_capacity(self, tenant: str) -> list[tuple[int, Capacity]]:
        """(modality, what Identify can promise) for each modality the tenant has templates of."""
        out = []
        for modality, profile in sorted(CURRENT.items()):
            templates = sum(len(g) for g in self.index.galleries(tenant, modality))
            if templates:
                out.append((modality, capacity(profile, templates, self.identification.fpir,
                                               self.identification.max_fnir)))
        return out

    def warn_identify_capacity(self) -> None:
        """Log each tenant and modality whose gallery is too large for the FPIR target."""
        for tenant in self.keys.tenants():
            for modality, c in self.identify_capacity(tenant):
                if not c.reachable:
                    log.warning("tenant %s: Identify holds FPIR %g over %d %s templates only by missing an expected "
                                "%.0f%% of enrolled people (one-sample templates; %.0f%% fused); raise --identify-fpir "
                                "or split the gallery", tenant, c.fpir_target, c.templates,
                                MODALITY_NAMES[modality], 100 * c.expected_fnir, 100 * c.expected_fnir_fused)

    # -- the in-memory index ----------------------------------------------------------------------
    def load_index(self, tenants: Collection[str] | None = None) -> tuple[int, int]:
        """Unseal every live template (of `tenants` only, when given: a replica group's) into the
        in-memory index: (loaded, refused). A row that fails authentication (edited, swapped,
        sealed under other keys) is logged and never matches. The store is read and unsealed in
        shares, on every core once it is large (vault.startup); each share's templates go into
        their galleries in bulk (MatchIndex.add_many)."""
        counts = {"loaded": 0, "refused": 0, "retired": 0}
        sweep = self.shreds is not None and tenants is None
        live: set[str] = set()
        keys = {(tenant, version): self.keys.tenant_key(tenant, version)
                for tenant in (self.keys.tenants() if tenants is None else sorted(set(tenants)))
                for version in self.keys.versions(tenant)}

        bounds = self.store.share_bounds(SHARE_ROWS)
        reserved: set[tuple] = set()

        def take(share, buffer) -> None:
            if sweep:
                live.update(share.live_ids())
            for group in share.groups:
                profile, key = PROFILES[group.profile], keys[(group.tenant, group.key_version)]
                if (at := (group.tenant, group.modality, group.profile, group.key_version)) not in reserved:
                    # Shares cut the ids evenly, so a group's first share says about how many it will hold.
                    reserved.add(at)
                    self.index.reserve(*at[:2], profile, group.key_version,
                                       int(len(group.template_ids) * (len(bounds) + 1) * 1.1) + 64,
                                       self.cohort_shifts.shift(key, profile))
                self.index.add_many(group.tenant, group.modality, profile, group.key_version, group.template_ids,
                                    group.subject_ids, share_codes(buffer, group), group.fingers, group.fused,
                                    self.cohort_shifts.shift(key, profile), group.offsets, group.orders)
                counts["loaded"] += len(group.template_ids)
            for tenant, modality, name, key_version, template_id, subject_id, finger, samples, codes, offsets \
                    in share.kept_apart:
                profile, key = PROFILES[name], keys[(tenant, key_version)]
                self.index.add(tenant, modality, profile, key_version, template_id, subject_id, finger, codes,
                               samples, self.cohort_shifts.shift(key, profile), offsets)
                counts["loaded"] += 1
            for template_id, why in share.refused:
                counts["refused"] += 1
                log.error("template %s excluded from matching: %s", template_id, why)
            counts["retired"] += len(share.retired)
            for tenant, template_id in share.unopened:  # its ledger bucket rotated meanwhile: read afresh
                row = self.store.get(tenant, template_id)
                if row is None or row.status != LIVE:
                    continue
                try:
                    self._index_row(row)
                    counts["loaded"] += 1
                except VaultError as error:
                    counts["refused"] += 1
                    log.error("template %s excluded from matching: %s", template_id, error.message)

        load_shares(bounds, workers_for(len(bounds) + 1, self.load_workers), take, store=self.store,
                    ledger=self.shreds, keys=keys, tenants=tenants, protector=self.protector)
        if counts["retired"]:
            log.warning("%d live templates use retired protection profiles and cannot match: re-enrol them",
                        counts["retired"])
        # Only a load of every tenant knows every live template (a replica group's server sweeps apart).
        if sweep and (finished := self.shreds.retain(live, store_identity(self.store))):
            log.warning("shredded %d secrets of templates no longer live (a revocation or enrolment a crash "
                        "interrupted)", finished)
        return counts["loaded"], counts["refused"]

    def apply_change(self, kind: str, row: TemplateRow) -> None:
        """A template change from the store's change feed (vault.replication.IndexSync): made by
        another replica, or by this one (then already applied, and a no-op here)."""
        if kind == ADD:
            if row.template_id in self.index:
                return
            try:
                self._index_row(row)
            except VaultError as error:
                log.error("template %s excluded from matching: %s", row.template_id, error.message)
        else:
            self.index.remove(row.tenant, row.modality, row.template_id)

    def _index_row(self, row: TemplateRow, code=None, key: TenantKey | None = None,
                   shred_secrets: dict[str, bytes] | None = None) -> None:
        """Add a row to the index: its code as just made, or unsealed under `key` (its tenant key
        version, looked up here when the caller has not) and its shred secret (from `shred_secrets`, read
        at start-up, or from the ledger)."""
        profile = PROFILES.get(row.profile)
        if profile is None or profile.retired:
            raise FailedPrecondition(f"template {row.template_id} uses retired profile {row.profile}: re-enrol")
        key = key or self.keys.tenant_key(row.tenant, row.key_version)
        if code is None:
            if shred_secrets is None and self.shreds is not None:
                shred_secrets = self.shreds.secrets([row.template_id])
            shred = (shred_secrets or {}).get(row.template_id)
            code = self.protector.unseal(key, row_identity(row), profile, row.salt, row.sealed, shred)
        self.index.add(row.tenant, row.modality, profile, row.key_version, row.template_id,
                       row.subject_id, row.finger, code, row.sample_count, self.cohort_shifts.shift(key, profile),
                       self.template_cohort.offsets(key, profile, code))

    # -- shared steps -----------------------------------------------------------------------------
    async def _features(self, modality: int, samples: list[Sample], require_single_face: bool,
                        features: tuple[str, ...] = (), spent: "_Spent | None" = None, client: object = None):
        """Feature vectors (one per extractor in `features`, default the current profile's) and
        reports of the samples, extracted in the worker pool (`client`'s fair share of it). A sample
        the workers refused (no face, too few minutiae, undecodable) sets `spent`: it cost a worker."""
        if not samples:
            raise InvalidArgument("at least one sample is required")
        if len(samples) > MAX_SAMPLES:
            raise InvalidArgument(f"at most {MAX_SAMPLES} samples per request")
        to_extract, embedded = [], []
        for sample in samples:
            if sample.kind == FACE_EMBEDDING:
                if not self.allow_face_embeddings:
                    raise FailedPrecondition("this vault does not accept pre-computed face embeddings")
                if modality != FACE:
                    raise InvalidArgument("face embeddings are FACE samples")
                # An embedding is of the current face profile's extractor (SFace); templates of older
                # profiles (dlib) cannot be compared with it.
                embedded.append({CURRENT[FACE].features: unit(embedding_features(sample.data))})
            elif sample.kind == IMAGE:
                to_extract.append((IMAGE, sample.data))
            elif sample.kind == ISO_19794_2:
                if modality != FINGERPRINT:
                    raise InvalidArgument("ISO/IEC 19794-2 records are FINGERPRINT samples")
                to_extract.append((ISO_19794_2, sample.data))
            else:
                raise InvalidArgument("a sample has no data")
        try:
            extracted = (await self.extractor.extract_many(modality, to_extract, require_single_face, features,
                                                           client=client) if to_extract else [])
        except (PoorSample, InvalidSample):
            if spent is not None:
                spent.set()
            raise
        vectors = [v for v, _ in extracted] + embedded
        reports = [r for _, r in extracted] + [SampleReport() for _ in embedded]
        return vectors, reports

    def _probe_features(self, tenant: str, modality: int) -> tuple[str, ...]:
        """The extractors a probe goes through: the current profile's, and those of older profiles
        the tenant still has templates of (they keep matching until reissued). Decided per tenant,
        never per subject, so the time a probe takes says nothing of who is enrolled."""
        kinds = {CURRENT[modality].features} | {g.profile.features for g in self.index.galleries(tenant, modality)
                                                if len(g)}
        return tuple(sorted(kinds))

    def _new_template(self, tenant: str, subject_id: str, modality: int, finger: int, vectors):
        """Protect and seal the samples' vectors under the tenant's current key, fused or kept apart
        as the current profile says: (row, code(s) for the index, the key)."""
        key = self.keys.ensure_tenant(tenant)
        profile = CURRENT[modality]
        if profile.keeps_sample_codes:
            code = self.protector.protect_many(key, profile, np.stack([v[profile.features] for v in vectors]))
        else:
            code = self.protector.protect(key, profile, fuse([v[profile.features] for v in vectors]))
        identity = RowIdentity(tenant, uuid.uuid4().hex, subject_id, modality, finger, profile.name, key.version,
                               profile.sealed_sample_count(len(vectors)))
        shred = ShredLedger.new_secret() if self.shreds is not None else None
        salt, sealed = self.protector.seal(key, identity, code, shred)
        row = TemplateRow(identity.template_id, tenant, subject_id, modality, finger, profile.name, key.version,
                          salt, sealed, len(vectors), time.time())
        return row, code, key, shred

    def _keep_secret(self, row: TemplateRow, shred: bytes | None) -> None:
        if shred is not None:
            self.shreds.put(row.template_id, row.tenant, shred)

    def _pair_ledger(self) -> None:
        """Once the store has an audit trail, tell the shred ledger which store it belongs to (once per
        process): its start-up sweep then never runs against another or an empty one."""
        if self.shreds is not None and not self._ledger_paired and (identity := store_identity(self.store)):
            self.shreds.pair(identity)
            self._ledger_paired = True

    def _shred(self, template_ids: list[str]) -> None:
        """Revoke = erase: the templates' shred secrets go, and with them every copy of their rows."""
        if self.shreds is not None and template_ids:
            self.shreds.shred(template_ids)

    def _probe_codes(self, tenant: str, vector):
        """The probe's code per gallery (profile, key version), made on first use: Identify and Verify
        transform a probe at most once per key version, never once per stored template."""
        codes: dict[tuple[str, int], object] = {}
        keys: dict[int, TenantKey] = {}

        def code_for(gallery):
            if gallery.profile.features not in vector:
                return None  # a probe without this extractor's vector (an embedding) cannot compare
            group = (gallery.profile.name, gallery.key_version)
            if group not in codes:
                if gallery.key_version not in keys:
                    keys[gallery.key_version] = self.keys.tenant_key(tenant, gallery.key_version)
                codes[group] = self.protector.protect(keys[gallery.key_version], gallery.profile,
                                                      vector[gallery.profile.features])
            return codes[group]

        return code_for

    @contextlib.asynccontextmanager
    async def _attempt(self, caller: Identity, subject: str | None):
        """One try under the lockout rule (vault.access.lockout), its limiter calls off the event loop:
        admitted (or LockedOut, before anything else happens), then ended however the body ends
        (an error, a cancelled call), and a lockout it trips audited."""
        tenant, client = caller.tenant, caller.name
        admitted = asyncio.ensure_future(off_loop(self.limiter.begin, tenant, client, subject))
        try:
            await asyncio.shield(admitted)
        except asyncio.CancelledError:
            # The call went away while the store admitted the try: once admitted, it ends counting nothing.
            admitted.add_done_callback(lambda done: None if done.cancelled() or done.exception() else
                                       _background(off_loop(self.limiter.end, tenant, client, subject, None)))
            raise
        attempt = _Attempt()
        try:
            yield attempt
        finally:
            outcome = SPENT if attempt.spent else attempt.outcome
            if tripped := await asyncio.shield(off_loop(self.limiter.end, tenant, client, subject, outcome)):
                await self._record_lockout(caller, subject, tripped)  # also when the try ends in an error

    async def _record_lockout(self, caller: Identity, subject: str | None, tripped: tuple[str, ...]) -> None:
        """Audit a lockout, naming the limits the try tripped (the subject the try named is kept
        even when only the per-client limit tripped)."""
        detail = self.limiter.limits.describe(tripped)
        log.warning("lockout of %s after repeated failures (%s)", caller.name, detail)
        await off_loop(self.store.record, AuditEntry(
            "Lockout", caller.tenant, caller.name, subject or "", "", "LOCKED_OUT", detail))


class _Attempt:
    """A try in progress: what it spends (vault.access.lockout), None until there is an answer."""

    def __init__(self):
        self.outcome: bool | str | None = None
        self.spent = _Spent()


_BACKGROUND: set[asyncio.Future] = set()


def _background(coroutine) -> None:
    """Run a coroutine to its end with nobody awaiting it (kept referenced until done)."""
    task = asyncio.ensure_future(coroutine)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


class _Spent:
    """Set when a probe's extraction failed in a worker: the try is spent from the client's budget."""

    def __init__(self):
        self._set = False

    def set(self) -> None:
        self._set = True

    def __bool__(self) -> bool:
        return self._set


def caller_key(caller: Identity) -> tuple[str, str] | None:
    """Whose fair share of the extraction workers a call uses (vault.intake.extraction.Extractor). None
    for the plaintext loopback's one local operator: every call there is the same caller, so a
    share would only leave workers idle (and halve the embedded default's throughput)."""
    if caller is LOCAL_OPERATOR:
        return None
    return (caller.tenant, caller.name)


def store_identity(store: AuditTrail) -> str | None:
    """What names a template store across restarts, backups and restores: the MAC of its first audit
    record (under the audit key, so unique to the deployment); None for a store with no audit trail.
    The shred ledger sweeps only against the store it belongs to (vault.custody.shredding.ShredLedger.retain)."""
    first = store.audit_mac(1)
    return first.hex() if first else None


def row_identity(row: TemplateRow) -> RowIdentity:
    """What the row's seal binds (vault.templates.protection.RowIdentity)."""
    profile = PROFILES.get(row.profile)
    return RowIdentity(row.tenant, row.template_id, row.subject_id, row.modality, row.finger, row.profile,
                       row.key_version, profile.sealed_sample_count(row.sample_count) if profile else None)


async def off_loop(call, /, *args, **kwargs):
    """The one way the core runs a blocking step (store, limiter, keys, protection, matching): in a
    worker thread, never on the event loop, so one slow call (a PostgreSQL round trip, a large
    gallery) delays only itself."""
    return await asyncio.to_thread(call, *args, **kwargs)


async def committed(change):
    """Run a store change and its index update to the end even if the call is cancelled meanwhile
    (client deadline, shutdown): the database and the in-memory index never disagree."""
    return await asyncio.shield(off_loop(change))


# -- request checks (shared by every operation) ----------------------------------------------------
# Scripts that one name may mix (Japanese writes Han, Hiragana and Katakana together); any other
# mix of scripts in one id is refused, so a look-alike (a Cyrillic "а" in "аlice") cannot stand
# beside the id it imitates (issue 24, finding 10).
_SCRIPTS_WRITTEN_TOGETHER = frozenset({"CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA"})


def _script(character: str) -> str:
    name = unicodedata.name(character, "")
    return name.split(" ")[0] if name else "UNKNOWN"


def check_id(value: str, what: str) -> str:
    """The id in its NFKC form (a full-width "ａｌｉｃｅ" is "alice"), printable, of one script."""
    if not value:
        raise InvalidArgument(f"{what} is required")
    value = unicodedata.normalize("NFKC", value)
    if len(value) > MAX_ID_LENGTH or not value.isprintable():
        raise InvalidArgument(f"{what} must be 1-{MAX_ID_LENGTH} printable characters")
    scripts = {_script(character) for character in value if character.isalpha()}
    if len(scripts) > 1 and not scripts <= _SCRIPTS_WRITTEN_TOGETHER:
        raise InvalidArgument(f"{what} mixes letters of several scripts ({', '.join(sorted(scripts))}); "
                              "use one script")
    return value


def check_reason(value: str) -> str:
    if len(value) > MAX_REASON_LENGTH or not value.isprintable():
        raise InvalidArgument(f"reason must be at most {MAX_REASON_LENGTH} printable characters")
    return value


def check_modality(modality: int) -> int:
    if modality not in (FACE, FINGERPRINT):
        raise InvalidArgument("modality must be FACE or FINGERPRINT")
    return modality


def check_finger(modality: int, finger: int) -> int:
    if finger not in FINGER_POSITIONS:
        raise InvalidArgument("finger must be an ISO/IEC 19794-2 finger position (0-10)")
    if modality == FACE and finger:
        raise InvalidArgument("finger applies to FINGERPRINT only")
    return finger
