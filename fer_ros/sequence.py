"""Per-face feature sequences for the CNN-LSTM, and fixed-length resampling.

:func:`resample_indices` is the thesis' Algorithm 1: a sequence of any
length n becomes exactly l frames, evenly, by skipping frames when n > l
and repeating them when n < l (index ``floor(i * n / l)`` for i < l, which
does both).  :class:`FeatureBuffer` keeps a bounded ring buffer of feature
vectors per tracked face; a face's buffer is dropped when its track ends.
"""

from __future__ import annotations

from collections import deque
from typing import Deque, Dict, Iterable, List

import numpy as np


def resample_indices(n: int, length: int) -> np.ndarray:
    """Return indices that resample a sequence of ``n`` frames to ``length`` frames.

    :param n: source length (>= 1).
    :param length: target length l (>= 1).
    :return: int64 [length], non-decreasing, first 0, all < n; every source
        frame appears when n <= length, frames are skipped evenly otherwise.
    """
    if n < 1 or length < 1:
        raise ValueError(f"need n >= 1 and length >= 1, got n={n}, length={length}")
    return (np.arange(length, dtype=np.int64) * n) // length


def resample(sequence: np.ndarray, length: int) -> np.ndarray:
    """Resample the first axis of ``sequence`` to ``length`` (Algorithm 1)."""
    sequence = np.asarray(sequence)
    return sequence[resample_indices(len(sequence), length)]


class FeatureBuffer:
    """Bounded ring buffers of per-frame feature vectors, one per face.

    :param capacity: frames kept per face (older ones fall out).
    """

    def __init__(self, capacity: int = 40) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._frames: Dict[str, Deque[np.ndarray]] = {}
        self._since_run: Dict[str, int] = {}

    def append(self, face_id: str, features: np.ndarray) -> int:
        """Add one frame's features; return the face's buffered length."""
        frames = self._frames.setdefault(face_id, deque(maxlen=self.capacity))
        frames.append(np.asarray(features, dtype=np.float32))
        self._since_run[face_id] = self._since_run.get(face_id, 0) + 1
        return len(frames)

    def due(self, face_id: str, min_frames: int, stride: int) -> bool:
        """Tell whether the face has ``min_frames`` and ``stride`` new frames."""
        frames = self._frames.get(face_id)
        return (frames is not None and len(frames) >= min_frames
                and self._since_run.get(face_id, 0) >= stride)

    def sequence(self, face_id: str) -> np.ndarray:
        """Return the face's buffered frames, oldest first, float32 [n, features]."""
        self._since_run[face_id] = 0
        return np.stack(self._frames[face_id])

    def length(self, face_id: str) -> int:
        """Frames buffered for a face (0 if unknown)."""
        return len(self._frames.get(face_id, ()))

    def drop(self, face_ids: Iterable[str]) -> None:
        """Free the buffers of faces whose tracks ended."""
        for face_id in list(face_ids):
            self._frames.pop(face_id, None)
            self._since_run.pop(face_id, None)

    def reset(self) -> None:
        """Free every buffer."""
        self._frames.clear()
        self._since_run.clear()

    @property
    def faces(self) -> List[str]:
        """Ids of faces with a buffer."""
        return list(self._frames)
