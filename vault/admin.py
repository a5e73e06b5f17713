"""Operator-facing RPCs: tenant administration (tokens, key rotation) and the audit trail.

Every call acts on the caller's own tenant, and appends its own audit record.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from vault import auth
from vault.audit import AuditEntry, verify_chain
from vault.exceptions import InvalidArgument
from vault.pki import check_name
from vault.service import check_id, rpc, timestamp
from vault.store import LIVE
from vault.tokens import TokenInfo, TokenRegistry
from vault.v1 import vault_pb2 as pb
from vault.v1 import vault_pb2_grpc

MAX_AUDIT_BATCH = 10_000


def token_pb(info: TokenInfo) -> pb.TokenInfo:
    return pb.TokenInfo(token_id=info.token_id, role=info.role, name=info.name,
                        created_at=timestamp(info.created_at), revoked_at=timestamp(info.revoked_at))


class AdminService(vault_pb2_grpc.AdminServicer):
    def __init__(self, vault, tokens: TokenRegistry):
        self.vault = vault  # the VaultService: its store, keys, index and authenticator
        self.tokens = tokens
        self.metrics = vault.metrics

    def _caller(self, context, rpc_name: str) -> auth.Identity:
        return self.vault._caller(context, rpc_name)

    @rpc
    async def CreateToken(self, request, context):
        caller = self._caller(context, "CreateToken")
        if request.role not in auth.ROLES:
            raise InvalidArgument(f"role must be one of {', '.join(auth.ROLES)}")
        name = check_name(request.name, "name")
        token, info = await asyncio.to_thread(self.tokens.create, caller.tenant, request.role, name,
                                              AuditEntry("CreateToken", caller.tenant, caller.name, decision="created"))
        return pb.CreateTokenResponse(token=token, info=token_pb(info))

    @rpc
    async def ListTokens(self, request, context):
        caller = self._caller(context, "ListTokens")
        infos = await asyncio.to_thread(self.tokens.list, caller.tenant)
        return pb.ListTokensResponse(tokens=[token_pb(i) for i in infos])

    @rpc
    async def RevokeToken(self, request, context):
        caller = self._caller(context, "RevokeToken")
        token_id = check_id(request.token_id, "token_id")
        await asyncio.to_thread(self.tokens.revoke, caller.tenant, token_id,
                                AuditEntry("RevokeToken", caller.tenant, caller.name, decision="revoked"))
        return pb.RevokeTokenResponse()

    @rpc
    async def RotateKey(self, request, context):
        caller = self._caller(context, "RotateKey")
        self.vault.keys.ensure_tenant(caller.tenant)
        key = await asyncio.to_thread(self.vault.keys.rotate, caller.tenant)
        await asyncio.to_thread(self.vault.store.record, AuditEntry(
            "RotateKey", caller.tenant, caller.name, decision="rotated", detail=f"key_version={key.version}"))
        return pb.RotateKeyResponse(key_version=key.version)

    @rpc
    async def KeyStatus(self, request, context):
        caller = self._caller(context, "KeyStatus")
        versions = self.vault.keys.versions(caller.tenant)
        current = self.vault.keys.current_version(caller.tenant)
        rows = [r for r in await asyncio.to_thread(self.vault.store.list, caller.tenant) if r.status == LIVE]
        counts = Counter(r.key_version for r in rows)
        old = sorted({r.subject_id for r in rows if r.key_version < current})
        return pb.KeyStatusResponse(
            current_key_version=current,
            versions=[pb.KeyVersionStatus(key_version=v, live_templates=counts.get(v, 0)) for v in versions],
            subjects_on_old_versions=old,
            identify=[pb.IdentifyCapacity(modality=modality, templates=c.templates, fpir_target=c.fpir_target,
                                          expected_fnir=c.expected_fnir, expected_fnir_fused=c.expected_fnir_fused,
                                          reachable=c.reachable)
                      for modality, c in self.vault.identify_capacity(caller.tenant)])


class AuditService(vault_pb2_grpc.AuditServicer):
    def __init__(self, vault):
        self.vault = vault
        self.metrics = vault.metrics

    async def ReadAudit(self, request, context):
        # A server-streaming handler: errors are raised before the first record.
        caller = await self._authorised(context, "ReadAudit")
        if caller is None:
            return
        limit = request.limit or 1000
        if not 1 <= limit <= MAX_AUDIT_BATCH or request.after_seq < 0:
            await context.abort(InvalidArgument.status, f"limit must be 1-{MAX_AUDIT_BATCH}, after_seq >= 0")
        records = await asyncio.to_thread(lambda: list(self.vault.store.audit_records(caller.tenant, request.after_seq))[:limit])
        for record in records:
            e = record.entry
            yield pb.AuditRecord(seq=record.seq, at=timestamp(e.at), actor=e.actor, rpc=e.rpc, subject_id=e.subject_id,
                                 template_id=e.template_id, decision=e.decision, decision_id=e.decision_id,
                                 detail=e.detail)

    async def _authorised(self, context, rpc_name: str):
        from vault.exceptions import VaultError

        try:
            return self.vault._caller(context, rpc_name)
        except VaultError as error:
            await context.abort(error.status, error.message)

    @rpc
    async def VerifyAudit(self, request, context):
        self.vault._caller(context, "VerifyAudit")
        records = await asyncio.to_thread(lambda: list(self.vault.store.audit_records()))
        problems = verify_chain(self.vault.keys.audit_key(), records)
        return pb.VerifyAuditResponse(intact=not problems, records=len(records),
                                      problems=[pb.AuditProblem(seq=p.seq, problem=p.problem) for p in problems])
