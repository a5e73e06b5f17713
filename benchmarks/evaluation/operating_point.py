"""What a site sees at the profiles' decision thresholds: 1:1 verification and 1:N identification,
computed with the service's own code (Protector, Gallery.search / Gallery.top) on cached features.

    uv run python -m benchmarks.evaluation.operating_point [--keys 3]

Face, LFW subset (580 people x 3 photos): each person enrolled from photo 1; photos 2 and 3 are
probes. Verify: genuine accept rate, and impostor reject rate over every (probe, other person)
claim. Identify: against all 580 templates, rank-1 correct, no candidate, wrong first candidate.
Fingerprint, FVC2002 DB1-DB3 (10 fingers x 8): each finger enrolled from impressions 1-3 fused (a
door reader's three touches); impressions 4-8 are probes. Averaged over --keys fresh tenant keys.
Thresholds were calibrated on other data (see vault/models/calibration.json), so these are held-out figures.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks import data, features
from benchmarks.scores import fresh_key
from vault.intake.features import fuse
from vault.templates.matching import Gallery
from vault.templates.profiles import CURRENT, FACE, FINGERPRINT
from vault.templates.protection import Protector


def evaluate(feats: features.Features, enrol_idx: dict[str, list[int]], probe_idx: dict[str, list[int]], profile,
             keys: int) -> dict[str, float]:
    totals = {"genuine": [], "impostor_reject": [], "rank1": [], "none": [], "wrong": []}
    for _ in range(keys):
        protector, key = Protector(), fresh_key()
        gallery = Gallery(profile, 1)
        subjects = [s for s in enrol_idx if all(feats.ok[i] for i in enrol_idx[s])]
        for s in subjects:
            vector = fuse([feats.vectors[i] for i in enrol_idx[s]])
            gallery.add(f"t-{s}", s, 0, protector.protect(key, profile, vector), len(enrol_idx[s]))
        probes = [(s, i) for s in subjects for i in probe_idx[s] if feats.ok[i]]
        codes = protector.protect_many(key, profile, feats.vectors[[i for _, i in probes]])
        genuine, impostor_reject, rank1, none, wrong = [], [], [], [], []
        for (subject, _), code in zip(probes, codes):
            genuine.append(any(h.matched for h in gallery.search(code, subject_id=subject)))
            everyone = np.array([h.matched for s in subjects if s != subject
                                 for h in gallery.search(code, subject_id=s)])
            impostor_reject.append(np.mean(~everyone))
            top = gallery.top(code, 1)
            rank1.append(bool(top) and top[0].subject_id == subject)
            none.append(not top)
            wrong.append(bool(top) and top[0].subject_id != subject)
        for name, values in zip(totals, (genuine, impostor_reject, rank1, none, wrong)):
            totals[name].append(float(np.mean(values)))
    return {name: float(np.mean(v)) for name, v in totals.items()} | {"probes": len(probes), "gallery": len(subjects)}


def split(dataset: data.DataSet, enrol: int) -> tuple[dict, dict]:
    by_subject: dict[str, list[int]] = {}
    for i, sample in enumerate(dataset.samples):
        by_subject.setdefault(sample.subject, []).append(i)
    return ({s: idx[:enrol] for s, idx in by_subject.items()}, {s: idx[enrol:] for s, idx in by_subject.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=3)
    args = parser.parse_args()
    rows = []
    lfw = features.load(data.lfw())
    rows.append(("LFW (face, 1 photo enrolled)", CURRENT[FACE], evaluate(lfw, *split(lfw.dataset, 1), CURRENT[FACE], args.keys)))
    for db in (1, 2, 3):
        fvc = features.load(data.fvc(2002, db))
        rows.append((f"FVC2002 DB{db} (finger, 3 touches enrolled)", CURRENT[FINGERPRINT],
                     evaluate(fvc, *split(fvc.dataset, 3), CURRENT[FINGERPRINT], args.keys)))
    print("| data | profile (threshold) | gallery | probes | verify: genuine accept | verify: impostor reject | "
          "identify: rank-1 correct | no candidate | wrong first candidate |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, profile, r in rows:
        print(f"| {name} | {profile.name} ({profile.threshold:.4f}) | {r['gallery']} | {r['probes']} | {r['genuine']:.3f} | "
              f"{r['impostor_reject']:.5f} | {r['rank1']:.3f} | {r['none']:.3f} | {r['wrong']:.4f} |")
    print(f"(mean over {args.keys} fresh tenant keys)")


if __name__ == "__main__":
    main()
