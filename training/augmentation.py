"""Training-time augmentation: the thesis' rotation/shift/zoom/flip, as Keras layers.

Runs inside the ``tf.data`` pipeline on uint8-valued float faces, before the
model's own normalisation layer, so the model never sees a different scale
at training and inference.  Optional extras from the published FER2013
recipes (Khaireddin & Chen 2021; usef-kh/fer): brightness and contrast
jitter, random erasing, and mixup of whole batches (:func:`mix_batch`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import keras
from keras import layers


@dataclass
class AugmentationConfig:
    """Random geometric augmentation, as in the thesis.

    :param rotation_deg: maximum rotation either way, degrees.
    :param shift: maximum translation, share of the image side.
    :param zoom: maximum zoom in or out, share of the image side.
    :param horizontal_flip: mirror half the faces left-right.
    :param brightness: maximum brightness change, share of the value range
        (0 = off).
    :param contrast: maximum contrast change, share (0 = off).
    :param random_erasing: probability of blanking a random rectangle
        (2-33% of the face) with noise (0 = off).
    """

    rotation_deg: float = 10.0
    shift: float = 0.1
    zoom: float = 0.1
    horizontal_flip: bool = True
    brightness: float = 0.0
    contrast: float = 0.0
    random_erasing: float = 0.0

    def __post_init__(self) -> None:
        """Reject out-of-range values before any data is loaded."""
        for name in ("brightness", "contrast", "random_erasing"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"augmentation {name} must be in 0..1, "
                                 f"not {getattr(self, name)}")


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
    if config.brightness > 0:
        steps.append(layers.RandomBrightness(config.brightness, value_range=(0, 255),
                                             seed=seed + 4))
    if config.contrast > 0:
        steps.append(layers.RandomContrast(config.contrast, value_range=(0, 255),
                                           seed=seed + 5))
    if config.random_erasing > 0:
        # factor (p, p): erase with probability p (a single float draws p itself).
        steps.append(layers.RandomErasing((config.random_erasing, config.random_erasing),
                                          value_range=(0, 255),
                                          seed=seed + 6))
    return keras.Sequential(steps or [layers.Identity()], name="augmentation")


def mix_batch(x, targets: Dict[str, object], weights: Dict[str, object], alpha: float
              ) -> Tuple[object, Dict[str, object], Dict[str, object]]:
    """Mixup (Zhang et al. 2018) within one batch, per face.

    Each face is blended with a random other face of the batch with a share
    ``lam ~ Beta(alpha, alpha)`` folded to ``lam >= 0.5`` (the face keeps
    most of its own identity).  Targets are blended in proportion to each
    face's share and sample weight, so a face whose target is masked (weight
    0, e.g. surprise for the 3-class head) contributes nothing to that head.

    :param x: float faces [B,H,W,C].
    :param targets: per output, float targets [B,K].
    :param weights: per output, float sample weights [B].
    :param alpha: Beta parameter, > 0 (0.2-0.4 is usual).
    :return: ``(x, targets, weights)`` blended.
    """
    import tensorflow as tf

    size = tf.shape(x)[0]
    first = tf.random.gamma([size], alpha)
    lam = first / (first + tf.random.gamma([size], alpha))
    lam = tf.maximum(lam, 1.0 - lam)
    partner = tf.random.shuffle(tf.range(size))
    mixed_x = (lam[:, None, None, None] * x
               + (1.0 - lam[:, None, None, None]) * tf.gather(x, partner))
    mixed_targets, mixed_weights = {}, {}
    for name, target in targets.items():
        own = lam * weights[name]
        other = (1.0 - lam) * tf.gather(weights[name], partner)
        total = own + other
        mixed_targets[name] = ((own[:, None] * target
                                + other[:, None] * tf.gather(target, partner))
                               / tf.maximum(total, 1e-12)[:, None])
        mixed_weights[name] = total
    return mixed_x, mixed_targets, mixed_weights
