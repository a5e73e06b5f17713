"""Synthetic fingerprints grown from random numbers, and the fingerprint impostor cohort made of them.

    uv run python -m benchmarks.calibration.synthetic_prints [--count 256] [--out vault/models/finger-cohort-v1.npz]

A print is made as SFinGe makes one (Cappelli, Maio, Maltoni, "Synthetic fingerprint-image
generation", ICPR 2000), in three steps:
  1. an orientation field from the zero-pole model (Sherlock and Monro, Pattern Recognition 1993):
     half the angle sum over deltas minus cores, for a random pattern class (arch, left or right
     loop, whorl, tented arch), plus a slow wobble;
  2. ridges grown from a few random seeds by repeated Gabor filtering, each pixel with the filter
     of its local orientation and one ridge period (8-10.5 px at 500 ppi), clipped after each pass;
  3. an elliptical finger mask, contact pressure and sensor noise.
LEADER (vault.intake.features.leader) then reads the minutiae, exactly as the service reads a sensor's.

No image or minutia of any person goes in: the file written holds the minutiae of `--count` such
prints (fixed seed). The shipped finger-cohort-v1.npz holds what the float LEADER network read
(before vault/models/leader-int8-v1.onnx); the command now reads the prints with the service's int8
network, which finds 99.7% of the float one's minutiae again, so what it writes would be a new
cohort version, not v1. The service scores every enrolled
fingerprint template against this cohort under the tenant's key (vault.templates.cohort.TemplateCohort): a
template that sits close to generic prints draws impostors, synthetic prints most, and its decision
is moved by how close (benchmarks/calibration/fingerprint_operating_point.py measures it).
"""

from __future__ import annotations

import argparse
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from scipy.signal import fftconvolve

SEED = 20261128
ORIENTATION_BINS = 16
HEIGHT, WIDTH = 400, 352  # 2.0 x 1.8 cm at 500 ppi
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "vault" / "models" / "finger-cohort-v1.npz"


def orientation_field(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Ridge orientation (radians, 0..pi) per pixel from the zero-pole model."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    z = xx + 1j * yy
    cx, cy = width / 2 + rng.normal(0, 20), height / 2 + rng.normal(0, 25)
    pattern = rng.choice(["arch", "left loop", "right loop", "whorl", "tented arch"], p=[0.06, 0.32, 0.32, 0.27, 0.03])
    cores, deltas = [], []
    if pattern.endswith("loop"):
        core = complex(cx + rng.normal(0, 15), cy - rng.uniform(20, 70))
        side = -1 if pattern == "left loop" else 1
        cores, deltas = [core], [core + complex(side * rng.uniform(60, 130), rng.uniform(110, 190))]
    elif pattern == "whorl":
        upper = complex(cx + rng.normal(0, 10), cy - rng.uniform(10, 40))
        cores = [upper, upper + complex(rng.normal(0, 10), rng.uniform(15, 40))]
        deltas = [upper + complex(-rng.uniform(90, 150), rng.uniform(120, 190)),
                  upper + complex(rng.uniform(90, 150), rng.uniform(120, 190))]
    elif pattern == "tented arch":
        core = complex(cx, cy - rng.uniform(0, 40))
        cores, deltas = [core], [core + complex(rng.normal(0, 5), rng.uniform(40, 80))]
    theta = np.zeros((height, width))
    for delta in deltas:
        theta += 0.5 * np.angle(z - delta)
    for core in cores:
        theta -= 0.5 * np.angle(z - core)
    if pattern == "arch":
        bend = rng.uniform(0.5, 1.5) * np.cos(math.pi * (xx - cx) / width) * np.exp(-((yy - cy - 60) / height) ** 2)
        theta = np.arctan(0.8 * bend)
    theta += rng.normal(0, 0.05) + 0.08 * np.sin(xx / rng.uniform(60, 120) + rng.uniform(0, 6))
    return np.mod(theta, math.pi)


def gabor_kernel(theta: float, period: float, sigma: float = 4.5, half: int = 12) -> np.ndarray:
    """Zero-mean even Gabor filter for ridges running along `theta`, `period` pixels apart."""
    y, x = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float64)
    across = -x * math.sin(theta) + y * math.cos(theta)
    kernel = np.exp(-(x * x + y * y) / (2 * sigma * sigma)) * np.cos(2 * math.pi * across / period)
    return kernel - kernel.mean()


def synthetic_print(rng: np.random.Generator, height: int = HEIGHT, width: int = WIDTH,
                    passes: int = 14) -> np.ndarray:
    """An 8-bit grayscale synthetic fingerprint at 500 ppi, dark ridges on a light background."""
    theta = orientation_field(rng, height, width)
    period = rng.uniform(8.0, 10.5)
    bins = np.rint(theta / math.pi * ORIENTATION_BINS).astype(int) % ORIENTATION_BINS
    kernels = [gabor_kernel(b * math.pi / ORIENTATION_BINS, period) for b in range(ORIENTATION_BINS)]
    ridges = np.zeros((height, width))
    seeds = rng.random((height, width)) < 0.002
    ridges[seeds] = rng.choice([-1.0, 1.0], int(seeds.sum()))
    for _ in range(passes):
        grown = np.zeros_like(ridges)
        for b, kernel in enumerate(kernels):
            where = bins == b
            if where.any():
                grown[where] = fftconvolve(ridges, kernel, mode="same")[where]
        ridges = np.clip(3.0 * grown, -1.0, 1.0)
    yy, xx = np.mgrid[0:height, 0:width]
    ax, ay = rng.uniform(0.30, 0.42) * width, rng.uniform(0.36, 0.46) * height
    mx, my = width / 2 + rng.normal(0, 12), height / 2 + rng.normal(0, 12)
    mask = np.clip((1.15 - ((xx - mx) / ax) ** 2 - ((yy - my) / ay) ** 2) / 0.15, 0.0, 1.0)
    pressure = rng.uniform(70, 110)
    gray = 255 - mask * pressure * (1.0 + ridges) * rng.uniform(0.9, 1.1) - rng.normal(0, 6, (height, width))
    return np.clip(gray, 0, 255).astype(np.uint8)


def cohort_member(index: int) -> np.ndarray:
    """LEADER minutiae (n, 5) of synthetic print `index` of the cohort."""
    from vault.intake.features.leader import extract_minutiae

    return extract_minutiae(synthetic_print(np.random.default_rng([SEED, index]))).minutiae


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=256, help="synthetic prints in the cohort")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the cohort's minutiae are written")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="extraction processes")
    args = parser.parse_args(argv)
    with ProcessPoolExecutor(args.workers) as pool:
        minutiae = list(pool.map(cohort_member, range(args.count), chunksize=4))
    counts = np.array([len(m) for m in minutiae])
    with open(args.out, "wb") as out:
        np.savez_compressed(out, counts=counts, minutiae=np.concatenate(minutiae).astype(np.float32),
                            size=np.array([WIDTH, HEIGHT]))
    print(f"{args.out}: {args.count} synthetic prints, minutiae per print median {np.median(counts):.0f} "
          f"(min {counts.min()}, max {counts.max()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
