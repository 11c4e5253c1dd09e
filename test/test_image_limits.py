"""Oversized images are refused from their header, before any pixel is decoded."""

import resource
import struct
import zlib
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from fer_ros.image_conversion import ImageConversionError, compressed_msg_to_bgr
from fer_ros.image_limits import MAX_IMAGE_PIXELS, encoded_image_size, size_problem
from fer_ros.video_io import FrameSource, SourceError


def png_bomb(width: int, height: int) -> bytes:
    """Return a small, valid PNG declaring ``width`` x ``height`` gray pixels (all zero)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                              8, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


@pytest.mark.parametrize("extension", [".png", ".jpg", ".bmp", ".webp", ".gif"])
def test_header_sizes_of_real_encodings(rng, extension):
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    if extension == ".gif":
        data = b"GIF89a" + struct.pack("<HH", 53, 37) + b"\x00" * 8
    else:
        ok, encoded = cv2.imencode(extension, image)
        assert ok
        data = encoded.tobytes()
    assert encoded_image_size(data) == (53, 37)


def test_progressive_jpeg_and_unknown_headers():
    image = np.full((20, 30, 3), 128, np.uint8)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok and encoded_image_size(data.tobytes()) == (30, 20)
    assert encoded_image_size(b"not an image") is None
    assert encoded_image_size(b"\xff\xd8\xff") is None  # truncated JPEG


def test_size_limits():
    assert size_problem(640, 480) is None
    assert "too large" in size_problem(20000, 20000)
    assert "too large" in size_problem(10000, MAX_IMAGE_PIXELS // 10000 + 1)
    assert "empty" in size_problem(0, 10)


def test_png_bomb_on_the_compressed_path_is_refused_without_decoding():
    bomb = png_bomb(20000, 20000)
    assert len(bomb) < 2_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageConversionError, match="too large: 20000x20000"):
        compressed_msg_to_bgr(SimpleNamespace(format="png", data=bomb))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100


def test_small_compressed_images_still_decode():
    ok, data = cv2.imencode(".png", np.zeros((48, 64, 3), np.uint8))
    image = compressed_msg_to_bgr(SimpleNamespace(format="png", data=data.tobytes()))
    assert image.shape == (48, 64, 3)


def test_png_bomb_as_an_image_file_is_refused(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb(20000, 20000))
    with pytest.raises(SourceError, match="too large"):
        FrameSource(str(path))
