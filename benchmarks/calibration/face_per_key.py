"""A per-key operating point for faces (vault.templates.cohort): fit the impostor cohort model, set its
reference, and measure the false-match rate of each of several fresh keys on held-out identities,
at one threshold for all keys and at each key's own.

    uv run python -m benchmarks.calibration.face_per_key [--keys 10] [--reference-keys 20] [--hashes M] [--report FILE]

Fit (LFW's first 290 identities, the half face-iom-v2's threshold was calibrated on): the mean and
covariance of the unit dlib embeddings (vault/models/face-cohort-v1.npz; a statistical summary of
many people, from which no person's embedding can be read), and the cohort quantile's average over
--reference-keys fresh keys (ProtectionProfile.cohort_reference); and the threshold with its
generalisation margin: each key's threshold at the stated FMR, less its cohort shift, on each half of
those 290 identities (145 people each); the profile's threshold is the highest of these over
--margin-keys keys and both halves: new people may look as alike as the more alike half did, and
every key, not the average one, must hold the rate. Held out: LFW's other
290 identities, all pairs of one-photo templates.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from benchmarks import data, features
from benchmarks.evaluation.evaluate import with_shape
from benchmarks.scores import fresh_key
from benchmarks.transcript import Transcript
from vault.templates import cohort
from vault.templates.matching import agreement
from vault.templates.profiles import CURRENT, FACE
from vault.templates.protection import Protector

MODEL = "face-cohort-v1"


def fit_model(vectors: np.ndarray, path: Path) -> None:
    mean = vectors.mean(axis=0)
    covariance = np.cov(vectors.T) + 1e-6 * np.eye(vectors.shape[1])
    np.savez(path, mean=mean.astype(np.float64), cholesky=np.linalg.cholesky(covariance))


def pair_scores(protector, key, profile, vectors, owners) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) scores of all pairs of one-photo templates under one key."""
    codes = protector.protect_many(key, profile, vectors)
    genuine, impostor = [], []
    for a in range(len(codes) - 1):
        scores = agreement(codes[a], codes[a + 1:], profile.hash_count)
        same = owners[a + 1:] == owners[a]
        genuine.append(scores[same])
        impostor.append(scores[~same])
    return np.concatenate(genuine), np.concatenate(impostor)


def cosine_pairs(vectors, owners) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) raw dlib cosine scores of all pairs (the vectors are unit length)."""
    genuine, impostor = [], []
    for a in range(len(vectors) - 1):
        scores = vectors[a + 1:] @ vectors[a]
        same = owners[a + 1:] == owners[a]
        genuine.append(scores[same])
        impostor.append(scores[~same])
    return np.concatenate(genuine), np.concatenate(impostor)


def accept_at_fmr(genuine: np.ndarray, impostor: np.ndarray, fmr: float) -> float:
    """The ROC point: genuine-accept rate where the impostors' false-match rate is `fmr`."""
    return float(np.mean(genuine > np.quantile(impostor, 1.0 - fmr)))


