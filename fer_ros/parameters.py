"""Every node's parameters: names, defaults, ranges and descriptions; params files.

One table per node (``fer``, ``video_source``, ``emotion_recorder``,
``hri_bridge``) serves the node (which declares each entry with a
``ParameterDescriptor``), the pipeline and detector defaults, the tests,
``config/fer.yaml`` and the README, so they cannot disagree.
:func:`validate` checks values and :func:`read_params_file` reads a node's
section of a ROS 2 parameters file, both without ROS.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

#: BlazeFace variants the ``detector_model`` parameter accepts (the keys of
#: ``fer_ros.detection.BLAZEFACE_MODELS``).
DETECTOR_MODELS = ("full_range", "short_range")

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
    :param allow_empty: an empty string is a valid value (strings only).
    """

    name: str
    default: Any
    description: str
    value_range: Optional[Tuple[float, float]] = None
    choices: Optional[Sequence[str]] = None
    read_only: bool = True
    allow_empty: bool = False


FER_NODE_PARAMETERS: List[ParameterSpec] = [
    ParameterSpec("model", "3class",
                  "static emotion CNN: '3class', '7class' or a path to a .tflite/.keras file"),
    ParameterSpec("dynamic_model", "auto",
                  "CNN-LSTM: 'auto' (the shipped one matching the static model, if any), "
                  "'none', or a path to a .tflite/.keras file"),
    ParameterSpec("test_time_views", "none",
                  "views of each face averaged by the static CNN: 'none' (one pass; "
                  "fastest), 'flip' (face and mirror image; 2x the classifier time) or "
                  "'model' (the set the model was validated with, in its sidecar; most "
                  "accurate, 6x the classifier time of the shipped models)",
                  choices=tuple(TEST_TIME_VIEWS)),
    ParameterSpec("image_transport", "raw", "input type on 'image': 'raw' "
                  "(sensor_msgs/Image) or 'compressed' (sensor_msgs/CompressedImage on "
                  "'image/compressed')", choices=("raw", "compressed")),
    ParameterSpec("detector_model", "full_range",
                  "BlazeFace variant: 'full_range' (faces up to ~5 m, groups) or "
                  "'short_range' (faster, faces within ~2 m)", choices=DETECTOR_MODELS),
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
    ParameterSpec("reidentify", False,
                  "give each face a person_id that survives it leaving the view (face "
                  "embeddings, kept in memory only; needs dlib and face-recognition-models)"),
    ParameterSpec("people_dir", "",
                  "with reidentify: folder with one sub-folder of photos per known person "
                  "(e.g. child/, therapist/): matched people carry the name; or the JSON "
                  "file fer-analyze --save-people wrote: an earlier session's people keep "
                  "their names and ids; '' = none",
                  allow_empty=True),
    ParameterSpec("overlay_blur_faces", True,
                  "pixelate the faces in the ~/overlay image (boxes and labels stay)",
                  read_only=False),
    ParameterSpec("autostart", True,
                  "configure and activate the node at start-up (exit with an error if "
                  "that fails); false leaves it unconfigured for a lifecycle manager"),
    ParameterSpec("publish_overlay", True,
                  "publish the annotated image on ~/overlay (only while subscribed)",
                  read_only=False),
]

