"""In-memory galleries of protected codes and the 1:N comparison over them.

One `Gallery` holds the live codes of one (tenant, modality, profile, key version) group, packed
as uint64 bit planes (vault.hazmat.iom), stored interleaved: one row is (words, planes), so the
planes of each 64-position word sit side by side. A probe transformed once under that key version is
compared with every code in a single pass over that array (XOR, OR across planes, popcount),
compiled by numba with the planes and words of the profile as constants, so the loop is unrolled
and runs near memory bandwidth for every profile shape (benchmarks/performance/identify_speed.py).
The `MatchIndex` maps groups to galleries; it is loaded from the store at start and updated on
enrol, revoke and reissue (and from other replicas, vault.replication).
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Callable

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from vault.templates.identification import per_comparison_fmr
from vault.templates.layout import interleave
from vault.templates.normalisation import cohort_order, cohort_stats, normalise
from vault.templates.prefilter import best_rows
from vault.templates.profiles import ProtectionProfile


@intrinsic
def _popcount(typingctx, word):
    """llvm.ctpop: one POPCNT instruction on x86-64."""

    def codegen(context, builder, signature, args):
        return builder.call(builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)]), args)

    return types.uint64(types.uint64), codegen


@functools.cache
def _kernels(words: int, planes: int):
    """Differing positions against the probe (words, planes) of interleaved code rows (words,
    planes): of every row (`every`), or of the listed rows only, read in place (`listed`). The
    words and planes of the profile are constants, so the loops unroll."""

    @numba.njit(nogil=True, boundscheck=False, cache=True, inline="always")
    def row_mismatches(codes, r, probe):
        total = 0
        for w in range(words):
            differs = codes[r, w, 0] ^ probe[w, 0]
            for p in range(1, planes):  # a position differs if any bit of its index differs
                differs |= codes[r, w, p] ^ probe[w, p]
            total += _popcount(differs)
        return total

    @numba.njit(nogil=True, boundscheck=False, cache=True)
    def every(codes, probe, out):
        for r in range(out.shape[0]):
            out[r] = row_mismatches(codes, r, probe)

    @numba.njit(nogil=True, boundscheck=False, cache=True)
    def listed(codes, rows, probe, out):
        for i in range(rows.shape[0]):
            out[i] = row_mismatches(codes, rows[i], probe)

    return every, listed


def _mismatch_kernel(words: int, planes: int):
    return _kernels(words, planes)[0]


def _listed_mismatch_kernel(words: int, planes: int):
    return _kernels(words, planes)[1]


def _interleaved_agreement(probe: np.ndarray, codes: np.ndarray, hash_count: int) -> np.ndarray:
    """agreement() for a probe (words, planes) and interleaved codes (n, words, planes)."""
    differing = np.empty(len(codes), dtype=np.int64)
    _mismatch_kernel(*probe.shape)(codes, probe, differing)
    return _as_agreement(differing, hash_count)


def _as_agreement(differing: np.ndarray, hash_count: int) -> np.ndarray:
    return (1.0 - differing / hash_count).astype(np.float32)


def agreement(probe: np.ndarray, codes: np.ndarray, hash_count: int) -> np.ndarray:
    """Fraction of equal IoM indices between one packed probe (planes, words) and codes (n, planes, words)."""
    codes = np.asarray(codes, dtype=np.uint64)
    probe = np.asarray(probe, dtype=np.uint64)
    if codes.ndim != 3 or codes.shape[1:] != probe.shape:
        raise ValueError("codes must be (n, planes, words) with the probe's (planes, words)")
    return _interleaved_agreement(np.ascontiguousarray(probe.T), np.ascontiguousarray(codes.transpose(0, 2, 1)),
                                  hash_count)


def agreements_with_later(codes: np.ndarray, first: int, hash_count: int) -> np.ndarray:
    """Each of the first `first` codes (n, planes, words) against every code after it, flattened:
    a cohort's impostor pairs. The codes are laid out for the kernel once, not once per row."""
    rows = np.ascontiguousarray(np.asarray(codes, dtype=np.uint64).transpose(0, 2, 1))
    return np.concatenate([_interleaved_agreement(rows[a], rows[a + 1:], hash_count) for a in range(first)])


