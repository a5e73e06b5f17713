"""The transform, sealing and key store, on real keys and real face embeddings."""

import dataclasses
import hashlib
import stat

import numpy as np
import pytest

from vault.exceptions import IntegrityError, InvalidArgument, KeyStoreError
from vault.hazmat import iom
from vault.custody.keys import LocalKeyFile
from vault.templates.matching import agreement
from vault.templates.profiles import FACE_IOM_V1, PROFILES
from vault.templates.protection import Protector, RowIdentity


@pytest.fixture
def keys(tmp_path):
    return LocalKeyFile(tmp_path / "keys.json")


def fixed_seed(label: str) -> bytes:
    """32 bytes of key material fixed per label: statistical bounds below see the same key every run."""
    return hashlib.sha256(label.encode()).digest()


def random_unit(n, d=128, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_pack_roundtrip_every_width():
    for q in (2, 4, 8, 16):
        indices = np.random.default_rng(q).integers(0, q, size=(3, 256)).astype(np.uint8)
        packed = iom.pack_indices(indices, q)
        assert packed.shape == (3, iom.bit_planes(q), 4)
        assert np.array_equal(iom.unpack_indices(packed, q), indices)


def test_pack_accepts_any_memory_layout():
    indices = np.random.default_rng(1).integers(0, 2, size=(128, 6)).astype(np.uint8).T  # Fortran order
    for q in (2, 4):
        packed = iom.pack_indices(indices % q, q)
        assert np.array_equal(iom.unpack_indices(packed, q), indices % q)


def test_agreement_counts_equal_indices():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 16, 1024).astype(np.uint8)
    b = a.copy()
    flip = rng.choice(1024, 300, replace=False)
    b[flip] = (b[flip] + 1 + rng.integers(0, 15, 300)) % 16
    score = agreement(iom.pack_indices(a, 16), iom.pack_indices(b, 16)[None], 1024)
    assert score[0] == pytest.approx(1 - 300 / 1024)


def test_projection_is_keyed_and_deterministic():
    seed = fixed_seed("key-1")
    assert np.array_equal(iom.projection_bank(seed, 8, 64, 4), iom.projection_bank(seed, 8, 64, 4))
    assert not np.allclose(iom.projection_bank(seed, 8, 64, 4), iom.projection_bank(fixed_seed("key-2"), 8, 64, 4))


def test_hadamard_projection_is_a_keyed_rotation():
    seed = fixed_seed("key-3")
    proj = iom.hadamard_projection(seed, 300, 256, 4)  # pads 300 -> 512: two blocks for 1024 outputs
    x = random_unit(5, 300, seed=1)
    y = proj.apply(x)
    assert y.shape == (5, 1024)
    np.testing.assert_array_equal(y, iom.hadamard_projection(seed, 300, 256, 4).apply(x))
    # Each block is orthogonal: outputs of a block keep the input's length, inner products too.
    full = iom.hadamard_projection(seed, 300, 128, 4)  # exactly one block of 512, permuted
    z = full.apply(x)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(z @ z.T, x @ x.T, atol=1e-4)
    # transpose is the adjoint: <P x, u> == <x, P^T u>
    u = np.random.default_rng(2).standard_normal((5, 1024)).astype(np.float32)
    np.testing.assert_allclose(np.sum(y * u, axis=1), np.sum(x * proj.transpose(u), axis=1), rtol=1e-3, atol=1e-3)
    other = iom.hadamard_projection(fixed_seed("key-4"), 300, 256, 4).apply(x)
    assert abs(np.corrcoef(y.ravel(), other.ravel())[0, 1]) < 0.1


def test_hadamard_iom_agreement_tracks_the_angle():
    """Like the Gaussian bank, agreement falls with the angle and sits at 1/q for orthogonal inputs."""
    seed = fixed_seed("key-5")
    d, m, q = 2000, 4096, 4
    gaussian = iom.keyed_projection("gaussian", seed, d, m, q)
    hadamard = iom.keyed_projection("hadamard", seed, d, m, q)
    x = random_unit(1, d, seed=3)[0]
    noise = random_unit(1, d, seed=4)[0]
    noise -= (noise @ x) * x
    noise /= np.linalg.norm(noise)
    for cos in (0.0, 0.5, 0.9):
        y = cos * x + np.sqrt(1 - cos**2) * noise
        rates = [np.mean(iom.iom_indices(p, x[None], q) == iom.iom_indices(p, y[None], q))
                 for p in (gaussian, hadamard)]
        assert abs(rates[0] - rates[1]) < 0.04, (cos, rates)


def test_same_vector_same_code_other_tenant_unrelated_code(keys, tmp_path):
    a, b = keys.ensure_tenant("a"), keys.ensure_tenant("b")
    protector = Protector()
    x = random_unit(1)[0]
    code_a = protector.protect(a, FACE_IOM_V1, x)
    assert agreement(code_a, protector.protect(a, FACE_IOM_V1, x)[None], 1024)[0] == 1.0
    # Another tenant's projection: agreement near chance (1/q), nowhere near a match.
    cross = agreement(code_a, protector.protect(b, FACE_IOM_V1, x)[None], 1024)[0]
    assert cross < 0.15
    # The same tenant and version with other secrets (another key store): its own projection too.
    other = LocalKeyFile(tmp_path / "other.json").ensure_tenant("a")
    assert agreement(code_a, protector.protect(other, FACE_IOM_V1, x)[None], 1024)[0] < 0.15


