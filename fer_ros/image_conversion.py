"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge.

Works on any object with the message's fields (rclpy messages, rosbags
messages, simple namespaces), so it is tested without ROS.  Row padding
(``step`` larger than ``width * channels * bytes``) and the big-endian flag
are honoured; every unsupported or inconsistent message raises
:class:`ImageConversionError` with one line saying what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import cv2
import numpy as np

from fer_ros.image_limits import encoded_image_size, size_problem


class ImageConversionError(ValueError):
    """A message cannot be converted: bad encoding, size, step or data."""


@dataclass(frozen=True)
class EncodingInfo:
    """Layout of one ``sensor_msgs/Image`` encoding.

    :param channels: values per pixel.
    :param dtype: numpy type of one value (native byte order).
    :param to_bgr: OpenCV colour conversion code to BGR, or None.
    """

    channels: int
    dtype: Any
    to_bgr: Optional[int]


#: Supported encodings (names from sensor_msgs/image_encodings.hpp).
#: ``yuv422`` is UYVY and ``yuv422_yuy2``/``yuyv`` is YUYV, as in cv_bridge.
ENCODINGS: Dict[str, EncodingInfo] = {
    "bgr8": EncodingInfo(3, np.uint8, None),
    "rgb8": EncodingInfo(3, np.uint8, cv2.COLOR_RGB2BGR),
    "bgra8": EncodingInfo(4, np.uint8, cv2.COLOR_BGRA2BGR),
    "rgba8": EncodingInfo(4, np.uint8, cv2.COLOR_RGBA2BGR),
    "mono8": EncodingInfo(1, np.uint8, cv2.COLOR_GRAY2BGR),
    "8UC1": EncodingInfo(1, np.uint8, cv2.COLOR_GRAY2BGR),
    "8UC3": EncodingInfo(3, np.uint8, None),
    "mono16": EncodingInfo(1, np.uint16, cv2.COLOR_GRAY2BGR),
    "16UC1": EncodingInfo(1, np.uint16, cv2.COLOR_GRAY2BGR),
    "yuv422": EncodingInfo(2, np.uint8, cv2.COLOR_YUV2BGR_UYVY),
    "uyvy": EncodingInfo(2, np.uint8, cv2.COLOR_YUV2BGR_UYVY),
    "yuv422_yuy2": EncodingInfo(2, np.uint8, cv2.COLOR_YUV2BGR_YUYV),
    "yuyv": EncodingInfo(2, np.uint8, cv2.COLOR_YUV2BGR_YUYV),
}


