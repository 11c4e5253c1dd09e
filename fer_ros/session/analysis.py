"""Session analysis: the FER pipeline over a recorded session, offline.

A session is a video file, a rosbag2 recording (an image topic) or the
``emotions.jsonl`` written by the ``emotion_recorder`` node.  Frames are run
through exactly the node's core (:class:`fer_ros.pipeline.EmotionPipeline`
built by :func:`fer_ros.pipeline.build_pipeline`); every face of every
processed frame becomes one :class:`FaceRow`, and :func:`summarize` turns
the rows into per-face statistics (time on screen, share of each emotion,
valence, stability).  Pure Python: no rclpy.

Time axis: ``time_s`` counts seconds from the first frame of the input
(the video position, or the header stamp minus the first one in a bag or
recording).  The pipeline is fed ``time_s``; it only uses differences of
stamps, so this gives the node's results while keeping a video and the
same frames replayed from a bag bit-for-bit comparable.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import (Any, Callable, Dict, Iterator, List, Mapping, Optional, Protocol, Sequence,
                    Tuple, Union)

import numpy as np

from fer_ros.session.sources import BagFrameSource, is_rosbag2
from fer_ros.image_conversion import ImageConversionError
from fer_ros.labels import valence_of
from fer_ros.parameters import ParamsFileError, read_params_file, validate
from fer_ros.pipeline import EmotionPipeline, FaceResult, FrameResult
from fer_ros.stability import stability_of
from fer_ros.video_io import DEFAULT_FRAME_RATE, IMAGE_SUFFIXES, FrameSource, SourceError

#: File suffixes taken as videos when a folder is given.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
#: Suffix of the emotion_recorder's output, analysed without re-running the model.
RECORDING_SUFFIX = ".jsonl"
#: A progress bar is shown for inputs with at least this many frames.
PROGRESS_MIN_FRAMES = 150
#: Stability window used for a recording that does not state one, seconds.
DEFAULT_STABILITY_WINDOW_S = 5.0


class SessionError(ValueError):
    """An input cannot be analysed; the message is one line naming it."""


@dataclass(frozen=True)
class FrameSelection:
    """Which frames of an input are processed.

    :param start_s: first time processed, seconds from the start of the input.
    :param end_s: last time processed, seconds from the start; None = to the end.
    :param every: process every this many frames (1 = all; the thesis used 2).
    """

    start_s: float = 0.0
    end_s: Optional[float] = None
    every: int = 1

    def __post_init__(self) -> None:
        if self.every < 1:
            raise SessionError(f"--every must be at least 1, got {self.every}")
        if self.start_s < 0:
            raise SessionError(f"--start must not be negative, got {self.start_s}")
        if self.end_s is not None and self.end_s <= self.start_s:
            raise SessionError(f"--end ({self.end_s} s) must be after --start "
                               f"({self.start_s} s)")

    def past_end(self, time_s: float) -> bool:
        """Tell whether ``time_s`` lies after the selected range."""
        return self.end_s is not None and time_s > self.end_s

    def wants(self, index: int, time_s: float) -> bool:
        """Tell whether a frame is to be processed.

        :param index: frame number in the input, from 0.
        :param time_s: its time from the start of the input, seconds.
        """
        return index % self.every == 0 and time_s >= self.start_s and not self.past_end(time_s)


@dataclass
class InputDescription:
    """What was analysed.

    :param path: the input as given.
    :param name: short name (file or folder stem), used for output folders.
    :param kind: ``video``, ``rosbag2`` or ``recording`` (emotions.jsonl).
    :param frame_rate: frames (or messages, or records) per second.
    :param frame_count: frames in the whole input.
    :param topic: the image topic (rosbag2 only).
    :param message_type: its message type (rosbag2 only).
    :param storage: ``sqlite3`` or ``mcap`` (rosbag2 only).
    """

    path: str
    name: str
    kind: str
    frame_rate: float
    frame_count: int
    topic: str = ""
    message_type: str = ""
    storage: str = ""


@dataclass
class SourceFrame:
    """One frame of an input, decoded only when used.

    :param index: frame number in the input, from 0.
    :param time_s: seconds from the input's first frame (fed to the pipeline).
    :param stamp: the frame's own stamp (header stamp in a bag), seconds.
    :param read_image: returns the BGR uint8 frame.
    """

    index: int
    time_s: float
    stamp: float
    read_image: Callable[[], np.ndarray]


class SessionSource(Protocol):
    """A video or rosbag2 input: its description and its frames."""

    description: InputDescription

    def frames(self) -> Iterator[SourceFrame]:
        """Yield frames in input order."""

    def close(self) -> None:
        """Release files."""


@dataclass
class FaceRow:
    """One face in one processed frame (a row of faces.csv).

    :param frame_index: frame number in the input.
    :param time_s: seconds from the start of the input.
    :param stamp: the frame's stamp, seconds.
    :param face_id: track id, e.g. ``face_1``.
    :param box: ``(x, y, width, height)`` in pixels.
    :param detection_score: face detector score, 0-1.
    :param label: published (smoothed) emotion.
    :param confidence: smoothed probability of ``label``.
    :param frame_label: this frame's unsmoothed emotion.
    :param probabilities: this frame's class probabilities.
    :param smoothed_probabilities: smoothed class probabilities.
    :param valence: expected valence under the smoothed probabilities, -1..1.
    :param stability: stability within the window T, 0-1.
    :param label_change_rate: label changes per second within T.
    :param valence_mssd: mean squared successive valence difference within T.
    :param stability_samples: frames of this face inside T.
    :param tracked_seconds: time since the face was first seen, seconds.
    :param dynamic_label: CNN-LSTM label ("" when none yet).
    :param dynamic_probabilities: CNN-LSTM probabilities (empty when none).
    """

    frame_index: int
    time_s: float
    stamp: float
    face_id: str
    box: Tuple[float, float, float, float]
    detection_score: float
    label: str
    confidence: float
    frame_label: str
    probabilities: Tuple[float, ...]
    smoothed_probabilities: Tuple[float, ...]
    valence: float
    stability: float
    label_change_rate: float
    valence_mssd: float
    stability_samples: int
    tracked_seconds: float
    dynamic_label: str = ""
    dynamic_probabilities: Tuple[float, ...] = ()


@dataclass
class ProcessedFrame:
    """A processed frame: its number, time and how many faces it had."""

    index: int
    time_s: float
    faces: int


@dataclass
class SessionData:
    """Everything measured in one session.

    :param description: the input.
    :param model: static model name, e.g. ``fer2013_3class``.
    :param labels: class names, in the order of the probabilities.
    :param stability_window_s: window T of the stability values, seconds.
    :param selection: which frames were processed.
    :param frames: every processed frame, in order.
    :param rows: one row per face per processed frame.
    :param skipped_frames: selected frames that could not be decoded.
    :param skip_reason: why the first of them could not be decoded.
    :param processing_s: wall time of the analysis, seconds.
    """

    description: InputDescription
    model: str
    labels: Tuple[str, ...]
    stability_window_s: float
    selection: FrameSelection
    frames: List[ProcessedFrame] = field(default_factory=list)
    rows: List[FaceRow] = field(default_factory=list)
    skipped_frames: int = 0
    skip_reason: str = ""
    processing_s: float = 0.0

    def face_ids(self) -> List[str]:
        """Face ids in order of first appearance."""
        return list(dict.fromkeys(row.face_id for row in self.rows))

    def rows_of(self, face_id: str) -> List[FaceRow]:
        """Return the rows of one face, in time order."""
        return [row for row in self.rows if row.face_id == face_id]

    def frame_period_s(self) -> float:
        """Typical time between processed frames, seconds (median spacing)."""
        times = np.array([f.time_s for f in self.frames], dtype=np.float64)
        steps = np.diff(times)
        steps = steps[steps > 0]
        if steps.size:
            return float(np.median(steps))
        rate = self.description.frame_rate
        return self.selection.every / (rate if rate > 0 else DEFAULT_FRAME_RATE)


# --- inputs ---------------------------------------------------------------

class VideoSessionSource:
    """A video file as a session source.

    :param path: the video file.
    :raises SessionError: when it is not a readable video.
    """

    def __init__(self, path: Path) -> None:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise SessionError(f"{path}: is a still image; give a video, a folder of "
                               "videos or a rosbag2 recording")
        try:
            self._video = FrameSource(str(path))
        except SourceError as error:
            raise SessionError(str(error)) from None
        self.description = InputDescription(
            str(path), path.stem, "video", self._video.frame_rate, self._video.frame_count)

    def frames(self) -> Iterator[SourceFrame]:
        """Yield every frame of the video."""
        self._video.rewind()
        for frame in self._video.frames():
            yield SourceFrame(frame.index, frame.time_s, frame.time_s,
                              functools.partial(_identity, frame.image))

    def close(self) -> None:
        """Release the video file."""
        self._video.close()


class BagSessionSource:
    """One image topic of a rosbag2 recording as a session source.

    :param path: the rosbag2 folder or its .db3 / .mcap file.
    :param topic: the image topic; needed only when there are several.
    :raises BagError: see :class:`fer_ros.session.sources.BagFrameSource`.
    """

    def __init__(self, path: Path, topic: Optional[str] = None) -> None:
        self._bag = BagFrameSource(path, topic)
        name = path.stem if path.is_file() else path.name
        self.description = InputDescription(
            str(path), name, "rosbag2", self._bag.frame_rate, self._bag.frame_count,
            self._bag.topic, self._bag.msgtype, self._bag.storage)

    def frames(self) -> Iterator[SourceFrame]:
        """Yield the topic's frames; time counts from the first header stamp."""
        first_ns: Optional[int] = None
        for frame in self._bag.frames():
            first_ns = frame.stamp_ns if first_ns is None else first_ns
            yield SourceFrame(frame.index, (frame.stamp_ns - first_ns) * 1e-9, frame.stamp,
                              frame.read_image)

    def close(self) -> None:
        """Nothing stays open between reads."""
        self._bag.close()


