"""Mapping of fer_ros emotions to ROS4HRI (REP-155) ``hri_msgs/Expression``.

hri_msgs (revision 52bdab7 and later) names expressions with string
constants (``"angry"``, ``"sad"``, ``"happy"``, ``"surprised"``,
``"disgusted"``, ``"scared"``, ``"neutral"``...) and carries valence and
arousal in [-1, 1] and a confidence in [0, 1].  fer_ros does not estimate
arousal; publish NaN there.  The 3-class "negative" has no single
expression: it maps to ``""`` (unknown category), and consumers use the
valence instead.
"""

from __future__ import annotations

from typing import Any, Dict

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
