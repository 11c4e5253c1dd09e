"""Emotional stability of a face over a sliding time window T.

For each face the meter keeps the ``(stamp, label, valence)`` of its frames
within the last ``window_s`` seconds (message stamps, not wall clock) and
reports, over the successive pairs of frames inside the window:

* ``stability`` = 1 - (label changes / successive pairs); 1.0 when fewer
  than two frames are in the window.  1.0 = the same emotion throughout.
* ``label_change_rate`` = label changes / ``window_s``, changes per second.
  Dividing by the fixed window (not by the frame count) keeps the rate
  independent of the frame rate and of gaps.
* ``valence_mssd`` = mean over successive pairs of (v[i+1] - v[i])^2, the
  mean squared successive difference used for affective instability
  (Jahng, Wood & Trull 2008); 0.0 with fewer than two frames.

The labels and valences fed in are the per-frame (unsmoothed) ones: the
metric measures how much the *displayed* emotion changes (the thesis'
definition), which smoothing would hide.

References:
    Jahng, Wood, Trull (2008). Analysis of affective instability in
    ecological momentary assessment. Psychological Methods 13(4).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Deque, Dict, Iterable, List, Sequence, Tuple, Union

import numpy as np

#: At most this many frames per face are kept, whatever the window and rate.
MAX_SAMPLES_PER_FACE = 2048


@dataclass(frozen=True)
class StabilityValues:
    """Stability of one face within the window.

    :param stability: 0.0 (label changes every frame) to 1.0 (never).
    :param label_change_rate: label changes per second.
    :param valence_mssd: mean squared successive valence difference, 0 to 4.
    :param samples: frames inside the window.
    """

    stability: float = 1.0
    label_change_rate: float = 0.0
    valence_mssd: float = 0.0
    samples: int = 0


def stability_of(stamps: Union[Sequence[float], np.ndarray], labels: Sequence[object],
                 valences: Union[Sequence[float], np.ndarray],
                 window_s: float) -> StabilityValues:
    """Stability values of one face's frames that lie within the window.

    The window is ``(stamps[-1] - window_s, stamps[-1]]``; earlier frames are
    ignored.  Frames must be in time order.

    :param stamps: frame times, seconds, non-decreasing.
    :param labels: label of each frame (any comparable values).
    :param valences: valence of each frame, -1..1.
    :param window_s: window length T, seconds (> 0).
    :return: the values; the neutral ones for an empty input.
    """
    if window_s <= 0:
        raise ValueError(f"window_s must be > 0, got {window_s}")
    if not len(stamps):
        return StabilityValues()
    t = np.asarray(stamps, dtype=np.float64)
    start = int(np.searchsorted(t, t[-1] - window_s, side="right"))
    labels_in = list(labels)[start:]
    valence_in = np.asarray(valences, dtype=np.float64)[start:]
    n = len(labels_in)
    if n < 2:
        return StabilityValues(samples=n)
    changes = sum(a != b for a, b in zip(labels_in[:-1], labels_in[1:]))
    mssd = float(np.mean(np.diff(valence_in) ** 2))
    return StabilityValues(1.0 - changes / (n - 1), changes / window_s, mssd, n)


class StabilityMeter:
    """Per-face stability over a sliding window of message time.

    :param window_s: window length T, seconds.
    """

    def __init__(self, window_s: float = 5.0) -> None:
        if window_s <= 0:
            raise ValueError(f"stability window must be > 0 s, got {window_s}")
        self.window_s = window_s
        self._history: Dict[str, Deque[Tuple[float, object, float]]] = {}

    def update(self, face_id: str, stamp: float, label: object,
               valence: float) -> StabilityValues:
        """Add one frame of a face and return its current stability.

        :param face_id: the face's track id.
        :param stamp: frame time, seconds; an earlier stamp than the face's
            last one restarts its history (time went backwards).
        :param label: this frame's label.
        :param valence: this frame's valence.
        """
        history = self._history.setdefault(face_id, deque(maxlen=MAX_SAMPLES_PER_FACE))
        if history and stamp < history[-1][0]:
            history.clear()
        history.append((stamp, label, valence))
        while history and history[0][0] <= stamp - self.window_s:
            history.popleft()
        stamps, labels, valences = zip(*history)
        return stability_of(stamps, labels, valences, self.window_s)

    def drop(self, face_ids: Iterable[str]) -> None:
        """Forget faces whose tracks ended."""
        for face_id in list(face_ids):
            self._history.pop(face_id, None)

    def reset(self) -> None:
        """Forget every face."""
        self._history.clear()

    @property
    def faces(self) -> List[str]:
        """Ids of the faces with history."""
        return list(self._history)
