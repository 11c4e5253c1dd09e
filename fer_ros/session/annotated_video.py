"""The annotated video of a session: processed frames with the node's overlay."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import cv2
import numpy as np

from fer_ros.overlay import draw_overlay
from fer_ros.pipeline import FrameResult


#: FourCC of the annotated video.
VIDEO_FOURCC = "mp4v"


class AnnotatedVideoWriter:
    """Write the processed frames with the node's overlay into an MP4 file.

    :param path: the video file to write.
    :param frame_rate: frames/s written into the file.
    """

    def __init__(self, path: Path, frame_rate: float) -> None:
        self.path = path
        self.frame_rate = max(1.0, float(frame_rate))
        self.frames = 0
        self._writer: Optional[cv2.VideoWriter] = None
        self._size: Tuple[int, int] = (0, 0)

    def __call__(self, image: np.ndarray, result: FrameResult) -> None:
        """Annotate one frame and append it (resized to the first frame's size)."""
        overlay = draw_overlay(image, result)
        if self._writer is None:
            self._size = (overlay.shape[1], overlay.shape[0])
            fourcc = cv2.VideoWriter.fourcc(*VIDEO_FOURCC)
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.frame_rate,
                                           self._size)
            if not self._writer.isOpened():
                raise OSError(f"{self.path}: cannot write a {VIDEO_FOURCC} video")
        if (overlay.shape[1], overlay.shape[0]) != self._size:
            overlay = cv2.resize(overlay, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(overlay)
        self.frames += 1

    def close(self) -> None:
        """Finish the file."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