def is_recording(path: Path) -> bool:
    """Tell whether a path is an emotion_recorder ``emotions.jsonl`` file."""
    return path.suffix.lower() == RECORDING_SUFFIX


def expand_inputs(paths: Sequence[Path]) -> List[Path]:
    """Resolve the command line's inputs into one path per session.

    A folder that is not a rosbag2 recording stands for the videos and
    recordings directly inside it, in name order.

    :param paths: files and folders as given.
    :return: one path per session.
    :raises SessionError: for a missing path or a folder with nothing to analyse.
    """
    sessions: List[Path] = []
    for path in paths:
        if not path.exists():
            raise SessionError(f"{path}: no such file or folder")
        if path.is_dir() and not is_rosbag2(path):
            found = sorted(p for p in path.iterdir() if
                           (p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES) or
                           (p.is_dir() and is_rosbag2(p)))
            if not found:
                raise SessionError(f"{path}: folder holds no videos ({', '.join(VIDEO_SUFFIXES)})"
                                   " and no rosbag2 recordings")
            sessions.extend(found)
        else:
            sessions.append(path)
    return sessions


def open_source(path: Path, topic: Optional[str] = None) -> SessionSource:
    """Open a video or rosbag2 input.

    :param path: video file, rosbag2 folder, or .db3 / .mcap file.
    :param topic: image topic of a recording (ignored for videos).
    :return: the source.
    :raises SessionError, BagError: when it cannot be analysed.
    """
    if not path.exists():
        raise SessionError(f"{path}: no such file or folder")
    if is_rosbag2(path):
        return BagSessionSource(path, topic)
    if path.is_dir():
        raise SessionError(f"{path}: folder is not a rosbag2 recording (no metadata.yaml)")
    return VideoSessionSource(path)