def warm_up(profiles) -> None:
    """Compile (or load from numba's cache) the kernel of each profile before the first request."""
    for profile in profiles:
        if profile.retired:  # its templates are never loaded
            continue
        agreement(np.zeros((profile.planes, profile.words), np.uint64),
                  np.zeros((1, profile.planes, profile.words), np.uint64), profile.hash_count)


@dataclass(frozen=True)
class Hit:
    template_id: str
    subject_id: str
    score: float  # agreement, less the row's offset where it has one (Gallery)
    matched: bool  # score reached the template's own threshold (ProtectionProfile.threshold_for)


ProbeCodes = Callable[["Gallery"], np.ndarray]  # the probe's code under a gallery's key version and profile


class Gallery:
    """Live codes of one group, each template decided at the threshold its profile sets for how it
    was enrolled (one sample, several fused, or several kept apart: ProtectionProfile
    .keeps_sample_codes). A template kept as several codes holds one row per code and scores the
    probe's best agreement with any of them. A row may carry an offset (vault.templates.cohort
    .TemplateCohort: how close its code sits to generic prints), taken off every score it draws.
    Rows are removed by moving the last row into the hole."""

    def __init__(self, profile: ProtectionProfile, key_version: int, threshold_shift: float = 0.0):
        """`threshold_shift`: this key's move of every threshold (vault.templates.cohort), 0 for one for all keys."""
        self.profile = profile
        self.key_version = key_version
        self.threshold_shift = threshold_shift
        self._codes = np.zeros((16, profile.words, profile.planes), dtype=np.uint64)  # interleaved rows
        # Each row's first words, held again side by side: what a prefiltered search reads
        # (vault.templates.prefilter); (0, ...) where the profile sets none.
        self._prefix_words = min(profile.prefilter.words, profile.words) if profile.prefilter else 0
        self._prefixes = np.zeros((16 if self._prefix_words else 0, self._prefix_words, profile.planes), np.uint64)
        self._fingers = np.zeros(16, dtype=np.uint8)
        self._fused = np.zeros(16, dtype=bool)  # the row's template was enrolled from several samples
        self._offsets = np.zeros(16, dtype=np.float32)  # taken off the row's scores (vault.templates.cohort)
        self._orders = np.zeros(16, dtype=np.uint64)  # the row's template's place in the cohort order
        self._template_ids: list[str] = []  # per row
        self._subject_ids: list[str] = []  # per row
        # A single row or template held as itself, several as a tuple (read through _rows_of_template
        # and _templates_of): a million templates' small containers are most of what the gallery
        # holds beside the codes (benchmarks/performance/identify_speed.py: memory per template).
        self._rows_of: dict[str, int | tuple[int, ...]] = {}  # template id -> its row(s)
        self._by_subject: dict[str, str | tuple[str, ...]] = {}  # subject id -> its template id(s)
        # The normalisation cohort (vault.templates.normalisation): its template ids, as a set, their subjects
        # and the highest cohort order among them; None until a search needs it, and after it changed.
        self._cohort: tuple[list[str], frozenset[str], np.ndarray, int] | None = None
        # (template id, code) -> that code's cohort (mean, sd), valid while the cohort stays the same
        self._stats: dict[tuple[str, int], tuple[float, float]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Templates held (a template kept as several codes counts once)."""
        return len(self._rows_of)

    def add(self, template_id: str, subject_id: str, finger: int, code: np.ndarray, sample_count: int = 1,
            offsets: np.ndarray | None = None) -> None:
        """Add a template: one packed code (planes, words) or several (k, planes, words), with each
        code's score offset (vault.templates.cohort.TemplateCohort; None: none)."""
        codes = np.asarray(code).reshape(-1, self.profile.planes, self.profile.words)
        offsets = np.zeros(len(codes), np.float32) if offsets is None else np.asarray(offsets, np.float32)
        with self._lock:
            if template_id in self._rows_of:
                return
            n = len(self._template_ids)
            self._make_room(n + len(codes))
            rows = list(range(n, n + len(codes)))
            self._orders[rows] = cohort_order(template_id)
            interleave(codes, self._codes[n:n + len(codes)])
            if self._prefix_words:
                self._prefixes[n:n + len(codes)] = self._codes[n:n + len(codes), :self._prefix_words]
            self._fingers[rows] = finger
            self._fused[rows] = sample_count > 1
            self._offsets[rows] = offsets
            self._template_ids += [template_id] * len(codes)
            self._subject_ids += [subject_id] * len(codes)
            self._rows_of[template_id] = rows[0] if len(rows) == 1 else tuple(rows)
            self._add_to_subject(subject_id, template_id)
            if self._cohort is not None and self._enters_cohort(template_id):
                self._new_cohort()

    def add_many(self, template_ids: list[str], subject_ids: list[str], codes: np.ndarray, fingers=0,
                 fused=False, offsets=0.0, orders: np.ndarray | None = None) -> None:
        """Add templates of one code each in bulk (a replica loading its store, benchmarks): packed
        codes (n, planes, words), and per template (or one for all) its finger, whether it was
        enrolled from several samples fused, and its code's score offset; ids already held are
        skipped. `orders`: the templates' cohort_order, where the caller has them (start-up workers
        compute them), else computed here."""
        codes = np.asarray(codes, dtype=np.uint64).reshape(-1, self.profile.planes, self.profile.words)
        with self._lock:
            held, batch, fresh = self._rows_of, set(), []
            for i, template_id in enumerate(template_ids):
                if template_id not in held and template_id not in batch:
                    batch.add(template_id)
                    fresh.append(i)
            n, count = len(self._template_ids), len(fresh)
            self._make_room(n + count)
            self._orders[n:n + count] = ([cohort_order(template_ids[i]) for i in fresh] if orders is None else
                                         np.asarray(orders, np.uint64)[fresh])
            interleave(codes[fresh] if count != len(codes) else codes, self._codes[n:n + count])
            if self._prefix_words:
                self._prefixes[n:n + count] = self._codes[n:n + count, :self._prefix_words]
            for column, values in ((self._fingers, fingers), (self._fused, fused), (self._offsets, offsets)):
                values = np.asarray(values)
                column[n:n + count] = values[fresh] if values.ndim else values
            for row, i in enumerate(fresh, start=n):
                template_id, subject_id = template_ids[i], subject_ids[i]
                self._template_ids.append(template_id)
                self._subject_ids.append(subject_id)
                self._rows_of[template_id] = row
                self._add_to_subject(subject_id, template_id)
            if self._cohort is not None and count:
                self._new_cohort()

    def reserve(self, rows: int) -> None:
        """Room for `rows` rows in all, made once (a replica's start-up knows about how many a
        gallery will hold): growing by doubling copies what is held each time."""
        with self._lock:
            self._make_room(rows, exact=True)

    def _make_room(self, rows: int, exact: bool = False) -> None:
        """Grow every per-row array (doubling, or to `rows` exactly) until `rows` rows fit; rows held are kept."""
        size = len(self._codes)
        if exact and rows > size:
            size = rows
        while rows > size:
            size *= 2
        if size == len(self._codes):
            return
        n = len(self._template_ids)
        arrays = ["_codes", "_fingers", "_fused", "_offsets", "_orders"] + (["_prefixes"] if self._prefix_words else [])
        for name in arrays:
            old = getattr(self, name)
            grown = np.zeros((size, *old.shape[1:]), dtype=old.dtype)
            grown[:n] = old[:n]
            setattr(self, name, grown)

    def remove(self, template_id: str) -> bool:
        with self._lock:
            if template_id not in self._rows_of:
                return False
            rows = self._rows_of_template(template_id)
            del self._rows_of[template_id]
            for code in range(len(rows)):
                self._stats.pop((template_id, code), None)
            if self._cohort is not None and template_id in self._cohort[1]:
                self._new_cohort()
            subject_id = self._subject_ids[rows[0]]
            subject_templates = tuple(t for t in self._templates_of(subject_id) if t != template_id)
            if subject_templates:
                self._by_subject[subject_id] = subject_templates[0] if len(subject_templates) == 1 else subject_templates
            else:
                del self._by_subject[subject_id]
            for row in sorted(rows, reverse=True):
                last = len(self._template_ids) - 1
                if row != last:
                    self._codes[row] = self._codes[last]
                    if self._prefix_words:
                        self._prefixes[row] = self._prefixes[last]
                    self._fingers[row] = self._fingers[last]
                    self._fused[row] = self._fused[last]
                    self._offsets[row] = self._offsets[last]
                    self._orders[row] = self._orders[last]
                    moved = self._template_ids[last]
                    self._template_ids[row] = moved
                    self._subject_ids[row] = self._subject_ids[last]
                    held = self._rows_of[moved]
                    self._rows_of[moved] = row if isinstance(held, int) else tuple(row if r == last else r for r in held)
                self._template_ids.pop()
                self._subject_ids.pop()
            return True

    def template_ids(self) -> set[str]:
        with self._lock:
            return set(self._rows_of)

    def __contains__(self, template_id: str) -> bool:
        with self._lock:
            return template_id in self._rows_of

    def _scores(self, probe: np.ndarray, rows: np.ndarray | slice) -> np.ndarray:
        """Agreement of a packed probe (planes, words) with gallery rows, less each row's offset."""
        if isinstance(rows, slice):
            agreements = _interleaved_agreement(np.ascontiguousarray(probe.T), self._codes[rows],
                                                self.profile.hash_count)
        else:  # listed rows, read in place
            differing = np.empty(len(rows), dtype=np.int64)
            _listed_mismatch_kernel(self.profile.words, self.profile.planes)(
                self._codes, np.ascontiguousarray(rows, dtype=np.int64), np.ascontiguousarray(probe.T), differing)
            agreements = _as_agreement(differing, self.profile.hash_count)
        return agreements - self._offsets[rows]

    def _candidates(self, probe: np.ndarray, rows: np.ndarray, n: int, finger: int) -> np.ndarray:
        """The rows a 1:N search scores in full: all of them, or the best by the prefix of their
        codes where the profile sets a Prefilter and the gallery is large (vault.templates.prefilter)."""
        prefilter = self.profile.prefilter
        if prefilter is None or not self._prefix_words or len(rows) < prefilter.from_rows:
            return rows
        words = self._prefix_words
        probe_prefix = np.ascontiguousarray(probe.T[:words])
        mismatches = np.empty(len(rows), dtype=np.int64)
        if finger:
            _listed_mismatch_kernel(words, self.profile.planes)(self._prefixes, rows, probe_prefix, mismatches)
        else:
            _mismatch_kernel(words, self.profile.planes)(self._prefixes[:n], probe_prefix, mismatches)
        offsets = self._offsets[rows]
        # an offset is taken off agreement: in prefix mismatches it is that share of the positions, added
        extra = offsets * (words * 64) if offsets.any() else None
        return rows[best_rows(mismatches, prefilter.keeps(len(rows)), extra)]

    def _rows_of_template(self, template_id: str) -> tuple[int, ...]:
        held = self._rows_of[template_id]
        return (held,) if isinstance(held, int) else held

    def _templates_of(self, subject_id: str) -> tuple[str, ...]:
        held = self._by_subject.get(subject_id, ())
        return (held,) if isinstance(held, str) else held

    def _add_to_subject(self, subject_id: str, template_id: str) -> None:
        held = self._templates_of(subject_id)
        self._by_subject[subject_id] = template_id if not held else held + (template_id,)

    def _new_cohort(self) -> None:
        """Forget the cohort and what was computed against it (it is chosen again when needed)."""
        self._cohort = None
        self._stats.clear()

    def _cohort_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The gallery's cohort (vault.templates.normalisation): the first row of each of the templates whose
        template id (random, made by the server) hashes lowest, at most cohort_size; and their
        subjects. Every replica holding the same templates picks the same cohort. It is chosen
        again only when a template enters or leaves it; rows are read from the templates each time,
        since removing another template moves rows."""
        if self._cohort is None:
            size, n = self.profile.score_norm.cohort_size, len(self._template_ids)
            orders = self._orders[:n]
            # the lowest rows by order, enough to hold `size` templates however many rows each has
            span = min(n, 8 * size)
            lowest = np.argpartition(orders, span - 1)[:span] if span < n else np.arange(n)
            lowest = lowest[np.argsort(orders[lowest], kind="stable")]
            chosen: list[str] = []
            for row in lowest:
                template_id = self._template_ids[row]
                if template_id not in chosen:
                    chosen.append(template_id)
                    if len(chosen) == size:
                        break
            subjects = np.asarray([self._subject_ids[self._rows_of_template(t)[0]] for t in chosen], dtype=object)
            highest = cohort_order(chosen[-1]) if chosen else 0
            self._cohort = chosen, frozenset(chosen), subjects, highest
        chosen, _, subjects, _ = self._cohort
        return np.asarray([self._rows_of_template(t)[0] for t in chosen], dtype=np.int64), subjects

    def _enters_cohort(self, template_id: str) -> bool:
        """Whether a template just added changes the cohort (amortised: rarely, once it is full)."""
        _, members, _, highest = self._cohort
        return len(members) < self.profile.score_norm.cohort_size or cohort_order(template_id) < highest

    def _normalised(self, probe: np.ndarray, rows: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """Raw agreements of the probe with `rows`, normalised against the cohort (each row's
        subject left out of its own cohort): what the profile's thresholds apply to."""
        if len(rows) == 0:
            return np.zeros(0, np.float32)
        norm = self.profile.score_norm
        cohort, cohort_subjects = self._cohort_rows()
        subjects = np.asarray([self._subject_ids[r] for r in rows], dtype=object)
        keep = subjects[:, None] != cohort_subjects[None, :]
        probe_scores = _interleaved_agreement(np.ascontiguousarray(probe.T), self._codes[cohort],
                                              self.profile.hash_count)
        probe_stats = cohort_stats(norm, np.broadcast_to(probe_scores, keep.shape), keep)
        return normalise(raw, self._template_stats(rows, cohort, keep), probe_stats)

    def _template_stats(self, rows: np.ndarray, cohort: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's cohort statistics, kept until the cohort changes (a template's own do not
        depend on the probe: Identify computes each once, not once per search)."""
        names = [(self._template_ids[r], self._rows_of_template(self._template_ids[r]).index(r)) for r in rows]
        missing = [i for i, name in enumerate(names) if name not in self._stats]
        if missing:
            members = self._codes[cohort]
            scores = np.stack([_interleaved_agreement(self._codes[rows[i]], members, self.profile.hash_count)
                               for i in missing])
            means, sds = cohort_stats(self.profile.score_norm, scores, keep[missing])
            for i, mean, sd in zip(missing, means, sds):
                self._stats[names[i]] = (mean, sd)
        stats = [self._stats[name] for name in names]
        return np.asarray([m for m, _ in stats]), np.asarray([s for _, s in stats])

    def _rows(self, subject_id: str | None, template_id: str | None, finger: int) -> list[int]:
        if template_id is not None:
            rows = list(self._rows_of_template(template_id)) if template_id in self._rows_of else []
        else:
            rows = [r for t in self._templates_of(subject_id) for r in self._rows_of_template(t)]
        return [r for r in rows if not finger or self._fingers[r] == finger]

    def has(self, *, subject_id: str | None = None, template_id: str | None = None, finger: int = 0) -> bool:
        with self._lock:
            return bool(self._rows(subject_id, template_id, finger))

    def _best_per_template(self, rows: np.ndarray, scores: np.ndarray, bar) -> list[Hit]:
        """One hit per template: its best row's score, matched if that reaches the row's threshold."""
        best: dict[str, Hit] = {}
        bar = np.broadcast_to(np.asarray(bar, dtype=np.float32), scores.shape)
        for row, score, threshold in zip(rows, scores, bar):
            template_id = self._template_ids[row]
            if template_id not in best or score > best[template_id].score:
                best[template_id] = Hit(template_id, self._subject_ids[row], float(score), bool(score >= threshold))
        return list(best.values())

    def search(self, probe: np.ndarray, *, subject_id: str | None = None, template_id: str | None = None,
               finger: int = 0) -> list[Hit]:
        """1:1 scores of the probe against one template, or one subject's templates (optionally one finger)."""
        with self._lock:
            rows = np.asarray(self._rows(subject_id, template_id, finger), dtype=np.int64)
            scores = self._scores(probe, rows)
            if self.profile.score_norm is not None:
                scores = self._normalised(probe, rows, scores)
            return self._best_per_template(rows, scores, self._thresholds(rows))

    def _thresholds(self, rows: np.ndarray, per_comparison_fmr: float | None = None) -> np.ndarray:
        """Each row's threshold: 1:1, or 1:N at `per_comparison_fmr` (vault.templates.identification)."""
        if per_comparison_fmr is None:
            single, fused = self.profile.threshold_for(1), self.profile.threshold_for(2)
        else:
            single, fused = (self.profile.identify_threshold(k, per_comparison_fmr) for k in (1, 2))
        shift = self.threshold_shift
        return np.where(self._fused[rows], np.float32(fused + shift), np.float32(single + shift))

    def count(self, finger: int = 0) -> int:
        """Comparisons a search for `finger` (0: any) makes: rows, not templates."""
        with self._lock:
            n = len(self._template_ids)
            return n if not finger else int(np.count_nonzero(self._fingers[:n] == finger))

    def top(self, probe: np.ndarray, limit: int, finger: int = 0, threshold: float | None = None,
            per_comparison_fmr: float | None = None) -> list[Hit]:
        """The best `limit` templates scoring at or above their threshold, best first (1:N). The
        threshold is each row's 1:1 one; with `per_comparison_fmr`, the profile's 1:N one for that
        rate (vault.templates.identification); `threshold` overrides both (benchmarks that sweep it)."""
        with self._lock:
            n = len(self._template_ids)
            rows = np.flatnonzero(self._fingers[:n] == finger) if finger else np.arange(n)
            candidates = self._candidates(probe, rows, n, finger)
            if len(candidates) == n:
                scores = self._scores(probe, slice(0, n))  # every row, in one pass without a gather
            else:
                rows = candidates
                scores = self._scores(probe, rows)
            if self.profile.score_norm is not None:
                # Normalise the best by raw agreement only: the cohort statistics move a score by
                # far less than the gap between a genuine template and the bulk of the gallery.
                keep = min(self.profile.score_norm.preselect, len(scores))
                best = np.argpartition(-scores, keep - 1)[:keep] if keep else np.zeros(0, np.int64)
                rows = rows[best]
                scores = self._normalised(probe, rows, scores[best])
            bar = self._thresholds(rows, per_comparison_fmr) if threshold is None else np.float32(threshold)
            above = np.flatnonzero(scores >= bar)
            hits = self._best_per_template(rows[above], scores[above], np.broadcast_to(bar, scores.shape)[above])
            hits.sort(key=lambda h: -h.score)
            return hits[:limit]


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
            template_id: str, subject_id: str, finger: int, code: np.ndarray, sample_count: int = 1,
            threshold_shift: float = 0.0, offsets: np.ndarray | None = None) -> None:
        with self._lock:
            if template_id in self._removed:
                return
            self._gallery(tenant, modality, profile, key_version, threshold_shift).add(
                template_id, subject_id, finger, code, sample_count, offsets)

    def add_many(self, tenant: str, modality: int, profile: ProtectionProfile, key_version: int,
                 template_ids: list[str], subject_ids: list[str], codes: np.ndarray, fingers=0, fused=False,
                 threshold_shift: float = 0.0, offsets=0.0, orders: np.ndarray | None = None) -> None:
        """Templates of one code each into one group in bulk (Gallery.add_many); removed ids skipped."""
        with self._lock:
            keep = [i for i, t in enumerate(template_ids) if t not in self._removed]
            if len(keep) != len(template_ids):
                pick = lambda values: values if np.ndim(values) == 0 else np.asarray(values)[keep]  # noqa: E731
                template_ids, subject_ids = [template_ids[i] for i in keep], [subject_ids[i] for i in keep]
                codes, fingers, fused, offsets = np.asarray(codes)[keep], pick(fingers), pick(fused), pick(offsets)
                orders = None if orders is None else np.asarray(orders)[keep]
            self._gallery(tenant, modality, profile, key_version, threshold_shift).add_many(
                template_ids, subject_ids, codes, fingers, fused, offsets, orders)

    def reserve(self, tenant: str, modality: int, profile: ProtectionProfile, key_version: int, rows: int,
                threshold_shift: float = 0.0) -> None:
        """Room for `rows` templates of one code in the group's gallery (Gallery.reserve)."""
        with self._lock:
            gallery = self._gallery(tenant, modality, profile, key_version, threshold_shift)
        gallery.reserve(rows)

    def _gallery(self, tenant: str, modality: int, profile: ProtectionProfile, key_version: int,
                 threshold_shift: float) -> Gallery:
        """The group's gallery, made on its first template (under self._lock)."""
        group = self._groups.setdefault((tenant, modality), {})
        gallery = group.get((profile.name, key_version))
        if gallery is None:
            gallery = group[(profile.name, key_version)] = Gallery(profile, key_version, threshold_shift)
        return gallery

    def remove(self, tenant: str, modality: int, template_id: str) -> bool:
        with self._lock:
            self._removed.add(template_id)
            return any(g.remove(template_id) for g in self._groups.get((tenant, modality), {}).values())

    def drop_tenant(self, tenant: str) -> int:
        """Take every template of a tenant out of the index (its replica group moved it elsewhere:
        vault.replication.ReplicaGroup), without marking them removed: they may come back. How many."""
        with self._lock:
            dropped = [self._groups.pop(k) for k in [k for k in self._groups if k[0] == tenant]]
        return sum(len(g) for gs in dropped for g in gs.values())

    def count(self, tenant: str | None = None) -> int:
        with self._lock:
            groups = [g for (t, _), gs in self._groups.items() if tenant in (None, t) for g in gs.values()]
        return sum(len(g) for g in groups)

    def __contains__(self, template_id: str) -> bool:
        with self._lock:
            groups = [g for gs in self._groups.values() for g in gs.values()]
        return any(template_id in g for g in groups)

    # -- decisions --------------------------------------------------------------------------------
    def verify(self, tenant: str, modality: int, code_for: ProbeCodes, *, subject_id: str | None = None,
               template_id: str | None = None, finger: int = 0, nothing: bool = False) -> tuple[bool, float]:
        """1:1: (does the probe reach the threshold of any selected template, the best score)
        against one template or one subject's templates (optionally one finger); `nothing`: a claim
        that selects no template (an unknown or revoked template id)."""
        matched, best = False, 0.0
        for gallery in self.galleries(tenant, modality):
            # The probe is transformed for every gallery of the tenant, whether the claim has
            # templates there or not: the time a Verify takes does not tell an enrolled subject
            # from an unknown one (issue 24, finding 10: 18 of 20 told apart before).
            probe = code_for(gallery)
            if probe is None or nothing or not gallery.has(subject_id=subject_id, template_id=template_id,
                                                          finger=finger):
                continue
            for hit in gallery.search(probe, subject_id=subject_id, template_id=template_id,
                                      finger=finger):
                matched |= hit.matched
                best = max(best, hit.score)
        return matched, best

    def identify(self, tenant: str, modality: int, code_for: ProbeCodes, limit: int, finger: int,
                 fpir: float) -> list[Hit]:
        """1:N: the best `limit` subjects (one hit each, best first) whose templates reach the
        threshold that holds `fpir` at the size of the gallery searched (vault.templates.identification)."""
        galleries = self.galleries(tenant, modality)
        fmr = per_comparison_fmr(fpir, sum(g.count(finger) for g in galleries))
        hits = []
        for gallery in galleries:
            probe = code_for(gallery)
            if probe is not None:
                hits += gallery.top(probe, limit * 4, finger, per_comparison_fmr=fmr)
        best_by_subject: dict[str, Hit] = {}
        for hit in sorted(hits, key=lambda h: -h.score):
            best_by_subject.setdefault(hit.subject_id, hit)
        return list(best_by_subject.values())[:limit]

    def template_ids(self) -> set[str]:
        with self._lock:
            groups = [g for gs in self._groups.values() for g in gs.values()]
        return set().union(*(g.template_ids() for g in groups)) if groups else set()
