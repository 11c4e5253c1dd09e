"""Annotated overlay: face boxes, ids, emotion, confidence and stability.

By default the faces themselves are pixelated beyond recognition (the
``overlay_blur_faces`` parameter): the overlay shows what was recognised,
not who, so it can be viewed, recorded or shared without identifying anyone.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import cv2
import numpy as np

from fer_ros.labels import LABEL_VALENCE
from fer_ros.pipeline import FaceResult, FrameResult

#: Box colours (BGR) by valence sign: negative red, neutral grey, positive green.
VALENCE_COLOURS = {-1: (60, 60, 230), 0: (200, 200, 200), 1: (80, 200, 60)}
#: Margin around a face box that is pixelated too, share of the box side.
BLUR_MARGIN = 0.25
#: Pixelation blocks across a face box side (8: no facial detail survives).
BLUR_BLOCKS = 8


def pixelate_faces(image: np.ndarray, boxes: Sequence[Tuple[float, float, float, float]],
                   margin: float = BLUR_MARGIN, blocks: int = BLUR_BLOCKS) -> None:
    """Pixelate each ``(x, y, w, h)`` box, widened by ``margin``, in place.

    Each region is averaged down to about ``blocks`` x ``blocks`` cells and
    blown up again (nearest neighbour), then smoothed, so neither the
    face's detail nor its outline edges survive.
    """
    height, width = image.shape[:2]
    for x, y, w, h in boxes:
        pad_x, pad_y = w * margin, h * margin
        x0, y0 = max(0, int(x - pad_x)), max(0, int(y - pad_y))
        x1, y1 = min(width, int(round(x + w + pad_x))), min(height, int(round(y + h + pad_y)))
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        region = image[y0:y1, x0:x1]
        cells = (max(1, min(blocks, x1 - x0)), max(1, min(blocks, y1 - y0)))
        small = cv2.resize(region, cells, interpolation=cv2.INTER_AREA)
        coarse = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
        side = max(3, (min(x1 - x0, y1 - y0) // blocks) | 1)
        image[y0:y1, x0:x1] = cv2.GaussianBlur(coarse, (side, side), 0)


def label_colour(label: str) -> Tuple[int, int, int]:
    """BGR colour of a label by the sign of its valence."""
    return VALENCE_COLOURS[int(np.sign(LABEL_VALENCE.get(label, 0.0)))]


def draw_face(image: np.ndarray, face: FaceResult) -> None:
    """Draw one face's box and caption onto ``image`` (in place)."""
    x, y, w, h = (int(round(v)) for v in face.detection.box)
    colour = label_colour(face.label)
    thickness = max(1, round(min(image.shape[:2]) / 240))
    cv2.rectangle(image, (x, y), (x + w, y + h), colour, thickness)
    lines = [f"{face.person_id or face.face_id} {face.label} {face.confidence:.2f}",
             f"stab {face.stability.stability:.2f} val {face.valence:+.2f}"]
    if face.dynamic_label:
        lines.append(f"seq {face.dynamic_label}")
    scale = max(0.4, min(image.shape[:2]) / 900)
    line_height = int(22 * scale / 0.6)
    top = max(0, y - line_height * len(lines) - 4)
    # Keep the caption inside the image: shift it left at the right edge.
    widest = max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for t in lines)
    left = max(0, min(x, image.shape[1] - widest - 3))
    for i, text in enumerate(lines):
        origin = (left, top + line_height * (i + 1))
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(image, (origin[0], origin[1] - th - 3),
                      (origin[0] + tw + 2, origin[1] + 3), (0, 0, 0), -1)
        cv2.putText(image, text, (origin[0] + 1, origin[1]), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, colour, 1, cv2.LINE_AA)


def draw_overlay(bgr: np.ndarray, result: FrameResult, blur_faces: bool = False) -> np.ndarray:
    """Return a copy of the frame with every face of ``result`` annotated.

    :param blur_faces: pixelate the faces first (:func:`pixelate_faces`).
    """
    image = np.array(bgr, dtype=np.uint8, copy=True)
    if blur_faces:
        pixelate_faces(image, [face.detection.box for face in result.faces])
    for face in result.faces:
        draw_face(image, face)
    status = f"faces {len(result.faces)}  group valence {result.group_valence:+.2f}"
    cv2.putText(image, status, (8, image.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX,
                0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return image
