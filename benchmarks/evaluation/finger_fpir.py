"""Fingerprint Identify against gallery size: FPIR (strangers who get a candidate) and FNIR
(enrolled fingers missed), through the service's own 1:N rule (vault.templates.matching.MatchIndex.identify
at the profile's FPIR target), one touch and three touches kept apart.

    uv run python -m benchmarks.evaluation.finger_fpir [--keys 5] [--fpir 0.01] [--report FILE]

The six real FVC2000/2002 B sets pooled: 60 fingers x 8 impressions, 50 different fingers: FVC2000
DB1_B and DB2_B hold the same ten fingers on two sensors (finger i of one matches finger i of the
other at the 1:1 threshold, cross-sensor), so they count as one identity. Per key and gallery size N,
N of the 60 (set, finger) units drawn at random are enrolled (impression 1, or impressions 1-3 kept
apart); every other impression of an enrolled identity, from either sensor, is a genuine probe,
every impression of an identity not enrolled a stranger. Caveat: the profile's thresholds were
calibrated on these same sets (benchmarks/calibration/fingerprint_operating_point.py), so this checks the 1:N
rule, not generalisation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks import data
from benchmarks.evaluation.fingerprint_baseline import FINGERS, IMPRESSIONS, MinutiaeCache
from benchmarks.evaluation.fingerprint_mcc import features
from benchmarks.calibration.fingerprint_operating_point import REAL
from benchmarks.scores import fresh_key
from benchmarks.transcript import Transcript
from vault.templates.cohort import TemplateCohort
from vault.intake.features import fingerprint as fp
from vault.templates.matching import MatchIndex
from vault.templates.profiles import CURRENT, FINGERPRINT
from vault.templates.protection import Protector

SIZES = (10, 20, 30, 40, 50)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=5)
    parser.add_argument("--fpir", type=float, default=0.01)
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args(argv)
    out = Transcript()

    cache = MinutiaeCache(enabled=True)
    vectors, ok = [], []
    for year, db in REAL:
        records = cache.records([data.DATA / "fingerprint" / f"fvc{year}" / f"db{db}_b" / f"{f}_{i}.tif"
                                 for f in FINGERS for i in IMPRESSIONS])
        v, k = features(records, fp.default_model(), [])
        vectors.append(v)
        ok.append(k)
    vectors, ok = np.concatenate(vectors), np.concatenate(ok)
    finger = np.arange(len(vectors)) // 8  # 60 (set, finger) units, 8 impressions each
    impression = np.arange(len(vectors)) % 8
    same_fingers = {REAL.index((2000, 2)): REAL.index((2000, 1))}  # FVC2000 DB2_B = DB1_B's fingers
    identity = np.array([same_fingers.get(u // 10, u // 10) * 10 + u % 10 for u in finger])
    profile = CURRENT[FINGERPRINT]
    rng = np.random.default_rng(0)

    out(f"Fingerprint Identify ({profile.name}) at FPIR target {args.fpir:g}; {args.keys} keys per size; the six real "
        "FVC sets pooled (60 fingers)")
    out()
    out("| enrolled fingers (N) | touches | FPIR (strangers with a candidate) | FNIR (enrolled missed) | stranger probes |")
    out("|---|---|---|---|---|")
    for size in SIZES:
        for touches in (1, 3):
            strangers_hit = strangers = genuine_missed = genuine = 0
            for _ in range(args.keys):
                protector, key = Protector(), fresh_key()
                codes = protector.protect_many(key, profile, vectors)
                template_cohort = TemplateCohort(protector)  # each template's offset, as the service sets it
                enrolled = rng.choice(60, size, replace=False)
                enrolled_ids = {int(identity[f * 8]) for f in enrolled}
                index = MatchIndex()
                for f in enrolled:
                    rows = [r for r in np.flatnonzero(finger == f) if impression[r] < touches and ok[r]]
                    if rows:
                        index.add("t", FINGERPRINT, profile, 1, f"u{f}", f"id{identity[rows[0]]}", 0, codes[rows],
                                  len(rows), offsets=template_cohort.offsets(key, profile, codes[rows]))
                for r in np.flatnonzero(ok):
                    if finger[r] in enrolled and impression[r] < touches:
                        continue  # an enrolment sample
                    hits = index.identify("t", FINGERPRINT, lambda gallery, c=codes[r]: c, 1, 0, args.fpir)
                    if identity[r] in enrolled_ids:
                        genuine += 1
                        genuine_missed += not hits or hits[0].subject_id != f"id{identity[r]}"
                    else:
                        strangers += 1
                        strangers_hit += bool(hits)
            out(f"| {size} | {touches} | {strangers_hit / max(strangers, 1):.4f} | {genuine_missed / max(genuine, 1):.3f} | "
                f"{strangers:,} |")
    out()
    out.save(args.report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
