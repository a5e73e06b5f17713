"""Named, versioned protection profiles: one parameter set per modality.

A stored template records the profile name it was made with; a profile is never edited once
templates exist under it. Changing parameters means a new name (face-iom-v2) and re-enrolment.

Thresholds are on the IoM agreement score (fraction of equal hash indices, 0..1) and are set for
an operating false-match rate; `calibration` says on which data and with which command.
"""

from __future__ import annotations

from dataclasses import dataclass

from vault.hazmat.iom import bit_planes

FACE = 1  # vault.v1.Modality values
FINGERPRINT = 2


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
    # that sets it binds each template's sample count to its sealed code (vault.protection).
    fused_threshold: float | None = None

    def threshold_for(self, sample_count: int) -> float:
        """The decision threshold of a template enrolled from `sample_count` samples."""
        if sample_count > 1 and self.fused_threshold is not None:
            return self.fused_threshold
        return self.threshold

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
    calibration=(
        "FMR 1e-3 on the impostor pairs of the LFW subset's first 290 identities (3 fresh keys); "
        "held out: LFW other 290 identities GAR 0.864 at FMR 4.9e-4, ORL GAR 0.990 at FMR 2.5e-3. "
        "uv run python -m benchmarks.calibrate"
    ),
)

FACE_IOM_V2 = ProtectionProfile(
    name="face-iom-v2",
    modality=FACE,
    feature_dim=128,
    hash_count=4096,  # tuned (benchmarks/results/tune.md): closest to raw dlib cosine within 1 KiB
    hash_width=4,
    threshold=3206 / 4096,
    operating_fmr=1e-3,
    calibration=(
        "FMR 1e-3 on the impostor pairs of the LFW subset's first 290 identities (5 fresh keys); "
        "held out: LFW other 290 identities GAR 0.936 at FMR 1.3e-3, ORL GAR 0.996 at FMR 4.7e-3. "
        "uv run python -m benchmarks.calibrate --keys 5"
    ),
)

FINGER_IOM_V1 = ProtectionProfile(
    name="finger-iom-v1",
    modality=FINGERPRINT,
    feature_dim=1024,  # vault.features.fingerprint.FEATURE_DIM
    hash_count=1024,
    hash_width=8,
    threshold=244 / 1024,
    operating_fmr=1e-3,
    calibration=(
        "FMR 1e-3 on FVC2000 DB1-DB3 all-pairs impostors (3 fresh keys). Held out, FVC2002 single "
        "impression pairs: genuine accept DB1 0.33, DB2 0.42, DB3 0.18 at FMR <= 2.3e-4. A baseline "
        "representation, far below bozorth3; issue 5 replaces it. uv run python -m benchmarks.calibrate"
    ),
    retired=True,  # replaced by finger-mcc2-v2 (new feature vector): re-enrol
)

FINGER_MCC2_V2 = ProtectionProfile(
    name="finger-mcc2-v2",
    modality=FINGERPRINT,
    feature_dim=2048,  # vault.features.fingerprint.FEATURE_DIM: MCC second-order pooling + triplets
    hash_count=2048,
    hash_width=4,
    threshold=677 / 2048,
    operating_fmr=1e-3,
    calibration=(
        "FMR 1e-3 on FVC2000 DB1-DB3 all-pairs impostors (3 fresh keys; the MCC PCA basis is also fitted "
        "on FVC2000). Held out, FVC2002 single-impression pairs: genuine accept DB1 0.63, DB2 0.79, "
        "DB3 0.42 at FMR <= 1.2e-3. uv run python -m benchmarks.calibrate"
    ),
    retired=True,  # replaced by finger-mcc-v3 (new feature vector): re-enrol
)

FINGER_MCC_V3 = ProtectionProfile(
    name="finger-mcc-v3",
    modality=FINGERPRINT,
    # vault.features.fingerprint.FEATURE_DIM: second-order pooling of 160-D MCC codes + triplets
    feature_dim=13752,
    # q=2 (sign random projections): at 1-2 KiB it matched or beat q=4 and q=8 at equal size
    # (5 keys, benchmarks/fingerprint_mcc.py); 2 KiB has 1/sqrt(2) the hashing noise of 1 KiB
    hash_count=16384,
    hash_width=2,
    threshold=8726 / 16384,
    operating_fmr=1e-3,
    calibration=(
        "FMR 1e-3 on FVC2000 DB1-DB3 all-pairs impostors (5 fresh keys; the MCC PCA basis is also fitted "
        "on FVC2000; three runs gave 8712-8726). Held out, FVC2002 single-impression pairs: genuine accept "
        "DB1 0.83 at FMR 1.6e-3, DB2 0.93 at 5.6e-4, DB3 0.65 at 6.9e-4. "
        "uv run python -m benchmarks.calibrate --only finger --keys 5"
    ),
    projection="hadamard",  # a dense bank would be 13752 x 32768 floats (1.7 GiB) per tenant
    retired=True,  # replaced by finger-leader-v4 (LEADER minutiae, new basis): re-enrol
)

FINGER_LEADER_V4 = ProtectionProfile(
    name="finger-leader-v4",
    modality=FINGERPRINT,
    # vault.features.fingerprint.FEATURE_DIM: finger-mcc-v3's vector, on LEADER minutiae and a
    # basis fitted on them (vault/models/finger-leader-pca160-v1.npz)
    feature_dim=13752,
    hash_count=16384,
    hash_width=2,
    # Just above every impostor score seen in calibration (benchmarks/fingerprint_operating_point.py)
    threshold=8975 / 16384,
    fused_threshold=9141 / 16384,
    operating_fmr=1e-3,
    calibration=(
        "Just above every impostor score of FVC2000 and FVC2002 DB1-DB3 (real) and FVC2000 DB4 "
        "(synthetic) probes, 5 fresh keys, one-touch and fused templates apart; basis fitted on FVC2000 "
        "DB1-DB3. Leave one sensor out, false-match rate <= 1.4e-4 (one touch) and <= 4.4e-4 (three); "
        "held-out FVC2002 DB4 synthetic probes <= 7.5e-4 against one-touch templates, 7.7e-3 against "
        "FVC2000 DB3's fused ones. uv run python -m benchmarks.fingerprint_operating_point"
    ),
    projection="hadamard",
)

PROFILES: dict[str, ProtectionProfile] = {
    p.name: p for p in (FACE_IOM_V1, FACE_IOM_V2, FINGER_IOM_V1, FINGER_MCC2_V2, FINGER_MCC_V3, FINGER_LEADER_V4)
}

# The profile new templates are made with, per modality.
CURRENT: dict[int, ProtectionProfile] = {FACE: FACE_IOM_V2, FINGERPRINT: FINGER_LEADER_V4}
