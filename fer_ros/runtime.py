"""Build the FER pipeline from parameter values (node and CLIs share this)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Tuple

from fer_ros.classification import SHIPPED_MODELS, WEIGHTS_DIR, EmotionClassifier
from fer_ros.model_files import ModelLoadError, file_fingerprint
from fer_ros.detection import create_detector
from fer_ros.parameters import TEST_TIME_VIEWS, defaults
from fer_ros.pipeline import DynamicClassifier, EmotionPipeline, PipelineConfig


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
    from fer_ros.sequence import SequenceClassifier

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
    config = PipelineConfig(
        crop_margin=float(settings["crop_margin"]), max_faces=int(settings["max_faces"]),
        tracker_min_iou=float(settings["tracker_min_iou"]),
        track_max_age_s=float(settings["track_max_age_s"]),
        smoothing_time_constant_s=float(settings["smoothing_time_constant_s"]),
        stability_window_s=float(settings["stability_window_s"]),
        dynamic_min_frames=int(settings["dynamic_min_frames"]),
        dynamic_stride=int(settings["dynamic_stride"]))
    pipeline = EmotionPipeline(classifier, detector, config, dynamic)
    return pipeline, Path(classifier.source).stem
