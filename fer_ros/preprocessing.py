"""The one preprocessing path shared by training, the node and the CLIs.

Faces become 48x48 uint8 grayscale crops here.  Intensity normalisation
(uint8 -> [-1, 1]) is part of the models themselves (a ``Rescaling`` layer at
their input), so training and inference cannot normalise differently.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import cv2
import numpy as np

from fer_ros.parameters import default_of

#: Side of the square grayscale face the CNNs take, in pixels.
FACE_SIZE = 48
#: Extra context around a detector box, as a share of the box side (the
#: ``crop_margin`` parameter); FER2013 faces are loosely cropped (forehead to
#: chin, some hair), detector boxes are tight, so the crop is widened to
#: match the training distribution.
DEFAULT_CROP_MARGIN = default_of("crop_margin")


def to_gray(image: np.ndarray) -> np.ndarray:
    """Convert a uint8 BGR/BGRA/gray image to single-channel uint8 gray.

    :param image: [H,W], [H,W,1], [H,W,3] (BGR) or [H,W,4] (BGRA).
    :return: [H,W] uint8.
    """
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"cannot convert an image of shape {image.shape} to gray")


def to_face_input(gray_face: np.ndarray) -> np.ndarray:
    """Resize a gray face crop to the CNN input size.

    :param gray_face: [h,w] uint8, any size >= 1x1.
    :return: [48,48] uint8.
    """
    if gray_face.shape[:2] == (FACE_SIZE, FACE_SIZE):
        return np.ascontiguousarray(gray_face, dtype=np.uint8)
    shrinking = gray_face.shape[0] > FACE_SIZE
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(gray_face, (FACE_SIZE, FACE_SIZE), interpolation=interpolation)


def square_box(box: Sequence[float], margin: float, width: int,
               height: int) -> Tuple[int, int, int, int]:
    """Grow a box to a square with a margin, clipped to the image.

    :param box: ``(x, y, w, h)`` in pixels.
    :param margin: extra context as a share of the larger box side.
    :param width: image width in pixels.
    :param height: image height in pixels.
    :return: integer ``(x0, y0, x1, y1)``, non-empty and inside the image.
    """
    x, y, w, h = (float(v) for v in box)
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    x0 = int(round(max(0.0, cx - side / 2.0)))
    y0 = int(round(max(0.0, cy - side / 2.0)))
    x1 = int(round(min(float(width), cx + side / 2.0)))
    y1 = int(round(min(float(height), cy + side / 2.0)))
    x1 = max(x1, min(width, x0 + 1))
    y1 = max(y1, min(height, y0 + 1))
    return x0, y0, x1, y1


def crop_faces(gray: np.ndarray, boxes: Sequence[Sequence[float]],
               margin: float = DEFAULT_CROP_MARGIN) -> np.ndarray:
    """Crop every face box from a gray frame into one CNN batch.

    :param gray: [H,W] uint8 frame.
    :param boxes: ``(x, y, w, h)`` boxes in pixels.
    :param margin: context added around each box (see :func:`square_box`).
    :return: uint8 [N,48,48] (N = len(boxes); [0,48,48] when no boxes).
    """
    height, width = gray.shape[:2]
    batch = np.empty((len(boxes), FACE_SIZE, FACE_SIZE), dtype=np.uint8)
    for i, box in enumerate(boxes):
        x0, y0, x1, y1 = square_box(box, margin, width, height)
        batch[i] = to_face_input(gray[y0:y1, x0:x1])
    return batch
