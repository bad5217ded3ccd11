"""benchmarks/student_vs_teacher.py: the released model's speed claim against the dlib teacher
(figures of one quick run on a freshly initialised tiny SavedModel; speed is not asserted)."""

import numpy as np
import pytest

from benchmarks import deploy, student_vs_teacher
from tests import _folder_fixtures as ff


@pytest.mark.slow  # the MTCNN detector and dlib load in the measured process: about a minute
def test_figures_are_the_teacher_over_the_student_per_face(tmp_path):
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    model = deploy.initialised_saved_model(str(tmp_path), "tiny", 32, embedding_size=16)
    photos = tmp_path / "photos"
    ff.make_face_tree(str(photos), [2], size=64)
    figures = student_vs_teacher.measure(model, photos=str(photos), rounds=1, calls=2,
                                         photo_limit=2)
    assert figures["input_size"] == 32 and figures["photos"] == 2
    for name in ("teacher_network", "student_savedmodel", "teacher_photo", "student_photo"):
        assert figures[f"{name}_ms"] > 0
    # The speed-up is the teacher's milliseconds over the student's (rounded figures).
    np.testing.assert_allclose(figures["student_savedmodel_speedup"],
                               figures["teacher_network_ms"] / figures["student_savedmodel_ms"],
                               rtol=0.02)
    np.testing.assert_allclose(figures["photo_speedup"],
                               figures["teacher_photo_ms"] / figures["student_photo_ms"],
                               rtol=0.02)
    assert "student_onnx_ms" not in figures  # no model.onnx beside this SavedModel
    assert figures["machine"]["cpus"] >= 1
