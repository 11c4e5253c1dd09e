"""Conversions between core results and fer_ros / sensor_msgs messages."""

from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np

from fer_ros.pipeline import FaceResult, FrameResult


def stamp_to_seconds(stamp: Any) -> float:
    """builtin_interfaces/Time -> float seconds."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def seconds_to_stamp(seconds: float, stamp: Any) -> Any:
    """Fill a builtin_interfaces/Time from float seconds and return it."""
    sec = int(np.floor(seconds))
    stamp.sec = sec
    stamp.nanosec = min(int(round((seconds - sec) * 1e9)), 999_999_999)
    return stamp


def face_to_msg(face: FaceResult, labels: Sequence[str],
                dynamic_labels: Sequence[str], msg_cls: Any, width: int,
                height: int) -> Any:
    """Build one ``fer_ros/msg/Emotion`` from a core face result."""
    msg = msg_cls()
    msg.face_id = face.face_id
    msg.person_id = face.person_id
    x, y, w, h = face.detection.box
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    msg.roi.x_offset = x0
    msg.roi.y_offset = y0
    msg.roi.width = max(0, min(int(round(x + w)), width) - x0)
    msg.roi.height = max(0, min(int(round(y + h)), height) - y0)
    msg.detection_confidence = float(face.detection.score)
    msg.tracked_seconds = float(face.tracked_seconds)
    msg.labels = list(labels)
    msg.probabilities = face.probabilities.astype(np.float32).tolist()
    msg.smoothed_probabilities = face.smoothed_probabilities.astype(np.float32).tolist()
    msg.label = face.label
    msg.confidence = float(face.confidence)
    msg.valence = float(face.valence)
    msg.has_dynamic = face.dynamic_probabilities is not None
    if msg.has_dynamic:
        msg.dynamic_labels = list(dynamic_labels)
        msg.dynamic_probabilities = face.dynamic_probabilities.astype(np.float32).tolist()
        msg.dynamic_label = face.dynamic_label
    msg.sequence_length = int(face.sequence_length)
    msg.stability = float(face.stability.stability)
    msg.label_change_rate = float(face.stability.label_change_rate)
    msg.valence_mssd = float(face.stability.valence_mssd)
    msg.stability_samples = int(face.stability.samples)
    return msg


def frame_to_msg(result: FrameResult, header: Any, labels: Sequence[str],
                 dynamic_labels: Sequence[str], window_s: float, model: str,
                 array_cls: Any, emotion_cls: Any, width: int, height: int) -> Any:
    """Build a ``fer_ros/msg/EmotionArray`` for one processed frame."""
    msg = array_cls()
    msg.header = header
    msg.width, msg.height = int(width), int(height)
    msg.emotions = [face_to_msg(face, labels, dynamic_labels, emotion_cls, width, height)
                    for face in result.faces]
    msg.stability_window = float(window_s)
    msg.mean_stability = result.mean_stability
    msg.mean_label_change_rate = result.mean_label_change_rate
    msg.mean_valence_mssd = result.mean_valence_mssd
    msg.group_valence = result.group_valence
    msg.tracked_faces = int(result.tracked_faces)
    msg.model = model
    return msg


def msg_to_dict(msg: Any) -> Any:
    """Recursively convert a ROS message to JSON-ready Python values."""
    if hasattr(msg, "get_fields_and_field_types"):
        return {name: msg_to_dict(getattr(msg, name))
                for name in msg.get_fields_and_field_types()}
    if isinstance(msg, (list, tuple)):
        return [msg_to_dict(v) for v in msg]
    if isinstance(msg, np.ndarray) or type(msg).__name__ == "array":
        return [float(v) if isinstance(v, float) or np.issubdtype(type(v), np.floating)
                else v for v in np.asarray(msg).tolist()]
    if isinstance(msg, (np.floating, float)):
        return float(msg)
    if isinstance(msg, (np.integer,)):
        return int(msg)
    if isinstance(msg, bytes):
        return list(msg)
    return msg


def emotion_array_record(msg: Any) -> Dict[str, Any]:
    """Return the JSON record of one EmotionArray (as written to emotions.jsonl)."""
    record = msg_to_dict(msg)
    record["stamp"] = stamp_to_seconds(msg.header.stamp)
    return record
