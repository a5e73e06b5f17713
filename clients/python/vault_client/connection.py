"""How a client reaches the vault: target, TLS identity, API token, deadlines and retries."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional

import grpc

__all__ = ["TlsIdentity", "Settings", "RETRY_POLICY", "open_channel", "parse_groups"]

# Calls the channel retries by itself, on UNAVAILABLE only (the server or its store was not
# reached, so nothing happened): the calls safe to repeat, decisions, reads and revocations (a
# repeated revocation revokes nothing more). README.md and clients/python/README.md list them. Never RESOURCE_EXHAUSTED: that is a lockout or a full queue, and
# retrying a lockout only extends it. Never the calls that create something (Enroll, Reissue,
# CreateToken, RotateKey, DestroyKeyVersion): a retry after a lost answer would do it twice.
_RETRIED = {
    "vault.v1.Vault": ["Verify", "Identify", "Revoke", "ListTemplates"],
    "vault.v1.Admin": ["ListTokens", "RevokeToken", "KeyStatus"],
    "vault.v1.Audit": ["ReadAudit", "VerifyAudit"],
}
RETRY_POLICY = {
    "methodConfig": [{
        "name": [{"service": service, "method": method} for service, methods in _RETRIED.items() for method in methods],
        "retryPolicy": {
            "maxAttempts": 4,
            "initialBackoff": "0.2s",
            "maxBackoff": "2s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }]
}


@dataclass(frozen=True)
class TlsIdentity:
    """The site CA (which the server's certificate must chain to) and, for mutual TLS, the client's
    certificate and key (they name its tenant and role). Without a certificate the channel is TLS
    that only checks the server: for a token-only client on the server's --token-listen port."""

    ca_certificate: bytes
    certificate: Optional[bytes] = None
    private_key: Optional[bytes] = None

    @classmethod
    def from_dir(cls, folder: "str | Path", name: Optional[str] = None) -> "TlsIdentity":
        """Read ca.crt, and NAME.crt and NAME.key when a name is given, from a folder (the layout
        `vault pki issue` writes)."""
        folder = Path(folder)
        ca = (folder / "ca.crt").read_bytes()
        if name is None:
            return cls(ca)
        return cls(ca, (folder / f"{name}.crt").read_bytes(), (folder / f"{name}.key").read_bytes())


@dataclass(frozen=True)
class Settings:
    """Where and how to connect. `from_environment` reads the variables the `vault` CLI uses."""

    target: str = "127.0.0.1:50051"
    tls: Optional[TlsIdentity] = None  # None: plaintext, for loopback development only
    token: Optional[str] = None
    timeout_s: float = 10.0  # deadline of every call but enrolment
    enroll_timeout_s: float = 60.0  # Enroll and Reissue extract several samples
    # Replica groups: group name -> target ("host:port"). Given, every call goes to the group that
    # serves this client's tenant (found on the first call, followed when it moves); `target` unused.
    groups: Optional[Mapping[str, str]] = None

    @classmethod
    def from_environment(cls, **overrides) -> "Settings":
        """VAULT_SERVER, VAULT_TLS_DIR (+ VAULT_IDENTITY for mutual TLS), VAULT_TOKEN or
        VAULT_TOKEN_FILE; keyword arguments win over the environment. VAULT_TLS_DIR without
        VAULT_IDENTITY needs a token: a token-only client (the server's --token-listen port)."""
        env = os.environ
        values = {"target": env.get("VAULT_SERVER", cls.target)}
        if env.get("VAULT_GROUPS"):  # g1=host:port,g2=host:port
            values["groups"] = parse_groups(env["VAULT_GROUPS"])
        if env.get("VAULT_TOKEN_FILE"):
            values["token"] = Path(env["VAULT_TOKEN_FILE"]).read_text().strip()
        elif env.get("VAULT_TOKEN"):
            values["token"] = env["VAULT_TOKEN"]
        if env.get("VAULT_TLS_DIR"):
            if not env.get("VAULT_IDENTITY") and not values.get("token"):
                raise ValueError("VAULT_TLS_DIR needs VAULT_IDENTITY (the client certificate's name) or a token "
                                 "(VAULT_TOKEN_FILE / VAULT_TOKEN)")
            values["tls"] = TlsIdentity.from_dir(env["VAULT_TLS_DIR"], env.get("VAULT_IDENTITY") or None)
        values.update(overrides)
        return cls(**values)


def open_channel(settings: Settings, reconnect_max_s: Optional[float] = None) -> grpc.Channel:
    """A channel with the retry policy; TLS (with the client certificate when one is given).
    `reconnect_max_s`: the longest wait between reconnection attempts to a server that went away
    (gRPC's default grows to 120 s; a replica group's clients want it back within seconds)."""
    options = [("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(RETRY_POLICY))]
    if reconnect_max_s is not None:
        options.append(("grpc.max_reconnect_backoff_ms", int(1000 * reconnect_max_s)))
    if settings.tls is None:
        return grpc.insecure_channel(settings.target, options=options)
    credentials = grpc.ssl_channel_credentials(settings.tls.ca_certificate, settings.tls.private_key,
                                               settings.tls.certificate)
    return grpc.secure_channel(settings.target, credentials, options=options)


def parse_groups(text: str) -> Dict[str, str]:
    """`g1=host:port,g2=host:port` -> {"g1": "host:port", "g2": "host:port"} (VAULT_GROUPS, --groups)."""
    groups = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, target = part.partition("=")
        if not sep or not name.strip() or not target.strip():
            raise ValueError(f"replica groups are NAME=HOST:PORT separated by commas, not {part!r}")
        groups[name.strip()] = target.strip()
    return groups
