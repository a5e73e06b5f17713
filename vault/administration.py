"""Tenant administration and the audit trail: API tokens, key rotation and its progress, reading and
checking the audit chain. Protobuf-free, like vault.core; every operation acts on the caller's own
tenant and appends its own audit record.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Protocol

from vault.access.audit import AuditEntry, AuditRecord, ChainProblem, verify_chain
from vault.access.auth import ROLES, Identity, check_name
from vault.core import check_id, off_loop
from vault.exceptions import FailedPrecondition, InvalidArgument
from vault.templates.identification import Capacity
from vault.custody.keys import KeyStore
from vault.store.base import LIVE, AuditTrail, Templates
from vault.access.tokens import DEFAULT_LIFETIME_S, TokenInfo, TokenRegistry

__all__ = ["Administration", "KeyStatus", "MAX_AUDIT_BATCH"]

MAX_AUDIT_BATCH = 10_000


@dataclass(frozen=True)
class KeyStatus:
    current_key_version: int
    live_templates_by_version: dict[int, int]  # every key version the tenant holds
    subjects_on_old_versions: list[str]  # to re-enrol before the old versions can be retired
    identify: list[tuple[int, Capacity]]  # (modality, what Identify can promise)


class AdminStore(Templates, AuditTrail, Protocol):
    """The store roles administration uses (vault.store.base): template metadata and the audit trail."""


class Administration:
    def __init__(self, keys: KeyStore, store: AdminStore, tokens: TokenRegistry,
                 capacity: Callable[[str], list[tuple[int, Capacity]]]):
        """`capacity(tenant)`: what Identify can promise over the tenant's galleries
        (vault.core.Vault.identify_capacity)."""
        self.keys = keys
        self.store = store
        self.tokens = tokens
        self.capacity = capacity

    # -- tokens -----------------------------------------------------------------------------------
    async def create_token(self, caller: Identity, role: str, name: str,
                           lifetime_s: int = 0) -> tuple[str, TokenInfo]:
        """A new token for the caller's tenant: (the token, shown once; its metadata). It expires
        after `lifetime_s` seconds (0: the default, 90 days)."""
        if role not in ROLES:
            raise InvalidArgument(f"role must be one of {', '.join(ROLES)}")
        name = check_name(name, "name")
        return await off_loop(self.tokens.create, caller.tenant, role, name,
                                       AuditEntry("CreateToken", caller.tenant, caller.name, decision="created"),
                                       lifetime_s or DEFAULT_LIFETIME_S)

    async def list_tokens(self, caller: Identity) -> list[TokenInfo]:
        return await off_loop(self.tokens.list, caller.tenant)

    async def revoke_token(self, caller: Identity, token_id: str) -> None:
        token_id = check_id(token_id, "token_id")
        await off_loop(self.tokens.revoke, caller.tenant, token_id,
                                AuditEntry("RevokeToken", caller.tenant, caller.name, decision="revoked"))

    # -- keys ---------------------------------------------------------------------------------------
    async def rotate_key(self, caller: Identity) -> int:
        """A new current key version for the tenant; templates under older versions keep matching
        until they are re-enrolled (KeyStatus lists who is left)."""
        keys, store = self.keys, self.store
        await off_loop(keys.ensure_tenant, caller.tenant)
        key = await off_loop(keys.rotate, caller.tenant)
        await off_loop(store.record, AuditEntry(
            "RotateKey", caller.tenant, caller.name, decision="rotated", detail=f"key_version={key.version}"))
        return key.version

    async def destroy_key_version(self, caller: Identity, version: int) -> int:
        """Destroy an old key version no live template uses (crypto-shredding): the number of
        revoked templates sealed under it, which nothing can open any more."""
        if version == await off_loop(self.keys.current_version, caller.tenant):
            raise FailedPrecondition("the current key version cannot be destroyed: rotate first")
        rows = await off_loop(self.store.list, caller.tenant, None, True)
        live = sum(r.key_version == version and r.status == LIVE for r in rows)
        if live:
            raise FailedPrecondition(f"{live} live templates use key version {version}: re-enrol or revoke them first "
                                     "(KeyStatus lists their subjects)")
        await off_loop(self.keys.destroy, caller.tenant, version)
        shredded = sum(r.key_version == version for r in rows)
        await off_loop(self.store.record, AuditEntry(
            "DestroyKeyVersion", caller.tenant, caller.name, decision="destroyed",
            detail=f"key_version={version} templates={shredded}"))
        return shredded

    async def key_status(self, caller: Identity) -> KeyStatus:
        return await off_loop(self._key_status, caller.tenant)

    def _key_status(self, tenant: str) -> KeyStatus:
        keys = self.keys
        current = keys.current_version(tenant)
        rows = [r for r in self.store.list(tenant) if r.status == LIVE]
        counts = Counter(r.key_version for r in rows)
        return KeyStatus(current, {v: counts.get(v, 0) for v in keys.versions(tenant)},
                         sorted({r.subject_id for r in rows if r.key_version < current}),
                         self.capacity(tenant))

    # -- audit ----------------------------------------------------------------------------------------
    async def read_audit(self, caller: Identity, after: int = 0, limit: int = 0) -> list[tuple[int, AuditRecord]]:
        """The tenant's audit records after its `after`-th, oldest first, at most `limit` (default
        1000), each with its number in the tenant's own trail (1, 2, ...): the chain's global
        sequence numbers would tell one tenant how busy the others are."""
        limit = limit or 1000
        if not 1 <= limit <= MAX_AUDIT_BATCH or after < 0:
            raise InvalidArgument(f"limit must be 1-{MAX_AUDIT_BATCH}, after_seq >= 0")
        records = await off_loop(self.store.tenant_audit, caller.tenant, after, limit)
        return [(after + i + 1, record) for i, record in enumerate(records)]

    async def verify_audit(self, caller: Identity) -> tuple[int, list[ChainProblem]]:
        """Check the whole audit chain, against this server's anchor where it has one: (the
        caller's tenant's records, problems found). Problems in the tenant's own records carry their
        number in its trail; a break elsewhere is reported without numbers or details, which are the
        operator's (`vault audit verify --state-dir`)."""
        return await off_loop(self._verify_audit, caller.tenant)

    def _verify_audit(self, tenant: str) -> tuple[int, list[ChainProblem]]:
        records = list(self.store.audit_records())
        anchor_file = self.store.anchor
        anchor = anchor_file.head() if anchor_file is not None else None
        alarms = anchor_file.alarms() if anchor_file is not None else []
        problems = verify_chain(self.keys.audit_key(), records, anchor)
        own = {r.seq: n for n, r in enumerate((r for r in records if r.entry.tenant == tenant), start=1)}
        shown = [ChainProblem(own[p.seq], p.problem) for p in problems if p.seq in own]
        # A cut tail the anchor saw: the lost records' seqs are reused by newer ones, so no number
        # in this tenant's trail names them; every tenant is told (any of them may have lost records).
        shown += [ChainProblem(0, "records were deleted from the end of the chain and new ones appended after the "
                                  "cut (the anchor outside the database saw it); the operator can see where")
                  for _ in alarms]
        if any(p.seq == anchor[0] and p.seq not in own for p in problems) if anchor else False:
            shown.append(ChainProblem(0, "the newest records of the chain were deleted: the anchor outside the "
                                         "database holds a later one"))
        if len(shown) < len(problems):
            shown.append(ChainProblem(0, "the chain is broken outside this tenant's records; the operator can see where"))
        return len(own), shown
