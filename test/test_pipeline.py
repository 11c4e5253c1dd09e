"""The shared pipeline on real footage, with the CNN-LSTM, and a bounded soak test."""

import tracemalloc

import numpy as np
import pytest

from conftest import footage
from fer_ros.classification import EmotionClassifier
from fer_ros.detection import BlazeFaceDetector, FaceDetection
from fer_ros.pipeline import EmotionPipeline, PipelineConfig
from fer_ros.video_io import FrameSource


class RandomFaces:
    """Detector stand-in for the soak test: faces appear, move and vanish."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.faces = []

    def detect(self, image, bgr=True):
        if self.rng.random() < 0.05 or not self.faces:
            self.faces = [(self.rng.uniform(0, 500), self.rng.uniform(0, 350))
                          for _ in range(self.rng.integers(0, 7))]
        else:
            self.faces = [(x + self.rng.normal(0, 2), y + self.rng.normal(0, 2))
                          for x, y in self.faces if self.rng.random() > 0.01]
        return [FaceDetection(max(0.0, x), max(0.0, y), 60, 60, 0.9) for x, y in self.faces]


@pytest.fixture(scope="module")
def tiny_dynamic(tiny_model_paths, tmp_path_factory):
    keras = pytest.importorskip("keras")
    from fer_ros.sequence import SequenceClassifier
    from training.export import export_sequence_tflite
    from training.models import build_cnn_lstm

    classifier = EmotionClassifier.load(tiny_model_paths["tflite"])
    keras.utils.set_random_seed(0)
    model = build_cnn_lstm(classifier.feature_size, 3, sequence_length=10, lstm_units=4,
                           dense_units=8)
    path = export_sequence_tflite(model, tmp_path_factory.mktemp("seq") / "lstm.tflite",
                                  {"labels": list(classifier.labels)})
    return classifier, SequenceClassifier.load(path)


def test_real_footage_gives_dynamic_predictions_and_stability(tiny_dynamic):
    classifier, dynamic = tiny_dynamic
    config = PipelineConfig(dynamic_min_frames=10, dynamic_stride=5)
    pipeline = EmotionPipeline(classifier, BlazeFaceDetector(), config, dynamic)
    source = FrameSource(str(footage("WolfgangLanger_Pexels.mp4")), (640, 360))
    results = [pipeline.process(frame.image, frame.time_s)
               for frame, _ in zip(source.frames(), range(60))]
    faces = [r.faces[0] for r in results if r.faces]
    assert len(faces) >= 55
    assert all(f.stability.samples >= 1 for f in faces)
    first_dynamic = next(i for i, f in enumerate(faces) if f.dynamic_probabilities is not None)
    assert first_dynamic == 9   # the 10th frame of the face
    assert all(f.dynamic_label in classifier.labels for f in faces[first_dynamic:])
    assert faces[-1].sequence_length == 10
    assert len({f.face_id for f in faces}) == 1


def test_pipeline_with_the_shipped_model_tracks_one_face():
    classifier = EmotionClassifier.load("3class")
    pipeline = EmotionPipeline(classifier, BlazeFaceDetector())
    source = FrameSource(str(footage("single_face.mp4")))
    results = [pipeline.process(f.image, f.time_s) for f in source.frames()]
    assert len(results) == 72
    assert sum(len(r.faces) == 1 for r in results) >= 65
    assert len({f.face_id for r in results for f in r.faces}) <= 2


def test_soak_state_and_memory_stay_bounded(tiny_dynamic):
    classifier, dynamic = tiny_dynamic
    config = PipelineConfig(track_max_age_s=0.5, stability_window_s=2.0,
                            dynamic_min_frames=5, dynamic_stride=3)
    pipeline = EmotionPipeline(classifier, RandomFaces(), config, dynamic)
    frame = np.zeros((420, 560, 3), np.uint8)
    sizes, memory = [], []
    tracemalloc.start()
    for i in range(3000):
        result = pipeline.process(frame, i / 30.0)
        assert len(result.faces) <= 6
        if i % 500 == 499:
            sizes.append(pipeline.state_size)
            memory.append(tracemalloc.get_traced_memory()[0])
    tracemalloc.stop()
    seen = int(pipeline.tracker.tracks and max(int(t.split("_")[1])
                                               for t in pipeline.tracker.tracks))
    assert seen > 100   # many faces came and went
    for size in sizes:
        assert max(size.values()) <= 6 + 6   # live faces + those not yet expired
    # Memory after 1000 frames vs after 3000 frames: no growth with time.
    assert memory[-1] < memory[1] * 1.5 + 1_000_000


def test_overlay_draws_every_face_inside_the_image(tiny_model_paths):
    import cv2

    from fer_ros.overlay import draw_overlay

    classifier = EmotionClassifier.load(tiny_model_paths["tflite"])
    pipeline = EmotionPipeline(classifier, BlazeFaceDetector())
    image = cv2.resize(cv2.imread(str(footage("group6.jpg"))), (640, 443))
    result = pipeline.process(image, 0.0)
    overlay = draw_overlay(image, result)
    assert overlay.shape == image.shape and len(result.faces) == 6
    assert not np.array_equal(overlay, image)
    for face in result.faces:   # each box outline is drawn in the label's colour
        x, y = int(round(face.detection.x)), int(round(face.detection.y + 5))
        assert not np.array_equal(overlay[y, x], image[y, x])


class NoDetector:
    """Detector stand-in for crops from another detector: must never be called."""

    def detect(self, image, bgr=True):
        raise AssertionError("process_crops must not detect faces")


def ros4hri_face_crop(image, box, side=128):
    """Cut a face box and letterbox it into a square, as hri_face_detect's 'cropped'."""
    import cv2

    x, y, w, h = (int(round(v)) for v in box)
    face = image[max(0, y):y + h, max(0, x):x + w]
    scale = side / max(face.shape[:2])
    face = cv2.resize(face, None, fx=scale, fy=scale)
    out = np.zeros((side, side, 3), np.uint8)
    top, left = (side - face.shape[0]) // 2, (side - face.shape[1]) // 2
    out[top:top + face.shape[0], left:left + face.shape[1]] = face
    return out


