"""The annotated video of a session: processed frames with the node's overlay.

With ``--anonymize`` every face is pixelated beyond recognition
(:func:`fer_ros.overlay.pixelate_faces`: the face box and a margin of
:data:`fer_ros.overlay.BLUR_MARGIN` of its side around it, so every box of
faces.csv is covered) before the boxes and labels are drawn.  With
``--only`` just those people are annotated; everyone else's face is
pixelated, as they are left out of every other output too.

The video is streamed into a temporary file while the frames are
processed and renamed to ``annotated.mp4`` only at the very end, after
the small text outputs, so a full disk or an interrupted run never leaves a
truncated video under the final name.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from fer_ros.overlay import draw_overlay, pixelate_faces
from fer_ros.pipeline import FrameResult
from fer_ros.session.safe_output import OutputError, commit, remove_quietly, temporary_path


#: FourCC of the annotated video.
VIDEO_FOURCC = "mp4v"


class AnnotatedVideoWriter:
    """Write the processed frames with the node's overlay into an MP4 file.

    Frames go to a temporary file beside ``path``; :meth:`finish` checks
    and closes it, :meth:`commit` renames it to ``path``, :meth:`abort`
    deletes it.

    :param path: the video file to write.
    :param frame_rate: frames/s written into the file.
    :param blur_faces: pixelate every face (``--anonymize``).
    :param only: annotate only these people and pixelate the other faces
        (``--only``; empty: everyone).
    """

    def __init__(self, path: Path, frame_rate: float, blur_faces: bool = False,
                 only: Sequence[str] = ()) -> None:
        self.path = path
        self.frame_rate = max(1.0, float(frame_rate))
        self.blur_faces = blur_faces
        self.only = frozenset(only)
        self.frames = 0
        self._writer: Optional[cv2.VideoWriter] = None
        self._size: Tuple[int, int] = (0, 0)
        self._temporary: Optional[Path] = None
        self._log_level: Optional[int] = None

    def __call__(self, image: np.ndarray, result: FrameResult) -> None:
        """Annotate one frame and append it (resized to the first frame's size)."""
        if self.only:
            others = [f.detection.box for f in result.faces if f.person_id not in self.only]
            if others:
                image = image.copy()
                pixelate_faces(image, others)
            result = dataclasses.replace(
                result, faces=[f for f in result.faces if f.person_id in self.only])
        overlay = draw_overlay(image, result, blur_faces=self.blur_faces)
        if self._writer is None:
            self._temporary = temporary_path(self.path)
            # A failed write (full disk) would print one OpenCV warning per
            # frame; finish() reports it in one line instead.
            self._log_level = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
            self._size = (overlay.shape[1], overlay.shape[0])
            fourcc = cv2.VideoWriter.fourcc(*VIDEO_FOURCC)
            self._writer = cv2.VideoWriter(str(self._temporary), fourcc, self.frame_rate,
                                           self._size)
            if not self._writer.isOpened():
                raise OutputError(f"{self.path}: cannot write a {VIDEO_FOURCC} video")
        if (overlay.shape[1], overlay.shape[0]) != self._size:
            overlay = cv2.resize(overlay, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(overlay)
        self.frames += 1

    def finish(self) -> None:
        """Close the temporary file and check that it holds every frame.

        OpenCV does not report failed writes (a full disk), so the finished
        file is opened again and its frame count compared.

        :raises OutputError: naming ``path`` when the video is incomplete
            (the temporary file is deleted).
        """
        if self._writer is None:
            return
        self._release()
        assert self._temporary is not None
        check = cv2.VideoCapture(str(self._temporary))
        written = int(check.get(cv2.CAP_PROP_FRAME_COUNT)) if check.isOpened() else 0
        check.release()
        if written != self.frames:
            self.abort()
            raise OutputError(f"{self.path}: cannot write ({written} of {self.frames} "
                              "frames written: is the disk full?); it was not written")

    def commit(self) -> Optional[Path]:
        """Rename the finished video to its final name.

        :return: the video, or None when no frame was written.
        :raises OutputError: when the rename fails.
        """
        self.finish()
        if self._temporary is None:
            return None
        temporary, self._temporary = self._temporary, None
        return commit(temporary, self.path)

    def abort(self) -> None:
        """Stop writing and delete the temporary file (nothing keeps the final name)."""
        self._release()
        if self._temporary is not None:
            remove_quietly(self._temporary)
            self._temporary = None

    def _release(self) -> None:
        """Close the OpenCV writer and restore OpenCV's log level."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._log_level is not None:
            cv2.utils.logging.setLogLevel(self._log_level)
            self._log_level = None
