"""Fit the learned part of the fingerprint features: the whitened PCA basis of MCC cylinders.

    uv run python benchmarks/calibration/fit_fingerprint_model.py            # rebuilds vault/models/finger-mcc-pca160-v1.npz

The shipped model is fitted on FVC2000 DB1-DB3 (real sensors) only, so FVC2002 stays a held-out
measurement; benchmarks/evaluation/fingerprint_mcc.py fits the mirror model (FVC2002 DB1-DB3) in memory to
score FVC2000. Deterministic: the same data give the same file. What it holds is aggregate
statistics of local minutia neighbourhoods over 30 fingers (mean cell values, 160 principal
directions), no template of any finger.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from vault.exceptions import PoorSample
from vault.intake.features import fingerprint as fp
from vault.intake.features import mcc

SAMPLE_CYLINDERS = 8000  # PCA on a fixed random subset: enough for 160 directions, fast


def fit(records, version: str, seed: int = 0) -> fp.CylinderModel:
    values, masks = [], []
    for record in records:
        try:
            v, m = fp.sample_cylinders(record)
        except PoorSample:
            continue
        values.append(v)
        masks.append(m)
    v = np.concatenate(values).reshape(-1, mcc.CELLS, mcc.ND).astype(np.float64)
    m = np.concatenate(masks).astype(np.float64)
    # mean value of each cell where it is valid: the neutral filler for cells outside a print
    fill = (v * m[:, :, None]).sum(axis=0) / np.maximum(m.sum(axis=0), 1.0)[:, None]
    x = np.where(m[:, :, None] > 0, v, fill[None]).reshape(len(v), mcc.LENGTH)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(x), min(len(x), SAMPLE_CYLINDERS), replace=False)
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x[np.sort(pick)] - mean, full_matrices=False)
    scale = s[: fp.PCA_DIMS] / np.sqrt(len(pick))
    # fix each direction's sign so refits are byte-stable across LAPACK builds
    basis = vt[: fp.PCA_DIMS].T
    basis *= np.where(basis[np.abs(basis).argmax(axis=0), np.arange(fp.PCA_DIMS)] < 0, -1.0, 1.0)
    return fp.CylinderModel(fill, mean, basis / scale, version)


def training_records(year: int, data: Path, cache, dbs=(1, 2, 3)) -> list:
    folder = data / "fingerprint" / f"fvc{year}"
    return cache.records([folder / f"db{db}_b" / f"{f}_{i}.tif"
                          for db in dbs for f in range(101, 111) for i in range(1, 9)])


def main(argv=None) -> int:
    from benchmarks.evaluation.fingerprint_baseline import MinutiaeCache, default_data_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=fp.MODEL_PATH)
    args = parser.parse_args(argv)
    if not (args.data / "fingerprint").is_dir():
        print(f"no fingerprint data under {args.data}", file=sys.stderr)
        return 2
    model = fit(training_records(2000, args.data, MinutiaeCache(True)), fp.MODEL_VERSION)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB), fitted on FVC2000 DB1-DB3")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