def pipeline_values(params_file: Optional[Path], model: Optional[str]) -> Dict[str, Any]:
    """Pipeline parameter values from a node parameters file and ``--model``.

    :param params_file: YAML of the ``fer: ros__parameters:`` form, or None.
    :param model: ``3class``, ``7class`` or a model path; overrides the file.
    :return: parameter name -> value (missing ones take the node's defaults,
        except ``test_time_views``, which is 'model').
    :raises SessionError: for an unreadable file or invalid values.
    """
    # Offline, accuracy matters more than frame rate: every validated view.
    values: Dict[str, Any] = {"test_time_views": "model"}
    if params_file is not None:
        try:
            values.update(read_params_file(params_file))
        except ParamsFileError as error:
            raise SessionError(str(error)) from None
    if model is not None:
        values["model"] = model
    problems = validate(values)
    if problems:
        where = f"{params_file}: " if params_file is not None else ""
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise SessionError(f"{where}{problems[0]}{more}")
    return values


# --- running the pipeline -------------------------------------------------

def face_row(frame: SourceFrame, face: FaceResult) -> FaceRow:
    """Make the row of one face of a pipeline result.

    :param frame: the frame it was found in.
    :param face: the pipeline's result for the face.
    :return: the row.
    """
    dynamic = face.dynamic_probabilities
    x, y, width, height = face.detection.box
    return FaceRow(
        frame.index, frame.time_s, frame.stamp, face.face_id,
        (float(x), float(y), float(width), float(height)), float(face.detection.score),
        face.label, float(face.confidence), face.frame_label,
        _floats(face.probabilities), _floats(face.smoothed_probabilities),
        float(face.valence), float(face.stability.stability),
        float(face.stability.label_change_rate), float(face.stability.valence_mssd),
        int(face.stability.samples), float(face.tracked_seconds), face.dynamic_label,
        _floats(dynamic) if dynamic is not None else ())