def normalised_threshold(profile, vectors, owners, key) -> float:
    """The threshold that holds profile.operating_fmr on these people's impostor pairs under `key`,
    less the key's cohort shift: what the profile's threshold must be for them."""
    protector = Protector()
    _, impostor = pair_scores(protector, key, profile, vectors, owners)
    shift = cohort.CohortShifts(protector).shift(key, profile)
    return float(np.quantile(impostor, 1.0 - profile.operating_fmr)) - shift


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=10, help="fresh keys measured on held-out identities")
    parser.add_argument("--reference-keys", type=int, default=20, help="fresh keys averaged for the reference")
    parser.add_argument("--margin-keys", type=int, default=5, help="fresh keys averaged for the threshold's margin")
    parser.add_argument("--hashes", type=int, default=None,
                        help="evaluate a candidate shape with this many hashes (default: the profile in force)")
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args(argv)
    out = Transcript()

    feats = features.load(data.lfw(), progress=False)
    subjects = np.array([s.subject for s in feats.dataset.samples])
    names = sorted(set(subjects))
    calibration = np.isin(subjects, names[:len(names) // 2]) & feats.ok
    held = ~np.isin(subjects, names[:len(names) // 2]) & feats.ok
    fit_model(feats.vectors[calibration], cohort.MODELS / f"{MODEL}.npz")
    cohort.cohort_vectors.cache_clear()
    base = CURRENT[FACE]
    if args.hashes is not None:
        base = with_shape(base, args.hashes, base.hash_width)
    profile = dataclasses.replace(base, cohort=MODEL, cohort_reference=0.0)
    reference = float(np.mean([cohort.cohort_quantile(Protector(), fresh_key(), profile)
                               for _ in range(args.reference_keys)]))
    in_force = base.cohort_reference if base.cohort == MODEL and args.hashes is None else reference
    profile = dataclasses.replace(profile, cohort_reference=in_force)
    calibration_names = np.array(names[:len(names) // 2])
    halves = [calibration & np.isin(subjects, calibration_names[part::2]) for part in (0, 1)]
    fitted = np.array([[normalised_threshold(profile, feats.vectors[h], subjects[h], key) for h in halves]
                       for key in (fresh_key() for _ in range(args.margin_keys))])
    per_half = fitted.mean(axis=0)
    grid = profile.hash_count
    # The highest over keys and halves: the cohort shift leaves each key a residual of its own, and
    # the target holds for every key, not for the average one.
    recommended = int(np.ceil(fitted.max() * grid))
    if args.hashes is not None:  # a candidate: measured at the threshold this run recommends for it
        profile = dataclasses.replace(profile, threshold=recommended / grid)
    out(f"Face per-key operating point ({profile.name}, threshold {profile.threshold:.4f}); cohort model fitted on "
        f"LFW's first {len(names) // 2} identities; this run's cohort_reference={reference:.6f} (mean of "
        f"{args.reference_keys} keys), in force {in_force:.6f}")
    out()
    out(f"Held out: LFW's other {len(names) - len(names) // 2} identities, all pairs, one photo enrolled; "
        f"{args.keys} fresh keys")
    out()
    out("| key | shift | false match: one threshold | false match: the key's own | genuine accept: one | own |")
    out("|---|---|---|---|---|---|")
    fmr_one, fmr_own, gar_one, gar_own, roc = [], [], [], [], []
    for k in range(args.keys):
        protector, key = Protector(), fresh_key()
        shift = cohort.CohortShifts(protector).shift(key, profile)
        gen, imp = pair_scores(protector, key, profile, feats.vectors[held], subjects[held])
        fmr_one.append(np.mean(imp >= profile.threshold))
        fmr_own.append(np.mean(imp >= profile.threshold + shift))
        gar_one.append(np.mean(gen >= profile.threshold))
        gar_own.append(np.mean(gen >= profile.threshold + shift))
        roc.append(accept_at_fmr(gen, imp, profile.operating_fmr))
        out(f"| {k + 1} | {shift:+.4f} | {fmr_one[-1]:.2e} | {fmr_own[-1]:.2e} | {gar_one[-1]:.3f} | {gar_own[-1]:.3f} |")
    out()
    for label, fmr, gar in (("one threshold", fmr_one, gar_one), ("each key's own", fmr_own, gar_own)):
        out(f"- {label}: false-match rate {min(fmr):.2e} to {max(fmr):.2e} (max/min {max(fmr) / min(fmr):.2f}, "
            f"max / stated {max(fmr) / profile.operating_fmr:.2f}); genuine accept {min(gar):.3f} to {max(gar):.3f}")
    out()
    raw = accept_at_fmr(*cosine_pairs(feats.vectors[held], subjects[held]), profile.operating_fmr)
    out(f"ROC point at FMR {profile.operating_fmr:g}, held out, one photo enrolled: raw dlib cosine accepts {raw:.4f}; "
        f"{profile.name} {np.mean(roc):.4f} (mean of the keys, {min(roc):.4f} to {max(roc):.4f}): "
        f"{100 * (raw - np.mean(roc)):.2f} points below raw")
    out()
    out(f"Threshold less each key's shift at FMR {profile.operating_fmr:g} on the calibration identities' two halves, "
        f"mean of {args.margin_keys} keys: {per_half[0]:.5f}, {per_half[1]:.5f}; highest key and half: "
        f"{fitted.max():.5f} (in force {profile.threshold:.5f})")
    out()
    out(f"For vault/models/calibration.json: threshold={recommended / grid!r} ({recommended} / {grid}; cohort "
        f"\"{MODEL}\" in vault/templates/profiles.py), cohort_reference={reference:.6f}  ({out.elapsed:.0f} s)")
    out.save(args.report, timed=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
