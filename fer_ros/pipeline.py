"""The per-frame FER pipeline shared by the ROS node and the offline CLIs.

detect faces -> track (stable ids) -> crop 48x48 gray -> classify every
face in one batch -> smooth per track -> stability per track -> buffer
features and run the CNN-LSTM when a face is due.  Pure Python: no rclpy.
:func:`build_pipeline` creates it from the fer node's parameter values
(:mod:`fer_ros.parameters`), for the node and the CLIs alike.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import (Any, Dict, Iterable, List, Mapping, Optional, Protocol, Sequence,
                    Tuple)

import numpy as np

from fer_ros.classification import SHIPPED_MODELS, WEIGHTS_DIR, EmotionClassifier
from fer_ros.detection import FaceDetection, FaceDetector, create_detector
from fer_ros.identity import PersonRegistry
from fer_ros.labels import valence_of
from fer_ros.model_files import ModelLoadError, file_fingerprint
from fer_ros.parameters import TEST_TIME_VIEWS, default_of, defaults
from fer_ros.preprocessing import crop_faces, to_gray
from fer_ros.sequence import FeatureBuffer, SequenceClassifier
from fer_ros.stability import StabilityMeter, StabilityValues
from fer_ros.tracking import FaceTracker


class DynamicClassifier(Protocol):
    """A sequence model over per-frame face features (the CNN-LSTM)."""

    labels: Tuple[str, ...]
    sequence_length: int
    feature_size: int

    def predict_sequences(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities [B, len(labels)] for B feature sequences."""


@dataclass
class PipelineConfig:
    """Tunables of :class:`EmotionPipeline`, with the fer node's defaults.

    Each field is the fer node parameter of the same name.

    :param crop_margin: context around each face box, share of its side.
    :param max_faces: at most this many faces (largest first) per frame.
    :param tracker_min_iou: smallest IoU to continue a track, 0..1.
    :param track_max_age_s: a face unseen this long loses its id, seconds.
    :param smoothing_time_constant_s: time constant of the per-track
        exponential moving average of probabilities; 0 disables smoothing.
    :param stability_window_s: window T of the stability metrics, seconds.
    :param dynamic_min_frames: frames a face needs before the CNN-LSTM runs.
    :param dynamic_stride: run the CNN-LSTM every this many new frames.
    """

    crop_margin: float = default_of("crop_margin")
    max_faces: int = default_of("max_faces")
    tracker_min_iou: float = default_of("tracker_min_iou")
    track_max_age_s: float = default_of("track_max_age_s")
    smoothing_time_constant_s: float = default_of("smoothing_time_constant_s")
    stability_window_s: float = default_of("stability_window_s")
    dynamic_min_frames: int = default_of("dynamic_min_frames")
    dynamic_stride: int = default_of("dynamic_stride")

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "PipelineConfig":
        """Take the fields from parameter values (missing ones keep the defaults)."""
        config = cls()
        for item in dataclasses.fields(cls):
            if item.name in values:
                setattr(config, item.name, type(getattr(config, item.name))(values[item.name]))
        return config


#: Context added around a face crop made by another detector (ROS4HRI
#: ``cropped`` / ``aligned`` images), share of its side: none, because the
#: crop is all there is of the image.
EXTERNAL_CROP_MARGIN = 0.0


@dataclass
class FaceCrop:
    """A face image that another detector cut out (a ROS4HRI face crop).

    :param face_id: that detector's id of the face, e.g. ``"f00003"``.
    :param image: the crop, uint8 BGR/BGRA/gray, any size.
    :param stamp: acquisition time of the frame it was cut from, seconds.
    """

    face_id: str
    image: np.ndarray
    stamp: float


@dataclass
class FaceResult:
    """Everything the pipeline knows about one face in one frame."""

    face_id: str
    detection: FaceDetection
    probabilities: np.ndarray
    smoothed_probabilities: np.ndarray
    label: str
    frame_label: str
    confidence: float
    valence: float
    tracked_seconds: float
    stability: StabilityValues
    sequence_length: int = 0
    dynamic_probabilities: Optional[np.ndarray] = None
    dynamic_label: str = ""
    person_id: str = ""

    @property
    def state_key(self) -> str:
        """Return the key of the face's temporal state: its person, else its track."""
        return self.person_id or self.face_id


