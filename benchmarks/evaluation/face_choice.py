"""Which face when YuNet finds several: the one nearest the centre (vault.intake.features.sface.choose_face)
against the largest, and how many images refusing would cost, on the LFW subset (raw SFace cosine;
threshold fitted on every other person's pairs, applied to the rest). With --quality: what the
quality gate reads (eye distance, brightness, balance of the halves) on every face of the shared
sets, the least of each, which the gate's limits must stay below.

    uv run python -m benchmarks.evaluation.face_choice [--quality]
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import numpy as np

from benchmarks import data


def _embed(path: str):
    import cv2

    from vault.intake import images
    from vault.intake.features import sface

    cv2.setNumThreads(1)
    rgb = images.decode_face(open(path, "rb").read())
    faces = sface.detect(rgb)
    if not len(faces):
        return 0, None, None
    centre = sface.choose_face(faces, *rgb.shape[:2])
    largest = int(np.argmax(faces[:, 2] * faces[:, 3]))
    embed = [sface.networks().embed(sface.aligned_face(rgb, faces[i])) for i in (centre, largest)]
    return len(faces), *[e / np.linalg.norm(e) for e in embed]


def held_out_gar(vectors: np.ndarray, subjects: np.ndarray, fmr: float) -> tuple[float, float]:
    scores = vectors @ vectors.T
    upper = np.triu_indices(len(subjects), 1)
    same = (subjects[:, None] == subjects[None, :])[upper]
    fit_people = set(sorted(set(subjects))[::2])
    in_fit = np.array([s in fit_people for s in subjects])
    fit = (in_fit[:, None] & in_fit[None, :])[upper]
    test = (~in_fit[:, None] & ~in_fit[None, :])[upper]
    s = scores[upper]
    threshold = np.quantile(s[fit & ~same], 1 - fmr)
    return float((s[test & same] >= threshold).mean()), float((s[test & ~same] >= threshold).mean())


def _quality(path: str):
    import cv2

    from vault.intake import images
    from vault.intake.features import sface

    cv2.setNumThreads(1)
    rgb = images.decode_face(open(path, "rb").read())
    faces = sface.detect(rgb)
    if not len(faces):
        return None
    face = faces[sface.choose_face(faces, *rgb.shape[:2])]
    inside = sface.in_frame(rgb, face)
    brightness, balance = sface.lighting(sface.aligned_face(rgb, face), inside)
    return float(np.linalg.norm(face[4:6] - face[6:8])), brightness, balance, float(inside.mean())


def quality() -> None:
    from vault.intake.features import sface

    print(f"gate: eyes >= {sface.MIN_EYE_DISTANCE} px, brightness >= {sface.MIN_BRIGHTNESS}, "
          f"balance >= {sface.MIN_HALF_RATIO}, in frame >= {sface.MIN_IN_FRAME}")
    with ProcessPoolExecutor(2) as pool:
        for name, load in data.FACE_SETS.items():
            seen = [r for r in pool.map(_quality, [str(s.path) for s in load().samples], chunksize=8) if r]
            balances = [r[2] for r in seen if r[2] is not None]
            framed = np.array([r[3] for r in seen])
            print(f"{name:14s} {len(seen)} faces: eyes least {min(r[0] for r in seen):.1f} px, brightness least "
                  f"{min(r[1] for r in seen):.0f}, balance least {min(balances):.2f} "
                  f"({len(seen) - len(balances)} cut by the frame, balance not judged); in frame least "
                  f"{framed.min():.2f}, under the gate {(framed < sface.MIN_IN_FRAME).sum()} "
                  f"({(framed < sface.MIN_IN_FRAME).mean():.1%})")


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quality", action="store_true", help="the quality gate's readings on every shared face set")
    if parser.parse_args(argv).quality:
        return quality()
    dataset = data.lfw()
    with ProcessPoolExecutor(2) as pool:
        results = list(pool.map(_embed, [str(s.path) for s in dataset.samples], chunksize=8))
    kept = [i for i, r in enumerate(results) if r[0]]
    subjects = np.asarray([dataset.samples[i].subject for i in kept])
    several = sum(r[0] > 1 for r in results)
    print(f"LFW subset: {len(results)} images, several faces found in {several} ({several / len(results):.1%}): "
          "refusing them would fail to enrol or decide that share")
    for name, column in (("nearest the centre", 1), ("largest", 2)):
        vectors = np.stack([results[i][column] for i in kept])
        for fmr in (1e-3, 1e-4):
            gar, seen = held_out_gar(vectors, subjects, fmr)
            print(f"{name:20s} FMR {fmr:g}: held-out genuine accept {gar:.4f} (FMR seen {seen:.1e})")


if __name__ == "__main__":
    main()
