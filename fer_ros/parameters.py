"""The fer node's parameters: names, defaults, ranges and descriptions.

One table serves the node (which declares each entry with a
``ParameterDescriptor``), the tests, ``config/fer.yaml`` and the README, so
they cannot disagree.  :func:`validate` checks values without ROS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from fer_ros.detection import BLAZEFACE_MODELS

#: ``test_time_views`` choices -> EmotionClassifier.load overrides.
TEST_TIME_VIEWS: Dict[str, Dict[str, Any]] = {
    "model": {},
    "flip": {"tta_flip": True, "tta_zooms": [1.0], "tta_shifts": [[0, 0]]},
    "none": {"tta_flip": False, "tta_zooms": [1.0], "tta_shifts": [[0, 0]]},
}


@dataclass(frozen=True)
class ParameterSpec:
    """One node parameter.

    :param name: parameter name.
    :param default: default value (its type is the parameter's type).
    :param description: meaning, with units.
    :param value_range: inclusive ``(min, max)`` for numbers.
    :param choices: allowed values for strings with a fixed set.
    :param read_only: only settable at start-up.
    """

    name: str
    default: Any
    description: str
    value_range: Optional[Tuple[float, float]] = None
    choices: Optional[Sequence[str]] = None
    read_only: bool = True


FER_NODE_PARAMETERS: List[ParameterSpec] = [
    ParameterSpec("model", "3class",
                  "static emotion CNN: '3class', '7class' or a path to a .tflite/.keras file"),
    ParameterSpec("dynamic_model", "auto",
                  "CNN-LSTM: 'auto' (the shipped one matching the static model, if any), "
                  "'none', or a path to a .tflite/.keras file"),
    ParameterSpec("test_time_views", "flip",
                  "views of each face averaged by the static CNN: 'flip' (face and mirror "
                  "image), 'model' (the set the model was validated with, in its sidecar; "
                  "most accurate, 3x the classifier time of the shipped models) or 'none' "
                  "(one pass; fastest)", choices=tuple(TEST_TIME_VIEWS)),
    ParameterSpec("image_transport", "raw", "input type on 'image': 'raw' "
                  "(sensor_msgs/Image) or 'compressed' (sensor_msgs/CompressedImage on "
                  "'image/compressed')", choices=("raw", "compressed")),
    ParameterSpec("detector_model", "full_range",
                  "BlazeFace variant: 'full_range' (faces up to ~5 m, groups) or "
                  "'short_range' (faster, faces within ~2 m)", choices=tuple(BLAZEFACE_MODELS)),
    ParameterSpec("min_detection_score", 0.5, "minimum face detector confidence, 0-1",
                  (0.05, 0.99), read_only=False),
    ParameterSpec("verify_min_score", 0.7,
                  "weak full-range detections are kept only if the short-range model "
                  "confirms them on a close-up crop with this score, 0-1; 0 disables",
                  (0.0, 0.99)),
    ParameterSpec("min_face_size_px", 16.0,
                  "faces with a smaller box side are ignored, pixels", (4.0, 4096.0)),
    ParameterSpec("max_faces", 16, "at most this many faces (largest first) per frame",
                  (1, 64)),
    ParameterSpec("crop_margin", 0.15,
                  "context added around each face box before cropping, share of its side",
                  (0.0, 1.0)),
    ParameterSpec("tracker_min_iou", 0.2,
                  "smallest box overlap (IoU) that continues a face track, 0-1", (0.01, 0.99)),
    ParameterSpec("track_max_age_s", 1.0,
                  "a face not detected for this long loses its id, seconds", (0.0, 60.0)),
    ParameterSpec("smoothing_time_constant_s", 0.3,
                  "time constant of the per-face moving average of probabilities, "
                  "seconds; 0 disables smoothing", (0.0, 10.0), read_only=False),
    ParameterSpec("stability_window_s", 5.0,
                  "window T of the emotional-stability metrics, seconds", (0.5, 600.0)),
    ParameterSpec("dynamic_min_frames", 10,
                  "frames of a face buffered before the CNN-LSTM runs on it", (1, 1000)),
    ParameterSpec("dynamic_stride", 5,
                  "run the CNN-LSTM on a face every this many new frames", (1, 1000)),
    ParameterSpec("threads", 2, "CPU threads for the neural networks", (1, 16)),
    ParameterSpec("publish_overlay", True,
                  "publish the annotated image on ~/overlay (only while subscribed)",
                  read_only=False),
]

PARAMETERS_BY_NAME: Dict[str, ParameterSpec] = {p.name: p for p in FER_NODE_PARAMETERS}


def defaults() -> Dict[str, Any]:
    """Return the default value of every parameter."""
    return {p.name: p.default for p in FER_NODE_PARAMETERS}


def check(spec: ParameterSpec, value: Any) -> Optional[str]:
    """Return why ``value`` is invalid for ``spec``, or None if it is valid."""
    expected = type(spec.default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not expected:
        return (f"parameter '{spec.name}' must be {expected.__name__}, "
                f"got {type(value).__name__} {value!r}")
    if spec.value_range is not None:
        low, high = spec.value_range
        if not low <= value <= high:
            return f"parameter '{spec.name}' = {value} is outside [{low}, {high}]"
    if spec.choices is not None and value not in spec.choices:
        return (f"parameter '{spec.name}' = {value!r} is not one of "
                f"{', '.join(map(repr, spec.choices))}")
    if isinstance(value, str) and not value.strip() and spec.choices is None:
        return f"parameter '{spec.name}' must not be empty"
    return None


def validate(values: Mapping[str, Any]) -> List[str]:
    """Check parameter values; return one message per problem (empty if valid).

    :param values: parameter name -> value; unknown names are problems.
    """
    problems = []
    for name, value in values.items():
        spec = PARAMETERS_BY_NAME.get(name)
        if spec is None:
            problems.append(f"unknown parameter '{name}'")
            continue
        problem = check(spec, value)
        if problem:
            problems.append(problem)
    return problems
