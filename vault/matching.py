"""In-memory galleries of protected codes and the vectorised comparison over them.

One `Gallery` holds the live codes of one (tenant, modality, profile, key version) group, packed
as uint64 bit planes (vault.hazmat.iom), so a probe transformed once under that key version is
compared with every code by XOR, OR across planes and popcount. A gallery keeps its codes plane-
major, (planes, rows, words): each plane of a block of rows is one contiguous run, so every numpy
pass of the 1:N kernel is a single long vector loop over cache-resident data. The `MatchIndex` maps groups to
galleries; it is loaded from the store at start and updated on enrol, revoke and reissue.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from vault.profiles import ProtectionProfile

CHUNK_ROWS = 4096  # rows per pass: the temporaries (~1-2 MB) stay in L2/L3 between passes


def agreement(probe: np.ndarray, codes: np.ndarray, hash_count: int) -> np.ndarray:
    """Fraction of equal IoM indices between one packed probe (planes, words) and codes (n, planes, words)."""
    n, planes, words = codes.shape
    scores = np.empty(n, dtype=np.float32)
    rows = min(n, CHUNK_ROWS)
    tiled = np.ascontiguousarray(np.broadcast_to(probe, (rows, planes, words)))  # same-shape XOR: one loop
    differ = np.empty((rows, planes, words), dtype=np.uint64)
    mismatch = np.empty((rows, words), dtype=np.uint64)
    for start in range(0, n, CHUNK_ROWS):
        r = min(CHUNK_ROWS, n - start)
        x, m = differ[:r], mismatch[:r]
        np.bitwise_xor(codes[start:start + r], tiled[:r], out=x)
        np.bitwise_or(x[:, 0], x[:, 1] if planes > 1 else x[:, 0], out=m)  # a position differs in any plane
        for p in range(2, planes):
            np.bitwise_or(m, x[:, p], out=m)
        scores[start:start + r] = _agreement_of(m, hash_count)
    return scores


def agreement_planes(probe: np.ndarray, planes: np.ndarray, n: int, hash_count: int) -> np.ndarray:
    """agreement() over the first n rows of plane-major codes (planes, rows, words): same scores."""
    count, _, words = planes.shape
    scores = np.empty(n, dtype=np.float32)
    rows = min(n, CHUNK_ROWS)
    tiled = np.ascontiguousarray(np.broadcast_to(probe[:, None, :], (count, rows, words)))
    mismatch = np.empty((rows, words), dtype=np.uint64)
    scratch = np.empty((rows, words), dtype=np.uint64)
    for start in range(0, n, CHUNK_ROWS):
        r = min(CHUNK_ROWS, n - start)
        m, t = mismatch[:r], scratch[:r]
        np.bitwise_xor(planes[0, start:start + r], tiled[0, :r], out=m)
        for p in range(1, count):
            np.bitwise_xor(planes[p, start:start + r], tiled[p, :r], out=t)
            np.bitwise_or(m, t, out=m)
        scores[start:start + r] = _agreement_of(m, hash_count)
    return scores


def _agreement_of(mismatch: np.ndarray, hash_count: int) -> np.ndarray:
    """1 - (differing positions / hash_count) per row of mismatch words (rows, words)."""
    counts = np.bitwise_count(mismatch)  # uint8, <= 64 per word
    words = mismatch.shape[1]
    if words % 8 or words > 16:
        differing = counts.sum(axis=1, dtype=np.int64)
    else:
        # Sum the byte counts of a row as integers, 8 bytes at a time (SWAR), instead of a numpy
        # reduction over 16 items per row (slow: one inner loop per row). Bytes stay <= 128 after
        # adding two words; then 16-bit lanes <= 256; the multiply sums the four lanes (<= 1024).
        packed = counts.view(np.uint64)
        lanes = packed[:, 0] + packed[:, 1] if words == 16 else packed[:, 0].copy()
        lanes = (lanes & 0x00FF00FF00FF00FF) + ((lanes >> 8) & 0x00FF00FF00FF00FF)
        differing = (lanes * 0x0001000100010001) >> 48
    return 1.0 - differing / hash_count


@dataclass(frozen=True)
class Hit:
    template_id: str
    subject_id: str
    score: float


class Gallery:
    """Live codes of one group. Rows are removed by moving the last row into the hole."""

    def __init__(self, profile: ProtectionProfile, key_version: int):
        self.profile = profile
        self.key_version = key_version
        self._planes = np.zeros((profile.planes, 16, profile.words), dtype=np.uint64)  # plane-major
        self._fingers = np.zeros(16, dtype=np.uint8)
        self._template_ids: list[str] = []
        self._subject_ids: list[str] = []
        self._row: dict[str, int] = {}
        self._by_subject: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._template_ids)

    def add(self, template_id: str, subject_id: str, finger: int, code: np.ndarray) -> None:
        with self._lock:
            if template_id in self._row:
                return
            n = len(self._template_ids)
            if n == self._planes.shape[1]:
                grown = np.zeros((self._planes.shape[0], 2 * n, self._planes.shape[2]), dtype=np.uint64)
                grown[:, :n] = self._planes
                self._planes = grown
                self._fingers = np.concatenate([self._fingers, np.zeros(n, dtype=np.uint8)])
            self._planes[:, n] = code
            self._fingers[n] = finger
            self._template_ids.append(template_id)
            self._subject_ids.append(subject_id)
            self._row[template_id] = n
            self._by_subject.setdefault(subject_id, set()).add(template_id)

    def remove(self, template_id: str) -> bool:
        with self._lock:
            row = self._row.pop(template_id, None)
            if row is None:
                return False
            subject_templates = self._by_subject[self._subject_ids[row]]
            subject_templates.discard(template_id)
            if not subject_templates:
                del self._by_subject[self._subject_ids[row]]
            last = len(self._template_ids) - 1
            if row != last:
                self._planes[:, row] = self._planes[:, last]
                self._fingers[row] = self._fingers[last]
                for column in (self._template_ids, self._subject_ids):
                    column[row] = column[last]
                self._row[self._template_ids[row]] = row
            for column in (self._template_ids, self._subject_ids):
                column.pop()
            return True

    def template_ids(self) -> set[str]:
        with self._lock:
            return set(self._row)

    def _rows(self, subject_id: str | None, template_id: str | None, finger: int) -> list[int]:
        if template_id is not None:
            rows = [self._row[template_id]] if template_id in self._row else []
        else:
            rows = [self._row[t] for t in self._by_subject.get(subject_id, ())]
        return [r for r in rows if not finger or self._fingers[r] == finger]

    def has(self, *, subject_id: str | None = None, template_id: str | None = None, finger: int = 0) -> bool:
        with self._lock:
            return bool(self._rows(subject_id, template_id, finger))

    def search(self, probe: np.ndarray, *, subject_id: str | None = None, template_id: str | None = None,
               finger: int = 0) -> list[Hit]:
        """1:1 scores of the probe against one template, or one subject's templates (optionally one finger)."""
        with self._lock:
            rows = self._rows(subject_id, template_id, finger)
            codes = self._planes[:, np.asarray(rows, dtype=np.int64)].transpose(1, 0, 2)
            scores = agreement(probe, codes, self.profile.hash_count)
            return [Hit(self._template_ids[r], self._subject_ids[r], float(s)) for r, s in zip(rows, scores)]

    def top(self, probe: np.ndarray, threshold: float, limit: int, finger: int = 0) -> list[Hit]:
        """The best `limit` rows scoring at or above `threshold`, best first (1:N)."""
        with self._lock:
            n = len(self._template_ids)
            if finger:
                rows = np.flatnonzero(self._fingers[:n] == finger)
                scores = agreement_planes(probe, self._planes[:, rows], len(rows), self.profile.hash_count)
            else:
                rows = None
                scores = agreement_planes(probe, self._planes, n, self.profile.hash_count)
            above = np.flatnonzero(scores >= threshold)
            best = above[np.argsort(-scores[above], kind="stable")[:limit]]
            hits = []
            for i in best:
                row = int(i) if rows is None else int(rows[i])
                hits.append(Hit(self._template_ids[row], self._subject_ids[row], float(scores[i])))
        return hits