def _buffer(data: Any) -> np.ndarray:
    """Return a uint8 view of a message's ``data`` (bytes, array.array, list...)."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def image_msg_to_array(msg: Any) -> np.ndarray:
    """View a sensor_msgs/Image as an array in its own encoding.

    :param msg: an object with ``height, width, encoding, is_bigendian, step,
        data``.
    :return: [H,W] or [H,W,C] array (a view of ``data`` when possible) in
        native byte order.
    :raises ImageConversionError: for unknown encodings, zero or huge sizes,
        a step too small for the width, or truncated data.
    """
    encoding = str(msg.encoding)
    info = ENCODINGS.get(encoding)
    if info is None:
        raise ImageConversionError(
            f"unsupported image encoding {encoding!r}; supported: "
            f"{', '.join(sorted(ENCODINGS))}")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    problem = size_problem(width, height)
    if problem:
        raise ImageConversionError(problem)
    itemsize = np.dtype(info.dtype).itemsize
    row_bytes = width * info.channels * itemsize
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is smaller than a {encoding} row of width {width} "
            f"({row_bytes} bytes)")
    if encoding in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv") and width % 2:
        raise ImageConversionError(f"{encoding} needs an even width, got {width}")
    data = _buffer(msg.data)
    needed = step * (height - 1) + row_bytes
    if data.size < needed:
        raise ImageConversionError(
            f"truncated image data: {data.size} bytes for {width}x{height} "
            f"{encoding} with step {step} (needs {needed})")
    rows = np.lib.stride_tricks.as_strided(
        data, shape=(height, row_bytes), strides=(step, 1), writeable=False)
    if itemsize > 1:
        order = ">" if int(msg.is_bigendian) else "<"
        rows = np.ascontiguousarray(rows).view(np.dtype(info.dtype).newbyteorder(order))
        rows = rows.astype(info.dtype, copy=False)
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    if encoding in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv"):
        return rows.reshape(height, width, 2)
    return rows.reshape(shape)


def image_msg_to_bgr(msg: Any) -> np.ndarray:
    """Convert any supported sensor_msgs/Image to a BGR uint8 frame.

    16-bit images are stretched to 8 bits by their per-frame min and max
    (IR and depth-like cameras use a small part of the 16-bit range).

    :param msg: the image message.
    :return: [H,W,3] uint8 BGR (a view of the message data for bgr8 with no
        row padding).
    :raises ImageConversionError: see :func:`image_msg_to_array`.
    """
    info = ENCODINGS.get(str(msg.encoding))
    array = image_msg_to_array(msg)
    if array.dtype == np.uint16:
        array = cv2.normalize(array, None, 0, 255, cv2.NORM_MINMAX, cv2.CV_8U)
    if info is None or info.to_bgr is None:
        return array
    return cv2.cvtColor(np.ascontiguousarray(array), info.to_bgr)


def array_to_image_fields(array: np.ndarray, encoding: str) -> Dict[str, Any]:
    """Fields of a sensor_msgs/Image holding ``array`` (no header).

    :param array: [H,W] or [H,W,C] array matching ``encoding``.
    :param encoding: one of :data:`ENCODINGS`.
    :return: dict with height, width, encoding, is_bigendian, step, data.
    :raises ImageConversionError: when the array does not fit the encoding.
    """
    info = ENCODINGS.get(encoding)
    if info is None:
        raise ImageConversionError(f"unsupported image encoding {encoding!r}")
    array = np.asarray(array)
    channels = 2 if encoding in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv") else info.channels
    expected_ndim = 2 if channels == 1 else 3
    if (array.ndim != expected_ndim or array.dtype != np.dtype(info.dtype)
            or (expected_ndim == 3 and array.shape[2] != channels)):
        raise ImageConversionError(
            f"array {array.shape} {array.dtype} does not fit encoding {encoding}")
    height, width = array.shape[:2]
    data = np.ascontiguousarray(array)
    return {"height": height, "width": width, "encoding": encoding,
            "is_bigendian": 0, "step": width * channels * data.itemsize,
            "data": data.tobytes()}


def fill_image_msg(msg: Any, array: np.ndarray, encoding: str) -> Any:
    """Fill a sensor_msgs/Image instance (header untouched) and return it."""
    for name, value in array_to_image_fields(array, encoding).items():
        setattr(msg, name, value)
    return msg


#: Bytes of an encoded image searched for its size (JPEG metadata can come first).
HEADER_BYTES = 262_144


def compressed_msg_to_bgr(msg: Any) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (jpeg, png...) to BGR uint8.

    :param msg: an object with ``format`` and ``data``.
    :return: [H,W,3] uint8.
    :raises ImageConversionError: when the data cannot be decoded.
    """
    data = _buffer(msg.data)
    if data.size == 0:
        raise ImageConversionError("empty compressed image")
    # The declared size is checked before decoding: a small file can
    # declare a huge image.
    declared = encoded_image_size(data[:HEADER_BYTES].tobytes())
    problem = size_problem(*declared) if declared is not None else None
    if problem:
        raise ImageConversionError(f"compressed {problem}")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageConversionError(
            f"cannot decode compressed image (format {str(msg.format)!r}, "
            f"{data.size} bytes)")
    return image


def bgr_to_compressed_fields(image: np.ndarray, image_format: str = "jpeg",
                             quality: int = 90) -> Dict[str, Any]:
    """Encode a BGR frame as CompressedImage fields (``format``, ``data``).

    :param image: [H,W,3] uint8 BGR.
    :param image_format: ``"jpeg"`` or ``"png"``.
    :param quality: JPEG quality 1..100.
    """
    extension = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}.get(image_format)
    if extension is None:
        raise ImageConversionError(f"unsupported compressed format {image_format!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if extension == ".jpg" else []
    ok, encoded = cv2.imencode(extension, image, params)
    if not ok:
        raise ImageConversionError(f"cannot encode image as {image_format}")
    return {"format": "jpeg" if extension == ".jpg" else "png",
            "data": encoded.tobytes()}