def _floats(values: Any) -> Tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1))


FrameCallback = Callable[[np.ndarray, FrameResult], None]


def analyze_source(source: SessionSource, pipeline: EmotionPipeline, model: str,
                   selection: FrameSelection, on_frame: Optional[FrameCallback] = None,
                   show_progress: bool = True) -> SessionData:
    """Run the pipeline over the selected frames of a source.

    :param source: the input.
    :param pipeline: a fresh pipeline (face ids start at ``face_1``).
    :param model: model name for the report.
    :param selection: which frames to process.
    :param on_frame: called with each processed frame and its result
        (e.g. to write the annotated video).
    :param show_progress: show a progress bar with ETA on stderr for long inputs.
    :return: the session's rows.
    :raises SessionError: when no frame in the selection could be processed.
    """
    session = SessionData(source.description, model, tuple(pipeline.classifier.labels),
                          float(pipeline.config.stability_window_s), selection)
    started = time.perf_counter()
    with progress_bar(source.description, selection, show_progress) as bar:
        for frame in source.frames():
            bar.update(1)
            if selection.past_end(frame.time_s):
                break
            if not selection.wants(frame.index, frame.time_s):
                continue
            try:
                image = frame.read_image()
            except ImageConversionError as error:
                session.skipped_frames += 1
                session.skip_reason = session.skip_reason or f"frame {frame.index}: {error}"
                continue
            result = pipeline.process(image, frame.time_s)
            session.frames.append(ProcessedFrame(frame.index, frame.time_s, len(result.faces)))
            session.rows.extend(face_row(frame, face) for face in result.faces)
            if on_frame is not None:
                on_frame(image, result)
    session.processing_s = time.perf_counter() - started
    _check_not_empty(session)
    return session


def progress_bar(description: InputDescription, selection: FrameSelection,
                 enabled: bool) -> Any:
    """Make a tqdm bar over the input's frames (disabled for short inputs).

    :param description: the input (its frame count and rate size the bar).
    :param selection: the range; frames after ``end_s`` are not counted.
    :param enabled: False disables the bar.
    :return: a context manager with ``update(n)``.
    """
    from tqdm import tqdm

    total = description.frame_count or None
    if total and selection.end_s is not None:
        total = min(total, int(math.ceil(selection.end_s * description.frame_rate)) + 1)
    show = enabled and (total is None or total >= PROGRESS_MIN_FRAMES)
    return tqdm(total=total, disable=not show, file=sys.stderr, unit="frame",
                desc=description.name, dynamic_ncols=True, leave=False)


