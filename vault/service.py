"""The Vault gRPC service: each RPC reads top to bottom.

    authorise -> validate -> extract (worker processes) -> protect (tenant key) -> store + audit
    (one transaction) -> update the in-memory index -> answer with a decision or metadata

Nothing an RPC returns, logs or stores holds an image, a feature vector, a code or a score.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from dataclasses import dataclass

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from vault import auth
from vault.audit import AuditEntry
from vault.exceptions import FailedPrecondition, InvalidArgument, NotFound, VaultError
from vault.extraction import IMAGE, ISO_19794_2, Extractor
from vault.features import SampleReport, fuse
from vault.features.face import embedding_features
from vault.identification import Capacity, capacity, per_comparison_fmr
from vault.keys import KeyStore
from vault.lockout import FailureLimiter
from vault.matching import Hit, MatchIndex
from vault.profiles import CURRENT, FACE, FINGERPRINT, MODALITY_NAMES, PROFILES
from vault.protection import Protector, RowIdentity
from vault.store import LIVE, TemplateRow, TemplateStore
from vault.store.base import ADD
from vault.v1 import vault_pb2 as pb
from vault.v1 import vault_pb2_grpc

log = logging.getLogger("vault.service")

MAX_SAMPLES = 10
MAX_ID_LENGTH = 128
MAX_REASON_LENGTH = 500
MAX_CANDIDATES = 100


@dataclass(frozen=True)
class IdentifyPolicy:
    """The site's 1:N promise: the FPIR Identify holds at any gallery size, and the expected
    FNIR beyond which the operator is told the modality cannot keep it usefully."""

    fpir: float = 1e-2
    max_fnir: float = 0.2


def rpc(handler):
    """Map VaultError to its gRPC status; anything else becomes INTERNAL with a log reference.
    Counts every call in the servicer's metrics by status code, before the status is sent, so a
    client that has its answer also finds it counted."""
    name = handler.__name__

    @functools.wraps(handler)
    async def wrapper(self, request, context):
        started = time.perf_counter()
        code = "OK"
        try:
            return await asyncio.wait_for(handler(self, request, context), getattr(self, "call_timeout", None))
        except TimeoutError:
            code = "DEADLINE_EXCEEDED"
            log.info("%s took longer than %s s", name, self.call_timeout)
            status = (grpc.StatusCode.DEADLINE_EXCEEDED, f"the request took longer than {self.call_timeout:g} s")
        except VaultError as error:
            code = error.status.name
            log.info("%s %s: %s", name, code, error.message)
            status = (error.status, error.message)
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except grpc.aio.AbortError:
            raise
        except Exception:
            code = "INTERNAL"
            reference = uuid.uuid4().hex[:12]
            log.exception("%s failed, reference %s", name, reference)
            status = (grpc.StatusCode.INTERNAL, f"internal error, reference {reference}")
        finally:
            elapsed = time.perf_counter() - started
            if code == "OK":
                log.info("%s ok %.1f ms", name, 1000 * elapsed)
            metrics = getattr(self, "metrics", None)
            if metrics is not None:
                metrics.observe(name, code, elapsed)
        await context.abort(*status)  # reached only from the handled errors above

    return wrapper


def prefetched(rows, batch: int = 2000, depth: int = 8):
    """Iterate rows read by a background thread, in batches, so reading the store (network I/O,
    decoding) overlaps with unsealing and indexing them at start-up. Pays for PostgreSQL (1M rows:
    28 s instead of 39 s); for SQLite, whose reads hold the GIL, it costs (33 s instead of ~20 s)."""
    import itertools
    import queue
    import threading

    buffer: queue.Queue = queue.Queue(depth)

    def produce():
        try:
            iterator = iter(rows)
            while chunk := list(itertools.islice(iterator, batch)):
                buffer.put(chunk)
            buffer.put(None)
        except BaseException as error:  # re-raised in the consumer
            buffer.put(error)

    threading.Thread(target=produce, name="vault-prefetch", daemon=True).start()
    while (chunk := buffer.get()) is not None:
        if isinstance(chunk, BaseException):
            raise chunk
        yield from chunk


async def committed(change):
    """Run a store change and its index update to the end even if the RPC is cancelled meanwhile
    (client deadline, shutdown): the database and the in-memory index never disagree."""
    return await asyncio.shield(asyncio.to_thread(change))


def check_id(value: str, what: str) -> str:
    if not value:
        raise InvalidArgument(f"{what} is required")
    if len(value) > MAX_ID_LENGTH or not value.isprintable():
        raise InvalidArgument(f"{what} must be 1-{MAX_ID_LENGTH} printable characters")
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
    if finger not in pb.FingerPosition.values():
        raise InvalidArgument("finger must be an ISO/IEC 19794-2 finger position (0-10)")
    if modality == FACE and finger:
        raise InvalidArgument("finger applies to FINGERPRINT only")
    return finger


def report_pb(report: SampleReport) -> pb.SampleReport:
    return pb.SampleReport(faces_found=report.faces_found, largest_face_used=report.largest_face_used,
                           minutiae=report.minutiae)


def timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


class VaultService(vault_pb2_grpc.VaultServicer):
    def __init__(self, store: TemplateStore, keys: KeyStore, extractor: Extractor, index: MatchIndex,
                 authenticator: auth.Authenticator, allow_face_embeddings: bool = False,
                 limiter: FailureLimiter | None = None, auditor_score_bands: bool = False,
                 identification: IdentifyPolicy | None = None):
        self.store = store
        self.identification = identification or IdentifyPolicy()
        self.metrics = None  # vault.metrics.Metrics, set by the server
        self.call_timeout: float | None = None  # server-side deadline of one RPC
        self.limiter = limiter or FailureLimiter()
        self.auditor_score_bands = auditor_score_bands
        self.keys = keys
        self.protector = Protector(keys)
        self.extractor = extractor
        self.index = index
        self.authenticator = authenticator
        self.allow_face_embeddings = allow_face_embeddings

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

    # -- start-up -------------------------------------------------------------------------------
    def load_index(self) -> tuple[int, int]:
        """Unseal every live template into the in-memory index: (loaded, refused). A row that fails
        authentication (edited, swapped, sealed under other keys) is logged and never matches."""
        loaded = refused = retired = 0
        rows = self.store.live_rows()
        if getattr(self.store, "prefetch_reads", False):
            rows = prefetched(rows)
        for row in rows:
            profile = PROFILES.get(row.profile)
            if profile is None or profile.retired:
                retired += 1
                continue
            try:
                self._index_row(row)
                loaded += 1
            except VaultError as error:  # IntegrityError: edited, swapped or foreign-key row
                refused += 1
                log.error("template %s excluded from matching: %s", row.template_id, error.message)
        if retired:
            log.warning("%d live templates use retired protection profiles and cannot match: re-enrol them", retired)
        return loaded, refused

    def apply_change(self, kind: str, row: TemplateRow) -> None:
        """A template change from the store's change feed (vault.replication.IndexSync): made by
        another replica, or by this one (then already applied, and a no-op here)."""
        if kind == ADD:
            if any(g.has(template_id=row.template_id) for g in self.index.galleries(row.tenant, row.modality)):
                return
            try:
                self._index_row(row)
            except VaultError as error:
                log.error("template %s excluded from matching: %s", row.template_id, error.message)
        else:
            self.index.remove(row.tenant, row.modality, row.template_id)

    def _index_row(self, row: TemplateRow, code=None) -> None:
        profile = PROFILES.get(row.profile)
        if profile is None or profile.retired:
            raise FailedPrecondition(f"template {row.template_id} uses retired profile {row.profile}: re-enrol")
        if code is None:
            code = self.protector.unseal(self._row_identity(row), profile, row.salt, row.sealed)
        self.index.add(row.tenant, row.modality, profile, row.key_version, row.template_id,
                       row.subject_id, row.finger, code, row.sample_count)

    @staticmethod
    def _row_identity(row: TemplateRow) -> RowIdentity:
        profile = PROFILES.get(row.profile)
        return RowIdentity(row.tenant, row.template_id, row.subject_id, row.modality, row.finger,
                           row.profile, row.key_version,
                           profile.sealed_sample_count(row.sample_count) if profile else None)

    # -- shared steps ---------------------------------------------------------------------------
    def _caller(self, context, rpc_name: str) -> auth.Identity:
        identity = self.authenticator.identify(context)
        if rpc_name == "Verify" and self.auditor_score_bands and auth.AUDITOR in identity.roles:
            return identity
        auth.authorize(identity, rpc_name)
        return identity

    async def _features(self, modality: int, samples, require_single_face: bool):
        """Unit feature vectors and reports of the samples, extracted in the worker pool."""
        if not samples:
            raise InvalidArgument("at least one sample is required")
        if len(samples) > MAX_SAMPLES:
            raise InvalidArgument(f"at most {MAX_SAMPLES} samples per request")
        to_extract, embedded = [], []
        for sample in samples:
            kind = sample.WhichOneof("data")
            if kind == "face_embedding":
                if not self.allow_face_embeddings:
                    raise FailedPrecondition("this vault does not accept pre-computed face embeddings")
                if modality != FACE:
                    raise InvalidArgument("face embeddings are FACE samples")
                embedded.append(embedding_features(sample.face_embedding.values))
            elif kind == IMAGE:
                to_extract.append((IMAGE, sample.image))
            elif kind == ISO_19794_2:
                if modality != FINGERPRINT:
                    raise InvalidArgument("ISO/IEC 19794-2 records are FINGERPRINT samples")
                to_extract.append((ISO_19794_2, sample.iso_19794_2))
            else:
                raise InvalidArgument("a sample has no data")
        extracted = await self.extractor.extract_many(modality, to_extract, require_single_face) if to_extract else []
        vectors = [v for v, _ in extracted] + embedded
        reports = [r for _, r in extracted] + [SampleReport() for _ in embedded]
        return vectors, reports

    def _new_template(self, tenant: str, subject_id: str, modality: int, finger: int, vectors, reports):
        """Protect and seal the fused vectors: (row for the store, code for the index)."""
        key = self.keys.ensure_tenant(tenant)
        profile = CURRENT[modality]
        code = self.protector.protect(tenant, key.version, profile, fuse(vectors))
        row_id = RowIdentity(tenant, uuid.uuid4().hex, subject_id, modality, finger, profile.name, key.version,
                             profile.sealed_sample_count(len(vectors)))
        salt, sealed = self.protector.seal(row_id, code)
        row = TemplateRow(row_id.template_id, tenant, subject_id, modality, finger, profile.name, key.version,
                          salt, sealed, len(vectors), time.time())
        return row, code

    def _probe_codes(self, tenant: str, vector):
        """The probe's code per (profile, key version), made on first use: Identify and Verify
        transform a probe at most once per key version, never once per stored template."""
        codes = {}

        def code_for(gallery):
            group = (gallery.profile.name, gallery.key_version)
            if group not in codes:
                codes[group] = self.protector.protect(tenant, gallery.key_version, gallery.profile, vector)
            return codes[group]

        return code_for

    def _best(self, tenant: str, modality: int, vector, **where) -> tuple[bool, float]:
        """1:1: (does the probe reach its profile's threshold, best score) against the selected template(s)."""
        code_for = self._probe_codes(tenant, vector)
        matched, best = False, 0.0
        for gallery in self.index.galleries(tenant, modality):
            if gallery.has(**where):
                for hit in gallery.search(code_for(gallery), **where):
                    matched |= hit.matched
                    best = max(best, hit.score)
        return matched, best

    # -- RPCs -----------------------------------------------------------------------------------
    @rpc
    async def Enroll(self, request, context):
        caller = self._caller(context, "Enroll")
        subject_id = check_id(request.subject_id, "subject_id")
        modality = check_modality(request.modality)
        finger = check_finger(modality, request.finger)
        vectors, reports = await self._features(modality, request.samples, request.require_single_face)
        row, code = self._new_template(caller.tenant, subject_id, modality, finger, vectors, reports)
        audit = AuditEntry("Enroll", caller.tenant, caller.name, subject_id, row.template_id, "enrolled",
                           f"samples={len(vectors)} profile={row.profile} key_version={row.key_version}")
        def commit():
            self.store.insert(row, audit)
            self._index_row(row, code)

        await committed(commit)
        return pb.EnrollResponse(template_id=row.template_id, profile=row.profile, key_version=row.key_version,
                                 sample_reports=[report_pb(r) for r in reports])

    @rpc
    async def Verify(self, request, context):
        caller = self._caller(context, "Verify")
        claim = request.WhichOneof("claim")
        if claim is None:
            raise InvalidArgument("subject_id or template_id is required")
        claimed = check_id(getattr(request, claim), claim)
        modality, finger = request.modality, request.finger
        if claim == "subject_id" or modality:
            check_modality(modality)
        if not request.HasField("probe"):
            raise InvalidArgument("probe is required")
        if claim == "subject_id":
            where = {"subject_id": claimed, "finger": finger}
        else:
            row = await asyncio.to_thread(self.store.get, caller.tenant, claimed)
            # Unknown, another tenant's and revoked templates all answer NO_MATCH: no oracle.
            live = row is not None and row.status == LIVE and modality in (0, row.modality)
            where = {"template_id": claimed} if live else None
            modality = row.modality if live else (modality or FACE)
        check_finger(modality, finger)
        self.limiter.check(caller.tenant, caller.name, claimed)
        # Extract even when nothing can match, so the answer's timing does not reveal enrolment.
        (vector,), (report,) = await self._features(modality, [request.probe], request.require_single_face)
        matched, best = self._best(caller.tenant, modality, vector, **where) if where else (False, 0.0)
        decision = pb.MATCH if matched else pb.NO_MATCH
        audit = AuditEntry("Verify", caller.tenant, caller.name, decision=pb.Decision.Name(decision), **{claim: claimed})
        await asyncio.to_thread(self.store.record, audit)
        if matched:
            self.limiter.succeeded(caller.tenant, caller.name, claimed)
        elif self.limiter.failed(caller.tenant, caller.name, claimed):
            await self._record_lockout(caller, claimed)
        band = 0
        if self.auditor_score_bands and auth.AUDITOR in caller.roles:
            band = min(10, int(best * 10) + 1)  # coarse on purpose: a decile is useless for hill-climbing
        return pb.VerifyResponse(decision=decision, decision_id=audit.decision_id, probe_report=report_pb(report),
                                 score_band=band)

    async def _record_lockout(self, caller: auth.Identity, subject: str | None) -> None:
        log.warning("lockout of %s after repeated failures", caller.name)
        await asyncio.to_thread(self.store.record, AuditEntry(
            "Lockout", caller.tenant, caller.name, subject or "", "", "LOCKED_OUT",
            f"per-subject limit {self.limiter.limits.per_subject}" if subject else
            f"per-client limit {self.limiter.limits.per_client}"))

    @rpc
    async def Identify(self, request, context):
        caller = self._caller(context, "Identify")
        modality = check_modality(request.modality)
        finger = check_finger(modality, request.finger)
        if not request.HasField("probe"):
            raise InvalidArgument("probe is required")
        limit = request.max_candidates or 1
        if not 1 <= limit <= MAX_CANDIDATES:
            raise InvalidArgument(f"max_candidates must be 1-{MAX_CANDIDATES}")
        self.limiter.check(caller.tenant, caller.name)
        (vector,), (report,) = await self._features(modality, [request.probe], request.require_single_face)
        code_for = self._probe_codes(caller.tenant, vector)
        galleries = self.index.galleries(caller.tenant, modality)
        # Thresholds for the gallery actually searched, so that FPIR holds at any size (vault.identification).
        fmr = per_comparison_fmr(self.identification.fpir, sum(g.count(finger) for g in galleries))

        def search() -> list[Hit]:
            hits = []
            for gallery in galleries:
                hits += gallery.top(code_for(gallery), limit * 4, finger, per_comparison_fmr=fmr)
            return hits

        best_by_subject: dict[str, Hit] = {}
        for hit in sorted(await asyncio.to_thread(search), key=lambda h: -h.score):
            best_by_subject.setdefault(hit.subject_id, hit)
        winners = list(best_by_subject.values())[:limit]
        audit = AuditEntry("Identify", caller.tenant, caller.name, ",".join(h.subject_id for h in winners),
                           ",".join(h.template_id for h in winners),
                           "CANDIDATES" if winners else "NO_CANDIDATE", f"max_candidates={limit}")
        await asyncio.to_thread(self.store.record, audit)
        if not winners and self.limiter.failed(caller.tenant, caller.name):
            await self._record_lockout(caller, None)
        return pb.IdentifyResponse(
            candidates=[pb.Candidate(subject_id=h.subject_id, template_id=h.template_id, rank=i + 1)
                        for i, h in enumerate(winners)],
            decision_id=audit.decision_id, probe_report=report_pb(report))

    @rpc
    async def Revoke(self, request, context):
        caller = self._caller(context, "Revoke")
        target = request.WhichOneof("target")
        if target is None:
            raise InvalidArgument("template_id or subject_id is required")
        value = check_id(getattr(request, target), target)
        reason = check_reason(request.reason)
        if target == "template_id":
            candidates = [value]
        else:
            candidates = [r.template_id for r in await asyncio.to_thread(self.store.list, caller.tenant, value)]
        audit = AuditEntry("Revoke", caller.tenant, caller.name, value if target == "subject_id" else "",
                           "", "revoked", reason)
        def commit():
            revoked = self.store.revoke(caller.tenant, candidates, reason, audit) if candidates else []
            for template_id in revoked:
                for modality in (FACE, FINGERPRINT):
                    self.index.remove(caller.tenant, modality, template_id)
            return revoked

        revoked = await committed(commit)
        if not revoked:
            raise NotFound(f"no live template for that {target}")
        return pb.RevokeResponse(revoked_template_ids=revoked)

    @rpc
    async def Reissue(self, request, context):
        caller = self._caller(context, "Reissue")
        old_id = check_id(request.template_id, "template_id")
        reason = check_reason(request.reason)
        old = await asyncio.to_thread(self.store.get, caller.tenant, old_id)
        if old is None or old.status != LIVE:
            raise NotFound("no live template with that template_id")
        vectors, reports = await self._features(old.modality, request.samples, request.require_single_face)
        row, code = self._new_template(caller.tenant, old.subject_id, old.modality, old.finger, vectors, reports)
        audit = AuditEntry("Reissue", caller.tenant, caller.name, old.subject_id, f"{old_id}->{row.template_id}",
                           "reissued", reason)
        def commit():
            if not self.store.reissue(old_id, row, reason, audit):
                return False
            self.index.remove(caller.tenant, old.modality, old_id)
            self._index_row(row, code)
            return True

        if not await committed(commit):
            raise NotFound("no live template with that template_id")  # revoked meanwhile
        return pb.ReissueResponse(template_id=row.template_id, revoked_template_id=old_id, profile=row.profile,
                                  key_version=row.key_version, sample_reports=[report_pb(r) for r in reports])

    @rpc
    async def ListTemplates(self, request, context):
        caller = self._caller(context, "ListTemplates")
        subject_id = check_id(request.subject_id, "subject_id") if request.subject_id else None
        rows = await asyncio.to_thread(self.store.list, caller.tenant, subject_id, request.include_revoked)
        if request.only_old_key_versions:
            current = self.keys.current_version(caller.tenant)
            rows = [r for r in rows if r.status == LIVE and r.key_version < current]
        return pb.ListTemplatesResponse(templates=[
            pb.TemplateInfo(
                template_id=r.template_id, subject_id=r.subject_id, modality=r.modality, finger=r.finger,
                status=r.status, created_at=timestamp(r.created_at), revoked_at=timestamp(r.revoked_at),
                key_version=r.key_version, profile=r.profile, sample_count=r.sample_count,
                revoke_reason=r.revoke_reason, replaced_by=r.replaced_by)
            for r in rows])
