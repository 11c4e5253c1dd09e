"""BlazeFace detector: anchors, NMS and real images."""

import cv2
import numpy as np
import pytest

from conftest import footage
from fer_ros.detection import (BlazeFaceDetector, DetectorError, FaceDetection, box_iou,
                               ssd_anchors, weighted_nms)


def test_anchor_counts_match_mediapipe():
    assert len(ssd_anchors(128, (8, 16, 16, 16), True)) == 896
    assert len(ssd_anchors(192, (4,), False)) == 2304
    anchors = ssd_anchors(128, (8, 16, 16, 16), True)
    assert anchors.min() > 0 and anchors.max() < 1


def test_weighted_nms_merges_overlaps_and_keeps_separate_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.6, 0.8], np.float32)
    merged, kept = weighted_nms(boxes, scores, 0.3)
    assert len(merged) == 2 and kept.tolist() == pytest.approx([0.9, 0.8])
    assert merged[0][0] == pytest.approx(0.6 / 1.5)   # score-weighted x0


def test_box_iou():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], float)
    assert box_iou(a, b)[0].tolist() == pytest.approx([1.0, 1 / 3, 0.0])


def test_detection_validates_its_box():
    with pytest.raises(ValueError):
        FaceDetection(0, 0, 0, 10, 0.5)
    with pytest.raises(ValueError):
        FaceDetection(0, 0, 10, 10, 1.5)


def test_missing_weights_give_a_clear_error(tmp_path):
    with pytest.raises(DetectorError, match="weights missing"):
        BlazeFaceDetector(weights_dir=tmp_path)


def test_bad_frames_are_rejected():
    detector = BlazeFaceDetector()
    with pytest.raises(ValueError, match="expected a"):
        detector.detect(np.zeros((10, 10), np.uint8))


def resized(name, width=640):
    image = cv2.imread(str(footage(name)))
    scale = width / image.shape[1]
    return cv2.resize(image, (width, round(image.shape[0] * scale)))


def test_group_photo_has_six_faces():
    faces = BlazeFaceDetector("full_range").detect(resized("group6.jpg"))
    assert len(faces) == 6
    assert all(f.width > 30 for f in faces)


def test_single_face_and_no_face():
    detector = BlazeFaceDetector("full_range")
    faces = detector.detect(resized("single_face.jpg"))
    assert len(faces) == 1 and faces[0].score > 0.7
    blank = np.full((480, 640, 3), 127, np.uint8)
    assert detector.detect(blank) == []


def test_rgb_and_bgr_input_agree():
    detector = BlazeFaceDetector("full_range")
    image = resized("astronaut.png")
    bgr = detector.detect(image, bgr=True)
    rgb = detector.detect(np.ascontiguousarray(image[:, :, ::-1]), bgr=False)
    assert len(bgr) == len(rgb) == 1
    assert bgr[0].box == pytest.approx(rgb[0].box)


def test_faceless_title_frames_are_not_faces():
    # no_face.mp4 has cartoon lettering the full-range model scores up to ~0.6;
    # the short-range verification step must reject it.
    capture = cv2.VideoCapture(str(footage("no_face.mp4")))
    detector = BlazeFaceDetector("full_range")
    found = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        found += len(detector.detect(frame))
    assert found == 0


def test_verification_can_be_disabled():
    detector = BlazeFaceDetector("full_range", verify_min_score=0.0)
    assert detector._verifier is None
