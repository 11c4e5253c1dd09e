"""Sessions from the emotion_recorder's ``emotions.jsonl`` (what the live robot published).

Each record (one EmotionArray as JSON) is one processed frame; no model runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from fer_ros.labels import valence_of
from fer_ros.session.data import (FaceRow, FrameSelection, InputDescription, ProcessedFrame,
                                  SessionData, SessionError, float_tuple)


#: Suffix of the emotion_recorder's output, analysed without re-running the model.
RECORDING_SUFFIX = ".jsonl"

#: Stability window used for a recording that does not state one, seconds.
DEFAULT_STABILITY_WINDOW_S = 5.0


def is_recording(path: Path) -> bool:
    """Tell whether a path is an emotion_recorder ``emotions.jsonl`` file."""
    return path.suffix.lower() == RECORDING_SUFFIX


def read_records(path: Path) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """Yield ``(line number, record)`` for each non-empty line of a JSONL file.

    :param path: an ``emotions.jsonl``.
    :raises SessionError: for a missing file or a line that is not a JSON object.
    """
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise SessionError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SessionError(f"{path}: cannot read ({error})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise SessionError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise SessionError(f"{path}:{number}: not a JSON object")
        yield number, record


def record_stamp(record: Mapping[str, Any]) -> float:
    """Return a record's ``stamp``, else its ``header.stamp`` (sec + nanosec), seconds.

    :raises KeyError, TypeError, ValueError: when it has neither.
    """
    if "stamp" in record:
        return float(record["stamp"])
    stamp = record["header"]["stamp"]
    return float(stamp["sec"]) + float(stamp["nanosec"]) * 1e-9


def face_row_from_record(index: int, time_s: float, stamp: float,
                         emotion: Mapping[str, Any], labels: Sequence[str]) -> FaceRow:
    """Make the row of one ``emotions`` entry of a recorded EmotionArray.

    Missing optional fields take the values the pipeline would give
    (smoothed = raw probabilities, stability 1, no dynamic estimate).

    :param index: record number (the frame index of the session).
    :param time_s: seconds from the first record.
    :param stamp: the record's stamp, seconds.
    :param emotion: one entry (``fer_ros/msg/Emotion`` as a dict).
    :param labels: the session's class names.
    :return: the row.
    :raises KeyError, TypeError, ValueError: for missing or malformed fields.
    """
    probabilities = float_tuple(emotion["probabilities"])
    if len(probabilities) != len(labels):
        raise ValueError(f"{len(probabilities)} probabilities for {len(labels)} labels")
    smoothed = float_tuple(emotion.get("smoothed_probabilities") or probabilities)
    label = str(emotion.get("label") or labels[int(np.argmax(smoothed))])
    roi = emotion.get("roi") or {}
    box = (float(roi.get("x_offset", 0)), float(roi.get("y_offset", 0)),
           float(roi.get("width", 0)), float(roi.get("height", 0)))
    dynamic = float_tuple(emotion.get("dynamic_probabilities") or ())
    return FaceRow(
        index, time_s, stamp, str(emotion["face_id"]), box,
        float(emotion.get("detection_confidence", 0.0)), label,
        float(emotion.get("confidence", max(smoothed))),
        labels[int(np.argmax(probabilities))], probabilities, smoothed,
        float(emotion.get("valence", valence_of(np.array(smoothed), labels))),
        float(emotion.get("stability", 1.0)), float(emotion.get("label_change_rate", 0.0)),
        float(emotion.get("valence_mssd", 0.0)), int(emotion.get("stability_samples", 0)),
        float(emotion.get("tracked_seconds", 0.0)), str(emotion.get("dynamic_label", "")),
        dynamic)


def load_recording(path: Path, selection: FrameSelection) -> SessionData:
    """Build a session from an emotion_recorder ``emotions.jsonl``.

    Each record (one EmotionArray) is one processed frame; no model runs.

    :param path: the JSONL file.
    :param selection: ``start_s``/``end_s`` relative to the first record;
        ``every`` keeps every Nth record.
    :return: the session.
    :raises SessionError: for a missing, empty or malformed file.
    """
    records = list(read_records(path))
    if not records:
        raise SessionError(f"{path}: has no records")
    labels = _recording_labels(path, records)
    first = records[0][1]
    stamps = [_stamp_of(path, number, record) for number, record in records]
    duration = stamps[-1] - stamps[0]
    rate = (len(records) - 1) / duration if duration > 0 else 0.0
    description = InputDescription(str(path), _recording_name(path), "recording", rate,
                                   len(records))
    window = float(first.get("stability_window") or DEFAULT_STABILITY_WINDOW_S)
    session = SessionData(description, str(first.get("model", "")), labels, window,
                          selection)
    for index, ((number, record), stamp) in enumerate(zip(records, stamps)):
        time_s = stamp - stamps[0]
        if selection.past_end(time_s):
            break
        if not selection.wants(index, time_s):
            continue
        emotions = record.get("emotions") or []
        try:
            rows = [face_row_from_record(index, time_s, stamp, emotion, labels)
                    for emotion in emotions]
        except (KeyError, TypeError, ValueError) as error:
            raise SessionError(f"{path}:{number}: malformed emotion entry "
                               f"({type(error).__name__}: {error})") from None
        session.frames.append(ProcessedFrame(index, time_s, len(rows)))
        session.rows.extend(rows)
    session.check_not_empty()
    return session


def _stamp_of(path: Path, number: int, record: Mapping[str, Any]) -> float:
    try:
        return record_stamp(record)
    except (KeyError, TypeError, ValueError):
        raise SessionError(f"{path}:{number}: record has no 'stamp' "
                           "(nor header.stamp)") from None


def _recording_labels(path: Path, records: List[Tuple[int, Dict[str, Any]]]
                      ) -> Tuple[str, ...]:
    labels: Optional[Tuple[str, ...]] = None
    for number, record in records:
        for emotion in record.get("emotions") or []:
            found = tuple(str(v) for v in (emotion.get("labels") or ()))
            if not found:
                raise SessionError(f"{path}:{number}: emotion entry without 'labels'")
            if labels is not None and found != labels:
                raise SessionError(f"{path}:{number}: labels {list(found)} differ from "
                                   f"the earlier {list(labels)}")
            labels = found
    return labels or ()


def _recording_name(path: Path) -> str:
    """``emotions.jsonl`` in a folder ``session1`` is named ``session1``."""
    return path.parent.name if path.stem == "emotions" and path.parent.name else path.stem
