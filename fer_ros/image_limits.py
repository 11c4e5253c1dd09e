"""Size limits on every image fer_ros decodes, checked before decoding.

A 389 KB PNG can declare 20000x20000 pixels (1.2 GB decoded).  Raw images
state their size in the message; compressed images and image files state
it in their header, which :func:`encoded_image_size` reads (PNG, JPEG, GIF,
BMP, WebP) so that an oversized image is refused before any pixel buffer
is allocated.  One limit serves the camera topics, image files and videos.
"""

from __future__ import annotations

import os
import struct
from typing import Optional, Tuple

#: Largest image side accepted, pixels.
MAX_IMAGE_SIDE = 16384
#: Largest image accepted, pixels (about 150 MB as BGR).
MAX_IMAGE_PIXELS = 50_000_000

# OpenCV's own guard for formats the header reader does not know (TIFF...).
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))

#: JPEG start-of-frame markers (baseline, progressive, lossless...), which carry the size.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def size_problem(width: int, height: int) -> Optional[str]:
    """Say why a ``width`` x ``height`` image is refused, or None if it is accepted."""
    if width <= 0 or height <= 0:
        return f"empty image: {width}x{height}"
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        return (f"image too large: {width}x{height} (limit {MAX_IMAGE_SIDE} pixels a side, "
                f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels)")
    return None


def encoded_image_size(data: bytes) -> Optional[Tuple[int, int]]:
    """Read ``(width, height)`` from the header of an encoded image.

    :param data: the file's bytes (only the header is read).
    :return: the declared size, or None for an unknown or truncated header.
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(int(width)), abs(int(height))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> Optional[Tuple[int, int]]:
    """Walk the JPEG markers to the start of frame."""
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            position += 2
            continue
        length = struct.unpack(">H", data[position + 2:position + 4])[0]
        if marker in _JPEG_SOF and position + 9 <= len(data):
            height, width = struct.unpack(">HH", data[position + 5:position + 9])
            return int(width), int(height)
        if length < 2:
            return None
        position += 2 + length
    return None


def _webp_size(data: bytes) -> Optional[Tuple[int, int]]:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return width, height
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None
