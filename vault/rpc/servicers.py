"""The three gRPC services, thin: each method reads its request into plain values, calls the core
(vault.core, vault.administration) as the caller the interceptor admitted, and builds the response.
Identity, roles, deadlines, errors and metrics are the interceptor's (vault.rpc.interceptor).
"""

from __future__ import annotations

import base64
import binascii

from google.protobuf.timestamp_pb2 import Timestamp

from vault.administration import Administration
from vault.core import Sample, Vault
from vault.exceptions import InvalidArgument
from vault.intake.features import SampleReport
from vault.rpc.interceptor import caller
from vault.access.tokens import TokenInfo
from vault_client.v1 import vault_pb2 as pb
from vault_client.v1 import vault_pb2_grpc


class VaultServicer(vault_pb2_grpc.VaultServicer):
    def __init__(self, vault: Vault):
        self.vault = vault

    async def Enroll(self, request, context):
        done = await self.vault.enroll(caller(), request.subject_id, request.modality, request.finger,
                                       samples(request.samples), request.require_single_face)
        return pb.EnrollResponse(template_id=done.template_id, profile=done.profile, key_version=done.key_version,
                                 sample_reports=[report_pb(r) for r in done.reports])

    async def Verify(self, request, context):
        claim = request.WhichOneof("claim")
        result = await self.vault.verify(
            caller(), sample(request.probe) if request.HasField("probe") else None,
            **({claim: getattr(request, claim)} if claim else {}),
            modality=request.modality, finger=request.finger, require_single_face=request.require_single_face)
        return pb.VerifyResponse(decision=pb.MATCH if result.matched else pb.NO_MATCH, decision_id=result.decision_id,
                                 probe_report=report_pb(result.report), score_band=result.score_band)

    async def Identify(self, request, context):
        result = await self.vault.identify(
            caller(), sample(request.probe) if request.HasField("probe") else None, modality=request.modality,
            finger=request.finger, max_candidates=request.max_candidates,
            require_single_face=request.require_single_face)
        return pb.IdentifyResponse(
            candidates=[pb.Candidate(subject_id=c.subject_id, template_id=c.template_id, rank=c.rank)
                        for c in result.candidates],
            decision_id=result.decision_id, probe_report=report_pb(result.report))

    async def Revoke(self, request, context):
        target = request.WhichOneof("target")
        revoked = await self.vault.revoke(caller(), request.reason, **({target: getattr(request, target)} if target else {}))
        return pb.RevokeResponse(revoked_template_ids=revoked)

    async def Reissue(self, request, context):
        done = await self.vault.reissue(caller(), request.template_id, samples(request.samples), request.reason,
                                        request.require_single_face)
        return pb.ReissueResponse(template_id=done.template_id, revoked_template_id=done.revoked_template_id,
                                  profile=done.profile, key_version=done.key_version,
                                  sample_reports=[report_pb(r) for r in done.reports])

    async def ListTemplates(self, request, context):
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size must be 0-{MAX_PAGE_SIZE} (0: every template in one response)")
        after = page_position(request.page_token)
        rows = await self.vault.list_templates(caller(), request.subject_id, request.include_revoked,
                                               request.only_old_key_versions)
        next_token = ""
        if request.page_size or after is not None:  # pages: template id order, each after the last one sent
            rows = sorted((r for r in rows if after is None or r.template_id > after), key=lambda r: r.template_id)
            size = request.page_size or DEFAULT_PAGE_SIZE
            if len(rows) > size:
                rows = rows[:size]
                next_token = base64.urlsafe_b64encode(f"{PAGE_TOKEN_PREFIX}{rows[-1].template_id}".encode()).decode()
        return pb.ListTemplatesResponse(next_page_token=next_token, templates=[
            pb.TemplateInfo(
                template_id=r.template_id, subject_id=r.subject_id, modality=r.modality, finger=r.finger,
                status=r.status, created_at=timestamp(r.created_at), revoked_at=timestamp(r.revoked_at),
                key_version=r.key_version, profile=r.profile, sample_count=r.sample_count,
                revoke_reason=r.revoke_reason, replaced_by=r.replaced_by)
            for r in rows])