class MatchIndex:
    """Galleries by (tenant, modality) and then (profile name, key version).

    Revocation is final, so a removed template id is remembered and never added again: a change
    feed that delivers a stale 'add' after a local revoke cannot bring a revoked template back.
    """

    def __init__(self):
        self._groups: dict[tuple[str, int], dict[tuple[str, int], Gallery]] = {}
        self._removed: set[str] = set()
        self._lock = threading.Lock()

    def galleries(self, tenant: str, modality: int) -> list[Gallery]:
        with self._lock:
            return list(self._groups.get((tenant, modality), {}).values())

    def add(self, tenant: str, modality: int, profile: ProtectionProfile, key_version: int,
            template_id: str, subject_id: str, finger: int, code: np.ndarray) -> None:
        with self._lock:
            if template_id in self._removed:
                return
            group = self._groups.setdefault((tenant, modality), {})
            gallery = group.get((profile.name, key_version))
            if gallery is None:
                gallery = group[(profile.name, key_version)] = Gallery(profile, key_version)
            gallery.add(template_id, subject_id, finger, code)

    def remove(self, tenant: str, modality: int, template_id: str) -> bool:
        with self._lock:
            self._removed.add(template_id)
            return any(g.remove(template_id) for g in self._groups.get((tenant, modality), {}).values())

    def count(self, tenant: str | None = None) -> int:
        with self._lock:
            groups = [g for (t, _), gs in self._groups.items() if tenant in (None, t) for g in gs.values()]
        return sum(len(g) for g in groups)

    def template_ids(self) -> set[str]:
        with self._lock:
            groups = [g for gs in self._groups.values() for g in gs.values()]
        return set().union(*(g.template_ids() for g in groups)) if groups else set()
