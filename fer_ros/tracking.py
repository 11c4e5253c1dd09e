"""Multi-face tracking with stable ids: constant-velocity boxes + Hungarian matching.

Each frame's detections are assigned to existing tracks by minimising
``1 - IoU`` between the detections and each track's box predicted at the
frame's stamp (constant velocity), with pairs below a minimum IoU gated out.
Unmatched detections start new tracks; a track that is not seen for
``max_age_s`` seconds (message time, not wall clock) ends and its id is
never reused.  Because assignment is global (Hungarian) and gated, an id
cannot move to another face whose box does not overlap its prediction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from fer_ros.detection import box_iou

#: Weight of the newest velocity measurement in the smoothed velocity (0..1).
VELOCITY_SMOOTHING = 0.5
#: Velocity is not extrapolated over gaps longer than this, seconds.
MAX_EXTRAPOLATION_S = 0.5


@dataclass
class Track:
    """One tracked face.

    :param face_id: stable id, e.g. ``"face_3"``; never reused.
    :param box: last matched box ``(x0, y0, x1, y1)`` in pixels.
    :param velocity: box-corner velocity, pixels per second.
    :param first_seen: stamp of the first detection, seconds.
    :param last_seen: stamp of the last matched detection, seconds.
    :param hits: number of frames the face was detected in.
    """

    face_id: str
    box: np.ndarray
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    first_seen: float = 0.0
    last_seen: float = 0.0
    hits: int = 1

    def predicted_box(self, stamp: float) -> np.ndarray:
        """Box extrapolated to ``stamp`` at constant velocity."""
        dt = min(max(stamp - self.last_seen, 0.0), MAX_EXTRAPOLATION_S)
        return self.box + self.velocity * dt


@dataclass
class TrackerUpdate:
    """Result of one :meth:`FaceTracker.update`.

    :param face_ids: the track id of each detection, in detection order.
    :param ended: ids of tracks that ended at this update.
    """

    face_ids: List[str]
    ended: List[str]


class FaceTracker:
    """Assign stable ids to face boxes across frames.

    :param min_iou: smallest IoU between a prediction and a detection that
        may be matched (0..1).
    :param max_age_s: a track unseen for longer than this ends, seconds.
    :param id_prefix: prefix of generated ids.
    """

    def __init__(self, min_iou: float = 0.2, max_age_s: float = 1.0,
                 id_prefix: str = "face_") -> None:
        if not 0.0 < min_iou < 1.0:
            raise ValueError(f"min_iou must be in (0, 1), got {min_iou}")
        if max_age_s < 0.0:
            raise ValueError(f"max_age_s must be >= 0, got {max_age_s}")
        self.min_iou = min_iou
        self.max_age_s = max_age_s
        self.id_prefix = id_prefix
        self._tracks: Dict[str, Track] = {}
        self._next_id = 1
        self._last_stamp = -np.inf

    @property
    def tracks(self) -> Dict[str, Track]:
        """Live tracks by id (read only; do not modify)."""
        return self._tracks

    def reset(self) -> List[str]:
        """Drop every track; return their ids.  Ids are not reused."""
        ended = list(self._tracks)
        self._tracks = {}
        self._last_stamp = -np.inf
        return ended

    def update(self, boxes: Sequence[Sequence[float]], stamp: float) -> TrackerUpdate:
        """Match this frame's face boxes to tracks.

        :param boxes: ``(x, y, width, height)`` per detected face, pixels.
        :param stamp: the frame's time in seconds (message stamp).  A stamp
            earlier than the previous one (bag loop, clock reset) resets the
            tracker.
        :return: the id of every box and the ids of tracks that ended.
        """
        ended: List[str] = []
        if stamp < self._last_stamp:
            ended.extend(self.reset())
        self._last_stamp = stamp
        corners = np.array([(x, y, x + w, y + h) for x, y, w, h in boxes],
                           dtype=np.float64).reshape(-1, 4)
        ids: List[str] = [""] * len(corners)
        track_ids = list(self._tracks)
        if track_ids and len(corners):
            predicted = np.stack([self._tracks[t].predicted_box(stamp) for t in track_ids])
            iou = box_iou(predicted, corners)
            rows, cols = linear_sum_assignment(1.0 - iou)
            for row, col in zip(rows, cols):
                if iou[row, col] >= self.min_iou:
                    ids[col] = track_ids[row]
                    self._match(self._tracks[track_ids[row]], corners[col], stamp)
        for col, face_id in enumerate(ids):
            if not face_id:
                ids[col] = self._start(corners[col], stamp)
        for face_id in [t for t, track in self._tracks.items()
                        if stamp - track.last_seen > self.max_age_s]:
            del self._tracks[face_id]
            ended.append(face_id)
        return TrackerUpdate(ids, ended)

    def _start(self, box: np.ndarray, stamp: float) -> str:
        face_id = f"{self.id_prefix}{self._next_id}"
        self._next_id += 1
        self._tracks[face_id] = Track(face_id, box, first_seen=stamp, last_seen=stamp)
        return face_id

    @staticmethod
    def _match(track: Track, box: np.ndarray, stamp: float) -> None:
        dt = stamp - track.last_seen
        if dt > 0:
            measured = (box - track.box) / dt
            track.velocity = (VELOCITY_SMOOTHING * measured
                              + (1.0 - VELOCITY_SMOOTHING) * track.velocity)
        track.box = box
        track.last_seen = stamp
        track.hits += 1