@dataclass
class FrameResult:
    """The pipeline's output for one frame.

    :param stamp: frame time, seconds.
    :param faces: one entry per detected face, in detection order.
    :param tracked_faces: live tracks, including briefly undetected faces.
    :param timings_ms: wall time of each stage, milliseconds.
    """

    stamp: float
    faces: List[FaceResult]
    tracked_faces: int
    timings_ms: Dict[str, float] = field(default_factory=dict)

    def _mean(self, values: List[float], without_faces: float) -> float:
        return float(np.mean(values)) if self.faces else without_faces

    @property
    def mean_stability(self) -> float:
        """Mean stability over the faces (1.0 without faces)."""
        return self._mean([f.stability.stability for f in self.faces], 1.0)

    @property
    def mean_label_change_rate(self) -> float:
        """Mean label-change rate over the faces, changes per second."""
        return self._mean([f.stability.label_change_rate for f in self.faces], 0.0)

    @property
    def mean_valence_mssd(self) -> float:
        """Mean valence MSSD over the faces."""
        return self._mean([f.stability.valence_mssd for f in self.faces], 0.0)

    @property
    def group_valence(self) -> float:
        """Mean valence over the faces (0.0 without faces)."""
        return self._mean([f.valence for f in self.faces], 0.0)


class EmotionPipeline:
    """Detect, track and classify every face of a stream of frames.

    :param classifier: the static emotion CNN.
    :param detector: the face detector.
    :param config: tunables.
    :param dynamic: optional CNN-LSTM over each face's recent features.
    :param persons: optional re-identification.  With it each face carries a
        ``person_id`` that outlives its track, and the face's temporal state
        (smoothing, stability window, CNN-LSTM buffer) belongs to the person:
        after a gap of any length the person's state continues where it
        stopped (the stability window T drops samples older than T by their
        stamps; the CNN-LSTM buffer keeps the person's last frames, so a
        sequence may span the gap).  State of people the registry forgot is
        dropped with them.
    """

    def __init__(self, classifier: EmotionClassifier, detector: FaceDetector,
                 config: Optional[PipelineConfig] = None,
                 dynamic: Optional[DynamicClassifier] = None,
                 persons: Optional[PersonRegistry] = None) -> None:
        self.classifier = classifier
        self.detector = detector
        self.config = config or PipelineConfig()
        self.dynamic = dynamic
        self.persons = persons
        if dynamic is not None and tuple(dynamic.labels) != tuple(classifier.labels):
            raise ValueError(f"CNN-LSTM labels {dynamic.labels} differ from the "
                             f"static model's {classifier.labels}")
        if dynamic is not None and dynamic.feature_size != classifier.feature_size:
            raise ValueError(f"CNN-LSTM expects {dynamic.feature_size} features per frame, "
                             f"the static model gives {classifier.feature_size}")
        self.tracker = FaceTracker(self.config.tracker_min_iou, self.config.track_max_age_s)
        self.stability = StabilityMeter(self.config.stability_window_s)
        self.features = FeatureBuffer(dynamic.sequence_length if dynamic else 1)
        self._smoothed: Dict[str, Tuple[float, np.ndarray]] = {}
        self._dynamic_last: Dict[str, np.ndarray] = {}
        self._crop_first_seen: Dict[str, float] = {}

    def reset(self) -> None:
        """Forget every face (ids are not reused)."""
        self.tracker.reset()
        self.stability.reset()
        self.features.reset()
        self._smoothed.clear()
        self._dynamic_last.clear()
        self._crop_first_seen.clear()

    @property
    def state_size(self) -> Dict[str, int]:
        """Sizes of the per-face state, for diagnostics and soak tests."""
        return {"tracks": len(self.tracker.tracks), "stability": len(self.stability.faces),
                "feature_buffers": len(self.features.faces),
                "smoothing": len(self._smoothed), "dynamic": len(self._dynamic_last),
                "crop_faces": len(self._crop_first_seen)}

    def process(self, bgr: np.ndarray, stamp: float) -> FrameResult:
        """Run the pipeline on one BGR uint8 frame taken at ``stamp`` seconds."""
        timings: Dict[str, float] = {}
        clock = time.perf_counter()
        detections = self.detector.detect(bgr, bgr=True)
        detections = sorted(detections, key=lambda d: d.width * d.height,
                            reverse=True)[:self.config.max_faces]
        timings["detect"] = _lap(clock)
        clock = time.perf_counter()
        update = self.tracker.update([d.box for d in detections], stamp)
        persons = self._identify(bgr, stamp, detections, update)
        faces = crop_faces(to_gray(bgr), [d.box for d in detections],
                           self.config.crop_margin)
        timings["track_crop"] = _lap(clock)
        clock = time.perf_counter()
        probabilities, features = self.classifier.predict(faces)
        timings["classify"] = _lap(clock)
        clock = time.perf_counter()
        results = [self._face_result(face_id, detection, probs, stamp,
                                     person_id=persons.get(face_id, ""))
                   for face_id, detection, probs in zip(update.face_ids, detections,
                                                        probabilities)]
        timings["temporal"] = _lap(clock)
        if self.dynamic is not None and len(results):
            clock = time.perf_counter()
            self._run_dynamic(results, features)
            timings["dynamic"] = _lap(clock)
        return FrameResult(stamp, results, len(self.tracker.tracks), timings)

    def process_crops(self, crops: Sequence[FaceCrop],
                      tracked_ids: Iterable[str]) -> List[FaceResult]:
        """Classify faces that another detector found and cropped (ROS4HRI).

        No detection and no tracking: each crop is one face, taken whole
        (margin :data:`EXTERNAL_CROP_MARGIN`) to 48x48 gray, and the crops
        are classified in one batch.  Smoothing, stability and the CNN-LSTM
        run per face as in :meth:`process`, keyed by the given ids and timed
        by each crop's own stamp.  The state of every face that is neither
        among the crops nor in ``tracked_ids`` is forgotten first, so a call
        without crops only forgets the faces that left.

        :param crops: at most one crop per face id.
        :param tracked_ids: the faces the detector still tracks (the crops'
            own ids need not be listed).
        :return: one result per crop, in order; ``detection`` is the whole
            crop with score 1.0 (the detector's score is not known).
        :raises ValueError: for two crops of one face or an empty crop.
        """
        ids = [crop.face_id for crop in crops]
        if len(set(ids)) != len(ids):
            raise ValueError(f"one crop per face, got face ids {ids}")
        keep = set(tracked_ids) | set(ids)
        gone = [face_id for face_id in self._crop_first_seen if face_id not in keep]
        self._forget(gone)
        for face_id in gone:
            del self._crop_first_seen[face_id]
        if not crops:
            return []
        probabilities, features = self.classifier.predict(
            np.stack([_crop_to_face_input(crop) for crop in crops]))
        results = []
        for crop, probs in zip(crops, probabilities):
            height, width = crop.image.shape[:2]
            first_seen = self._crop_first_seen.setdefault(crop.face_id, crop.stamp)
            results.append(self._face_result(
                crop.face_id, FaceDetection(0.0, 0.0, float(width), float(height), 1.0),
                probs, crop.stamp, first_seen))
        if self.dynamic is not None:
            self._run_dynamic(results, features)
        return results

    def _identify(self, bgr: np.ndarray, stamp: float, detections: Sequence[FaceDetection],
                  update: Any) -> Dict[str, str]:
        """Person of each tracked face (empty without re-identification); drop old state."""
        if self.persons is None:
            self._forget(update.ended)
            return {}
        persons = self.persons.update(
            stamp, bgr, {face_id: d.box for face_id, d in zip(update.face_ids, detections)},
            update.ended)
        keep = {person.person_id for person in self.persons.people()}
        stale = (set(self._smoothed) | set(self.stability.faces) | set(self.features.faces)
                 | set(self._dynamic_last)) - keep
        self._forget(sorted(stale))
        return persons

    def _face_result(self, face_id: str, detection: FaceDetection,
                     probs: np.ndarray, stamp: float,
                     first_seen: Optional[float] = None, person_id: str = "") -> FaceResult:
        labels = self.classifier.labels
        key = person_id or face_id
        smoothed = self._smooth(key, probs, stamp)
        frame_label = labels[int(np.argmax(probs))]
        best = int(np.argmax(smoothed))
        frame_valence = float(valence_of(probs, labels))
        stability = self.stability.update(key, stamp, frame_label, frame_valence)
        if first_seen is None:
            first_seen = self.tracker.tracks[face_id].first_seen
        return FaceResult(
            face_id=face_id, detection=detection, probabilities=probs,
            smoothed_probabilities=smoothed, label=labels[best], frame_label=frame_label,
            confidence=float(smoothed[best]), valence=float(valence_of(smoothed, labels)),
            tracked_seconds=float(stamp - first_seen), stability=stability,
            person_id=person_id)

    def _smooth(self, face_id: str, probs: np.ndarray, stamp: float) -> np.ndarray:
        tau = self.config.smoothing_time_constant_s
        previous = self._smoothed.get(face_id)
        if tau <= 0 or previous is None or stamp <= previous[0]:
            smoothed = probs.copy()
        else:
            alpha = 1.0 - math.exp(-(stamp - previous[0]) / tau)
            smoothed = (alpha * probs + (1.0 - alpha) * previous[1]).astype(np.float32)
        self._smoothed[face_id] = (stamp, smoothed)
        return smoothed

    def _run_dynamic(self, results: List[FaceResult], features: np.ndarray) -> None:
        assert self.dynamic is not None
        due: List[FaceResult] = []
        for result, vector in zip(results, features):
            result.sequence_length = self.features.append(result.state_key, vector)
            if self.features.due(result.state_key, self.config.dynamic_min_frames,
                                 self.config.dynamic_stride):
                due.append(result)
        if due:
            sequences = [self.features.sequence(r.state_key) for r in due]
            for result, probs in zip(due, self.dynamic.predict_sequences(sequences)):
                self._dynamic_last[result.state_key] = np.asarray(probs, np.float32)
        for result in results:
            last = self._dynamic_last.get(result.state_key)
            if last is not None:
                result.dynamic_probabilities = last
                result.dynamic_label = self.dynamic.labels[int(np.argmax(last))]

    def _forget(self, face_ids: List[str]) -> None:
        self.stability.drop(face_ids)
        self.features.drop(face_ids)
        for face_id in face_ids:
            self._smoothed.pop(face_id, None)
            self._dynamic_last.pop(face_id, None)


# --- building the pipeline from parameter values ----------------------------

def shipped_dynamic_path(static_model: str) -> Optional[Path]:
    """Return the shipped CNN-LSTM matching a shipped static model, if it exists."""
    name = SHIPPED_MODELS.get(static_model)
    path = WEIGHTS_DIR / f"{name}_lstm.tflite" if name else None
    return path if path is not None and path.is_file() else None


def load_dynamic(setting: str, static_model: str, threads: int
                 ) -> Optional[DynamicClassifier]:
    """Load the CNN-LSTM named by the ``dynamic_model`` parameter.

    :param setting: ``"auto"``, ``"none"`` or a model path.
    :param static_model: the ``model`` parameter (for ``"auto"``).
    :param threads: CPU threads.
    :return: the model, or None when disabled or (for "auto") not shipped.
    """
    if setting == "none":
        return None
    path = shipped_dynamic_path(static_model) if setting == "auto" else Path(setting)
    if path is None:
        return None
    return SequenceClassifier.load(path, threads=threads)


def check_dynamic_matches(dynamic: Optional[DynamicClassifier],
                          classifier: EmotionClassifier) -> None:
    """Refuse a CNN-LSTM trained on another static model's features.

    :raises ModelLoadError: when the sidecar names a different static model.
    """
    expected = getattr(dynamic, "info", {}).get("static_model_sha256") if dynamic else None
    if expected and expected != file_fingerprint(classifier.source):
        raise ModelLoadError(
            f"{getattr(dynamic, 'source', 'CNN-LSTM')}: trained on the features of another "
            f"static model than {classifier.source}; retrain it with training.train_lstm")


