"""A small local PKI for development and small sites: one CA, a server certificate, and client
certificates that name their tenant and role. Real deployments bring their own CA; the vault only
needs the identity in the client certificate's SAN URI: urn:vault:<tenant>:<role>.

Files (PEM, keys 0600) under one folder: ca.crt, ca.key, server.crt, server.key, <name>.crt, <name>.key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vault.access.auth import ROLES, check_name, identity_uri
from vault.exceptions import InvalidArgument
from vault.private_files import create_private

def _write_key(path: Path, key) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with os.fdopen(create_private(path), "wb") as handle:
        handle.write(pem)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vault"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def init_ca(folder: Path, days: int = 3650) -> Path:
    """Create ca.crt/ca.key (P-256) in folder; refuse to overwrite an existing CA."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if (folder / "ca.key").exists():
        raise InvalidArgument(f"a CA already exists in {folder}")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("vault local CA")).issuer_name(_name("vault local CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write_key(folder / "ca.key", key)
    (folder / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return folder / "ca.crt"


def _load_ca(folder: Path):
    try:
        cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
    except FileNotFoundError:
        raise InvalidArgument(f"no CA in {folder}: run `vault pki init` first") from None
    return cert, key


def issue(folder: Path, name: str, *, server_hosts: list[str] | None = None, tenant: str | None = None,
          role: str | None = None, days: int = 397, not_before: dt.datetime | None = None) -> Path:
    """Issue <name>.crt/.key signed by the CA: a server certificate (server_hosts) or a client
    certificate for (tenant, role)."""
    check_name(name, "certificate name")
    ca_cert, ca_key = _load_ca(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    builder = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if server_hosts is not None:
        sans = []
        for host in server_hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        builder = (builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    else:
        check_name(tenant or "", "tenant")
        if role not in ROLES:
            raise InvalidArgument(f"role must be one of {', '.join(ROLES)}")
        builder = (builder.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity_uri(tenant, role))]), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_key(folder / f"{name}.key", key)
    (folder / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return folder / f"{name}.crt"
