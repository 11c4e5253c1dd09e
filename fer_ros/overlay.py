"""Annotated overlay: face boxes, ids, emotion, confidence and stability."""

from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

from fer_ros.labels import LABEL_VALENCE
from fer_ros.pipeline import FaceResult, FrameResult

#: Box colours (BGR) by valence sign: negative red, neutral grey, positive green.
VALENCE_COLOURS = {-1: (60, 60, 230), 0: (200, 200, 200), 1: (80, 200, 60)}


def label_colour(label: str) -> Tuple[int, int, int]:
    """BGR colour of a label by the sign of its valence."""
    return VALENCE_COLOURS[int(np.sign(LABEL_VALENCE.get(label, 0.0)))]


def draw_face(image: np.ndarray, face: FaceResult) -> None:
    """Draw one face's box and caption onto ``image`` (in place)."""
    x, y, w, h = (int(round(v)) for v in face.detection.box)
    colour = label_colour(face.label)
    thickness = max(1, round(min(image.shape[:2]) / 240))
    cv2.rectangle(image, (x, y), (x + w, y + h), colour, thickness)
    lines = [f"{face.face_id} {face.label} {face.confidence:.2f}",
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


def draw_overlay(bgr: np.ndarray, result: FrameResult) -> np.ndarray:
    """Return a copy of the frame with every face of ``result`` annotated."""
    image = np.array(bgr, dtype=np.uint8, copy=True)
    for face in result.faces:
        draw_face(image, face)
    status = f"faces {len(result.faces)}  group valence {result.group_valence:+.2f}"
    cv2.putText(image, status, (8, image.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX,
                0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return image