MAX_PAGE_SIZE = 10_000
DEFAULT_PAGE_SIZE = 1000  # a page_token with page_size 0
PAGE_TOKEN_PREFIX = "after:"


def page_position(token: str) -> str | None:
    """The template id a page token says to continue after (None: the first page). A keyset, not an
    offset: templates enrolled or revoked between pages neither repeat nor skip the others."""
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii")
    except (UnicodeError, binascii.Error, ValueError):
        text = ""
    if not text.startswith(PAGE_TOKEN_PREFIX) or not 1 <= len(text) - len(PAGE_TOKEN_PREFIX) <= 128:
        raise InvalidArgument("page_token is not one this server gave (pass next_page_token as it came)")
    return text[len(PAGE_TOKEN_PREFIX):]


class AdminServicer(vault_pb2_grpc.AdminServicer):
    def __init__(self, administration: Administration):
        self.administration = administration

    async def CreateToken(self, request, context):
        token, info = await self.administration.create_token(caller(), request.role, request.name,
                                                             request.expires_in_seconds)
        return pb.CreateTokenResponse(token=token, info=token_pb(info))

    async def ListTokens(self, request, context):
        return pb.ListTokensResponse(tokens=[token_pb(i) for i in await self.administration.list_tokens(caller())])

    async def RevokeToken(self, request, context):
        await self.administration.revoke_token(caller(), request.token_id)
        return pb.RevokeTokenResponse()

    async def RotateKey(self, request, context):
        return pb.RotateKeyResponse(key_version=await self.administration.rotate_key(caller()))

    async def DestroyKeyVersion(self, request, context):
        shredded = await self.administration.destroy_key_version(caller(), request.key_version)
        return pb.DestroyKeyVersionResponse(shredded_templates=shredded)

    async def KeyStatus(self, request, context):
        status = await self.administration.key_status(caller())
        return pb.KeyStatusResponse(
            current_key_version=status.current_key_version,
            versions=[pb.KeyVersionStatus(key_version=v, live_templates=n)
                      for v, n in status.live_templates_by_version.items()],
            subjects_on_old_versions=status.subjects_on_old_versions,
            identify=[pb.IdentifyCapacity(modality=modality, templates=c.templates, fpir_target=c.fpir_target,
                                          expected_fnir=c.expected_fnir, expected_fnir_fused=c.expected_fnir_fused,
                                          reachable=c.reachable)
                      for modality, c in status.identify])


class AuditServicer(vault_pb2_grpc.AuditServicer):
    def __init__(self, administration: Administration):
        self.administration = administration

    async def ReadAudit(self, request, context):
        for number, record in await self.administration.read_audit(caller(), request.after_seq, request.limit):
            e = record.entry
            yield pb.AuditRecord(seq=number, at=timestamp(e.at), actor=e.actor, rpc=e.rpc, subject_id=e.subject_id,
                                 template_id=e.template_id, decision=e.decision, decision_id=e.decision_id,
                                 detail=e.detail)

    async def VerifyAudit(self, request, context):
        records, problems = await self.administration.verify_audit(caller())
        return pb.VerifyAuditResponse(intact=not problems, records=records,
                                      problems=[pb.AuditProblem(seq=p.seq, problem=p.problem) for p in problems])


# -- protobuf <-> core ---------------------------------------------------------------------------------
def sample(message: pb.Sample) -> Sample:
    kind = message.WhichOneof("data")
    if kind == "face_embedding":
        return Sample(kind, tuple(message.face_embedding.values))
    return Sample(kind, getattr(message, kind) if kind else b"")


def samples(messages) -> list[Sample]:
    return [sample(m) for m in messages]


def report_pb(report: SampleReport) -> pb.SampleReport:
    return pb.SampleReport(faces_found=report.faces_found, largest_face_used=report.largest_face_used,
                           minutiae=report.minutiae)


def token_pb(info: TokenInfo) -> pb.TokenInfo:
    return pb.TokenInfo(token_id=info.token_id, role=info.role, name=info.name,
                        created_at=timestamp(info.created_at), revoked_at=timestamp(info.revoked_at),
                        expires_at=timestamp(info.expires_at))


def timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp
