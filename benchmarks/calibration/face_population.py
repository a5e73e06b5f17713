"""Faces across populations: face-sface-v1's operating point, fitted and checked leaving one
population out, as the fingerprint thresholds leave one sensor out.

    uv run python -m benchmarks.calibration.face_population [--keys 5] [--fmr 1e-4] [--report FILE]

Each population is its own deployment (one tenant, one key): one photo of each person enrolled,
every other photo of every person probed against every enrolled template, and again with each
person's next photo enrolled (up to --rounds times), through the service's own code: SFace
vectors (vault.intake.extraction), IoM codes under a fresh key (vault.templates.protection), the gallery's cohort
(vault.templates.matching.Gallery) and the symmetric normalisation (vault.templates.normalisation).

Fitting (per held-out population H, on the other four only): the prior of the cohort statistics
(the highest median, over those populations, of the templates' cohort mean and sd) and the
threshold (the highest, over their populations and the keys, of the normalised impostor score at
1 - FMR). H is then scored with what the others fitted. The shipped profile takes the same rule
over all five. The raw-score baseline (one threshold on raw agreement fitted on LFW alone) is what
a single global threshold gives.
"""

from __future__ import annotations

import argparse
import dataclasses
import uuid
from pathlib import Path

import numpy as np

from benchmarks import data, features
from benchmarks.scores import fresh_key
from vault.templates.matching import Gallery, _interleaved_agreement
from vault.templates.normalisation import CohortNorm, cohort_stats, normalise, stats_from_sums
from vault.templates.profiles import FACE_SFACE_V1, SFACE
from vault.templates.protection import Protector

POPULATIONS = ("lfw", "orl", "jaffe", "casia_face_v5", "kpop")
LABELS = {"lfw": "LFW (mostly white; news photos)", "orl": "ORL (studio, 1990s UK)",
          "jaffe": "JAFFE (Japanese, studio)", "casia_face_v5": "CASIA-FaceV5 (Chinese, studio)",
          "kpop": "Korean web photos"}


@dataclasses.dataclass
class Deployment:
    """What one population's deployment under one key gives: per round, the raw agreements
    probe x enrolled, the probes' and templates' agreements with the cohort, and who is who."""

    raw: list[np.ndarray]  # (probes, enrolled)
    probe_cohort: list[np.ndarray]  # (probes, cohort)
    template_cohort: list[np.ndarray]  # (enrolled, cohort)
    genuine: list[np.ndarray]  # (probes, enrolled) bool
    subjects: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # probe, enrolled, cohort subject ids


def deploy(protector: Protector, profile, vectors: np.ndarray, owners: np.ndarray, rounds: int,
           key=None) -> Deployment:
    key = key or fresh_key()
    codes = protector.protect_many(key, profile, vectors)
    by_person: dict[str, list[int]] = {}
    for i, owner in enumerate(owners):
        by_person.setdefault(owner, []).append(i)
    out = Deployment([], [], [], [], [])
    for r in range(rounds):
        enrolled = [ids[r] for ids in by_person.values() if len(ids) > r and len(ids) >= 2]
        if len(enrolled) < 2:
            break
        gallery = Gallery(profile, 1)
        for i in enrolled:
            gallery.add(uuid.uuid4().hex, owners[i], 0, codes[i])
        cohort, cohort_subjects = gallery._cohort_rows()
        members = gallery._codes[cohort]
        row_subjects = np.asarray([gallery._subject_ids[row] for row in range(len(enrolled))], dtype=object)
        probes = np.asarray(sorted(set(range(len(codes))) - set(enrolled)))
        raw = np.stack([gallery._scores(codes[p], slice(0, len(enrolled))) for p in probes])
        probe_cohort = np.stack([_interleaved_agreement(np.ascontiguousarray(codes[p].T), members, profile.hash_count)
                                 for p in probes])
        template_cohort = np.stack([_interleaved_agreement(gallery._codes[row], members, profile.hash_count)
                                    for row in range(len(enrolled))])
        out.raw.append(raw)
        out.probe_cohort.append(probe_cohort)
        out.template_cohort.append(template_cohort)
        out.genuine.append(owners[probes][:, None] == row_subjects[None, :])
        out.subjects.append((owners[probes], row_subjects, cohort_subjects))
    return out