def test_protect_rejects_wrong_shape_and_nan(keys):
    key = keys.ensure_tenant("a")
    protector = Protector()
    with pytest.raises(InvalidArgument):
        protector.protect(key, FACE_IOM_V1, np.zeros(64, dtype=np.float32))
    bad = random_unit(1)[0]
    bad[3] = np.nan
    with pytest.raises(InvalidArgument):
        protector.protect(key, FACE_IOM_V1, bad)


def test_seal_binds_the_row_identity(keys):
    key = keys.ensure_tenant("a")
    protector = Protector()
    code = protector.protect(key, FACE_IOM_V1, random_unit(1)[0])
    row = RowIdentity("a", "t1", "alice", 1, 0, FACE_IOM_V1.name, 1)
    salt, sealed = protector.seal(key, row, code)
    assert np.array_equal(protector.unseal(key, row, FACE_IOM_V1, salt, sealed), code[None])
    assert code.tobytes() not in sealed
    for moved in (RowIdentity("a", "t2", "alice", 1, 0, FACE_IOM_V1.name, 1),
                  RowIdentity("a", "t1", "bob", 1, 0, FACE_IOM_V1.name, 1)):
        with pytest.raises(IntegrityError):
            protector.unseal(key, moved, FACE_IOM_V1, salt, sealed)
    # The same code sealed twice: unrelated bytes (fresh salt and nonce).
    salt2, sealed2 = protector.seal(key, row, code)
    assert salt2 != salt and sealed2[12:] != sealed[12:]


def test_sealed_row_cannot_move_to_another_tenant_or_key_version(keys, tmp_path):
    a1, b1 = keys.ensure_tenant("a"), keys.ensure_tenant("b")
    a2 = keys.rotate("a")
    protector = Protector()
    code = protector.protect(a1, FACE_IOM_V1, random_unit(1)[0])
    row = RowIdentity("a", "t1", "alice", 1, 0, FACE_IOM_V1.name, 1)
    salt, sealed = protector.seal(a1, row, code)
    # Moved to another tenant or key version and opened under that row's own key: fails authentication.
    for moved, key in ((dataclasses.replace(row, tenant="b"), b1), (dataclasses.replace(row, key_version=2), a2)):
        with pytest.raises(IntegrityError):
            protector.unseal(key, moved, FACE_IOM_V1, salt, sealed)
    # Left in place and opened under another tenant's key or another key version: refused.
    for key in (b1, a2):
        with pytest.raises(IntegrityError):
            protector.unseal(key, row, FACE_IOM_V1, salt, sealed)
    # The row's tenant and version, but another key store's secrets (a database thief's own keys).
    thief = LocalKeyFile(tmp_path / "thief.json").ensure_tenant("a")
    with pytest.raises(IntegrityError):
        protector.unseal(thief, row, FACE_IOM_V1, salt, sealed)
    # Nor is a code sealed under a key that is not its row's.
    for key in (b1, a2):
        with pytest.raises(IntegrityError):
            protector.seal(key, row, code)
    assert np.array_equal(protector.unseal(a1, row, FACE_IOM_V1, salt, sealed), code[None])


def test_key_file_created_0600_and_permissions_enforced(tmp_path):
    path = tmp_path / "state" / "keys.json"
    store = LocalKeyFile(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = store.ensure_tenant("t")
    assert LocalKeyFile(path).tenant_key("t") == first  # survives a restart
    path.chmod(0o644)
    with pytest.raises(KeyStoreError, match="0600"):
        LocalKeyFile(path)


def test_rotation_adds_a_version_and_keeps_the_old(keys):
    v1 = keys.ensure_tenant("t")
    v2 = keys.rotate("t")
    assert (v1.version, v2.version) == (1, 2)
    assert keys.versions("t") == [1, 2]
    assert keys.tenant_key("t", 1) == v1 and v2.projection != v1.projection


def test_passphrase_sealed_key_file(tmp_path):
    path = tmp_path / "keys.json"
    sealed = LocalKeyFile(path, passphrase="correct horse battery staple")
    key = sealed.ensure_tenant("t")
    text = path.read_text()
    assert "projection" not in text and key.projection.hex() not in text
    assert LocalKeyFile(path, passphrase="correct horse battery staple").tenant_key("t") == key
    with pytest.raises(KeyStoreError, match="passphrase"):
        LocalKeyFile(path, passphrase="wrong")
    with pytest.raises(KeyStoreError, match="sealed"):
        LocalKeyFile(path)


def test_profiles_are_consistent():
    import re

    from vault.templates.profiles import CURRENT

    for name, profile in PROFILES.items():
        assert name == profile.name and re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*-v\d+", name)
        # agreement thresholds lie in (0, 1); normalised ones (vault.templates.normalisation) above the cohort's mean
        assert profile.hash_count % 64 == 0 and (0 < profile.threshold < 1 or profile.score_norm is not None)
        assert profile.threshold > 0
    assert not any(p.retired for p in CURRENT.values())


def test_profile_dimensions_match_the_feature_extractors():
    from vault.intake.features import face, fingerprint, sface
    from vault.templates.profiles import CURRENT, FACE, FACE_IOM_V3, FINGERPRINT

    assert CURRENT[FACE].feature_dim == sface.FEATURE_DIM and FACE_IOM_V3.feature_dim == face.FEATURE_DIM
    assert CURRENT[FINGERPRINT].feature_dim == fingerprint.FEATURE_DIM