def check_start(description: InputDescription, selection: FrameSelection) -> None:
    """Fail early when ``--start`` lies after the end of an input.

    :param description: the input (its frame count and rate give its length).
    :param selection: the requested range.
    :raises SessionError: when no frame can lie in the range.
    """
    if description.frame_count <= 0 or description.frame_rate <= 0:
        return
    length_s = description.frame_count / description.frame_rate
    if selection.start_s >= length_s:
        raise SessionError(f"{description.path}: --start {selection.start_s:g} s is after "
                           f"the end of the input ({length_s:.1f} s long)")


def _check_not_empty(session: SessionData) -> None:
    if session.frames:
        return
    path = session.description.path
    if session.skipped_frames:
        raise SessionError(f"{path}: no frame could be decoded ({session.skip_reason})")
    selection = session.selection
    if selection.start_s > 0 or selection.end_s is not None:
        end = "the end" if selection.end_s is None else f"{selection.end_s} s"
        raise SessionError(f"{path}: no frames between {selection.start_s} s and {end}")
    raise SessionError(f"{path}: has no frames")


# --- emotion_recorder output (emotions.jsonl) ------------------------------

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
    probabilities = _floats(emotion["probabilities"])
    if len(probabilities) != len(labels):
        raise ValueError(f"{len(probabilities)} probabilities for {len(labels)} labels")
    smoothed = _floats(emotion.get("smoothed_probabilities") or probabilities)
    label = str(emotion.get("label") or labels[int(np.argmax(smoothed))])
    roi = emotion.get("roi") or {}
    box = (float(roi.get("x_offset", 0)), float(roi.get("y_offset", 0)),
           float(roi.get("width", 0)), float(roi.get("height", 0)))
    dynamic = _floats(emotion.get("dynamic_probabilities") or ())
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
    _check_not_empty(session)
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


# --- summary ----------------------------------------------------------------

def shares(labels_seen: Sequence[str], labels: Sequence[str]) -> Dict[str, float]:
    """Share of each label among ``labels_seen`` (0 for all when empty)."""
    total = len(labels_seen)
    return {label: (sum(seen == label for seen in labels_seen) / total if total else 0.0)
            for label in labels}


def face_summary(rows: Sequence[FaceRow], labels: Sequence[str],
                 frame_period_s: float) -> Dict[str, Any]:
    """Statistics of one face over the session.

    ``stability`` / ``label_change_rate`` / ``valence_mssd`` summarise the
    per-frame values over the window T; ``whole_session`` applies the same
    definitions (:func:`fer_ros.stability.stability_of`, unsmoothed frame
    labels) to all of the face's frames at once.

    :param rows: the face's rows, in time order (at least one).
    :param labels: class names.
    :param frame_period_s: time between processed frames, seconds.
    :return: JSON-ready dict.
    """
    times = np.array([r.time_s for r in rows])
    valence = np.array([r.valence for r in rows])
    stability = np.array([r.stability for r in rows])
    change_rate = np.array([r.label_change_rate for r in rows])
    mssd = np.array([r.valence_mssd for r in rows])
    share = shares([r.label for r in rows], labels)
    frame_valence = valence_of(np.array([r.probabilities for r in rows]), labels)
    span = float(times[-1] - times[0]) + frame_period_s
    whole = stability_of(times, [r.frame_label for r in rows], frame_valence, span)
    summary: Dict[str, Any] = {
        "frames": len(rows),
        "first_seen_s": float(times[0]), "last_seen_s": float(times[-1]),
        "time_on_screen_s": len(rows) * frame_period_s,
        "emotion_shares": share,
        "dominant_emotion": max(share, key=lambda label: share[label]),
        "mean_confidence": float(np.mean([r.confidence for r in rows])),
        "mean_valence": float(valence.mean()), "valence_sd": float(valence.std()),
        "stability": {"mean": float(stability.mean()), "min": float(stability.min()),
                      "final": float(stability[-1])},
        "label_change_rate": {"mean": float(change_rate.mean()),
                              "max": float(change_rate.max())},
        "valence_mssd": {"mean": float(mssd.mean()), "max": float(mssd.max())},
        "whole_session": {"stability": whole.stability,
                          "label_change_rate": whole.label_change_rate,
                          "valence_mssd": whole.valence_mssd},
    }
    dynamic = [r.dynamic_label for r in rows if r.dynamic_label]
    if dynamic:
        summary["dynamic_emotion_shares"] = shares(dynamic, labels)
    return summary


