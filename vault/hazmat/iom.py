"""Index-of-Max hashing with Gaussian random projections (GRP-IoM; Jin et al., IEEE TIFS 2018).

A feature vector x (unit length) is projected onto `hash_count` groups of `hash_width` Gaussian
directions drawn from a keyed generator; each group keeps only the index of its largest
projection. The result is `hash_count` small integers: magnitudes are discarded, which is what
makes the code non-invertible without the key. With the key an attacker can still search for a
pre-image that reproduces the ranks (see docs/threat-model.md); the key is what protects.

Two codes are compared by the fraction of positions whose index agrees. For hash_width 2 this is
sign-random-projection hashing, whose agreement estimates 1 - angle/pi.

Two keyed projection families:

* "gaussian": a dense (hash_count * hash_width, d) matrix of N(0, 1) entries (the GRP of the
  paper). Memory and time grow with d * m * q, fine for 128-D face embeddings.
* "hadamard": a keyed pseudo-random rotation per block of n = 2^k outputs, H D3 H D2 H D1 x with
  H the normalised Walsh-Hadamard transform and D random +-1 diagonals (the structured
  projection of cross-polytope LSH, Andoni et al., NeurIPS 2015), followed by a keyed permutation
  of the outputs. Key material is 3 n signs a block, time O(n log n): it serves feature vectors of
  thousands of dimensions with tens of thousands of projections (fingerprints), where a dense
  bank would take hundreds of MiB per tenant.

Codes are held packed as bit planes: plane p holds bit p of every index, 64 positions a word, so
a comparison is XOR, OR across planes, and a popcount (see vault.templates.matching).
"""

from __future__ import annotations

import numpy as np


def projection_bank(seed: bytes, feature_dim: int, hash_count: int, hash_width: int) -> np.ndarray:
    """The keyed projection matrix, shape (hash_count * hash_width, feature_dim), float32.

    `seed` must be 32 bytes of key material specific to (tenant, key version, profile).
    """
    return _generator(seed).standard_normal((hash_count * hash_width, feature_dim), dtype=np.float32)


def _generator(seed: bytes) -> np.random.Generator:
    if len(seed) != 32:
        raise ValueError("projection seed must be 32 bytes")
    words = np.frombuffer(seed, dtype="<u8")
    # Philox: 128-bit key, 256-bit counter. The second half of the seed starts the counter.
    counter = np.array([words[2], words[3], 0, 0], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=words[:2], counter=counter))


class GaussianProjection:
    """x -> bank x with a dense keyed Gaussian bank."""

    def __init__(self, bank: np.ndarray):
        self.bank = bank

    def apply(self, features: np.ndarray) -> np.ndarray:
        """(n, d) -> (n, outputs) float32."""
        return np.asarray(features, dtype=np.float32) @ self.bank.T

    def transpose(self, outputs: np.ndarray) -> np.ndarray:
        """(n, outputs) -> (n, d): the adjoint, for gradient-based attacks in benchmarks."""
        return np.asarray(outputs, dtype=np.float32) @ self.bank


ROUNDS = 3  # H D rounds per block; three make the rotation look Gaussian (Andoni et al. 2015)


