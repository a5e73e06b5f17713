"""Fast tier: the face quality gates (dlib's vault.intake.features.face and SFace's vault.intake.features.sface) on
real images, in process."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tests.conftest import read
from vault.intake import images
from vault.exceptions import PoorSample
from vault.intake.features import face, sface


def test_real_faces_pass_and_a_blurred_capture_is_refused_with_its_reason():
    photo = read("face", "orl", "s1", "1.pgm")
    vector, seen = face.face_features(images.decode_face(photo))
    assert vector.shape == (face.FEATURE_DIM,) and seen.faces_found == 1
    blurred = io.BytesIO()
    Image.open(io.BytesIO(photo)).filter(ImageFilter.GaussianBlur(2)).save(blurred, format="PNG")
    with pytest.raises(PoorSample, match="too blurred"):
        face.face_features(images.decode_face(blurred.getvalue()))


def test_the_turn_measure_is_small_for_real_faces_and_large_for_a_profile():
    import face_recognition

    rgb = images.decode_face(read("face", "orl", "s1", "1.pgm"))
    box = face_recognition.face_locations(rgb, number_of_times_to_upsample=1)[0]
    points = face_recognition.face_landmarks(rgb, [box], model="small")[0]
    assert face.turn(points) < face.MAX_YAW
    # The same landmarks with the nose tip where a profile puts it: beside one eye.
    profile = dict(points, nose_tip=[tuple(np.mean(points["right_eye"], axis=0) + (8, 20))])
    assert face.turn(profile) > face.MAX_YAW


def _png(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()


def _sface_refusal(rgb: np.ndarray) -> str:
    with pytest.raises(PoorSample) as refused:
        sface.face_features(images.decode_face(_png(rgb)))
    return str(refused.value)


def test_sface_gate_refuses_dark_side_lit_and_cut_faces_with_their_reasons_and_passes_the_photo():
    rgb = images.decode_face(read("face", "lfw", "Abdullah_Gul", "Abdullah_Gul_0001.jpg"))
    vector, seen = sface.face_features(rgb)
    assert vector.shape == (sface.FEATURE_DIM,) and seen.faces_found >= 1
    faces = sface.detect(rgb)
    x, y, w, h = faces[sface.choose_face(faces, *rgb.shape[:2])][:4]
    assert w > 0 and h > 0  # sizes in the image's pixels (padding shifts positions only)

    dark = (rgb.astype(np.float32) * 0.12).astype(np.uint8)
    assert "too dark" in _sface_refusal(dark)

    side_lit = rgb.astype(np.float32)
    side_lit[:, : int(x + w / 2)] *= 0.15  # the image's left of the nose line in shadow
    assert "in shadow" in _sface_refusal(side_lit.astype(np.uint8))

    cut = np.ascontiguousarray(rgb[:, : int(x + w * 0.62)])  # the frame's edge through the far cheek
    assert "runs off the edge" in _sface_refusal(cut)