def normalised_scores(d: Deployment, norm: CohortNorm) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) normalised scores of a deployment, as vault.templates.matching.Gallery makes them."""
    genuine, impostor = [], []
    for raw, pc, tc, same, (_, enrolled, cohort) in zip(d.raw, d.probe_cohort, d.template_cohort, d.genuine,
                                                        d.subjects):
        keep = enrolled[:, None] != cohort[None, :]  # (enrolled, cohort): each template's subject left out
        t_mean, t_sd = cohort_stats(norm, tc, keep)
        # the probe's statistics against the cohort less the compared template's subject: the
        # whole cohort's sums less those of that subject's members (what cohort_stats computes)
        pc = pc.astype(np.float64)
        left_out = (~keep).astype(np.float64)  # (enrolled, cohort)
        count = keep.shape[1] - left_out.sum(axis=1)[None, :]
        total = pc.sum(axis=1, keepdims=True) - pc @ left_out.T
        squares = (pc * pc).sum(axis=1, keepdims=True) - (pc * pc) @ left_out.T
        p_mean, p_sd = stats_from_sums(norm, count, total, squares)
        scores = normalise(raw, (t_mean[None, :], t_sd[None, :]), (p_mean, p_sd))
        genuine.append(scores[same])
        impostor.append(scores[~same])
    return np.concatenate(genuine), np.concatenate(impostor)


def raw_scores(d: Deployment) -> tuple[np.ndarray, np.ndarray]:
    return (np.concatenate([r[s] for r, s in zip(d.raw, d.genuine)]),
            np.concatenate([r[~s] for r, s in zip(d.raw, d.genuine)]))


def fit_prior(deployments: dict[str, list[Deployment]], weight: float, size: int) -> CohortNorm:
    """The prior: the highest median, over the given populations, of the templates' cohort mean
    and standard deviation (so a small gallery is judged as the most crowded population was)."""
    means, sds = [], []
    for runs in deployments.values():
        m, s = [], []
        for d in runs:
            for tc, (_, enrolled, cohort) in zip(d.template_cohort, d.subjects):
                mean, sd = cohort_stats(CohortNorm(size, 0.0, 1.0, 0.0), tc, enrolled[:, None] != cohort[None, :])
                m.append(mean)
                s.append(sd)
        means.append(float(np.median(np.concatenate(m))))
        sds.append(float(np.median(np.concatenate(s))))
    return CohortNorm(size, round(max(means), 5), round(max(sds), 5), weight)


def threshold_at(scores: list[np.ndarray], fmr: float) -> float:
    """The highest, over the score sets (populations x keys), of the score at 1 - fmr."""
    return max(float(np.quantile(s, 1.0 - fmr, method="higher")) for s in scores)


def rate(x: np.ndarray, t: float) -> float:
    return float((x >= t).mean()) if len(x) else float("nan")


def identify_section(deployments, norm, shipped, everything, args) -> list[str]:
    """Identify's tail model on the normalised scores, and its FPIR/FNIR measured on LFW: half the
    people enrolled (one photo each), their other photos searched (FNIR), every photo of the other
    half searched as strangers (FPIR), through vault.templates.matching.Gallery.top at the 1:N thresholds."""
    from benchmarks.calibration.identify_fpir import fit_model
    from vault.templates.identification import capacity, per_comparison_fmr

    impostor = np.concatenate([i for runs in everything.values() for _, i in runs])
    genuine = np.concatenate([g for g, _ in everything["lfw"]])
    model = fit_model(impostor, genuine)
    profile = dataclasses.replace(FACE_SFACE_V1, score_norm=norm, threshold=shipped, score_models=(model, None))
    f = features.load(data.FACE_SETS["lfw"](), progress=False, extractor=SFACE)
    owners = np.asarray([s.subject for s in f.dataset.samples], dtype=object)[f.ok]
    vectors = f.vectors[f.ok]
    people = sorted(set(owners))
    protector = Protector()
    found = missed = strangers = stranger_hits = 0
    for k in range(args.keys):
        rng = np.random.default_rng(k)
        enrolled_people = set(rng.permutation(people)[: len(people) // 2])
        key = fresh_key()
        codes = protector.protect_many(key, profile, vectors)
        gallery = Gallery(profile, 1)
        first: dict[str, int] = {}
        for i, owner in enumerate(owners):
            if owner in enrolled_people and owner not in first:
                first[owner] = i
                gallery.add(uuid.uuid4().hex, owner, 0, codes[i])
        fmr = per_comparison_fmr(0.01, len(gallery))
        for i, owner in enumerate(owners):
            if owner in enrolled_people and first[owner] == i:
                continue
            hits = gallery.top(codes[i], 1, per_comparison_fmr=fmr)
            if owner in enrolled_people:
                found += bool(hits) and hits[0].subject_id == owner
                missed += not (bool(hits) and hits[0].subject_id == owner)
            else:
                strangers += 1
                stranger_hits += bool(hits)
    enrolled = len(people) // 2
    lines = [
        "## Identify (FPIR target 0.01)",
        "",
        f"Tail model of the normalised impostor scores (all five populations pooled): `{model}`",
        "",
        f"Measured on LFW, {enrolled} people enrolled with one photo, {args.keys} keys and splits: FPIR "
        f"{stranger_hits / strangers:.4f} ({stranger_hits} of {strangers} stranger searches), FNIR "
        f"{missed / (found + missed):.4f} ({missed} of {found + missed} enrolled people's searches not answered "
        "with them first).",
        "",
        "| enrolled (model) | expected FNIR at FPIR 0.01 |",
        "|---|---|",
    ]
    for n in (enrolled, 1000, 3000, 10000, 100000):
        c = capacity(profile, n, 0.01, 1.0)
        lines.append(f"| {n:,} | {c.expected_fnir:.3f} |")
    lines.append("")
    print(f"SCORE_MODEL {model}")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fmr", type=float, default=1e-4)
    parser.add_argument("--prior-weight", type=float, default=4.0)
    parser.add_argument("--report", type=Path, default=Path("benchmarks/results/face_population.md"))
    args = parser.parse_args(argv)
    profile = FACE_SFACE_V1
    protector = Protector()
    deployments: dict[str, list[Deployment]] = {}
    counts = {}
    for name in POPULATIONS:
        f = features.load(data.FACE_SETS[name](), progress=False, extractor=SFACE)
        owners = np.asarray([s.subject for s in f.dataset.samples], dtype=object)[f.ok]
        vectors = f.vectors[f.ok]
        counts[name] = (len(set(owners)), len(owners), int((~f.ok).sum()))
        deployments[name] = [deploy(protector, profile, vectors, owners, args.rounds) for _ in range(args.keys)]
        print(f"{name}: {counts[name][0]} people, {counts[name][1]} photos ({counts[name][2]} not enrolled)", flush=True)

    size = profile.score_norm.cohort_size
    rows, held_out_fmr = [], {}
    for held in POPULATIONS:
        others = {p: deployments[p] for p in POPULATIONS if p != held}
        norm = fit_prior(others, args.prior_weight, size)
        fitted = {p: [normalised_scores(d, norm) for d in runs] for p, runs in others.items()}
        threshold = threshold_at([imp for runs in fitted.values() for _, imp in runs], args.fmr)
        scores = [normalised_scores(d, norm) for d in deployments[held]]
        genuine = np.concatenate([g for g, _ in scores])
        impostor = np.concatenate([i for _, i in scores])
        per_key = [rate(i, threshold) for _, i in scores]
        held_out_fmr[held] = rate(impostor, threshold)
        rows.append((held, threshold, norm, rate(genuine, threshold), held_out_fmr[held], max(per_key), len(impostor),
                     len(genuine)))
        print(f"held out {held}: threshold {threshold:.4f} prior {norm.prior_mean:.4f}/{norm.prior_sd:.4f}: "
              f"GAR {rows[-1][3]:.4f} FMR {rows[-1][4]:.2e} (worst key {rows[-1][5]:.2e}; {len(impostor)} impostor, "
              f"{len(genuine)} genuine)", flush=True)

    # The shipped rule: the same fit over all five populations.
    norm = fit_prior(deployments, args.prior_weight, size)
    everything = {p: [normalised_scores(d, norm) for d in runs] for p, runs in deployments.items()}
    shipped = threshold_at([imp for runs in everything.values() for _, imp in runs], args.fmr)

    # Baseline: raw agreement, one threshold fitted on LFW alone.
    raw = {p: [raw_scores(d) for d in runs] for p, runs in deployments.items()}
    lfw_threshold = threshold_at([i for _, i in raw["lfw"]], args.fmr)

    lines = [
        "# Faces across populations (face-sface-v1)",
        "",
        f"`uv run python -m benchmarks.calibration.face_population --keys {args.keys} --fmr {args.fmr:g}`: each population its own "
        f"deployment, one photo enrolled per person and every other photo probed (each person's next photo enrolled "
        f"in turn, up to {args.rounds} rounds), {args.keys} fresh keys, protected codes, normalised against the "
        "gallery's own cohort (vault.templates.normalisation). Stated FMR "
        f"{args.fmr:g}.",
        "",
        "## Left out of fitting (each population scored with the prior and threshold fitted on the other four)",
        "",
        "| population | people | photos | failed to acquire | threshold (fitted without it) | FMR | FMR / stated | worst key's FMR | genuine accept | with failures to acquire | impostor / genuine comparisons |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for held, threshold, n, gar, fmr, worst, n_imp, n_gen in rows:
        people, photos, failed = counts[held]
        shown = f"{fmr:.1e}" if fmr > 0 else f"0 (< {1 / n_imp:.0e})"
        fta = failed / (photos + failed)
        lines.append(f"| {LABELS[held]} | {people} | {photos} | {failed} ({fta:.1%}) | {threshold:.3f} | {shown} | "
                     f"{fmr / args.fmr:.2f} | {worst:.1e} | {gar:.3f} | {gar * (1 - fta):.3f} | {n_imp:,} / {n_gen:,} |")
    lines += [
        "",
        "Failed to acquire: photos refused by the quality gate (no face found, or the face cut by the frame, too "
        "dark or side-lit: vault.intake.features.sface.check_quality), so neither enrolled nor probed; a panel asks for "
        "another capture. 'With failures to acquire' is the generalised rate (ISO/IEC 19795-1): genuine accept "
        "times the share of photos acquired.",
    ]
    nonzero = [v for v in held_out_fmr.values() if v > 0]
    bounded = {r[0]: max(held_out_fmr[r[0]], 1 / r[6]) for r in rows}  # no false match: at most 1 in its count
    ratio = max(bounded.values()) / min(bounded.values())
    ratio_seen = max(nonzero) / min(nonzero) if nonzero else float("nan")
    lines += [
        "",
        f"Highest / lowest population FMR, left out: {ratio:.1f} with a population that had no false match counted "
        f"at one in its number of comparisons (its resolution); {ratio_seen:.1f} among the {len(nonzero)} of "
        f"{len(rows)} populations that had any. Every population's FMR is at most "
        f"{max(held_out_fmr.values()) / args.fmr:.2f}x the stated rate.",
        "",
        f"## Shipped (prior {norm.prior_mean:.4f} / {norm.prior_sd:.4f}, weight {norm.prior_weight:g}; threshold "
        f"{shipped:.4f}: the same rule over all five populations, so these rows are fitted on, not held out)",
        "",
        f"The profile in force (its prior and threshold {profile.threshold:.4f}, from an earlier run of this "
        "command) is scored under this run's keys too.",
        "",
        "| population | FMR | FNMR | in force: FMR | FNMR | raw agreement, LFW threshold: FMR | FNMR |",
        "|---|---|---|---|---|---|---|",
    ]
    in_force = {p: [normalised_scores(d, profile.score_norm) for d in runs] for p, runs in deployments.items()}
    for p in POPULATIONS:
        g = np.concatenate([g for g, _ in everything[p]])
        i = np.concatenate([i for _, i in everything[p]])
        fg = np.concatenate([g for g, _ in in_force[p]])
        fi = np.concatenate([i for _, i in in_force[p]])
        rg = np.concatenate([g for g, _ in raw[p]])
        ri = np.concatenate([i for _, i in raw[p]])
        lines.append(f"| {LABELS[p]} | {rate(i, shipped):.1e} | {1 - rate(g, shipped):.3f} | "
                     f"{rate(fi, profile.threshold):.1e} | {1 - rate(fg, profile.threshold):.3f} | {rate(ri, lfw_threshold):.1e} | "
                     f"{1 - rate(rg, lfw_threshold):.3f} |")
    lines.append("")
    lines += identify_section(deployments, norm, shipped, everything, args)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"SHIPPED threshold={shipped:.5f} prior_mean={norm.prior_mean} prior_sd={norm.prior_sd}")


if __name__ == "__main__":
    main()
