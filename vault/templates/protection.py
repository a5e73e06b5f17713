"""Cancellable templates: the safe recipes over vault.hazmat.

    features --(tenant projection key, profile)--> IoM code --(per-template salt, storage key)--> sealed row

- `protect` turns a feature vector into a packed IoM code. The projection depends on the tenant,
  the key version and the profile, never on the template, so Identify transforms a probe once per
  (key version, profile) and compares it with every stored code of that group.
- `seal` encrypts a code for storage with AES-256-GCM under a key derived from the tenant's storage
  key, a fresh random 16-byte salt per template and the template's shred secret (vault.custody.shredding:
  deleted at revocation, so no copy of the row opens again); the row's identity is the associated data, so a
  sealed code cannot be moved to another row, tenant, subject or key version. Two templates of the
  same person, a template and its reissue, or one person in two tenants: in the database they are
  independent random-looking blobs.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault.exceptions import IntegrityError, InvalidArgument
from vault.hazmat import iom
from vault.custody.keys import TenantKey, derive
from vault.templates.profiles import ProtectionProfile

SEAL_INFO = b"vault/seal/v1"
SHREDDABLE_SEAL_INFO = b"vault/seal/v2"  # the row key also takes the template's shred secret
PROJECTION_CACHE_SIZE = 16


@dataclass(frozen=True)
class RowIdentity:
    """What a sealed code is bound to (the AES-GCM associated data)."""

    tenant: str
    template_id: str
    subject_id: str
    modality: int
    finger: int
    profile: str
    key_version: int
    # Bound where the profile's threshold depends on it (ProtectionProfile.fused_threshold), so a
    # row edited in the database to look like a one-sample template fails authentication.
    sample_count: int | None = None

    def associated_data(self) -> bytes:
        return associated_data(self.tenant, self.template_id, self.subject_id, self.modality, self.finger,
                               self.profile, self.key_version, self.sample_count)


def associated_data(tenant: str, template_id: str, subject_id: str, modality: int, finger: int, profile: str,
                    key_version: int, sample_count: int | None) -> bytes:
    """What a row's seal binds (RowIdentity), from its fields: a replica's start-up makes it from
    the columns it reads, without a RowIdentity per row (vault.startup)."""
    fields = (tenant, template_id, subject_id, str(modality), str(finger), profile, str(key_version))
    if sample_count is not None:
        fields += (str(sample_count),)
    return "\x1f".join(fields).encode()


class Protector:
    """Applies a tenant key (vault.custody.keys.TenantKey) to feature vectors and codes. Caches keyed
    projections (they take ~10-100 ms to draw). Holds no key store: callers pass the key they
    looked up, once, and a key that is not the row's is refused."""

    def __init__(self):
        self._projections: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()

    def protect(self, key: TenantKey, profile: ProtectionProfile, features: np.ndarray) -> np.ndarray:
        """Packed IoM code (planes, words) of one feature vector."""
        features = np.asarray(features, dtype=np.float32)
        if features.shape != (profile.feature_dim,):
            raise InvalidArgument(f"{profile.name} takes a {profile.feature_dim}-D feature vector")
        return self.protect_many(key, profile, features[None])[0]

    def protect_many(self, key: TenantKey, profile: ProtectionProfile, features: np.ndarray) -> np.ndarray:
        """Packed IoM codes (n, planes, words) of feature vectors (n, d) (benchmarks, bulk work)."""
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != profile.feature_dim or not np.all(np.isfinite(features)):
            raise InvalidArgument(f"{profile.name} takes finite {profile.feature_dim}-D feature vectors")
        indices = iom.iom_indices(self.projection(key, profile), features, profile.hash_width)
        return iom.pack_indices(indices, profile.hash_width)

    def seal(self, key: TenantKey, row: RowIdentity, code: np.ndarray, shred: bytes | None = None) -> tuple[bytes, bytes]:
        """(salt, nonce || ciphertext) for a packed code (planes, words), or for the codes
        (k, planes, words) of a template that keeps its samples apart. `shred`: the template's
        shred secret (vault.custody.shredding), without which the row never opens again."""
        salt = secrets.token_bytes(16)
        nonce = secrets.token_bytes(12)
        if (key.tenant, key.version) != (row.tenant, row.key_version):
            raise IntegrityError(f"template {row.template_id} is not sealed under that key")
        sealed = AESGCM(_row_key(key, salt, shred)).encrypt(nonce, code.astype("<u8").tobytes(),
                                                            row.associated_data())
        return salt, nonce + sealed

    def unseal(self, key: TenantKey, row: RowIdentity, profile: ProtectionProfile, salt: bytes,
               sealed: bytes, shred: bytes | None = None) -> np.ndarray:
        """The template's packed codes (k, planes, words): k = 1 unless its profile keeps
        samples apart (ProtectionProfile.keeps_sample_codes). `shred`: the template's shred secret,
        None for rows sealed before shredding existed (or whose secret was shredded: they fail)."""
        plain = open_sealed(key, row.tenant, row.template_id, row.key_version, row.associated_data(), profile,
                            salt, sealed, shred)
        return np.frombuffer(plain, dtype="<u8").reshape(-1, profile.planes, profile.words)

    def projection(self, key: TenantKey, profile: ProtectionProfile):
        """The keyed projection of (tenant key version, profile); hazmat: whoever holds it can
        search for pre-images of that group's codes (benchmarks/evaluation/attacks.py)."""
        cache_key = (key.tenant, key.version, profile.name, key.projection)
        with self._lock:
            projection = self._projections.get(cache_key)
            if projection is not None:
                self._projections.move_to_end(cache_key)
                return projection
        seed = derive(key.projection, b"vault/projection/" + profile.name.encode())
        projection = iom.keyed_projection(profile.projection, seed, profile.feature_dim,
                                          profile.hash_count, profile.hash_width)
        with self._lock:
            self._projections[cache_key] = projection
            while len(self._projections) > PROJECTION_CACHE_SIZE:
                self._projections.popitem(last=False)
        return projection


def open_sealed(key: TenantKey, tenant: str, template_id: str, key_version: int, associated: bytes,
                profile: ProtectionProfile, salt: bytes, sealed: bytes, shred: bytes | None) -> bytes:
    """The plaintext of a row's seal (whole codes of `profile`), authenticated against `associated`
    (the row's associated_data); IntegrityError for an edited, swapped, erased or foreign-key row.
    Protector.unseal, and the start-up's bulk unsealing (vault.startup), both open rows here."""
    if len(sealed) < 12 + 16:  # nonce and tag: an erased (revoked) or truncated row
        raise IntegrityError(f"template {template_id} holds no sealed code")
    if (key.tenant, key.version) != (tenant, key_version):
        raise IntegrityError(f"template {template_id} is not sealed under that key")
    try:
        plain = AESGCM(_row_key(key, salt, shred)).decrypt(sealed[:12], sealed[12:], associated)
    except InvalidTag:
        raise IntegrityError(f"template {template_id} failed authentication") from None
    if len(plain) % profile.template_bytes:
        raise IntegrityError(f"template {template_id} does not hold whole {profile.name} codes")
    return plain


def _row_key(key: TenantKey, salt: bytes, shred: bytes | None) -> bytes:
    if shred is None:
        return derive(key.storage, SEAL_INFO, salt=salt)
    return derive(key.storage + shred, SHREDDABLE_SEAL_INFO, salt=salt)