def build_pipeline(values: Optional[Mapping[str, Any]] = None
                   ) -> Tuple[EmotionPipeline, str]:
    """Create the pipeline from parameter values (missing ones take defaults).

    :param values: parameter name -> value (see :mod:`fer_ros.parameters`).
    :return: ``(pipeline, model name)``.
    :raises ModelLoadError, DetectorError: when a model cannot be loaded.
    """
    settings = defaults()
    settings.update(values or {})
    threads = int(settings["threads"])
    classifier = EmotionClassifier.load(settings["model"], threads=threads,
                                        **TEST_TIME_VIEWS[settings["test_time_views"]])
    detector = create_detector(settings["detector_model"],
                               float(settings["min_detection_score"]),
                               float(settings["min_face_size_px"]), threads=threads,
                               verify_min_score=float(settings["verify_min_score"]))
    dynamic = load_dynamic(settings["dynamic_model"], settings["model"], threads)
    check_dynamic_matches(dynamic, classifier)
    persons = build_person_registry(settings, detector)
    pipeline = EmotionPipeline(classifier, detector, PipelineConfig.from_values(settings),
                               dynamic, persons)
    return pipeline, Path(classifier.source).stem


def build_person_registry(settings: Mapping[str, Any], detector: FaceDetector
                          ) -> Optional[PersonRegistry]:
    """Create re-identification when ``reidentify`` is on, with the known people enrolled.

    :raises ModelLoadError: when the embedding model is missing.
    :raises EnrollmentError: for an unusable ``people_dir`` (one line naming the file).
    """
    if not settings["reidentify"]:
        return None
    from fer_ros.face_embedding import create_face_embedder

    registry = PersonRegistry(create_face_embedder())
    if settings["people_dir"]:
        people = Path(settings["people_dir"]).expanduser()
        if people.is_file():  # the people an earlier session saved
            registry.enroll_from_file(people)
        else:
            registry.enroll_from_folder(people, detector)
    return registry


def _crop_to_face_input(crop: FaceCrop) -> np.ndarray:
    """Turn a whole face crop into the CNN's 48x48 gray input."""
    height, width = crop.image.shape[:2]
    if not (height and width):
        raise ValueError(f"face {crop.face_id}: empty crop ({width}x{height})")
    return crop_faces(to_gray(crop.image), [(0, 0, width, height)], EXTERNAL_CROP_MARGIN)[0]


def _lap(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
