"""What a template is of: the modalities (vault.v1.Modality values) and the feature extractors that
read them. Extraction, protection profiles, the core and the metrics all name them from here.
"""

FACE = 1  # vault.v1.Modality values
FINGERPRINT = 2
MODALITY_NAMES = {FACE: "face", FINGERPRINT: "fingerprint"}  # for logs and metric labels

# Feature extractors, by the name profiles and extraction requests give them:
DLIB = "dlib"  # face_recognition's HOG detector and 128-D ResNet embedding (vault.intake.features.face)
SFACE = "sface"  # OpenCV Zoo's YuNet detector and 128-D SFace embedding (vault.intake.features.sface)
MINUTIAE = "minutiae"  # LEADER minutiae or an ISO/IEC 19794-2 record (vault.intake.features.fingerprint)

# The extractor of each modality's current protection profile (vault.templates.profiles.CURRENT, which a test
# holds to this): what extraction runs when a request names none.
CURRENT_EXTRACTORS = {FACE: SFACE, FINGERPRINT: MINUTIAE}
