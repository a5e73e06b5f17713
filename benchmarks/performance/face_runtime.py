"""SFace on OpenVINO (as the service runs it) against SFace on OpenCV (the library's own runtime):
the same embeddings, and the time each takes, on one core.

    uv run python -m benchmarks.performance.face_runtime [--per-set 0] [--rounds 3] [--report FILE]

For every face set in ../shared (each its own population; --per-set N takes its first N photos, 0
all): YuNet finds and aligns the face as the service does, then OpenCV's FaceRecognizerSF.feature
and the service's OpenVINO network (vault.intake.features.sface, weights decoded to float by
vault.intake.features.float_weights) embed the same crop. Reported: the two embeddings' cosine
and largest difference, the largest change of any same-set pair's cosine score, and the share of
IoM hashes (face-sface-v1's transform under a random key) that differ. Time: each runtime on every
crop in turn (round robin, --rounds passes, one thread), and whole photos (read, detect, align,
embed) as OpenCV Zoo's demo does against the service's face_features (with its quality gate).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.data import FACE_SETS
from benchmarks.performance.identify_speed import transform
from benchmarks.performance.throughput import opencv_zoo_sface
from benchmarks.transcript import Transcript
from vault.exceptions import VaultError
from vault.hazmat.iom import unpack_indices
from vault.intake import images
from vault.intake.features import sface
from vault.templates.profiles import FACE_SFACE_V1

REPORT = Path(__file__).resolve().parents[1] / "results" / "face_runtime.md"


def _median_ms(times: list[float]) -> float:
    return 1000 * statistics.median(times)


def main() -> None:
    import cv2

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-set", type=int, default=0, help="photos per set (0: all)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--report", type=Path, default=REPORT)
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as a worker has
    cv2.setNumThreads(1)
    out = Transcript()
    networks = sface.networks()
    recognizer = networks.recognizer
    protect = transform(FACE_SFACE_V1, np.random.default_rng())
    out("# SFace on OpenVINO (the service) against OpenCV (the library)\n")
    out(f"`uv run python -m benchmarks.performance.face_runtime --per-set {args.per_set} --rounds {args.rounds}`; "
        "one core, one thread each.\n")
    out("| set | faces | cosine, least | largest difference | largest pair-score change | IoM hashes differing |")
    out("|---|---|---|---|---|---|")
    crops, paths = [], []
    for name, load in FACE_SETS.items():
        samples = load().samples[: args.per_set or None]
        by_opencv, by_openvino = [], []
        for sample in samples:
            try:
                rgb = images.decode_face(sample.path.read_bytes())
            except VaultError:
                continue
            faces = sface.detect(rgb)
            if len(faces) == 0:
                continue
            crop = sface.aligned_face(rgb, faces[sface.choose_face(faces, *rgb.shape[:2])])
            crops.append(crop)
            paths.append(sample.path)
            by_opencv.append(np.asarray(recognizer.feature(crop), np.float32).reshape(-1))
            by_openvino.append(networks.embed(crop))
        a, b = np.array(by_opencv), np.array(by_openvino)
        cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        unit_a = a / np.linalg.norm(a, axis=1, keepdims=True)
        unit_b = b / np.linalg.norm(b, axis=1, keepdims=True)
        pair_change = np.abs(unit_a @ unit_a.T - unit_b @ unit_b.T).max()
        hashes = (unpack_indices(protect(unit_a), FACE_SFACE_V1.hash_width)
                  != unpack_indices(protect(unit_b), FACE_SFACE_V1.hash_width)).mean()
        out(f"| {name} | {len(a)} | {cosine.min():.7f} | {np.abs(a - b).max():.1e} | {pair_change:.1e} | {hashes:.1e} |")

    opencv_times, openvino_times = [], []
    for _ in range(args.rounds):
        for crop in crops:
            started = time.perf_counter()
            recognizer.feature(crop)
            opencv_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            networks.embed(crop)
            openvino_times.append(time.perf_counter() - started)
    opencv_zoo_sface(str(paths[0]))  # its networks loaded before the clock runs
    demo_times, service_times = [], []
    for path in paths:
        started = time.perf_counter()
        opencv_zoo_sface(str(path))
        demo_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        try:
            sface.face_features(images.decode_face(path.read_bytes()))
        except VaultError:
            pass
        service_times.append(time.perf_counter() - started)
    out("\n| per face, one core (median) | OpenCV | OpenVINO (service) |")
    out("|---|---|---|")
    out(f"| SFace embedding of an aligned crop ({len(opencv_times):,} runs each) | {_median_ms(opencv_times):.1f} ms "
        f"| {_median_ms(openvino_times):.1f} ms |")
    out(f"| whole photo: OpenCV Zoo's demo path / the service's face_features ({len(paths):,} photos) "
        f"| {_median_ms(demo_times):.1f} ms | {_median_ms(service_times):.1f} ms |")
    out.save(args.report)


if __name__ == "__main__":
    main()
