"""Index-of-Max hashing with Gaussian random projections (GRP-IoM; Jin et al., IEEE TIFS 2018).

A feature vector x (unit length) is projected onto `hash_count` groups of `hash_width` Gaussian
directions drawn from a keyed generator; each group keeps only the index of its largest
projection. The result is `hash_count` small integers: magnitudes are discarded, which is what
makes the code non-invertible without the key. With the key an attacker can still search for a
pre-image that reproduces the ranks (see docs/threat-model.md); the key is what protects.

Two codes are compared by the fraction of positions whose index agrees. For hash_width 2 this is
sign-random-projection hashing, whose agreement estimates 1 - angle/pi.

Codes are held packed as bit planes: plane p holds bit p of every index, 64 positions a word, so
a comparison is XOR, OR across planes, and a popcount (see vault.matching).
"""

from __future__ import annotations

import numpy as np


def projection_bank(seed: bytes, feature_dim: int, hash_count: int, hash_width: int) -> np.ndarray:
    """The keyed projection matrix, shape (hash_count * hash_width, feature_dim), float32.

    `seed` must be 32 bytes of key material specific to (tenant, key version, profile).
    """
    if len(seed) != 32:
        raise ValueError("projection seed must be 32 bytes")
    words = np.frombuffer(seed, dtype="<u8")
    # Philox: 128-bit key, 256-bit counter. The second half of the seed starts the counter.
    counter = np.array([words[2], words[3], 0, 0], dtype=np.uint64)
    generator = np.random.Generator(np.random.Philox(key=words[:2], counter=counter))
    return generator.standard_normal((hash_count * hash_width, feature_dim), dtype=np.float32)


def iom_indices(bank: np.ndarray, features: np.ndarray, hash_width: int) -> np.ndarray:
    """Index-of-max codes for one vector (d,) or a batch (n, d): uint8 array (..., hash_count)."""
    projected = np.asarray(features, dtype=np.float32) @ bank.T
    groups = projected.reshape(*projected.shape[:-1], -1, hash_width)
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
    return packed.view("<u8")


def unpack_indices(packed: np.ndarray, hash_width: int) -> np.ndarray:
    """Inverse of pack_indices."""
    planes = bit_planes(hash_width)
    packed = np.ascontiguousarray(packed, dtype="<u8")
    bits = np.unpackbits(packed.view(np.uint8), axis=-1, bitorder="little")
    weights = (1 << np.arange(planes, dtype=np.uint8))[:, None]
    return (bits * weights).sum(axis=-2).astype(np.uint8)
