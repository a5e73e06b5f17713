"""Fingerprint features (MCC second-order pooling + triplets), raw and IoM-protected, on FVC B sets.

    uv run python benchmarks/evaluation/fingerprint_mcc.py [--data ../shared/data] [--hash-count M]
        [--hash-width Q] [--keys 5] [--report /tmp/fingerprint_mcc.txt]

M and Q default to the current fingerprint profile's (vault.templates.profiles.CURRENT); so does the kind of
keyed projection.

Model: FVC2002 sets are scored with the shipped basis (vault/models/finger-mcc-pca160-v1.npz, fitted on
FVC2000 DB1-DB3); FVC2000 sets with the mirror basis fitted here, in memory, on FVC2002 DB1-DB3.
So no set is scored with a basis fitted on its own fingers.

Columns (EER %, all-pairs impostors / FVC 45 impostors; see benchmarks/evaluation/fingerprint_baseline.py):
  bozorth3   NBIS reference (../shared/data/README.md), one impression against one
  boz-3      bozorth3 with the prot-3 enrolment: the best score of the 3 enrolled impressions
             (image sets only; the fair reference for prot-3)
  raw        cosine of minutiae_features, one impression against one
  prot-1     protected codes (IoM agreement), one impression against one, every template under
             one tenant key (the key is known to the attacker: "stolen key", no token gain)
  prot-3     enrolment = vault.intake.features.fuse of 3 impressions ({1,2,3} and {4,5,6}), protected;
             probes: the finger's other 5 impressions (genuine, 100), every impression of the other
             fingers (all-pairs, 1,440) or impression 1 of the other fingers (FVC-like, 180)
  raw-3      as prot-3 on raw cosine
  normal     prot-1 where every finger has its own key (a tenant each): impostors cross keys
Protected columns are the mean over --keys fresh key draws (10 fingers x 8 impressions make an EER
move by 1 point per genuine pair: one draw is noisy); "spread" is the largest max - min across draws.
A sample refused (PoorSample) fails its comparisons: genuine pairs are false rejects.
Timing figures come from a shared, loaded 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.evaluation.fingerprint_baseline import (
    BOZORTH3,
    FINGERS,
    IMPRESSIONS,
    MinutiaeCache,
    default_data_dir,
    eer,
    protocol_pairs,
)
from benchmarks.calibration.fit_fingerprint_model import fit, training_records
from benchmarks.scores import fresh_key, one_to_many_ns
from benchmarks.transcript import Transcript
from vault.exceptions import PoorSample
from vault.intake.features import fingerprint as fp
from vault.intake.features import fuse
from vault.intake.iso19794 import parse_iso19794_2
from vault.templates.matching import agreement
from vault.templates.profiles import CURRENT, FINGERPRINT, ProtectionProfile
from vault.templates.protection import Protector

SETS = [(year, db) for year in (2000, 2002) for db in (1, 2, 3, 4)]
ENROL = [(0, 1, 2), (3, 4, 5)]


def bench_profile(hash_count: int, hash_width: int) -> ProtectionProfile:
    return ProtectionProfile(
        name="finger-mcc-bench", modality=FINGERPRINT, feature_dim=fp.FEATURE_DIM,
        hash_count=hash_count, hash_width=hash_width, threshold=0.0, operating_fmr=1e-3,
        calibration="benchmark only", projection=CURRENT[FINGERPRINT].projection,
    )  # fmt: skip


def features(records, model, seconds):
    vectors = np.zeros((len(records), fp.FEATURE_DIM), np.float32)
    ok = np.zeros(len(records), bool)
    for n, record in enumerate(records):
        start = time.perf_counter()
        try:
            vectors[n] = fp.minutiae_features(record, model)
            ok[n] = True
        except PoorSample:
            pass
        seconds.append(time.perf_counter() - start)
    return vectors, ok


def both_eers(score, ok_pairs, genuine, impostor, fvc):
    def s(pairs):
        out = score(pairs)
        return np.where(ok_pairs(pairs), out, -1.0)

    g = s(genuine)
    return eer(g, s(impostor)), eer(g, s(fvc))


def code_scores(codes, hash_count, probes=None):
    """Scores of (row, probe) index pairs: one agreement() scan per row (rows, probes: packed codes)."""
    probes = codes if probes is None else probes

    def score(pairs):
        out = np.empty(len(pairs))
        for a in np.unique(pairs[:, 0]):
            rows = pairs[:, 0] == a
            out[rows] = agreement(codes[a], probes[pairs[rows, 1]], hash_count)
        return out

    return score


def evaluate(vectors, ok, profile, key, finger_keys):
    """EERs of one key draw: `key` for every template (prot-1, prot-3), `finger_keys[f]` for finger
    f's templates (normal)."""
    protector = Protector()
    genuine, impostor, fvc = protocol_pairs()
    okp = lambda pairs: ok[pairs[:, 0]] & ok[pairs[:, 1]]  # noqa: E731
    row = {}
    row["raw"] = both_eers(lambda p: np.einsum("ij,ij->i", vectors[p[:, 0]], vectors[p[:, 1]]),
                           okp, genuine, impostor, fvc)
    codes = protector.protect_many(key, profile, vectors)
    row["prot-1"] = both_eers(code_scores(codes, profile.hash_count), okp, genuine, impostor, fvc)
    # normal scenario: finger f's samples under tenant f's key
    own = np.stack([protector.protect_many(finger_keys[n // 8], profile, vectors[n][None])[0]
                    for n in range(len(vectors))])
    row["normal"] = both_eers(code_scores(own, profile.hash_count), okp, genuine, impostor, fvc)

    # 3-sample enrolment: rows = enrolments (finger f, triple t), probes = single impressions
    enrol_vec, enrol_ok, g3, i3, f3 = [], [], [], [], []
    for f in range(10):
        for triple in ENROL:
            members = [f * 8 + i for i in triple if ok[f * 8 + i]]
            e = len(enrol_vec)
            enrol_ok.append(len(members) > 0)
            enrol_vec.append(fuse([vectors[m] for m in members]) if members else vectors[0] * 0)
            g3 += [(e, f * 8 + i) for i in range(8) if i not in triple]
            for g in range(10):
                if g != f:
                    i3 += [(e, g * 8 + i) for i in range(8)]
                    f3.append((e, g * 8))
    enrol_vec = np.array(enrol_vec, np.float32)
    enrol_ok = np.array(enrol_ok)
    g3, i3, f3 = np.array(g3), np.array(i3), np.array(f3)
    ok3 = lambda pairs: enrol_ok[pairs[:, 0]] & ok[pairs[:, 1]]  # noqa: E731
    row["raw-3"] = both_eers(lambda p: np.einsum("ij,ij->i", enrol_vec[p[:, 0]], vectors[p[:, 1]]),
                             ok3, g3, i3, f3)
    enrol_codes = protector.protect_many(key, profile, enrol_vec)

    row["prot-3"] = both_eers(code_scores(enrol_codes, profile.hash_count, codes), ok3, g3, i3, f3)
    return row


def bozorth_three(year: int, db: int):
    """bozorth3 EERs (all-pairs, FVC-like) with the 3-impression enrolments of `evaluate`: the
    enrolment's score is the best of its members' scores."""
    from benchmarks.evaluation import bozorth
    from benchmarks import data

    matrix = bozorth.scores(data.fvc(year, db), progress=False)
    genuine, impostor, fvc = [], [], []
    for f in range(10):
        for triple in ENROL:
            members = [f * 8 + i for i in triple]
            best = lambda probe: max(matrix.pairs([(m, probe) for m in members]))  # noqa: E731
            genuine += [best(f * 8 + i) for i in range(8) if i not in triple]
            for g in range(10):
                if g != f:
                    impostor += [best(g * 8 + i) for i in range(8)]
                    fvc.append(best(g * 8))
    genuine = np.array(genuine)
    return eer(genuine, np.array(impostor)), eer(genuine, np.array(fvc))


COLUMNS = ["bozorth3", "boz-3", "raw", "prot-1", "prot-3", "raw-3", "normal"]


def rows(data: Path, profile: ProtectionProfile, keys: int, seconds: list[float] | None = None):
    """One dict per input (every FVC B set from images, FVC2002 from ISO records): name, year, db,
    iso, poor (samples refused), spread, and (all-pairs EER %, FVC EER %) for each of COLUMNS."""
    cache = MinutiaeCache(enabled=True)
    models = {2002: fp.default_model(), 2000: fit(training_records(2002, data, cache), "mirror")}
    inputs = [(y, d, False) for y, d in SETS] + [(2002, d, True) for d in (1, 2, 3, 4)]
    for year, db, iso in inputs:
        if iso:
            folder = data / "fingerprint_iso19794_2" / f"fvc{year}" / f"db{db}_b"
            if not folder.is_dir():
                continue
            records = [parse_iso19794_2((folder / f"{f}_{i}.iso").read_bytes())
                       for f in FINGERS for i in IMPRESSIONS]
        else:
            folder = data / "fingerprint" / f"fvc{year}" / f"db{db}_b"
            records = [cache.record(folder / f"{f}_{i}.tif") for f in FINGERS for i in IMPRESSIONS]
        timings = seconds if seconds is not None and not iso else []
        vectors, ok = features(records, models[year], timings)
        draws = [evaluate(vectors, ok, profile, fresh_key(), [fresh_key(f"f{n}") for n in range(10)])
                 for _ in range(keys)]
        row = {c: tuple(float(np.mean([d[c][j] for d in draws])) for j in (0, 1)) for c in draws[0]}
        row["spread"] = max(float(np.ptp([d[c][j] for d in draws]))
                            for c in ("prot-1", "prot-3", "normal") for j in (0, 1))
        row["bozorth3"] = BOZORTH3[(year, db)]
        row["boz-3"] = (float("nan"), float("nan")) if iso else bozorth_three(year, db)
        row.update(name=f"fvc{year} db{db}{' iso' if iso else ''}", year=year, db=db, iso=iso,
                   poor=int((~ok).sum()))
        yield row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--hash-count", type=int, default=CURRENT[FINGERPRINT].hash_count)
    parser.add_argument("--hash-width", type=int, default=CURRENT[FINGERPRINT].hash_width)
    parser.add_argument("--keys", type=int, default=5)
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args(argv)
    if not (args.data / "fingerprint").is_dir():
        print(f"no fingerprint data under {args.data}", file=sys.stderr)
        return 2

    profile = bench_profile(args.hash_count, args.hash_width)
    protector, key = Protector(), fresh_key()
    seconds: list[float] = []
    out = Transcript()

    out(f"EER % all-pairs / FVC-45, protected: mean of {args.keys} keys; FEATURE_DIM={fp.FEATURE_DIM}, profile m={profile.hash_count} "
        f"q={profile.hash_width} ({profile.hash_count * profile.planes} bits); model {fp.MODEL_VERSION}")
    out(f"{'set':<16}" + "".join(f"{c:>14}" for c in COLUMNS) + f"{'poor':>5}{'spread':>7}")
    for row in rows(args.data, profile, args.keys, seconds):
        out(f"{row['name']:<16}" + "".join(f"{row[c][0]:>7.1f} /{row[c][1]:>5.1f}" for c in COLUMNS)
            + f"{row['poor']:>5}{row['spread']:>7.1f}")

    ms = 1000 * np.array(seconds)
    out(f"minutiae_features: median {np.median(ms):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms "
        "(shared, loaded 2-core machine)")
    vec = np.random.default_rng(0).standard_normal((64, fp.FEATURE_DIM)).astype(np.float32)
    protector.protect_many(key, profile, vec[:1])  # bank built and cached
    start = time.perf_counter()
    for v in vec:
        protector.protect(key, profile, v)
    out(f"protect: {1000 * (time.perf_counter() - start) / len(vec):.2f} ms a sample (bank cached)")
    ns, size = one_to_many_ns(protector.protect_many(key, profile, vec), profile.hash_count)
    out(f"1:N compare: {ns:.0f} ns a pair over {size} packed codes "
        f"({profile.template_bytes} B each); keyed projection: {profile.projection}")
    out.save(args.report, timed=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