def walsh_hadamard(values: np.ndarray) -> np.ndarray:
    """Normalised (orthogonal, symmetric) Walsh-Hadamard transform along the last axis (2^k)."""
    n = values.shape[-1]
    lead = values.shape[:-1]
    out = np.asarray(values, dtype=np.float32)
    half = 1
    while half < n:
        pairs = out.reshape(*lead, n // (2 * half), 2, half)
        out = np.stack([pairs[..., 0, :] + pairs[..., 1, :], pairs[..., 0, :] - pairs[..., 1, :]], axis=-2)
        half *= 2
    return out.reshape(*lead, n) * np.float32(1.0 / np.sqrt(n))


class HadamardProjection:
    """x -> permute(concat over blocks of H D3 H D2 H D1 pad(x)), keyed signs and permutation."""

    def __init__(self, signs: np.ndarray, permutation: np.ndarray, feature_dim: int):
        self.signs = signs  # (ROUNDS, blocks, n) float32 of +-1
        self.permutation = permutation  # (outputs,) indices into blocks * n
        self.feature_dim = feature_dim
        self.width = signs.shape[-1]

    def apply(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, dtype=np.float32)
        out = np.zeros((len(features), self.signs.shape[1], self.width), np.float32)
        out[:, :, : self.feature_dim] = features[:, None, :]
        for signs in self.signs:
            out = walsh_hadamard(out * signs)
        return out.reshape(len(features), -1)[:, self.permutation]

    def transpose(self, outputs: np.ndarray) -> np.ndarray:
        outputs = np.asarray(outputs, dtype=np.float32)
        full = np.zeros((len(outputs), self.signs.shape[1] * self.width), np.float32)
        full[:, self.permutation] = outputs
        full = full.reshape(len(outputs), self.signs.shape[1], self.width)
        for signs in self.signs[::-1]:
            full = walsh_hadamard(full) * signs  # (H D)^T = D H
        return full.sum(axis=1)[:, : self.feature_dim]


def hadamard_projection(seed: bytes, feature_dim: int, hash_count: int,
                        hash_width: int) -> HadamardProjection:
    """The keyed structured projection; `seed` as for projection_bank."""
    generator = _generator(seed)
    width = 1 << max(int(feature_dim - 1).bit_length(), 1)
    outputs = hash_count * hash_width
    blocks = -(-outputs // width)
    signs = np.where(generator.integers(0, 2, (ROUNDS, blocks, width), dtype=np.uint8) == 1,
                     np.float32(1.0), np.float32(-1.0))
    permutation = generator.permutation(blocks * width)[:outputs]
    return HadamardProjection(signs, permutation, feature_dim)


def keyed_projection(kind: str, seed: bytes, feature_dim: int, hash_count: int, hash_width: int):
    """The projection a profile names ("gaussian" or "hadamard") under a 32-byte seed."""
    if kind == "gaussian":
        return GaussianProjection(projection_bank(seed, feature_dim, hash_count, hash_width))
    if kind == "hadamard":
        return hadamard_projection(seed, feature_dim, hash_count, hash_width)
    raise ValueError(f"unknown projection kind {kind!r}")


def iom_indices(projection, features: np.ndarray, hash_width: int) -> np.ndarray:
    """Index-of-max codes for a batch (n, d): uint8 array (n, hash_count)."""
    projected = projection.apply(np.atleast_2d(features))
    groups = projected.reshape(projected.shape[0], -1, hash_width)
    return np.argmax(groups, axis=-1).astype(np.uint8)


def bit_planes(hash_width: int) -> int:
    """Bits needed per index: log2(hash_width)."""
    planes = int(hash_width).bit_length() - 1
    if hash_width < 2 or 1 << planes != hash_width:
        raise ValueError("hash_width must be a power of two >= 2")
    return planes


def pack_indices(indices: np.ndarray, hash_width: int) -> np.ndarray:
    """Pack codes (..., hash_count) into bit planes (..., planes, hash_count // 64) of uint64."""
    planes = bit_planes(hash_width)
    indices = np.asarray(indices, dtype=np.uint8)
    if indices.shape[-1] % 64:
        raise ValueError("hash_count must be a multiple of 64")
    bits = (indices[..., None, :] >> np.arange(planes, dtype=np.uint8)[:, None]) & 1
    packed = np.packbits(bits, axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8")  # packbits keeps odd input layouts


def unpack_indices(packed: np.ndarray, hash_width: int) -> np.ndarray:
    """Inverse of pack_indices."""
    planes = bit_planes(hash_width)
    packed = np.ascontiguousarray(packed, dtype="<u8")
    bits = np.unpackbits(packed.view(np.uint8), axis=-1, bitorder="little")
    weights = (1 << np.arange(planes, dtype=np.uint8))[:, None]
    return (bits * weights).sum(axis=-2).astype(np.uint8)