VIDEO_SOURCE_PARAMETERS: List[ParameterSpec] = [
    ParameterSpec("source", "", "video file, image file, /dev/videoN or a camera index"),
    ParameterSpec("frame_rate", 0.0, "publishing rate, frames/s; 0 = the source's own rate",
                  (0.0, 1000.0)),
    ParameterSpec("loop", False, "restart files at the end"),
    ParameterSpec("frame_id", "camera", "header frame_id of the published images",
                  allow_empty=True),
    ParameterSpec("encoding", "bgr8", "published encoding; with image_transport 'compressed', "
                  "mono8 gives a grayscale jpeg and the others a color one",
                  choices=("bgr8", "rgb8", "mono8")),
    ParameterSpec("image_transport", "raw",
                  "'raw': sensor_msgs/Image on 'image'; 'compressed': sensor_msgs/CompressedImage "
                  "(jpeg) on 'image/compressed' (follows a remapping of 'image'), for a camera on "
                  "another host: about 1/20 of the bytes at quality 90",
                  choices=("raw", "compressed")),
    ParameterSpec("jpeg_quality", 90,
                  "image_transport 'compressed': JPEG quality, 1 (smallest) to 100 (sharpest)",
                  (1, 100)),
    ParameterSpec("width", 0, "resize frames to this width, pixels; 0 = keep", (0, 16384)),
    ParameterSpec("height", 0, "resize frames to this height, pixels; 0 = keep", (0, 16384)),
    ParameterSpec("image_frames", 30, "how many frames an image source publishes",
                  (1, 10_000_000)),
    ParameterSpec("wait_for_subscribers", 0,
                  "wait for this many subscribers before the first frame", (0, 100)),
    ParameterSpec("wait_for_recorders", 0,
                  "also wait for this many other subscribers of 'emotions' (recorders) "
                  "before the first frame", (0, 100)),
    ParameterSpec("wait_timeout_s", 30.0,
                  "give up waiting for subscribers after this long, seconds", (0.0, 3600.0)),
    ParameterSpec("wait_for_results", False,
                  "files: publish the next frame only once 'emotions' answered this one"),
    ParameterSpec("result_timeout_s", 2.0,
                  "wait_for_results: give up on a frame's result after this long, seconds",
                  (0.0, 60.0)),
]

EMOTION_RECORDER_PARAMETERS: List[ParameterSpec] = [
    ParameterSpec("output_dir", "fer_recording", "folder for emotions.jsonl and overlay.mp4"),
    ParameterSpec("overlay_topic", "fer/overlay",
                  "annotated image topic to record; '' records none", allow_empty=True),
    ParameterSpec("overlay_fps", 30.0, "frame rate written into overlay.mp4, frames/s",
                  (1.0, 240.0)),
    ParameterSpec("ready_file", "", "touch this file once a publisher of 'emotions' is "
                  "matched (for scripts that start a pipeline); '' = none", allow_empty=True),
]

#: The fer node's parameters that configure the classifier, smoothing,
#: stability and CNN-LSTM; the hri_bridge node's expression mode takes them over.
CLASSIFIER_PARAMETER_NAMES = ("model", "dynamic_model", "test_time_views",
                              "smoothing_time_constant_s", "stability_window_s",
                              "dynamic_min_frames", "dynamic_stride", "threads")

HRI_BRIDGE_PARAMETERS: List[ParameterSpec] = [
    ParameterSpec("mode", "bridge",
                  "'bridge': republish fer_ros' 'emotions' as ROS4HRI faces "
                  "(/humans/faces/tracked, <id>/roi, <id>/expression); 'expression': classify "
                  "the face crops of a ROS4HRI face detector and publish only "
                  "/humans/faces/<id>/expression", choices=("bridge", "expression")),
    ParameterSpec("face_timeout_s", 1.0,
                  "a face not seen for this long leaves /humans/faces/tracked and loses its "
                  "per-face topics, seconds; keep it above the time between two frames",
                  (0.1, 600.0)),
    ParameterSpec("max_tracked_faces", 32,
                  "at most this many faces have per-face topics at once; a new face "
                  "replaces the one unseen longest, or is left out while all are in view",
                  (1, 256)),
    ParameterSpec("crop_topic", "aligned",
                  "expression mode: the face image to classify, "
                  "/humans/faces/<id>/aligned or /humans/faces/<id>/cropped",
                  choices=("aligned", "cropped")),
] + [replace(spec, description=f"expression mode: {spec.description}")
     for spec in FER_NODE_PARAMETERS if spec.name in CLASSIFIER_PARAMETER_NAMES]

