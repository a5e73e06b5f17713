"""Named, versioned protection profiles: one parameter set per modality.

A stored template records the profile name it was made with; a profile is never edited once
templates exist under it. Changing parameters means a new name (face-iom-v2) and re-enrolment.

Thresholds are on the IoM agreement score (fraction of equal hash indices, 0..1) and are set for
an operating false-match rate; `calibration` says on which data and with which command.
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


# How each profile's thresholds were set, on which data and with which command: the calibration
# record, kept beside the models (vault/models/calibration.json), not in code.
CALIBRATION: dict[str, str] = json.loads(
    (Path(__file__).resolve().parents[1] / "models" / "calibration.json").read_text())


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
    threshold=680 / 1024,
    operating_fmr=1e-3,
    calibration=CALIBRATION["face-iom-v1"],
)

FACE_IOM_V2 = ProtectionProfile(
    name="face-iom-v2",
    modality=FACE,
    feature_dim=128,
    hash_count=4096,  # tuned (benchmarks/results/tune.md): closest to raw dlib cosine within 1 KiB
    hash_width=4,
    # With its generalisation margin: the highest, over 5 fresh keys and both halves of the
    # calibration identities, of the thresholds (less each key's cohort shift) that hold FMR 1e-3
    # there (was 3206, fitted on them pooled, one threshold for all keys).
    threshold=3219 / 4096,
    operating_fmr=1e-3,
    calibration=CALIBRATION["face-iom-v2"],
    # Per-key operating point (vault.templates.cohort): each key's thresholds move with its synthetic impostor
    # tail; over 10 fresh keys the held-out false-match rate spread (max/min) went from 1.62 to 1.22.
    # uv run python -m benchmarks.calibration.face_per_key
    cohort="face-cohort-v1",
    cohort_reference=0.783777,
    # Identify's tail models: LFW's first 290 identities, 5 keys (uv run python -m benchmarks.calibration.identify_fpir)
    score_models=(ScoreModel(tail_start=0.759033, tail_rate=0.009874, shape=0.0, scale=0.0106193, genuine_quantiles=(0.68091, 0.77515, 0.78735, 0.79537, 0.80176, 0.80762, 0.81201, 0.81616, 0.81958, 0.82338, 0.8269, 0.83057, 0.83447, 0.83862, 0.84229, 0.84619, 0.85083, 0.85673, 0.86401, 0.87793, 0.91162)),
                  ScoreModel(tail_start=0.769531, tail_rate=0.009983, shape=0.0, scale=0.0104522, genuine_quantiles=(0.71973, 0.80076, 0.81174, 0.8208, 0.82715, 0.83325, 0.83789, 0.84277, 0.84658, 0.84962, 0.85303, 0.85596, 0.85864, 0.86157, 0.86475, 0.86816, 0.87207, 0.8772, 0.8843, 0.89258, 0.92236))),
)

FACE_IOM_V3 = replace(
    FACE_IOM_V2,
    name="face-iom-v3",
    # Four times v2's hashes (4 KiB a template): the quantisation noise of 4096 hashes kept the protected
    # genuine-accept rate 1.2 points under raw dlib cosine on held-out people; 16384 leave 0.45
    # (benchmarks/results/face_per_key.md). 1:N reads four times the bytes (~0.2 s for 1M on one core).
    hash_count=16384,
    # The highest over 5 fresh keys and both calibration halves, the higher of two runs (12842, 12844)
    threshold=12844 / 16384,
    calibration=CALIBRATION["face-iom-v3"],
    cohort_reference=0.782094,
    # Identify's tail models: LFW's first 290 identities, 5 keys (uv run python -m benchmarks.calibration.identify_fpir --only face)
    score_models=(ScoreModel(tail_start=0.759583, tail_rate=0.00999, shape=0.0, scale=0.0102999, genuine_quantiles=(0.68524, 0.77753, 0.78843, 0.79659, 0.80352, 0.80898, 0.81384, 0.81738, 0.82029, 0.82376, 0.82758, 0.83136, 0.83551, 0.83905, 0.84296, 0.84778, 0.85181, 0.85712, 0.86475, 0.87812, 0.91022)),
                  ScoreModel(tail_start=0.770386, tail_rate=0.009987, shape=0.0, scale=0.0099791, genuine_quantiles=(0.73102, 0.80303, 0.81207, 0.82202, 0.82983, 0.83441, 0.83891, 0.8432, 0.848, 0.85144, 0.85416, 0.85717, 0.85944, 0.86242, 0.86548, 0.86841, 0.87228, 0.87811, 0.88416, 0.89167, 0.91913))),
)

FINGER_IOM_V1 = ProtectionProfile(
    name="finger-iom-v1",
    modality=FINGERPRINT,
    features=MINUTIAE,
    feature_dim=1024,  # vault.intake.features.fingerprint.FEATURE_DIM
    hash_count=1024,
    hash_width=8,
    threshold=244 / 1024,
    operating_fmr=1e-3,
    calibration=CALIBRATION["finger-iom-v1"],
    retired=True,  # replaced by finger-mcc2-v2 (new feature vector): re-enrol
)

FINGER_MCC2_V2 = ProtectionProfile(
    name="finger-mcc2-v2",
    modality=FINGERPRINT,
    features=MINUTIAE,
    feature_dim=2048,  # vault.intake.features.fingerprint.FEATURE_DIM: MCC second-order pooling + triplets
    hash_count=2048,
    hash_width=4,
    threshold=677 / 2048,
    operating_fmr=1e-3,
    calibration=CALIBRATION["finger-mcc2-v2"],
    retired=True,  # replaced by finger-mcc-v3 (new feature vector): re-enrol
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
    threshold=8726 / 16384,
    operating_fmr=1e-3,
    calibration=CALIBRATION["finger-mcc-v3"],
    projection="hadamard",  # a dense bank would be 13752 x 32768 floats (1.7 GiB) per tenant
    retired=True,  # replaced by finger-leader-v4 (LEADER minutiae, new basis): re-enrol
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
    # Just above every impostor score seen in calibration (benchmarks/calibration/fingerprint_operating_point.py)
    threshold=8975 / 16384,
    fused_threshold=9141 / 16384,
    operating_fmr=1e-3,
    calibration=CALIBRATION["finger-leader-v4"],
    projection="hadamard",
    # Identify's tail models: FVC2000 and FVC2002 DB1-DB3, 5 keys (uv run python -m benchmarks.calibration.identify_fpir)
    score_models=(ScoreModel(tail_start=0.530334, tail_rate=0.009937, shape=0.0, scale=0.0028731, genuine_quantiles=(0.492, 0.54382, 0.56091, 0.5719, 0.58228, 0.59003, 0.59717, 0.60461, 0.61115, 0.61865, 0.62585, 0.63276, 0.64026, 0.64841, 0.65692, 0.66486, 0.67523, 0.68591, 0.6995, 0.72173, 0.84271)),
                  ScoreModel(tail_start=0.534241, tail_rate=0.01, shape=0.0, scale=0.0026994, genuine_quantiles=(0.51477, 0.57102, 0.58761, 0.60249, 0.61222, 0.62091, 0.62716, 0.63643, 0.64537, 0.65152, 0.65768, 0.66354, 0.67107, 0.67839, 0.6868, 0.69661, 0.70308, 0.71296, 0.72791, 0.75086, 0.83832))),
)

FINGER_LEADER_V5 = replace(
    FINGER_LEADER_V4,
    name="finger-leader-v5",
    # The same transform and basis as v4 (a v4 template keeps matching); a template enrolled from
    # several touches keeps each touch's code, and every threshold carries a generalisation margin.
    keeps_sample_codes=True,
    threshold=8967 / 16384,
    fused_threshold=9282 / 16384,
    calibration=CALIBRATION["finger-leader-v5"],
    # Each kept-apart code is compared as one sample is: Identify uses the one-sample tail model per code.
    score_models=(FINGER_LEADER_V4.score_models[0], None),
)

FINGER_LEADER_V6 = replace(
    FINGER_LEADER_V5,
    name="finger-leader-v6",
    # The same transform, basis and codes as v5 (a v5 template keeps matching under v5's rule);
    # each code's mean agreement with a cohort of synthetic prints is taken off its scores
    # (vault.templates.cohort.TemplateCohort), and the thresholds are on those scores.
    template_cohort="finger-cohort-v1",
    template_cohort_reference=0.511244,  # the templates' mean cohort agreement over the calibration sets
    threshold=9066 / 16384,
    fused_threshold=9107 / 16384,
    calibration=CALIBRATION["finger-leader-v6"],
    # Identify's one-sample tail model, fitted on the scores v6 makes (cohort offsets taken off,
    # int8 LEADER minutiae; uv run python -m benchmarks.calibration.identify_fpir --only finger): its tail is
    # wider than v4's raw-score model (scale 0.0036 against 0.0029), so large galleries get higher
    # thresholds (1M fingers: 0.5784 against 0.5700). Kept-apart codes are each compared as one sample.
    score_models=(ScoreModel(tail_start=0.52901, tail_rate=0.010007, shape=0.0, scale=0.0035778, genuine_quantiles=(0.49051, 0.54638, 0.56132, 0.57258, 0.58114, 0.59042, 0.59837, 0.60499, 0.61215, 0.61915, 0.62623, 0.63405, 0.64164, 0.64977, 0.658, 0.66622, 0.67566, 0.68671, 0.70192, 0.72147, 0.85717)), None),
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
    # On scores normalised against the gallery's own cohort (vault.templates.normalisation): the highest,
    # over five populations and five fresh keys, of the normalised impostor score at 1 - 1e-4.
    threshold=3.9861,
    operating_fmr=1e-4,
    calibration=CALIBRATION["face-sface-v1"],
    # The prior: the highest median cohort mean and sd of the five populations' templates, weighted
    # as 4 cohort members, so a gallery of a few people is judged as the most crowded population was.
    score_norm=CohortNorm(cohort_size=256, prior_mean=0.34896, prior_sd=0.03899, prior_weight=4.0),
    # 1:N from 65,536 templates: the first 1,024 positions of every code, then the best 1/256 in full
    # (benchmarks/performance/identify_speed.py: time, and decisions against the full scan).
    prefilter=Prefilter(words=16, share=1 / 256, minimum=4096, from_rows=65536),
    # Identify's tail model of normalised impostor scores, all five populations pooled
    # (uv run python -m benchmarks.calibration.face_population); kept-apart and fused templates alike.
    score_models=(ScoreModel(tail_start=2.25182, tail_rate=0.01, shape=0.0, scale=0.378405, genuine_quantiles=(-0.90337, 4.94559, 5.67032, 6.10799, 6.45896, 6.77198, 7.11405, 7.3945, 7.6402, 7.89375, 8.15574, 8.39966, 8.65973, 8.94221, 9.24526, 9.55679, 9.8871, 10.30402, 10.83318, 11.66989, 16.89725)),
                  None),
)

PROFILES: dict[str, ProtectionProfile] = {
    p.name: p for p in (FACE_IOM_V1, FACE_IOM_V2, FACE_IOM_V3, FINGER_IOM_V1, FINGER_MCC2_V2, FINGER_MCC_V3, FINGER_LEADER_V4,
                        FINGER_LEADER_V5, FINGER_LEADER_V6, FACE_SFACE_V1)
}

# The profile new templates are made with, per modality.
CURRENT: dict[int, ProtectionProfile] = {FACE: FACE_SFACE_V1, FINGERPRINT: FINGER_LEADER_V6}
