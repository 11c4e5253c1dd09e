"""Frame sources (video file, image, V4L2 camera) without ROS, and the one frame type.

Used by the ``video_source`` node and by the offline analysis, whose
rosbag2 input yields the same :class:`Frame`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Tuple

import cv2
import numpy as np

from fer_ros.image_limits import encoded_image_size, size_problem

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm")
#: Bytes of an image file searched for its declared size.
HEADER_BYTES = 262_144
#: Frame rate assumed for images and cameras that do not report one, frames/s.
DEFAULT_FRAME_RATE = 30.0
#: OpenCV/FFmpeg log levels used unless the user set their own: FFmpeg would
#: print its own lines (e.g. "moov atom not found") for a broken file,
#: before and besides the one clear SourceError.
QUIET_VIDEO_LOGS = {"OPENCV_FFMPEG_LOGLEVEL": "-8", "OPENCV_LOG_LEVEL": "ERROR"}


class SourceError(RuntimeError):
    """A frame source cannot be opened or read."""


@dataclass
class Frame:
    """One frame of an input (video, image, camera or recording), decoded when read.

    :param index: frame number in the input, from 0.
    :param time_s: seconds from the input's first frame (the video position).
    :param stamp: the frame's own time, seconds (a recording's header stamp;
        ``time_s`` for files).
    :param read_image: returns the BGR uint8 [H,W,3] frame.
    """

    index: int
    time_s: float
    stamp: float
    read_image: Callable[[], np.ndarray]

    @property
    def image(self) -> np.ndarray:
        """The BGR uint8 [H,W,3] frame (decoded now if it was not)."""
        return self.read_image()

    @classmethod
    def decoded(cls, index: int, time_s: float, image: np.ndarray) -> "Frame":
        """Make a frame of an already decoded image (stamp = ``time_s``)."""
        return cls(index, time_s, time_s, lambda: image)


def read_image_file(path: Path) -> np.ndarray:
    """Read an image file as BGR uint8, refusing oversized ones before decoding.

    :raises SourceError: for an unreadable or oversized image.
    """
    try:
        with open(path, "rb") as stream:
            header = stream.read(HEADER_BYTES)
    except OSError as error:
        raise SourceError(f"{path}: cannot read ({error.strerror})") from None
    declared = encoded_image_size(header)
    problem = size_problem(*declared) if declared is not None else None
    if problem:
        raise SourceError(f"{path}: {problem}")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SourceError(f"{path}: not a readable image")
    return image


def is_camera(source: str) -> bool:
    """Tell whether a source is ``/dev/videoN`` or a camera index such as ``"0"``."""
    return source.isdigit() or source.startswith("/dev/video")


class FrameSource:
    """Iterate the frames of a video file, an image or a V4L2 camera.

    :param source: file path, ``/dev/videoN`` or a camera index.
    :param size: optional ``(width, height)`` to resize every frame to.
    :param image_frames: how many times an image is repeated (images only).
    """

    def __init__(self, source: str, size: Optional[Tuple[int, int]] = None,
                 image_frames: int = 1) -> None:
        for name, level in QUIET_VIDEO_LOGS.items():
            os.environ.setdefault(name, level)
        self.source = source
        self.size = size if size and size[0] > 0 and size[1] > 0 else None
        self._image: Optional[np.ndarray] = None
        self._capture: Optional[cv2.VideoCapture] = None
        self.image_frames = image_frames
        path = Path(source)
        if is_camera(source):
            device = int(source) if source.isdigit() else source
            self._capture = cv2.VideoCapture(device)
            if not self._capture.isOpened():
                raise SourceError(f"{source}: cannot open camera")
            self.kind = "camera"
        elif not path.exists():
            raise SourceError(f"{source}: no such file")
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            self._image = read_image_file(path)
            self.kind = "image"
        else:
            self._capture = cv2.VideoCapture(str(path))
            if not self._capture.isOpened():
                raise SourceError(f"{source}: not a readable video")
            problem = size_problem(int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                                   int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
            if problem or not self._capture.grab():
                self._capture.release()
                raise SourceError(f"{source}: {problem or 'not a readable video'}")
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self.kind = "video"

    @property
    def frame_rate(self) -> float:
        """The source's frame rate, frames/s (a default where unknown)."""
        if self._capture is not None:
            fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
            if 1.0 <= fps <= 1000.0:
                return fps
        return DEFAULT_FRAME_RATE

    @property
    def frame_count(self) -> int:
        """Frames in the source; 0 when unknown (cameras)."""
        if self.kind == "image":
            return self.image_frames
        if self.kind == "video" and self._capture is not None:
            return max(0, int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)))
        return 0

    def rewind(self) -> None:
        """Go back to the first frame (videos; no-op otherwise)."""
        if self.kind == "video" and self._capture is not None:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)

    def frames(self) -> Iterator[Frame]:
        """Yield frames until the source ends."""
        rate = self.frame_rate
        if self.kind == "image":
            assert self._image is not None
            image = self._resize(self._image)
            for index in range(self.image_frames):
                yield Frame.decoded(index, index / rate, image)
            return
        assert self._capture is not None
        index = 0
        while True:
            ok, image = self._capture.read()
            if not ok or image is None:
                return
            position_ms = self._capture.get(cv2.CAP_PROP_POS_MSEC)
            time_s = position_ms / 1000.0 if self.kind == "video" and index and \
                position_ms > 0 else index / rate
            yield Frame.decoded(index, time_s, self._resize(image))
            index += 1

    def _resize(self, image: np.ndarray) -> np.ndarray:
        if self.size is None or (image.shape[1], image.shape[0]) == self.size:
            return image
        return cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)

    def close(self) -> None:
        """Release the capture device or file."""
        if self._capture is not None:
            self._capture.release()
            self._capture = None
