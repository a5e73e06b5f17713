"""Fast tier: the face quality gate (vault.features.face.check_quality) on real images, in process."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tests.conftest import read
from vault import images
from vault.exceptions import PoorSample
from vault.features import face


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
