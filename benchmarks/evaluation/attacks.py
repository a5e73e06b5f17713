"""Pre-image attack on GRP-IoM codes by an attacker who holds the projection key.

Each IoM hash g with stored index c_g says that, of its q keyed directions w_{g,1..q}, the feature
vector x projects highest on w_{g,c_g}: q - 1 linear inequalities (w_{g,c_g} - w_{g,k}) . x >= 0.
m hashes give m (q - 1) half-spaces whose intersection (a cone) contains the enrolled x. The attack
looks for a unit vector deep inside it by minimising the hinge loss

    sum_g sum_{k != c_g} max(0, margin - (w_{g,c_g} - w_{g,k}) . x),   ||x|| = 1

with projected gradient descent (Adam), the constraint-satisfaction formulation of the linear
program used against IoM by Lai et al. (IEEE TIFS 2021, "Secure face template protection ...
inversion") and Paik et al. (BMVC 2023, "Inverting IoM hashing"). No training data is needed:
the start is a random unit vector, so the attack does not borrow knowledge of the face space.

The codes are made and the reconstructions judged by the service's own Protector and agreement
kernel; the projection bank is the one the service derives from the key (the attacker has it).
"""

from __future__ import annotations

import numpy as np

from vault.hazmat import iom
from vault.custody.keys import TenantKey
from vault.templates.profiles import ProtectionProfile
from vault.templates.protection import Protector


def bank_of(protector: Protector, key: TenantKey, profile: ProtectionProfile):
    """The keyed projection the service uses: what a key holder can rebuild."""
    return protector.projection(key, profile)


def preimage(codes: np.ndarray, bank, profile: ProtectionProfile, steps: int = 300,
             margin: float = 0.05, rate: float = 0.02, seed: int = 0, batch: int = 64) -> np.ndarray:
    """Unit vectors (n, d) that reproduce packed codes (n, planes, words) under `bank`."""
    target = iom.unpack_indices(codes, profile.hash_width).astype(np.int64)  # (n, m)
    m, q, d = profile.hash_count, profile.hash_width, profile.feature_dim
    rng = np.random.default_rng(seed)
    out = np.empty((len(codes), d), np.float32)
    for start in range(0, len(codes), batch):
        t = target[start:start + batch]
        n = len(t)
        x = rng.standard_normal((n, d)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        first, second = np.zeros_like(x), np.zeros_like(x)
        rows, groups = np.arange(n)[:, None], np.arange(m)[None, :]
        for step in range(1, steps + 1):
            projected = bank.apply(x).reshape(n, m, q)
            winner = projected[rows, groups, t]  # (n, m)
            violated = (margin - (winner[..., None] - projected)) > 0
            violated[rows, groups, t] = False
            weights = violated.astype(np.float32)
            weights[rows, groups, t] = -weights.sum(axis=2)
            grad = bank.transpose(weights.reshape(n, m * q)) / m
            grad -= np.sum(grad * x, axis=1, keepdims=True) * x  # tangent to the sphere
            first = 0.9 * first + 0.1 * grad
            second = 0.999 * second + 0.001 * grad * grad
            x = x - rate * (first / (1 - 0.9 ** step)) / (np.sqrt(second / (1 - 0.999 ** step)) + 1e-8)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start:start + n] = x
    return out
