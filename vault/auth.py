"""Who is calling: every RPC resolves an Identity (tenant, role, name) and checks its role.

- TLS: the client certificate (verified by the TLS layer against the vault's CA) names its tenant
  and role in a SAN URI `urn:vault:<tenant>:<role>` (vault.pki).
- Token: `authorization: Bearer vt_...` call metadata (vault.tokens); a token is for one tenant and
  one role. On a TLS server a token still needs a client certificate to get through the handshake;
  the token's identity then takes precedence, so shared panel hardware can carry per-site tokens.
- Plaintext loopback (development on one machine, `vault serve --plaintext`): every caller is the
  local operator, who holds every role in the `default` tenant.

Roles, least privilege: `panel` Verify/Identify; `enroller` Enroll/Reissue/ListTemplates; `auditor`
Revoke/ListTemplates/audit; `admin` tokens and key rotation of its tenant.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from vault.exceptions import PermissionDenied, Unauthenticated

PANEL, ENROLLER, AUDITOR, ADMIN = "panel", "enroller", "auditor", "admin"
ROLES = (PANEL, ENROLLER, AUDITOR, ADMIN)
DEFAULT_TENANT = "default"

ALLOWED: dict[str, frozenset[str]] = {
    "Enroll": frozenset({ENROLLER}),
    "Reissue": frozenset({ENROLLER}),
    "Verify": frozenset({PANEL}),
    "Identify": frozenset({PANEL}),
    "Revoke": frozenset({AUDITOR}),
    "ListTemplates": frozenset({ENROLLER, AUDITOR}),
    "ReadAudit": frozenset({AUDITOR}),
    "VerifyAudit": frozenset({AUDITOR}),
    "CreateToken": frozenset({ADMIN}),
    "ListTokens": frozenset({ADMIN}),
    "RevokeToken": frozenset({ADMIN}),
    "RotateKey": frozenset({ADMIN}),
    "KeyStatus": frozenset({ADMIN, AUDITOR}),
}


@dataclass(frozen=True)
class Identity:
    tenant: str
    roles: frozenset[str]
    name: str

    @property
    def role(self) -> str:
        return ",".join(sorted(self.roles))


LOCAL_OPERATOR = Identity(DEFAULT_TENANT, frozenset(ROLES), "local-operator")


@functools.lru_cache(maxsize=4096)
def identity_from_certificate(pem: bytes) -> Identity | None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from vault.pki import parse_identity_uri

    cert = x509.load_pem_x509_certificate(pem)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    identities = {parse_identity_uri(uri) for uri in sans.get_values_for_type(x509.UniformResourceIdentifier)} - {None}
    if len(identities) != 1:
        return None
    (tenant, role), = identities
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return Identity(tenant, frozenset({role}), f"cert:{names[0].value if names else '?'}")


class Authenticator:
    def __init__(self, tls: bool, tokens=None):
        self.tls = tls
        self.tokens = tokens

    def identify(self, context) -> Identity:
        token = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                token = value[len("Bearer "):].strip()
        if token is not None and self.tokens is not None:
            info = self.tokens.authenticate(token)
            return Identity(info.tenant, frozenset({info.role}), f"token:{info.token_id}")
        if not self.tls:
            return LOCAL_OPERATOR
        pem = (context.auth_context().get("x509_pem_cert") or [None])[0]
        identity = identity_from_certificate(pem) if pem else None
        if identity is None:
            raise Unauthenticated("no vault identity: the client certificate names no urn:vault:<tenant>:<role>, and no token was sent")
        return identity


def authorize(identity: Identity, rpc: str) -> None:
    if not identity.roles & ALLOWED.get(rpc, frozenset()):
        raise PermissionDenied(f"role {identity.role} may not call {rpc}")
