"""Identify's FPIR as galleries grow: fit the impostor-tail score models, then measure FPIR and FNIR
on people never used to fit them, at the service's own rule (vault.templates.identification).

    uv run python -m benchmarks.calibration.identify_fpir [--keys 5] [--fpir 0.01] [--report FILE]

Fit (face): the LFW subset's first 290 identities (alphabetical), every photo against every other
person's under --keys fresh keys (impostors) and against the same person's (genuine); templates
from one photo, and fused from two. The impostor tail above the pooled 99th percentile is fitted
with a generalised Pareto distribution (maximum likelihood, scipy; a fitted shape below 0, a tail
with a ceiling, is replaced by the exponential law, shape 0, which extrapolates more cautiously);
genuine scores are kept as 21
quantiles. Fingerprints: the same from the six real FVC sets (one touch: all pairs; fused: 1-3
fused against 4-8) under the shipped basis, each template's cohort offset taken off as the service
does; they are also the data its 1:1 thresholds came from. The printed ScoreModel(...) fields go into the
profile's score_models in vault/models/calibration.json; for fingerprints, the model in force is also held against the fresh scores
(`--only finger` does that part alone).

Held out (face): the other 290 LFW identities and the 40 ORL people (330). For each gallery size
N, N people are enrolled from their first photo, the others are not enrolled; FPIR = share of the
not-enrolled people's photos that get any candidate, FNIR = share of the enrolled people's other
photos whose own template is not among the candidates; mean over --keys fresh keys, each with its
own random choice of who is enrolled. Beside them, FPIR at the 1:1 threshold (what Identify did
before). Verify per key: the face profile's false-match and genuine-accept rates at its 1:1 threshold
under each of --per-key fresh keys (all pairs of the held-out LFW identities). Then the model's
prediction for 5,000 and 50,000 templates.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks import data, features
from benchmarks.scores import fresh_key
from benchmarks.transcript import Transcript
from vault.intake.features import fuse
from vault.templates.identification import ScoreModel, capacity, per_comparison_fmr
from vault.templates.matching import Gallery, agreement
from vault.templates.profiles import CURRENT, FACE, FINGERPRINT
from vault.templates.protection import Protector

TAIL_QUANTILE = 0.99  # the tail model starts at the pooled impostors' 99th percentile
GENUINE_POINTS = 21


def fit_model(impostor: np.ndarray, genuine: np.ndarray) -> ScoreModel:
    from scipy.stats import genpareto

    start = float(np.quantile(impostor, TAIL_QUANTILE))
    excess = impostor[impostor > start] - start
    shape, _, scale = genpareto.fit(excess, floc=0.0)
    if shape < 0:  # a bounded tail would promise a score no impostor reaches: not trusted beyond the
        shape, scale = 0.0, float(excess.mean())  # data; the exponential law (shape 0) has no ceiling
    rate = float(np.mean(impostor > start))
    quantiles = np.quantile(genuine, np.linspace(0, 1, GENUINE_POINTS))
    return ScoreModel(round(start, 6), round(rate, 6), round(float(shape), 5), round(float(scale), 7),
                      tuple(round(float(q), 5) for q in quantiles))


def by_subject(feats: features.Features) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, sample in enumerate(feats.dataset.samples):
        if feats.ok[i]:
            out.setdefault(sample.subject, []).append(i)
    return out


def face_scores(feats: features.Features, profile, keys: int):
    """(impostor, genuine) scores of one-photo and two-photo-fused templates, pooled over keys."""
    people = [idx for idx in by_subject(feats).values() if len(idx) >= 3]
    out = {"I1": [], "G1": [], "I2": [], "G2": []}
    m = profile.hash_count
    for _ in range(keys):
        protector, key = Protector(), fresh_key()
        index = [i for idx in people for i in idx]
        owner = np.array([n for n, idx in enumerate(people) for _ in idx])
        codes = dict(zip(index, protector.protect_many(key, profile, feats.vectors[index])))
        probes = np.array([codes[i] for i in index])
        for n, idx in enumerate(people):
            s = agreement(codes[idx[0]], probes, m)
            out["I1"].append(s[owner != n])
            out["G1"].append(s[np.isin(index, idx[1:])])
            fused = protector.protect(key, profile, fuse([feats.vectors[i] for i in idx[:2]]))
            s = agreement(fused, probes, m)
            out["I2"].append(s[owner != n])
            out["G2"].append(s[np.isin(index, idx[2:])])
    return {k: np.concatenate(v) for k, v in out.items()}


def held_out(feats: features.Features, profile, sizes, keys: int, fpir: float, rng) -> list[dict]:
    """FPIR / FNIR at the service's Identify rule, and FPIR at the 1:1 threshold, per gallery size."""
    people = list(by_subject(feats).values())
    rows = []
    for size in sizes:
        fpir_rule, fpir_one, fnir_rule, fnir_one = [], [], [], []
        for _ in range(keys):
            protector, key = Protector(), fresh_key()
            order = rng.permutation(len(people))
            enrolled, strangers = order[:size], order[size:]
            gallery = Gallery(profile, 1)
            for p in enrolled:
                gallery.add(f"t{p}", f"s{p}", 0, protector.protect(key, profile, feats.vectors[people[p][0]]))
            fmr = per_comparison_fmr(fpir, len(gallery))
            for group, mated in ((strangers, False), (enrolled, True)):
                probes = [(p, i) for p in group for i in (people[p][1:] if mated else people[p])]
                codes = protector.protect_many(key, profile, feats.vectors[[i for _, i in probes]])
                for (p, _), code in zip(probes, codes):
                    rule = gallery.top(code, 100, per_comparison_fmr=fmr)
                    one = gallery.top(code, 100)
                    if mated:
                        fnir_rule.append(f"s{p}" not in {h.subject_id for h in rule})
                        fnir_one.append(f"s{p}" not in {h.subject_id for h in one})
                    else:
                        fpir_rule.append(bool(rule))
                        fpir_one.append(bool(one))
        rows.append({"size": size, "fpir": np.mean(fpir_rule), "fnir": np.mean(fnir_rule),
                     "fpir_1to1": np.mean(fpir_one), "fnir_1to1": np.mean(fnir_one),
                     "strangers": len(fpir_rule) // keys, "mated": len(fnir_rule) // keys})
    return rows


def verify_rates(feats: features.Features, profile) -> tuple[float, float]:
    """(genuine accept, false match) of one-photo templates under one fresh key, all pairs."""
    people = by_subject(feats)
    index = [i for idx in people.values() for i in idx]
    owner = np.array([n for n, idx in enumerate(people.values()) for _ in idx])
    codes = Protector().protect_many(fresh_key(), profile, feats.vectors[index])
    genuine, impostor = [], []
    for a in range(len(index)):
        s = agreement(codes[a], codes[a + 1:], profile.hash_count) >= profile.threshold
        same = owner[a + 1:] == owner[a]
        genuine.append(s[same])
        impostor.append(s[~same])
    return float(np.concatenate(genuine).mean()), float(np.concatenate(impostor).mean())


def finger_scores(keys: int):
    """Pooled one-touch and fused scores of the six real FVC sets (shipped basis), as the service
    scores them: with each enrolled code's offset against the synthetic cohort taken off, where the
    profile has one (vault.templates.cohort.TemplateCohort)."""
    from benchmarks.evaluation.fingerprint_baseline import FINGERS, IMPRESSIONS, MinutiaeCache
    from benchmarks.evaluation.fingerprint_mcc import features as finger_features
    from benchmarks.calibration.fingerprint_operating_point import REAL, score_set
    from vault.templates.cohort import TemplateCohort
    from vault.intake.features import fingerprint as fp

    profile = CURRENT[FINGERPRINT]
    cache = MinutiaeCache(enabled=True)
    pooled: dict[str, list] = {}
    for s in REAL:
        records = cache.records([data.DATA / "fingerprint" / f"fvc{s[0]}" / f"db{s[1]}_b" / f"{f}_{i}.tif"
                                 for f in FINGERS for i in IMPRESSIONS])
        vectors, ok = finger_features(records, fp.default_model(), [])
        for _ in range(keys):
            protector, key = Protector(), fresh_key()
            codes_of = lambda v: protector.protect_many(key, profile, v)  # noqa: E731
            cohort = TemplateCohort(protector)  # the service's own offsets (shipped basis, as here)
            offsets_of = (lambda codes: cohort.offsets(key, profile, codes)) if profile.template_cohort else None  # noqa: E731
            scores = score_set(vectors, ok, codes_of, {}, offsets_of)
            for kind in ("I1", "G1", "I3", "G3"):
                pooled.setdefault(kind, []).append(scores[kind])
    out = {k: np.concatenate(v) for k, v in pooled.items()}
    out["G1"], out["G3"] = out["G1"][out["G1"] >= 0], out["G3"][out["G3"] >= 0]  # refused samples apart
    return out


def finger_models(out: Transcript, keys: int, fpir: float) -> None:
    """Fit the fingerprint models, and hold the one in force against the same scores."""
    profile = CURRENT[FINGERPRINT]
    finger = finger_scores(keys)
    # A profile that keeps touches apart compares each code as one touch: the one-touch model serves.
    kept_apart = profile.keeps_sample_codes
    fitted = (fit_model(finger["I1"], finger["G1"]), None if kept_apart else fit_model(finger["I3"], finger["G3"]))
    out()
    out(f"{profile.name}, fitted on FVC2000 and FVC2002 DB1-DB3 ({len(finger['I1']):,} one-touch "
        f"impostor scores" + ("; touches kept apart: one model per code)" if kept_apart else
                              f", {len(finger['I3']):,} three-touch-fused):"))
    out()
    out(f"    score_models=({fitted[0]!r},\n                  {fitted[1]!r}),")
    in_force = profile.score_model(1)
    if in_force is None:
        return
    impostor = finger["I1"]
    out()
    out(f"The one-touch model in force (tail from {in_force.tail_start:.4f}, scale {in_force.scale:.5f}) against "
        f"these scores (tail from {fitted[0].tail_start:.4f}, scale {fitted[0].scale:.5f}); impostor percentiles "
        "99 / 99.9 / 99.99: " + " / ".join(f"{np.quantile(impostor, q):.4f}" for q in (0.99, 0.999, 0.9999)) +
        f", highest {impostor.max():.4f}.")
    out()
    out("| fingers searched (N) | per-comparison FMR for FPIR " + f"{fpir:g} | Identify threshold in force | "
        "impostor scores at or above it | the model in force says | the fresh fit's threshold |")
    out("|---|---|---|---|---|---|")
    for n in (10, 100, 1_000, 10_000, 100_000, 1_000_000):
        fmr = per_comparison_fmr(fpir, n)
        t = profile.identify_threshold(1, fmr)
        out(f"| {n:,} | {fmr:.1e} | {t:.4f} | {np.mean(impostor >= t):.1e} | {in_force.false_match_rate(t):.1e} | "
            f"{max(profile.threshold, fitted[0].threshold_at(fmr)):.4f} |")


def predictions(out: Transcript, profiles: list, fpir: float) -> None:
    """Identify's thresholds and expected FNIR at growing gallery sizes, from the models in force."""
    out("## The model's prediction (one-photo / fused templates; fingerprints: one touch / three)")
    out()
    out("| profile | templates | threshold | expected FNIR | fused: threshold | expected FNIR |")
    out("|---|---|---|---|---|---|")
    for profile in profiles:
        for n in (100, 1_000, 5_000, 50_000, 1_000_000):
            fmr = per_comparison_fmr(fpir, n)
            c = capacity(profile, n, fpir, 1.0)
            out(f"| {profile.name} | {n:,} | {profile.identify_threshold(1, fmr):.4f} | {c.expected_fnir:.3f} | "
                f"{profile.identify_threshold(2, fmr):.4f} | {c.expected_fnir_fused:.3f} |")
    out()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=5)
    parser.add_argument("--fpir", type=float, default=0.01)
    parser.add_argument("--report", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-key", type=int, default=10, help="fresh keys for the per-key Verify spread")
    parser.add_argument("--only", choices=("face", "finger"), default=None,
                        help="fit one modality's models only (the fingerprint fit extracts every FVC set)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    out = Transcript()
    if args.only == "finger":
        out(f"## Score models ({args.keys} keys)")
        finger_models(out, args.keys, args.fpir)
        out()
        predictions(out, [CURRENT[FINGERPRINT]], args.fpir)
        out.save(args.report)
        return 0

    face = CURRENT[FACE]
    lfw = features.load(data.lfw(), progress=False)
    names = sorted({s.subject for s in lfw.dataset.samples})
    first = names[: len(names) // 2]
    fit_part = features.subset(lfw.dataset, first, "lfw-first-half", progress=False)
    held_lfw = features.subset(lfw.dataset, names[len(names) // 2:], "lfw-second-half", progress=False)
    orl = features.load(data.orl(), progress=False)
    held = features.concat([held_lfw, orl], "lfw-second-half+orl")

    scores = face_scores(fit_part, face, args.keys)
    models = (fit_model(scores["I1"], scores["G1"]), fit_model(scores["I2"], scores["G2"]))
    out(f"## Score models ({args.keys} keys)")
    out()
    out(f"{face.name}, fitted on LFW's first {len(first)} identities ({len(scores['I1']):,} one-photo impostor "
        f"scores, {len(scores['I2']):,} two-photo-fused):")
    out()
    out(f"    score_models=({models[0]!r},\n                  {models[1]!r}),")
    if args.only != "face":
        finger_models(out, args.keys, args.fpir)
    out()

    out(f"## Held out: {face.name}, LFW's other {len(names) - len(first)} identities + ORL's 40 people, "
        f"Identify at FPIR target {args.fpir:g}")
    out()
    out("Profile models in force: " + ("yes" if face.score_models[0] is not None else
                                       "none yet (rule = 1:1 threshold); put the models above into vault/models/calibration.json and rerun"))
    out()
    out("| enrolled (N) | probes of people not enrolled | FPIR | FNIR | FPIR at the 1:1 threshold | FNIR at the 1:1 threshold |")
    out("|---|---|---|---|---|---|")
    people = len(by_subject(held))
    sizes = [s for s in (10, 30, 100, 200, 300) if s < people - 10]
    for row in held_out(held, face, sizes, args.keys, args.fpir, rng):
        out(f"| {row['size']} | {row['strangers']} | {row['fpir']:.3f} | {row['fnir']:.3f} | "
            f"{row['fpir_1to1']:.3f} | {row['fnir_1to1']:.3f} |")
    out()
    out(f"## Verify's operating point per key: {face.name} at its 1:1 threshold {face.threshold:.4f}, held-out LFW "
        f"identities, {args.per_key} fresh keys")
    out()
    rates = [verify_rates(held_lfw, face) for _ in range(args.per_key)]
    fmrs, gars = np.array([r[1] for r in rates]), np.array([r[0] for r in rates])
    out(f"false-match rate per key: {', '.join(f'{f:.2e}' for f in fmrs)} (max {fmrs.max() / face.operating_fmr:.2f}x "
        f"the stated {face.operating_fmr:g}); genuine accept {gars.min():.3f}-{gars.max():.3f}")
    out()
    predictions(out, [face, CURRENT[FINGERPRINT]], args.fpir)
    out("Assumptions: impostor comparisons independent (one probe against N different people), the "
        "impostor tail above the 99th percentile follows the fitted generalised Pareto law beyond the "
        "fitted range, the population looks like the fitting data (LFW news photos; FVC sensors), and one "
        "template per person.")
    out()
    out.save(args.report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
