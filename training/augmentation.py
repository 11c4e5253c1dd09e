"""Training-time augmentation: the thesis' rotation/shift/zoom/flip, as Keras layers.

Runs inside the ``tf.data`` pipeline on uint8-valued float faces, before the
model's own normalisation layer, so the model never sees a different scale
at training and inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers


@dataclass
class AugmentationConfig:
    """Random geometric augmentation, as in the thesis.

    :param rotation_deg: maximum rotation either way, degrees.
    :param shift: maximum translation, share of the image side.
    :param zoom: maximum zoom in or out, share of the image side.
    :param horizontal_flip: mirror half the faces left-right.
    """

    rotation_deg: float = 10.0
    shift: float = 0.1
    zoom: float = 0.1
    horizontal_flip: bool = True


def build_augmenter(config: AugmentationConfig, seed: int) -> keras.Sequential:
    """Return a Sequential of random layers (identity when all are off)."""
    steps = []
    if config.horizontal_flip:
        steps.append(layers.RandomFlip("horizontal", seed=seed))
    if config.rotation_deg > 0:
        steps.append(layers.RandomRotation(config.rotation_deg / 360.0,
                                           fill_mode="reflect", seed=seed + 1))
    if config.shift > 0:
        steps.append(layers.RandomTranslation(config.shift, config.shift,
                                              fill_mode="reflect", seed=seed + 2))
    if config.zoom > 0:
        steps.append(layers.RandomZoom(config.zoom, fill_mode="reflect",
                                       seed=seed + 3))
    return keras.Sequential(steps, name="augmentation")
