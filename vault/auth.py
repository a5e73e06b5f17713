"""Who is calling: every RPC resolves an Identity (tenant, role, name) and checks its role.

Roles: `panel` (Verify, Identify), `enroller` (Enroll, Reissue, ListTemplates), `auditor` (Revoke,
ListTemplates, audit), `admin` (everything, plus tenants, tokens and keys).

On a plaintext loopback server started without credentials every caller is the local operator:
the `admin` of the `default` tenant. That mode exists for development on one machine only.
"""

from __future__ import annotations

from dataclasses import dataclass

from vault.exceptions import PermissionDenied

PANEL, ENROLLER, AUDITOR, ADMIN = "panel", "enroller", "auditor", "admin"
ROLES = (PANEL, ENROLLER, AUDITOR, ADMIN)
DEFAULT_TENANT = "default"

ALLOWED: dict[str, frozenset[str]] = {
    "Enroll": frozenset({ENROLLER, ADMIN}),
    "Reissue": frozenset({ENROLLER, ADMIN}),
    "Verify": frozenset({PANEL, ADMIN}),
    "Identify": frozenset({PANEL, ADMIN}),
    "Revoke": frozenset({AUDITOR, ADMIN}),
    "ListTemplates": frozenset({ENROLLER, AUDITOR, ADMIN}),
}


@dataclass(frozen=True)
class Identity:
    tenant: str
    role: str
    name: str


LOCAL_OPERATOR = Identity(DEFAULT_TENANT, ADMIN, "local-operator")


class Authenticator:
    """Resolves the caller of an RPC. The loopback development mode knows only the local operator."""

    def identify(self, context) -> Identity:
        return LOCAL_OPERATOR


def authorize(identity: Identity, rpc: str) -> None:
    if identity.role not in ALLOWED.get(rpc, frozenset()):
        raise PermissionDenied(f"role {identity.role} may not call {rpc}")
