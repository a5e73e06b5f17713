"""Fast tier: SFace as the service runs it (OpenVINO, weights decoded once by
vault.intake.features.float_weights) gives OpenCV's own embeddings, on real faces of every shared
population set."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import read
from vault.intake import images
from vault.intake.features import sface

FACES = [("orl", "s1", "1.pgm"), ("orl", "s7", "4.pgm"), ("lfw",), ("jaffe",), ("casia_face_v5",), ("kpop",)]


def _first_photo(*parts: str) -> bytes:
    if len(parts) == 3:
        return read("face", *parts)
    from benchmarks.data import FACE_SETS

    return FACE_SETS[parts[0]]().samples[0].path.read_bytes()


@pytest.mark.parametrize("where", FACES, ids=lambda where: "/".join(where))
def test_openvino_embedding_is_opencvs(where):
    rgb = images.decode_face(_first_photo(*where))
    faces = sface.detect(rgb)
    crop = sface.aligned_face(rgb, faces[sface.choose_face(faces, *rgb.shape[:2])])
    by_opencv = np.asarray(sface.networks().recognizer.feature(crop), np.float32).reshape(-1)
    by_service = sface.networks().embed(crop)
    assert by_service.shape == (sface.FEATURE_DIM,) and by_service.dtype == np.float32
    # Float rounding apart (measured: at most 6.2e-6 per value over every shared face).
    np.testing.assert_allclose(by_service, by_opencv, atol=1e-4)
    cosine = by_service @ by_opencv / np.linalg.norm(by_service) / np.linalg.norm(by_opencv)
    assert cosine > 0.99999


def test_the_folded_model_holds_no_int8_weight_decoding():
    import onnx

    from vault.intake.features.float_weights import FOLDED, float_weights_model

    model = onnx.load_from_string(float_weights_model(sface.model_path("recognizer")))
    assert not [node.op_type for node in model.graph.node if node.op_type in FOLDED]
    assert [value.name for value in model.graph.input] == ["data"]
