"""Faces in published and written images are pixelated beyond recognition."""

import cv2
import numpy as np
import pytest

from conftest import footage
from fer_ros.detection import create_detector
from fer_ros.overlay import draw_overlay, pixelate_faces
from fer_ros.pipeline import FaceResult, FrameResult
from fer_ros.stability import StabilityValues


def laplacian_correlation(original, output, box):
    """Correlation of the two images' Laplacians over the inner 60% of a face box."""
    x, y, w, h = box
    x0, y0, x1, y1 = int(x + 0.2 * w), int(y + 0.2 * h), int(x + 0.8 * w), int(y + 0.8 * h)

    def laplacian(image):
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[y0:y1, x0:x1].astype(np.float32)
        return cv2.Laplacian(gray, cv2.CV_32F).ravel()
    a, b = laplacian(original), laplacian(output)
    if b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


@pytest.fixture(scope="module")
def group():
    image = cv2.imread(str(footage("group6.jpg")))
    return image, create_detector().detect(image)


def test_pixelated_faces_keep_no_fine_detail(group):
    image, faces = group
    assert len(faces) == 6
    out = image.copy()
    pixelate_faces(out, [face.box for face in faces])
    for face in faces:
        assert laplacian_correlation(image, out, face.box) < 0.2
    # The metric itself sees an unblurred, re-encoded face as the same face.
    _, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    reencoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    assert all(laplacian_correlation(image, reencoded, f.box) > 0.7 for f in faces)
    # Outside the faces (and their margins) the image is untouched.
    assert np.array_equal(out[:20, :20], image[:20, :20])


def fake_result(faces):
    stability = StabilityValues(1.0, 0.0, 0.0, 1)
    return FrameResult(0.0, [
        FaceResult(f"face_{i}", face, np.array([0.2, 0.3, 0.5], np.float32),
                   np.array([0.2, 0.3, 0.5], np.float32), "positive", "positive", 0.5, 0.3,
                   0.0, stability) for i, face in enumerate(faces)], len(faces))


def test_overlay_blurs_faces_when_asked_and_keeps_its_boxes(group):
    image, faces = group
    blurred = draw_overlay(image, fake_result(faces), blur_faces=True)
    plain = draw_overlay(image, fake_result(faces), blur_faces=False)
    for face in faces:
        assert laplacian_correlation(image, blurred, face.box) < 0.2
    # Unblurred, the faces stay (but for neighbours' captions drawn over some).
    assert sum(laplacian_correlation(image, plain, f.box) > 0.7 for f in faces) >= 4
    x, y, w, h = (int(v) for v in faces[0].box)
    assert np.array_equal(blurred[y, x + w // 2], plain[y, x + w // 2])  # the box line


# --- re-identification through the pipeline --------------------------------------

def frames_with_gaps(video, gaps_s, fps_step=2):
    """Frames of ``video`` (every ``fps_step``-th) with the person away for each gap.

    The person leaves after each third of the clip: frames inside a gap are
    replaced by an empty grey frame of the same stamp range.
    """
    from fer_ros.video_io import FrameSource

    source = FrameSource(str(video))
    frames = [(f.time_s, f.image) for f in source.frames() if f.index % fps_step == 0]
    source.close()
    blank = np.full_like(frames[0][1], 128)
    out, shift = [], 0.0
    cut_points = [frames[len(frames) * (i + 1) // (len(gaps_s) + 1)][0]
                  for i in range(len(gaps_s))]
    for time_s, image in frames:
        for cut, gap in zip(cut_points, gaps_s):
            if time_s >= cut and shift < sum(gaps_s[:cut_points.index(cut) + 1]):
                for k in np.arange(0.0, gap, 0.25):
                    out.append((time_s + shift + k, blank))
                shift += gap
        out.append((time_s + shift, image))
    return out


@pytest.mark.slow
def test_pipeline_keeps_one_person_across_two_and_ten_second_absences():
    from fer_ros.pipeline import build_pipeline

    pipeline, _ = build_pipeline({"reidentify": True, "dynamic_model": "auto",
                                  "test_time_views": "none"})
    results = [pipeline.process(image, stamp) for stamp, image in
               frames_with_gaps(footage("WolfgangLanger_Pexels.mp4"), [2.0, 10.0], 4)]
    faces = [face for result in results for face in result.faces]
    assert len({face.face_id for face in faces}) >= 3  # the tracker lost her twice
    assert {face.person_id for face in faces} == {"person_1"}
    # Her stability window and CNN-LSTM buffer continued across the absences.
    after = [face for face in faces if face.face_id != faces[0].face_id]
    assert after[0].sequence_length > 1 and after[0].stability.samples >= 1


def test_reidentification_off_gives_no_person_ids_and_drops_ended_tracks(tiny_model_paths):
    from fer_ros.pipeline import build_pipeline

    pipeline, _ = build_pipeline({"model": str(tiny_model_paths["tflite"]),
                                  "dynamic_model": "none"})
    assert pipeline.persons is None
    image = cv2.imread(str(footage("single_face.jpg")))
    face = pipeline.process(image, 0.0).faces[0]
    assert face.person_id == "" and face.state_key == face.face_id
    pipeline.process(np.full_like(image, 128), 5.0)
    assert pipeline.state_size["stability"] == 0
