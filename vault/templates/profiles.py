"""Named, versioned protection profiles: one parameter set per modality.

A stored template records the profile name it was made with; a profile is never edited once
templates exist under it. Changing parameters means a new name (face-iom-v2) and re-enrolment.

Thresholds are on the IoM agreement score (fraction of equal hash indices, 0..1) and are set for
an operating false-match rate. What is designed (sizes, transforms, the operating rate) is written
here; what is measured (thresholds, score models, cohort references and priors, with the record of
on which data and by which command) is read from vault/models/calibration.json, beside the models
it was measured with (`calibrated`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from vault.hazmat.iom import bit_planes
from vault.templates.identification import ScoreModel
from vault.templates.normalisation import CohortNorm
from vault.templates.prefilter import Prefilter

# Modalities and feature extractors live in vault.modalities; named here too for older importers.
from vault.modalities import DLIB, FACE, FINGERPRINT, MINUTIAE, MODALITY_NAMES, SFACE  # noqa: E402,F401


# Each profile's measured values and their record, kept beside the models, not in code.
_CALIBRATED: dict[str, dict] = json.loads(
    (Path(__file__).resolve().parents[1] / "models" / "calibration.json").read_text())


def calibrated(name: str) -> dict:
    """The ProtectionProfile fields profile `name` was calibrated to (vault/models/calibration.json):
    calibration (the record), threshold, and where it has them fused_threshold, cohort_reference,
    template_cohort_reference, score_models and score_norm."""
    entry = dict(_CALIBRATED[name])
    fields = {"calibration": entry.pop("record"), "threshold": entry.pop("threshold")}
    for scalar in ("fused_threshold", "cohort_reference", "template_cohort_reference"):
        if scalar in entry:
            fields[scalar] = entry.pop(scalar)
    if "score_models" in entry:
        fields["score_models"] = tuple(
            ScoreModel(**dict(model, genuine_quantiles=tuple(model["genuine_quantiles"]))) if model else None
            for model in entry.pop("score_models"))
    if "score_norm" in entry:
        fields["score_norm"] = CohortNorm(**entry.pop("score_norm"))
    if entry:
        raise ValueError(f"calibration.json: unknown fields for {name}: {sorted(entry)}")
    return fields


@dataclass(frozen=True)
class ProtectionProfile:
    name: str
    modality: int
    feature_dim: int
    hash_count: int  # m: number of index-of-max hashes
    hash_width: int  # q: projections per hash (power of two)
    threshold: float  # decide MATCH when agreement >= threshold (a template made from one sample)
    operating_fmr: float
    calibration: str
    # A retired profile's feature extractor no longer exists: its templates cannot be matched
    # (probes cannot be made comparable) and are left out of the index until re-enrolled.
    retired: bool = False
    # vault.hazmat.iom.keyed_projection kind: "gaussian" (dense bank) or "hadamard" (structured,
    # for high-dimensional features)
    projection: str = "gaussian"
    # The threshold of templates fused from several samples, where it differs: fusing averages
    # the samples' noise away but not what prints share, so a fused template draws higher
    # impostor scores (and higher genuine ones). None: `threshold` serves every template. A profile
    # that sets it binds each template's sample count to its sealed code (vault.templates.protection).
    fused_threshold: float | None = None
    # Calibrated score models (vault.templates.identification.ScoreModel) of one-sample and fused templates:
    # Identify raises thresholds with the gallery's size from them. None: the 1:1 threshold only.
    score_models: tuple[ScoreModel | None, ScoreModel | None] = (None, None)
    # How a template enrolled from several samples is kept: False, the samples' vectors fused into
    # one code; True, one code per sample, a probe scoring its best agreement with any of them
    # (decided at fused_threshold; 1:N counts each code as a comparison). Fusion averages the
    # samples' noise away but not what all prints share, so fused fingerprint templates draw
    # impostors (synthetic prints most) closer than any single touch does.
    keeps_sample_codes: bool = False
    # A per-key operating point (vault.templates.cohort): the Gaussian impostor model in vault/models/ whose
    # tail, scored under each key, moves that key's thresholds by (its quantile - cohort_reference).
    # None: one set of thresholds for every key.
    cohort: str | None = None
    cohort_reference: float = 0.0
    # A per-template operating point (vault.templates.cohort.TemplateCohort): the synthetic prints in
    # vault/models/ that every code is scored against under its key at enrolment; the code's mean
    # agreement with them, less template_cohort_reference (that mean's average over calibration
    # templates), is taken off every score it draws. None: no offsets.
    template_cohort: str | None = None
    template_cohort_reference: float = 0.0
    # The feature extractor whose vectors this profile protects (DLIB, SFACE, MINUTIAE).
    features: str = DLIB
    # Scores normalised against the gallery's own cohort (vault.templates.normalisation); the thresholds are
    # then on the normalised scale. None: raw agreements.
    score_norm: CohortNorm | None = None
    # 1:N over large galleries reads a prefix of every code first (vault.templates.prefilter); None: full scan
    prefilter: Prefilter | None = None

    def threshold_for(self, sample_count: int) -> float:
        """The 1:1 decision threshold of a template enrolled from `sample_count` samples."""
        if sample_count > 1 and self.fused_threshold is not None:
            return self.fused_threshold
        return self.threshold

    def sealed_sample_count(self, sample_count: int) -> int | None:
        """What a template's seal binds of its sample count: the count where the threshold
        depends on it, else nothing (vault.templates.protection.RowIdentity)."""
        return sample_count if self.fused_threshold is not None else None

    def score_model(self, sample_count: int) -> ScoreModel | None:
        single, fused = self.score_models
        return fused if sample_count > 1 and fused is not None else single

    def identify_threshold(self, sample_count: int, per_comparison_fmr: float) -> float:
        """The 1:N threshold of such a template when each comparison may false-match with
        probability `per_comparison_fmr` (vault.templates.identification.per_comparison_fmr)."""
        model = self.score_model(sample_count)
        base = self.threshold_for(sample_count)
        return base if model is None else max(base, model.threshold_at(per_comparison_fmr))

    @property
    def planes(self) -> int:
        return bit_planes(self.hash_width)

    @property
    def words(self) -> int:
        """uint64 words per bit plane."""
        return self.hash_count // 64

    @property
    def template_bytes(self) -> int:
        return self.planes * self.words * 8


FACE_IOM_V1 = ProtectionProfile(
    name="face-iom-v1",
    modality=FACE,
    feature_dim=128,
    hash_count=1024,
    hash_width=16,
    operating_fmr=1e-3,
    **calibrated("face-iom-v1"),
)

FACE_IOM_V2 = ProtectionProfile(
    name="face-iom-v2",
    modality=FACE,
    feature_dim=128,
    hash_count=4096,  # tuned (benchmarks/results/tune.md): closest to raw dlib cosine within 1 KiB
    hash_width=4,
    operating_fmr=1e-3,
    # Per-key operating point (vault.templates.cohort): each key's thresholds move with its synthetic impostor
    # tail; over 10 fresh keys the held-out false-match rate spread (max/min) went from 1.62 to 1.22.
    cohort="face-cohort-v1",
    **calibrated("face-iom-v2"),
)

FACE_IOM_V3 = replace(
    FACE_IOM_V2,
    name="face-iom-v3",
    # Four times v2's hashes (4 KiB a template): the quantisation noise of 4096 hashes kept the protected
    # genuine-accept rate 1.2 points under raw dlib cosine on held-out people; 16384 leave 0.45
    # (benchmarks/results/face_per_key.md). 1:N reads four times the bytes (~0.2 s for 1M on one core).
    hash_count=16384,
    **calibrated("face-iom-v3"),
)

FINGER_IOM_V1 = ProtectionProfile(
    name="finger-iom-v1",
    modality=FINGERPRINT,
    features=MINUTIAE,
    feature_dim=1024,  # vault.intake.features.fingerprint.FEATURE_DIM
    hash_count=1024,
    hash_width=8,
    operating_fmr=1e-3,
    retired=True,  # replaced by finger-mcc2-v2 (new feature vector): re-enrol
    **calibrated("finger-iom-v1"),
)

FINGER_MCC2_V2 = ProtectionProfile(
    name="finger-mcc2-v2",
    modality=FINGERPRINT,
    features=MINUTIAE,
    feature_dim=2048,  # vault.intake.features.fingerprint.FEATURE_DIM: MCC second-order pooling + triplets
    hash_count=2048,
    hash_width=4,
    operating_fmr=1e-3,
    retired=True,  # replaced by finger-mcc-v3 (new feature vector): re-enrol
    **calibrated("finger-mcc2-v2"),
)

FINGER_MCC_V3 = ProtectionProfile(
    name="finger-mcc-v3",
    modality=FINGERPRINT,
    features=MINUTIAE,
    # vault.intake.features.fingerprint.FEATURE_DIM: second-order pooling of 160-D MCC codes + triplets
    feature_dim=13752,
    # q=2 (sign random projections): at 1-2 KiB it matched or beat q=4 and q=8 at equal size
    # (5 keys, benchmarks/evaluation/fingerprint_mcc.py); 2 KiB has 1/sqrt(2) the hashing noise of 1 KiB
    hash_count=16384,
    hash_width=2,
    operating_fmr=1e-3,
    projection="hadamard",  # a dense bank would be 13752 x 32768 floats (1.7 GiB) per tenant
    retired=True,  # replaced by finger-leader-v4 (LEADER minutiae, new basis): re-enrol
    **calibrated("finger-mcc-v3"),
)

FINGER_LEADER_V4 = ProtectionProfile(
    name="finger-leader-v4",
    modality=FINGERPRINT,
    features=MINUTIAE,
    # vault.intake.features.fingerprint.FEATURE_DIM: finger-mcc-v3's vector, on LEADER minutiae and a
    # basis fitted on them (vault/models/finger-leader-pca160-v1.npz)
    feature_dim=13752,
    hash_count=16384,
    hash_width=2,
    operating_fmr=1e-3,
    projection="hadamard",
    **calibrated("finger-leader-v4"),
)

FINGER_LEADER_V5 = replace(
    FINGER_LEADER_V4,
    name="finger-leader-v5",
    # The same transform and basis as v4 (a v4 template keeps matching); a template enrolled from
    # several touches keeps each touch's code (each compared as one sample is, by Identify too),
    # and every threshold carries a generalisation margin.
    keeps_sample_codes=True,
    **calibrated("finger-leader-v5"),
)

FINGER_LEADER_V6 = replace(
    FINGER_LEADER_V5,
    name="finger-leader-v6",
    # The same transform, basis and codes as v5 (a v5 template keeps matching under v5's rule);
    # each code's mean agreement with a cohort of synthetic prints is taken off its scores
    # (vault.templates.cohort.TemplateCohort), and the thresholds are on those scores.
    template_cohort="finger-cohort-v1",
    **calibrated("finger-leader-v6"),
)

FACE_SFACE_V1 = ProtectionProfile(
    name="face-sface-v1",
    modality=FACE,
    features=SFACE,
    feature_dim=128,
    # As face-iom-v3: 16,384 index-of-max hashes of 4 Gaussian projections (4 KiB a template)
    hash_count=16384,
    hash_width=4,
    projection="gaussian",
    # Scores normalised against the gallery's own cohort (vault.templates.normalisation), with a
    # prior (score_norm) for galleries of a few people; the threshold is on the normalised scale.
    operating_fmr=1e-4,
    # 1:N from 65,536 templates: the first 1,024 positions of every code, then the best 1/256 in full
    # (benchmarks/performance/identify_speed.py: time, and decisions against the full scan).
    prefilter=Prefilter(words=16, share=1 / 256, minimum=4096, from_rows=65536),
    **calibrated("face-sface-v1"),
)

PROFILES: dict[str, ProtectionProfile] = {
    p.name: p for p in (FACE_IOM_V1, FACE_IOM_V2, FACE_IOM_V3, FINGER_IOM_V1, FINGER_MCC2_V2, FINGER_MCC_V3, FINGER_LEADER_V4,
                        FINGER_LEADER_V5, FINGER_LEADER_V6, FACE_SFACE_V1)
}

# The profile new templates are made with, per modality.
CURRENT: dict[int, ProtectionProfile] = {FACE: FACE_SFACE_V1, FINGERPRINT: FINGER_LEADER_V6}
