"""Set each protection profile's decision threshold from an operating false-match rate.

    uv run python -m benchmarks.calibration.calibrate [--fmr 1e-3] [--keys 3] [--only face|finger]

Face: calibrated on the impostor pairs of the first half of the LFW subset's identities
(alphabetical), reported on the other half and on ORL, pooling the impostor scores of several fresh
tenant keys. Fingerprint: benchmarks.calibration.fingerprint_operating_point (one-touch and fused thresholds,
checked leave one sensor out). The printed thresholds go into the profile's entry of
vault/models/calibration.json (a changed threshold on a live profile changes decisions: a new profile name).
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks import data, features
from benchmarks.scores import fresh_key, pair_scores, protected_codes, rates_at, threshold_at_fmr, usable
from vault.templates.profiles import CURRENT, FACE


def split_identities(dataset: data.DataSet) -> tuple[np.ndarray, np.ndarray]:
    names = sorted({s.subject for s in dataset.samples})
    first = set(names[: len(names) // 2])
    mask = np.array([s.subject in first for s in dataset.samples])
    return mask, ~mask


def scored(feats: features.Features, mask: np.ndarray, profile, keys: int):
    subjects = [s.subject for s in feats.dataset.samples]
    index = np.flatnonzero(mask)
    genuine, impostor = data.all_pairs([subjects[i] for i in index])
    genuine = [(index[i], index[j]) for i, j in usable(genuine, feats.ok[index])]
    impostor = [(index[i], index[j]) for i, j in usable(impostor, feats.ok[index])]
    g, imp = [], []
    for _ in range(keys):
        codes = protected_codes(feats, profile, fresh_key())
        g.append(pair_scores(genuine, codes=codes, hash_count=profile.hash_count))
        imp.append(pair_scores(impostor, codes=codes, hash_count=profile.hash_count))
    return np.concatenate(g), np.concatenate(imp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fmr", type=float, default=1e-3)
    parser.add_argument("--keys", type=int, default=3)
    parser.add_argument("--only", choices=("face", "finger"), default=None)
    args = parser.parse_args()
    if args.only != "finger":
        calibrate_face(args)
    if args.only != "face":
        calibrate_finger(args)


def calibrate_face(args) -> None:

    lfw = features.load(data.lfw())
    calibration, held_out = split_identities(lfw.dataset)
    face = CURRENT[FACE]
    _, impostor = scored(lfw, calibration, face, args.keys)
    threshold = threshold_at_fmr(impostor, args.fmr)
    print(f"{face.name}: threshold {threshold:.4f} for FMR {args.fmr:g} "
          f"(LFW first-half identities, {len(impostor)} impostor scores over {args.keys} keys)")
    orl = features.load(data.orl())
    for name, feats, mask in (("LFW second half", lfw, held_out), ("ORL", orl, np.ones(len(orl.ok), bool))):
        g, imp = scored(feats, mask, face, args.keys)
        gar, fmr = rates_at(g, imp, threshold)
        print(f"  {name:16s}: genuine accept {gar:.4f}, false match {fmr:.2e} ({len(g)} / {len(imp)} pairs)")


def calibrate_finger(args) -> None:
    """Fingerprint thresholds have their own rule and leave-one-sensor-out check."""
    from benchmarks.calibration import fingerprint_operating_point

    fingerprint_operating_point.main(["--keys", str(args.keys)])


if __name__ == "__main__":
    main()
