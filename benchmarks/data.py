"""The shared research data sets (../shared/data, read in place) and their comparison protocols."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

DATA = Path(os.environ.get("VAULT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@dataclass(frozen=True)
class Sample:
    subject: str
    path: Path

    @property
    def key(self) -> str:
        return str(self.path.relative_to(DATA))


@dataclass(frozen=True)
class DataSet:
    name: str
    modality: str  # "face" | "fingerprint"
    samples: tuple[Sample, ...]
    synthetic: bool = False


def orl() -> DataSet:
    root = DATA / "face" / "orl"
    samples = [Sample(d.name, p) for d in sorted(root.iterdir(), key=lambda d: int(d.name[1:]))
               for p in sorted(d.glob("*.pgm"), key=lambda p: int(p.stem))]
    return DataSet("orl", "face", tuple(samples))


def lfw() -> DataSet:
    root = DATA / "face" / "lfw"
    samples = [Sample(d.name, p) for d in sorted(root.iterdir()) for p in sorted(d.glob("*.jpg"))]
    return DataSet("lfw", "face", tuple(samples))


def _folders(name: str, pattern: str) -> DataSet:
    """A face set laid out one folder per person (the population sets)."""
    root = DATA / "face" / name
    samples = [Sample(d.name, p) for d in sorted(root.iterdir()) if d.is_dir()
               for p in sorted(d.iterdir()) if p.suffix.lower() in pattern]
    return DataSet(name, "face", tuple(samples))


def jaffe() -> DataSet:
    """JAFFE: 10 Japanese women, studio, posed expressions (TIFF)."""
    return _folders("jaffe", (".tiff", ".tif"))


def casia() -> DataSet:
    """CASIA-FaceV5 subjects 000-039: Chinese adults, blue backdrop (BMP)."""
    return _folders("casia_face_v5", (".bmp",))


def kpop() -> DataSet:
    """Korean public figures in web photos (JPEG)."""
    return _folders("kpop", (".jpg", ".jpeg"))


FACE_SETS = {"lfw": lfw, "orl": orl, "jaffe": jaffe, "casia_face_v5": casia, "kpop": kpop}


def fvc(year: int, db: int, iso: bool = False) -> DataSet:
    if iso:
        root, suffix = DATA / "fingerprint_iso19794_2" / f"fvc{year}" / f"db{db}_b", ".iso"
    else:
        root, suffix = DATA / "fingerprint" / f"fvc{year}" / f"db{db}_b", ".tif"
    samples = [Sample(p.stem.split("_")[0], p) for p in sorted(root.glob(f"*{suffix}"),
                                                            key=lambda p: tuple(map(int, p.stem.split("_"))))]
    return DataSet(f"fvc{year}-db{db}{'-iso' if iso else ''}", "fingerprint", tuple(samples), synthetic=db == 4)


def all_pairs(subjects: list[str]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(genuine, impostor) index pairs over all unordered pairs of samples."""
    genuine, impostor = [], []
    for i, j in itertools.combinations(range(len(subjects)), 2):
        (genuine if subjects[i] == subjects[j] else impostor).append((i, j))
    return genuine, impostor


def fvc_pairs(dataset: DataSet) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """FVC protocol: genuine = all impression pairs of a finger; impostor = impression 1 of each finger pair."""
    by_subject: dict[str, list[int]] = {}
    for i, s in enumerate(dataset.samples):
        by_subject.setdefault(s.subject, []).append(i)
    genuine = [p for idx in by_subject.values() for p in itertools.combinations(idx, 2)]
    firsts = [idx[0] for idx in by_subject.values()]
    return genuine, list(itertools.combinations(firsts, 2))
