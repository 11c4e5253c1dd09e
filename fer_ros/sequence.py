"""Dynamic FER: per-face feature sequences and the CNN-LSTM that classifies them.

:func:`resample_indices` is the thesis' Algorithm 1: a sequence of any
length n becomes exactly l frames, evenly, by skipping frames when n > l
and repeating them when n < l (index ``floor(i * n / l)`` for i < l, which
does both).  :class:`FeatureBuffer` keeps a bounded ring buffer of feature
vectors per tracked face; a face's buffer is dropped when its track ends.

:class:`SequenceClassifier` loads a ``.tflite`` (shipped) or ``.keras``
sequence model whose input is [N, l, F]: F-dimensional features of the
static CNN (its ``features`` layer, averaged over space), l frames after
resampling.  The JSON sidecar names the labels, l, and the static model the
features came from; a sequence model only makes sense with that static model.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any, Deque, Dict, Iterable, List, Sequence, Tuple

import numpy as np

from fer_ros.model_files import ModelLoadError, open_model, read_sidecar


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


class SequenceClassifier:
    """Classify feature sequences with a CNN-LSTM.

    Use :meth:`load`.
    """

    def __init__(self, forward: Any, labels: Tuple[str, ...], sequence_length: int,
                 feature_size: int, info: Dict[str, Any], source: str) -> None:
        self._forward = forward
        self.labels = labels
        self.sequence_length = sequence_length
        self.feature_size = feature_size
        self.info = info
        self.source = source

    @classmethod
    def load(cls, path: str | Path, threads: int = 1) -> "SequenceClassifier":
        """Load a sequence model and its sidecar.

        :param path: ``.tflite`` or ``.keras`` file with ``<stem>.json``.
        :param threads: CPU threads for LiteRT.
        :raises ModelLoadError: when the model or sidecar is missing or bad.
        """
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"{path}: sequence model file not found")
        info = read_sidecar(path, required=True, kind="sequence model")
        assert info is not None
        try:
            labels = tuple(info["labels"])
            length = int(info["sequence_length"])
            features = int(info["feature_size"])
        except (ValueError, KeyError, TypeError) as error:
            raise ModelLoadError(f"{path.with_suffix('.json')}: unreadable sequence model "
                                 f"sidecar ({type(error).__name__}: {error})") from None
        forward = open_model(path, (length, features), threads, kind="sequence model")
        return cls(forward, labels, length, features, info, str(path))

    def predict_sequences(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities for feature sequences of any lengths.

        :param sequences: each float [n_i, feature_size], n_i >= 1.
        :return: float32 [len(sequences), len(labels)].
        """
        if not len(sequences):
            return np.zeros((0, len(self.labels)), np.float32)
        batch = np.stack([resample(np.asarray(s, np.float32), self.sequence_length)
                          for s in sequences])
        if batch.shape[2] != self.feature_size:
            raise ValueError(f"features have {batch.shape[2]} values, the sequence model "
                             f"expects {self.feature_size}")
        return np.asarray(self._forward(batch)[0], np.float32)
