"""The data model of a session analysis: what was analysed, which frames, one row per face.

Pure data, shared by the inputs (:mod:`~fer_ros.session.sources`,
:mod:`~fer_ros.session.recording`), the analysis and every output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Protocol, Tuple

import numpy as np

from fer_ros.video_io import DEFAULT_FRAME_RATE, Frame


#: Share of a video's announced frame count that may be missing at its end
#: without a warning (containers that store no index estimate the count).
FRAME_COUNT_TOLERANCE = 0.01


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
        for option, value in (("--start", self.start_s), ("--end", self.end_s)):
            if value is not None and not math.isfinite(value):
                raise SessionError(f"{option} must be a finite number of seconds, "
                                   f"got {value}")
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


class SessionSource(Protocol):
    """A video or rosbag2 input: its description and its frames.

    ``damage`` says, after :meth:`frames` stopped, why it stopped before
    the end of the input ("" when it did not, or when the decoder gave no
    reason).
    """

    description: InputDescription
    damage: str

    def frames(self) -> Iterator[Frame]:
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
    :param person_id: with re-identification, the person across losses of
        any length (``person_2`` or a known person's name); "" without.
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
    person_id: str = ""

    @property
    def subject(self) -> str:
        """Who the row is about in the report: its person, else its face track."""
        return self.person_id or self.face_id


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
    :param frames_read: frames read from the input when it ended early
        (damaged or truncated), else None.
    :param ended_early: how it ended early, in words ("" when it did not).
    :param warnings: one line each: what was wrong with the input although
        it could be analysed (shown by the CLI, in summary.json and the report).
    :param only: the people the outputs are restricted to (``--only``; empty: all).
    :param anonymized: faces are pixelated in annotated.mp4 (``--anonymize``).
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
    frames_read: Optional[int] = None
    ended_early: str = ""
    warnings: List[str] = field(default_factory=list)
    only: Tuple[str, ...] = ()
    anonymized: bool = False

    def face_ids(self) -> List[str]:
        """Face ids in order of first appearance."""
        return list(dict.fromkeys(row.face_id for row in self.rows))

    def rows_of(self, face_id: str) -> List[FaceRow]:
        """Return the rows of one face, in time order."""
        return [row for row in self.rows if row.face_id == face_id]

    def person_ids(self) -> List[str]:
        """Person ids in order of first appearance (empty without re-identification)."""
        return list(dict.fromkeys(row.person_id for row in self.rows if row.person_id))

    def rows_of_person(self, person_id: str) -> List[FaceRow]:
        """Return the rows of one person (all their face tracks), in time order."""
        return [row for row in self.rows if row.person_id == person_id]

    def subjects(self) -> List[str]:
        """Whom the report shows, in order of first appearance: persons, else faces."""
        return list(dict.fromkeys(row.subject for row in self.rows))

    def rows_of_subject(self, subject: str) -> List[FaceRow]:
        """Return the rows of one subject (:attr:`FaceRow.subject`), in time order."""
        return [row for row in self.rows if row.subject == subject]

    def frame_period_s(self) -> float:
        """Typical time between processed frames, seconds (median spacing)."""
        times = np.array([f.time_s for f in self.frames], dtype=np.float64)
        steps = np.diff(times)
        steps = steps[steps > 0]
        if steps.size:
            return float(np.median(steps))
        rate = self.description.frame_rate
        return self.selection.every / (rate if rate > 0 else DEFAULT_FRAME_RATE)

    def note_frames_read(self, frames_read: int, damage: str = "") -> None:
        """Record how many frames the input gave; warn when it ended early.

        Call it only when reading reached the end of the input (not when it
        stopped at ``--end``).  An input ends early when its reader reports
        damage, or when it gave fewer frames than its header announced
        (beyond FRAME_COUNT_TOLERANCE: some containers only estimate it).

        :param frames_read: frames the input yielded.
        :param damage: the reader's reason for stopping early, or "".
        """
        expected = self.description.frame_count
        missing = expected - frames_read
        if not damage and missing <= max(1, FRAME_COUNT_TOLERANCE * expected):
            return
        self.frames_read = frames_read
        if missing > 0:
            self.ended_early = (f"the input ended after {frames_read} of {expected} frames "
                                f"({damage or 'truncated or damaged'})")
        else:
            self.ended_early = (f"the input ended early after {frames_read} frames "
                                f"({damage})")
        self.warnings.append(f"{self.description.path}: {self.ended_early}; the results "
                             "cover the frames read")

    def check_not_empty(self) -> None:
        """Raise when no frame was processed, saying why in one line.

        :raises SessionError: naming the input and the reason.
        """
        if self.frames:
            return
        path = self.description.path
        if self.ended_early and not self.skipped_frames:
            raise SessionError(f"{path}: {self.ended_early}, before any frame to analyse")
        if self.skipped_frames:
            raise SessionError(f"{path}: no frame could be decoded ({self.skip_reason})")
        selection = self.selection
        if selection.start_s > 0 or selection.end_s is not None:
            end = "the end" if selection.end_s is None else f"{selection.end_s} s"
            raise SessionError(f"{path}: no frames between {selection.start_s} s and {end}")
        raise SessionError(f"{path}: has no frames")


@dataclass
class SessionOutputs:
    """The files written for one session.

    :param name: session name.
    :param folder: its output folder.
    :param summary: the summary (summary.json content).
    :param figures: figure key (see FIGURE_FILES) -> PNG path.
    :param files: every file written, report.html last.
    """

    name: str
    folder: Path
    summary: Dict[str, Any]
    figures: Dict[str, Path] = field(default_factory=dict)
    files: List[Path] = field(default_factory=list)


def float_tuple(values: Any) -> Tuple[float, ...]:
    """Return any array-like of numbers as a flat tuple of Python floats."""
    return tuple(float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1))