def overall_summary(session: SessionData, faces: Mapping[str, Dict[str, Any]]
                    ) -> Dict[str, Any]:
    """Statistics over every face-frame of the session (for comparisons).

    :param session: the session.
    :param faces: its per-face summaries.
    :return: JSON-ready dict.
    """
    rows = session.rows
    share = shares([r.label for r in rows], session.labels)
    valence = np.array([r.valence for r in rows]) if rows else np.zeros(0)

    def mean(values: Union[Sequence[float], np.ndarray]) -> Optional[float]:
        return float(np.mean(values)) if len(values) else None

    return {
        "faces": len(faces),
        "face_seconds": float(sum(f["time_on_screen_s"] for f in faces.values())),
        "emotion_shares": share,
        "dominant_emotion": max(share, key=lambda label: share[label]) if rows else None,
        "mean_valence": mean(valence),
        "valence_sd": float(valence.std()) if rows else None,
        "mean_stability": mean([r.stability for r in rows]),
        "mean_label_change_rate": mean([r.label_change_rate for r in rows]),
        "mean_valence_mssd": mean([r.valence_mssd for r in rows]),
    }


def summarize(session: SessionData) -> Dict[str, Any]:
    """Compute the session's summary.json content.

    :param session: the analysed session.
    :return: JSON-ready dict: input, model, frame counts, ``faces`` (per
        face id, in order of appearance) and ``session`` (all faces together).
    """
    period = session.frame_period_s()
    faces = {face_id: face_summary(session.rows_of(face_id), session.labels, period)
             for face_id in session.face_ids()}
    times = [f.time_s for f in session.frames]
    selection = asdict(session.selection)
    return {
        "input": {**asdict(session.description), "selection": selection},
        "model": session.model,
        "labels": list(session.labels),
        "stability_window_s": session.stability_window_s,
        "frames_processed": len(session.frames),
        "frames_with_faces": sum(f.faces > 0 for f in session.frames),
        "frames_unreadable": session.skipped_frames,
        "analysed_from_s": float(min(times)),
        "analysed_to_s": float(max(times)),
        "frame_period_s": period,
        "processing_s": session.processing_s,
        "faces": faces,
        "session": overall_summary(session, faces),
    }


# --- files ------------------------------------------------------------------

def csv_header(labels: Sequence[str]) -> List[str]:
    """Column names of faces.csv for a label set."""
    return (["frame_index", "time_s", "stamp", "face_id", "x", "y", "width", "height",
             "detection_score", "label", "confidence", "frame_label"]
            + [f"p_{label}" for label in labels]
            + [f"smoothed_p_{label}" for label in labels]
            + ["valence", "stability", "label_change_rate", "valence_mssd",
               "stability_samples", "tracked_seconds", "dynamic_label"]
            + [f"dynamic_p_{label}" for label in labels])


def csv_values(row: FaceRow, labels: Sequence[str]) -> List[Any]:
    """One faces.csv line (dynamic probabilities empty when there are none)."""
    dynamic: List[Any] = list(row.dynamic_probabilities) or [""] * len(labels)
    return ([row.frame_index, row.time_s, row.stamp, row.face_id, *row.box,
             row.detection_score, row.label, row.confidence, row.frame_label]
            + list(row.probabilities) + list(row.smoothed_probabilities)
            + [row.valence, row.stability, row.label_change_rate, row.valence_mssd,
               row.stability_samples, row.tracked_seconds, row.dynamic_label]
            + dynamic)


def write_faces_csv(session: SessionData, path: Path) -> Path:
    """Write one row per face per processed frame.

    :param session: the session.
    :param path: the CSV file to write.
    :return: ``path``.
    """
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(csv_header(session.labels))
        for row in session.rows:
            writer.writerow(csv_values(row, session.labels))
    return path


def write_summary_json(summary: Mapping[str, Any], path: Path) -> Path:
    """Write the summary as indented JSON.

    :param summary: from :func:`summarize`.
    :param path: the file to write.
    :return: ``path``.
    """
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def _identity(image: np.ndarray) -> np.ndarray:
    return image