@pytest.fixture(scope="module")
def face_crop():
    import cv2

    image = cv2.imread(str(footage("single_face.jpg")))
    detections = BlazeFaceDetector().detect(image, bgr=True)
    assert len(detections) == 1
    return ros4hri_face_crop(image, detections[0].box)


def test_process_crops_keys_state_by_the_given_ids_and_forgets_faces_that_left(face_crop):
    from fer_ros.pipeline import FaceCrop, load_dynamic

    classifier = EmotionClassifier.load("3class")
    dynamic = load_dynamic("auto", "3class", threads=1)
    assert dynamic is not None
    config = PipelineConfig(smoothing_time_constant_s=0.3, dynamic_min_frames=3,
                            dynamic_stride=1)
    pipeline = EmotionPipeline(classifier, NoDetector(), config, dynamic)
    mirrored = np.ascontiguousarray(face_crop[:, ::-1])
    for step in range(4):
        results = pipeline.process_crops([FaceCrop("f00001", face_crop, 10.0 + 0.1 * step),
                                          FaceCrop("f00002", mirrored, 10.0 + 0.1 * step)],
                                         tracked_ids=["f00001", "f00002"])
        assert [r.face_id for r in results] == ["f00001", "f00002"]
        for result in results:
            assert result.tracked_seconds == pytest.approx(0.1 * step)
            assert result.stability.samples == step + 1
            assert result.label in classifier.labels and -1.0 <= result.valence <= 1.0
            assert (result.dynamic_probabilities is not None) == (step >= 2)
    assert results[0].detection.box == (0.0, 0.0, 128.0, 128.0)

    # Smoothing continues under the id: a darker crop of f00001 is pulled
    # towards its history, while a new face shows that crop's own output.
    darker = (face_crop // 3).astype(np.uint8)
    again, fresh = pipeline.process_crops([FaceCrop("f00001", darker, 10.4),
                                           FaceCrop("f00003", darker, 10.4)], ["f00002"])
    assert np.allclose(fresh.smoothed_probabilities, fresh.probabilities)
    assert np.allclose(again.probabilities, fresh.probabilities, atol=1e-5)
    assert not np.allclose(again.smoothed_probabilities, again.probabilities, atol=1e-3)

    # f00001 and f00003 leave the tracked list: their state goes, f00002's stays.
    assert pipeline.process_crops([], tracked_ids=["f00002"]) == []
    assert pipeline.state_size["crop_faces"] == 1
    assert pipeline.stability.faces == ["f00002"] and pipeline.features.faces == ["f00002"]
    back, = pipeline.process_crops([FaceCrop("f00001", face_crop, 11.0)], ["f00002"])
    assert back.tracked_seconds == 0.0 and back.stability.samples == 1
    assert back.sequence_length == 1 and back.dynamic_probabilities is None
    pipeline.reset()
    assert set(pipeline.state_size.values()) == {0}


def test_process_crops_refuses_two_crops_of_one_face_and_empty_crops(face_crop):
    from fer_ros.pipeline import FaceCrop

    pipeline = EmotionPipeline(EmotionClassifier.load("3class"), NoDetector())
    with pytest.raises(ValueError, match="one crop per face"):
        pipeline.process_crops([FaceCrop("a", face_crop, 0.0), FaceCrop("a", face_crop, 0.0)],
                               [])
    with pytest.raises(ValueError, match="face b: empty crop"):
        pipeline.process_crops([FaceCrop("b", face_crop[:0], 0.0)], [])
    gray, = pipeline.process_crops([FaceCrop("c", face_crop[:, :, 0], 0.0)], [])
    assert gray.label in pipeline.classifier.labels
