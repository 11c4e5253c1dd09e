"""Emotion label sets, the 7 -> 3 class relabelling, valence and the ROS4HRI expressions.

Label orders are part of the public interface: the probabilities published in
``fer_ros/msg/Emotion`` follow exactly these orders, and they never change.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

#: FER2013 label order (``emotion`` column of fer2013.csv).
FER2013_LABELS: Tuple[str, ...] = (
    "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

#: The thesis' three classes.
THREE_CLASS_LABELS: Tuple[str, ...] = ("negative", "neutral", "positive")

#: CK+ label order as stored in ``ckplus48.npz`` (its ``classes`` array).
CKPLUS_LABELS: Tuple[str, ...] = (
    "anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")

#: Synonyms accepted for folder names and CK+ names, mapped to FER2013 names.
LABEL_SYNONYMS: Dict[str, str] = {
    "anger": "angry", "angry": "angry",
    "disgust": "disgust", "disgusted": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear",
    "happy": "happy", "happiness": "happy", "joy": "happy",
    "sad": "sad", "sadness": "sad",
    "surprise": "surprise", "surprised": "surprise",
    "neutral": "neutral", "calm": "neutral",
    # CK+ contempt: not one of FER2013's seven basic emotions.  We file it
    # under the negative valence class for 3-class training (it is a
    # negative-valence expression) and drop it from 7-class data, where no
    # FER2013 class corresponds to it.
    "contempt": "contempt",
}

#: Seven-class name -> three-class name; ``None`` means "dropped".
#: Surprise is dropped as in the thesis (its valence is ambiguous).
SEVEN_TO_THREE: Dict[str, Optional[str]] = {
    "angry": "negative", "disgust": "negative", "fear": "negative",
    "sad": "negative", "contempt": "negative",
    "neutral": "neutral", "happy": "positive", "surprise": None,
}

#: Valence of each label in [-1, 1]; used for the ``valence`` field and MSSD.
LABEL_VALENCE: Dict[str, float] = {
    "negative": -1.0, "neutral": 0.0, "positive": 1.0,
    "angry": -1.0, "disgust": -1.0, "fear": -1.0, "sad": -1.0,
    "contempt": -1.0, "happy": 1.0, "surprise": 0.0,
}


def label_set(name: str) -> Tuple[str, ...]:
    """Return the label tuple for a label-set name.

    :param name: ``"3class"`` or ``"7class"``.
    :return: the ordered class names.
    :raises ValueError: for any other name.
    """
    if name == "3class":
        return THREE_CLASS_LABELS
    if name == "7class":
        return FER2013_LABELS
    raise ValueError(f"unknown label set {name!r}: expected '3class' or '7class'")


def canonical_label(name: str) -> str:
    """Map a dataset or folder label name to its canonical FER2013 name.

    :param name: a label such as ``"Happiness"`` or ``"anger"``.
    :return: the canonical name (``"contempt"`` stays ``"contempt"``).
    :raises ValueError: when the name is unknown.
    """
    key = name.strip().lower()
    if key in THREE_CLASS_LABELS:
        return key
    if key not in LABEL_SYNONYMS:
        raise ValueError(f"unknown emotion label {name!r}")
    return LABEL_SYNONYMS[key]


def relabel(names: Union[Sequence[str], np.ndarray], target: Sequence[str]) -> np.ndarray:
    """Map label names onto indices of ``target``; -1 marks dropped samples.

    Seven-class names map onto three classes through :data:`SEVEN_TO_THREE`;
    names already in ``target`` map directly.

    :param names: per-sample label names (any accepted spelling).
    :param target: the output label order, e.g. :data:`THREE_CLASS_LABELS`.
    :return: int64 array of target indices, -1 where the sample is dropped.
    """
    index = {label: i for i, label in enumerate(target)}
    three = tuple(target) == THREE_CLASS_LABELS
    out = np.full(len(names), -1, dtype=np.int64)
    for i, raw in enumerate(names):
        name = canonical_label(raw)
        if three and name not in index:
            name = SEVEN_TO_THREE.get(name) or ""
        out[i] = index.get(name, -1)
    return out


def collapse_probabilities(probabilities: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Turn 7-class probabilities into the 3 valence classes.

    Negative sums angry, disgust, fear and sad; surprise, which the 3-class
    set leaves out, is dropped and the rest renormalised.

    :param probabilities: float [N, len(labels)].
    :param labels: the 7-class label order of the columns.
    :return: float32 [N, 3] in :data:`THREE_CLASS_LABELS` order, rows sum to 1.
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    out = np.zeros((len(probabilities), 3), np.float32)
    for column, label in enumerate(labels):
        target = SEVEN_TO_THREE.get(canonical_label(label))
        if target is not None:
            out[:, THREE_CLASS_LABELS.index(target)] += probabilities[:, column]
    return out / np.maximum(out.sum(axis=1, keepdims=True), 1e-12)


def valence_of(probabilities: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Return the expected valence in [-1, 1] under the class probabilities.

    :param probabilities: float array [..., len(labels)].
    :param labels: class names in the same order.
    :return: float32 array [...] of valences.
    """
    weights = np.array([LABEL_VALENCE[label] for label in labels], dtype=np.float32)
    return np.asarray(probabilities, dtype=np.float32) @ weights


# --- ROS4HRI (REP-155) ------------------------------------------------------
# hri_msgs (revision 52bdab7 and later) names expressions with string
# constants ("angry", "sad", "happy", "surprised", "disgusted", "scared",
# "neutral"...) and carries valence and arousal in [-1, 1] and a confidence
# in [0, 1].  fer_ros does not estimate arousal: NaN there.  The 3-class
# "negative" has no single expression: it maps to "" (unknown category), and
# consumers use the valence instead.

#: fer_ros label -> hri_msgs/Expression ``expression`` string.
EXPRESSION_OF_LABEL: Dict[str, str] = {
    "angry": "angry", "disgust": "disgusted", "fear": "scared", "happy": "happy",
    "sad": "sad", "surprise": "surprised", "neutral": "neutral",
    "positive": "happy", "negative": "",
}


def expression_fields(emotion: Any) -> Dict[str, Any]:
    """Return the ``hri_msgs/Expression`` field values for one fer_ros Emotion.

    :param emotion: a ``fer_ros/msg/Emotion`` (or an object with ``label``,
        ``valence`` and ``confidence``).
    :return: ``expression``, ``valence``, ``arousal`` (NaN) and ``confidence``.
    """
    return {"expression": EXPRESSION_OF_LABEL.get(emotion.label, ""),
            "valence": float(emotion.valence), "arousal": float("nan"),
            "confidence": float(emotion.confidence)}
