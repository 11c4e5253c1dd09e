"""ROS4HRI mapping and label orders."""

import math
from types import SimpleNamespace

from fer_ros.labels import (EXPRESSION_OF_LABEL, FER2013_LABELS, THREE_CLASS_LABELS,
                            expression_fields)

HRI_EXPRESSIONS = {"neutral", "angry", "sad", "happy", "surprised", "disgusted", "scared", ""}


def test_every_label_maps_to_an_hri_expression():
    for label in FER2013_LABELS + THREE_CLASS_LABELS:
        assert EXPRESSION_OF_LABEL[label] in HRI_EXPRESSIONS


def test_expression_fields():
    fields = expression_fields(SimpleNamespace(label="fear", valence=-0.8, confidence=0.6))
    assert fields["expression"] == "scared" and fields["valence"] == -0.8
    assert math.isnan(fields["arousal"]) and fields["confidence"] == 0.6


def test_label_orders_never_change():
    assert THREE_CLASS_LABELS == ("negative", "neutral", "positive")
    assert FER2013_LABELS == ("angry", "disgust", "fear", "happy", "sad", "surprise",
                              "neutral")