#: Each node's table, by node name.
NODE_PARAMETERS: Dict[str, List[ParameterSpec]] = {
    "fer": FER_NODE_PARAMETERS,
    "video_source": VIDEO_SOURCE_PARAMETERS,
    "emotion_recorder": EMOTION_RECORDER_PARAMETERS,
    "hri_bridge": HRI_BRIDGE_PARAMETERS,
}

PARAMETERS_BY_NAME: Dict[str, ParameterSpec] = {p.name: p for p in FER_NODE_PARAMETERS}


def defaults(table: Sequence[ParameterSpec] = FER_NODE_PARAMETERS) -> Dict[str, Any]:
    """Return the default value of every parameter of a node (the fer node's by default)."""
    return {p.name: p.default for p in table}


def default_of(name: str) -> Any:
    """Return the default of one fer node parameter (the code's defaults use this)."""
    return PARAMETERS_BY_NAME[name].default


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
    if isinstance(value, str) and not value.strip() and not spec.allow_empty \
            and spec.choices is None:
        return f"parameter '{spec.name}' must not be empty"
    return None


def validate(values: Mapping[str, Any],
             table: Sequence[ParameterSpec] = FER_NODE_PARAMETERS) -> List[str]:
    """Check parameter values; return one message per problem (empty if valid).

    :param values: parameter name -> value; unknown names are problems.
    :param table: the node's parameter table (the fer node's by default).
    """
    by_name = {p.name: p for p in table}
    problems = []
    for name, value in values.items():
        spec = by_name.get(name)
        if spec is None:
            problems.append(f"unknown parameter '{name}'")
            continue
        problem = check(spec, value)
        if problem:
            problems.append(problem)
    return problems


class ParamsFileError(ValueError):
    """A parameters file cannot be read; the message is one line naming it."""


#: Keys of a parameters file that are ROS settings, not node parameters.
ROS_ONLY_PARAMETERS = ("use_sim_time", "qos_overrides")


def read_params_file(path: Path, node: str = "fer") -> Dict[str, Any]:
    """Read one node's ``ros__parameters`` from a ROS 2 parameters YAML file.

    The node's section is found as rclpy finds it: by the node's name with
    any namespace (``fer``, ``/fer``, ``/robot1/fer``, ``/**/fer``) or the
    wildcard ``/**``; a file with a single section is that section.  Sections
    that match are merged, the more specific last.

    :param path: the YAML file.
    :param node: the node's name.
    :return: parameter name -> value, without ROS settings (``use_sim_time``,
        ``qos_overrides.*``).
    :raises ParamsFileError: for a missing or unreadable file or no section.
    """
    import yaml

    try:
        document = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ParamsFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ParamsFileError(f"{path}: not a readable YAML file "
                              f"({' '.join(str(error).split())})") from None
    sections = document if isinstance(document, dict) else {}
    matching = [key for key in sections if _section_matches(str(key), node)]
    if not matching and len(sections) == 1:
        matching = list(sections)
    wildcard_first = sorted(matching, key=lambda key: 0 if str(key).startswith("/**") else 1)
    found = [sections[key].get("ros__parameters") for key in wildcard_first
             if isinstance(sections[key], dict)]
    found = [parameters for parameters in found if isinstance(parameters, dict)]
    if not found:
        raise ParamsFileError(f"{path}: no '/**/{node}: ros__parameters:' section")
    merged: Dict[str, Any] = {}
    for parameters in found:
        merged.update(parameters)
    return {key: value for key, value in merged.items()
            if not str(key).startswith(ROS_ONLY_PARAMETERS)}


def _section_matches(key: str, node: str) -> bool:
    """Tell whether a parameters-file key applies to a node named ``node``."""
    key = key.rstrip("/")
    return key in (node, f"/{node}", "/**") or key.endswith(f"/{node}")
