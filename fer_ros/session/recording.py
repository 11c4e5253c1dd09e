"""Sessions from the emotion_recorder's ``emotions.jsonl`` (what the live robot published).

Each record (one EmotionArray as JSON) is one processed frame; no model runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
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


@dataclass
class RecordFile:
    """The records of an ``emotions.jsonl`` and the lines that were not records.

    :param records: ``(line number, record)`` of every line that is a JSON object.
    :param damaged: ``(line number, what is wrong)`` of every other non-empty line.
    :param last_line: number of the last non-empty line.
    """

    records: List[Tuple[int, Dict[str, Any]]] = field(default_factory=list)
    damaged: List[Tuple[int, str]] = field(default_factory=list)
    last_line: int = 0

    def damage_warning(self, path: Path) -> str:
        """One line naming the damaged lines ("" when there are none)."""
        if not self.damaged:
            return ""
        number, problem = self.damaged[0]
        more = f" and {len(self.damaged) - 1} more" if len(self.damaged) > 1 else ""
        last = " (the last line: cut by an interrupted recorder?)" \
            if len(self.damaged) == 1 and number == self.last_line else ""
        return (f"{path}:{number}: skipped a damaged line{more}, {problem}{last}; "
                f"the {len(self.records)} complete records are kept")


def read_record_file(path: Path) -> RecordFile:
    """Read every line of a JSONL file, keeping the JSON objects and noting the rest.

    A recorder killed mid-write leaves a cut last line; that line (and any
    other that is not a JSON object) is noted in ``damaged``, never fatal.

    :param path: an ``emotions.jsonl``.
    :return: its records and damaged lines.
    :raises SessionError: when the file cannot be read.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SessionError(f"{path}: no such file") from None
    except OSError as error:
        raise SessionError(f"{path}: cannot read ({error.strerror or error})") from None
    result = RecordFile()
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        result.last_line = number
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            result.damaged.append((number, "not UTF-8 text"))
            continue
        except json.JSONDecodeError as error:
            result.damaged.append((number, f"not valid JSON ({error.msg})"))
            continue
        except (ValueError, RecursionError) as error:  # e.g. a 5,000-digit number
            result.damaged.append((number, f"not valid JSON ({type(error).__name__})"))
            continue
        if not isinstance(record, dict):
            result.damaged.append((number, "not a JSON object"))
            continue
        result.records.append((number, record))
    return result


def read_records(path: Path) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """Yield ``(line number, record)`` for each line of a JSONL file that is a JSON object.

    :param path: an ``emotions.jsonl``.
    :raises SessionError: when the file cannot be read.
    """
    yield from read_record_file(path).records


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
    (smoothed = raw probabilities, stability 1, no dynamic estimate, no
    person: a node without re-identification, or a recording made before
    ``person_id`` existed).

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
    if len(smoothed) != len(labels):
        raise ValueError(f"{len(smoothed)} smoothed probabilities for {len(labels)} labels")
    label = str(emotion.get("label") or labels[int(np.argmax(smoothed))])
    if label not in labels:
        raise ValueError(f"label {label!r} is not one of its labels {list(labels)}")
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
        dynamic, str(emotion.get("person_id") or ""))


def load_recording(path: Path, selection: FrameSelection) -> SessionData:
    """Build a session from an emotion_recorder ``emotions.jsonl``.

    Each record (one EmotionArray) is one processed frame; no model runs.

    :param path: the JSONL file.
    :param selection: ``start_s``/``end_s`` relative to the first record;
        ``every`` keeps every Nth record.
    :return: the session.
    :raises SessionError: for a missing or empty file, or a malformed record;
        lines that are not JSON objects (a cut last line) are skipped with a
        warning in the session.
    """
    read = read_record_file(path)
    records = read.records
    if not records:
        hint = f" (line {read.damaged[0][0]}: {read.damaged[0][1]})" if read.damaged else ""
        raise SessionError(f"{path}: has no records{hint}")
    labels = _recording_labels(path, records)
    first = records[0][1]
    stamps = [_stamp_of(path, number, record) for number, record in records]
    duration = stamps[-1] - stamps[0]
    rate = (len(records) - 1) / duration if duration > 0 else 0.0
    description = InputDescription(str(path), recording_name(path), "recording", rate,
                                   len(records))
    window = _stability_window(path, first)
    session = SessionData(description, str(first.get("model", "")), labels, window,
                          selection)
    if read.damaged:
        session.frames_read = len(records)
        session.description.frame_count = len(records) + len(read.damaged)
        session.warnings.append(read.damage_warning(path))
    for index, ((number, record), stamp) in enumerate(zip(records, stamps)):
        time_s = stamp - stamps[0]
        if selection.past_end(time_s):
            break
        if not selection.wants(index, time_s):
            continue
        emotions = _emotions_of(path, number, record)
        try:
            rows = [face_row_from_record(index, time_s, stamp, emotion, labels)
                    for emotion in emotions]
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as error:
            raise SessionError(f"{path}:{number}: malformed emotion entry "
                               f"({type(error).__name__}: {' '.join(str(error).split())})"
                               ) from None
        session.frames.append(ProcessedFrame(index, time_s, len(rows)))
        session.rows.extend(rows)
    session.check_not_empty()
    return session


def _stamp_of(path: Path, number: int, record: Mapping[str, Any]) -> float:
    try:
        stamp = record_stamp(record)
    except (KeyError, TypeError, ValueError, OverflowError):
        raise SessionError(f"{path}:{number}: record has no 'stamp' "
                           "(nor header.stamp)") from None
    if not math.isfinite(stamp):
        raise SessionError(f"{path}:{number}: stamp is not a finite number ({stamp})")
    return stamp


def _emotions_of(path: Path, number: int, record: Mapping[str, Any]
                 ) -> List[Mapping[str, Any]]:
    """Return the ``emotions`` entries of a record, checked to be a list of objects."""
    emotions = record.get("emotions") or []
    if not isinstance(emotions, list) or not all(isinstance(e, dict) for e in emotions):
        raise SessionError(f"{path}:{number}: 'emotions' is not a list of objects")
    return emotions


def _stability_window(path: Path, record: Mapping[str, Any]) -> float:
    """Return the record's stability window T, seconds (the default when it states none)."""
    value = record.get("stability_window") or DEFAULT_STABILITY_WINDOW_S
    try:
        window = float(value)
    except (TypeError, ValueError, OverflowError):
        window = math.nan
    if not math.isfinite(window) or window <= 0:
        raise SessionError(f"{path}: stability_window {value!r} is not a positive number "
                           "of seconds")
    return window


def _recording_labels(path: Path, records: List[Tuple[int, Dict[str, Any]]]
                      ) -> Tuple[str, ...]:
    labels: Optional[Tuple[str, ...]] = None
    for number, record in records:
        for emotion in _emotions_of(path, number, record):
            found = emotion.get("labels") or ()
            if not isinstance(found, list):
                raise SessionError(f"{path}:{number}: 'labels' is not a list")
            found = tuple(str(v) for v in found)
            if not found:
                raise SessionError(f"{path}:{number}: emotion entry without 'labels'")
            if labels is not None and found != labels:
                raise SessionError(f"{path}:{number}: labels {list(found)} differ from "
                                   f"the earlier {list(labels)}")
            labels = found
    return labels or ()


def recording_name(path: Path) -> str:
    """Name a recording's session: ``emotions.jsonl`` in a folder ``session1`` is ``session1``."""
    folder = path.resolve().parent.name
    return folder if path.stem == "emotions" and folder else path.stem
