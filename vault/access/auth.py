"""Who is calling: every RPC resolves an Identity (tenant, role, name) and checks its role.

- TLS: the client certificate (verified by the TLS layer against the vault's CA) names its tenant
  and role in a SAN URI `urn:vault:<tenant>:<role>` (vault.custody.pki).
- Token: `authorization: Bearer vt_...` call metadata (vault.access.tokens); a token is for one tenant and
  one role. On the mutual-TLS listener a token still needs a client certificate to get through the
  handshake (the token's identity then takes precedence, so shared panel hardware can carry
  per-site tokens); the --token-listen listener asks for no certificate, and a token is all there is.
- Plaintext loopback (development on one machine, `vault serve --plaintext`): every caller is the
  local operator, who holds every role in the `default` tenant.

Roles, least privilege: `panel` Verify/Identify; `enroller` Enroll/Reissue/ListTemplates; `auditor`
Revoke/ListTemplates/audit; `admin` tokens and key rotation of its tenant.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from vault.exceptions import InvalidArgument, PermissionDenied, Unauthenticated

PANEL, ENROLLER, AUDITOR, ADMIN = "panel", "enroller", "auditor", "admin"
ROLES = (PANEL, ENROLLER, AUDITOR, ADMIN)
DEFAULT_TENANT = "default"

URI_PREFIX = "urn:vault:"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")

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
    "DestroyKeyVersion": frozenset({ADMIN}),
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


def identity_uri(tenant: str, role: str) -> str:
    """The SAN URI a client certificate carries: urn:vault:<tenant>:<role>."""
    return f"{URI_PREFIX}{tenant}:{role}"


def parse_identity_uri(uri: str) -> tuple[str, str] | None:
    if not uri.startswith(URI_PREFIX):
        return None
    parts = uri[len(URI_PREFIX):].split(":")
    if len(parts) != 2 or not NAME_PATTERN.match(parts[0]) or parts[1] not in ROLES:
        return None
    return parts[0], parts[1]


def check_name(value: str, what: str) -> str:
    """A tenant, certificate or token name: what fits in an identity URI and a file name."""
    if not NAME_PATTERN.match(value):
        raise InvalidArgument(f"{what} must be 1-63 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit")
    return value


@functools.lru_cache(maxsize=4096)
def identity_from_certificate(pem: bytes) -> Identity | None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

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


def bearer_token(metadata) -> str | None:
    """The token of an `authorization: Bearer <token>` entry of call metadata, if any."""
    token = None
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            token = value[len("Bearer "):].strip()
    return token


class Authenticator:
    """Resolves who is calling from what the transport saw: a bearer token (checked against the
    token registry: an HMAC and store reads, so call it off the event loop) or the TLS client
    certificate."""

    def __init__(self, tls: bool, tokens=None):
        self.tls = tls
        self.tokens = tokens

    def identify(self, token: str | None, certificate_pem: bytes | None) -> Identity:
        certified = identity_from_certificate(certificate_pem) if self.tls and certificate_pem else None
        if token is not None and self.tokens is not None:
            info = self.tokens.authenticate(token)
            # A certificate that names a tenant binds the connection to it: another tenant's token
            # (stolen, or mixed up on shared hardware) is refused. A certificate naming no vault
            # identity (panel hardware) may carry any tenant's token.
            if certified is not None and certified.tenant != info.tenant:
                raise Unauthenticated("the token is for another tenant than the client certificate")
            return Identity(info.tenant, frozenset({info.role}), f"token:{info.token_id}")
        if not self.tls:
            return LOCAL_OPERATOR
        identity = certified
        if identity is None:
            raise Unauthenticated("no vault identity: no token was sent, and no client certificate naming a "
                                  "urn:vault:<tenant>:<role>")
        return identity


class AccessPolicy:
    """Which roles may call which operation: the one place that decides (vault.rpc.interceptor
    asks it before every call). A site that enables auditor score bands lets auditors Verify."""

    def __init__(self, auditor_score_bands: bool = False):
        self.allowed = dict(ALLOWED)
        if auditor_score_bands:
            self.allowed["Verify"] = self.allowed["Verify"] | {AUDITOR}

    def authorize(self, identity: Identity, operation: str) -> None:
        if not identity.roles & self.allowed.get(operation, frozenset()):
            raise PermissionDenied(f"role {identity.role} may not call {operation}")
