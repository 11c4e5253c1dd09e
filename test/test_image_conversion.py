"""sensor_msgs/Image and CompressedImage conversion, without ROS."""

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from fer_ros.image_conversion import (ENCODINGS, ImageConversionError,
                                      array_to_image_fields, bgr_to_compressed_fields,
                                      compressed_msg_to_bgr, image_msg_to_array,
                                      image_msg_to_bgr)


def message(**fields):
    """Make a message-like object with sensor_msgs/Image fields."""
    base = {"height": 0, "width": 0, "encoding": "bgr8", "is_bigendian": 0, "step": 0,
            "data": b""}
    base.update(fields)
    return SimpleNamespace(**base)


def sample_array(encoding, rng, height=5, width=6):
    """Make a random array in the layout of ``encoding``."""
    info = ENCODINGS[encoding]
    channels = 2 if encoding in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv") else info.channels
    shape = (height, width) if channels == 1 else (height, width, channels)
    high = 65535 if info.dtype == np.uint16 else 255
    return rng.integers(0, high + 1, size=shape).astype(info.dtype)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_round_trip_every_encoding(encoding, rng):
    array = sample_array(encoding, rng)
    msg = message(**array_to_image_fields(array, encoding))
    assert np.array_equal(image_msg_to_array(msg), array)
    bgr = image_msg_to_bgr(msg)
    assert bgr.shape == array.shape[:2] + (3,) and bgr.dtype == np.uint8


def test_hand_built_rgb8_message_becomes_bgr():
    # One row, two pixels: pure red then pure blue, in RGB byte order.
    msg = message(height=1, width=2, encoding="rgb8", step=6,
                  data=bytes([255, 0, 0, 0, 0, 255]))
    assert image_msg_to_bgr(msg).tolist() == [[[0, 0, 255], [255, 0, 0]]]


def test_hand_built_bgra8_and_rgba8_drop_alpha():
    data = bytes([10, 20, 30, 99])
    bgra = image_msg_to_bgr(message(height=1, width=1, encoding="bgra8", step=4, data=data))
    rgba = image_msg_to_bgr(message(height=1, width=1, encoding="rgba8", step=4, data=data))
    assert bgra.tolist() == [[[10, 20, 30]]]
    assert rgba.tolist() == [[[30, 20, 10]]]


def test_mono8_becomes_grey_bgr():
    msg = message(height=1, width=3, encoding="mono8", step=3, data=bytes([0, 128, 255]))
    assert image_msg_to_bgr(msg)[0, :, 0].tolist() == [0, 128, 255]
    assert (image_msg_to_bgr(msg)[..., 0] == image_msg_to_bgr(msg)[..., 2]).all()


def test_row_padding_is_skipped():
    # 2x2 mono8 with step 4: two padding bytes (0xEE) at the end of each row.
    msg = message(height=2, width=2, encoding="mono8", step=4,
                  data=bytes([1, 2, 0xEE, 0xEE, 3, 4, 0xEE, 0xEE]))
    assert image_msg_to_array(msg).tolist() == [[1, 2], [3, 4]]


def test_last_row_padding_may_be_absent():
    msg = message(height=2, width=2, encoding="mono8", step=4, data=bytes([1, 2, 0, 0, 3, 4]))
    assert image_msg_to_array(msg).tolist() == [[1, 2], [3, 4]]


def test_mono16_big_and_little_endian():
    value = 0x1234
    little = message(height=1, width=1, encoding="mono16", step=2, is_bigendian=0,
                     data=value.to_bytes(2, "little"))
    big = message(height=1, width=1, encoding="mono16", step=2, is_bigendian=1,
                  data=value.to_bytes(2, "big"))
    assert image_msg_to_array(little)[0, 0] == value
    assert image_msg_to_array(big)[0, 0] == value


def test_mono16_is_stretched_to_full_8_bit_range():
    values = np.array([[1000, 2000, 3000]], dtype=np.uint16)
    msg = message(**array_to_image_fields(values, "mono16"))
    grey = image_msg_to_bgr(msg)[0, :, 0]
    assert grey[0] == 0 and grey[-1] == 255 and 120 <= grey[1] <= 135


def test_yuyv_matches_opencv_conversion(rng):
    array = sample_array("yuyv", rng, 4, 8)
    msg = message(**array_to_image_fields(array, "yuyv"))
    expected = cv2.cvtColor(array, cv2.COLOR_YUV2BGR_YUYV)
    assert np.array_equal(image_msg_to_bgr(msg), expected)


def test_bgr8_without_padding_is_a_view_not_a_copy(rng):
    array = sample_array("bgr8", rng)
    data = bytearray(array.tobytes())
    msg = message(height=5, width=6, encoding="bgr8", step=18, data=data)
    view = image_msg_to_bgr(msg)
    data[0] = (data[0] + 1) % 256
    assert view[0, 0, 0] == data[0]


def test_list_data_is_accepted():
    msg = message(height=1, width=2, encoding="mono8", step=2, data=[7, 9])
    assert image_msg_to_array(msg).tolist() == [[7, 9]]


@pytest.mark.parametrize("fields, reason", [
    ({"encoding": "32FC1", "height": 1, "width": 1, "step": 4, "data": b"\0" * 4},
     "unsupported image encoding"),
    ({"height": 0, "width": 4, "step": 12, "data": b""}, "empty image"),
    ({"height": 2, "width": 2, "step": 3, "data": b"\0" * 12}, "step 3 is smaller"),
    ({"height": 2, "width": 2, "step": 6, "data": b"\0" * 7}, "truncated image data"),
    ({"height": 100000, "width": 2, "step": 6, "data": b""}, "too large"),
    ({"encoding": "yuyv", "height": 1, "width": 3, "step": 6, "data": b"\0" * 6},
     "even width"),
])
def test_bad_messages_raise_one_clear_error(fields, reason):
    with pytest.raises(ImageConversionError, match=reason):
        image_msg_to_bgr(message(**fields))


def test_array_that_does_not_fit_the_encoding_is_rejected():
    with pytest.raises(ImageConversionError, match="does not fit"):
        array_to_image_fields(np.zeros((2, 2), np.uint8), "bgr8")


@pytest.mark.parametrize("image_format", ["jpeg", "png"])
def test_compressed_round_trip(image_format, rng):
    image = np.zeros((16, 20, 3), np.uint8)
    image[4:12, 5:15] = (40, 160, 220)
    fields = bgr_to_compressed_fields(image, image_format)
    decoded = compressed_msg_to_bgr(SimpleNamespace(**fields))
    assert decoded.shape == image.shape
    error = np.abs(decoded.astype(int) - image)
    if image_format == "png":
        assert error.max() == 0
    else:  # lossy: chroma subsampling blurs the sharp edges a little
        assert error.mean() < 6


def test_corrupt_compressed_image_raises():
    with pytest.raises(ImageConversionError, match="cannot decode"):
        compressed_msg_to_bgr(SimpleNamespace(format="jpeg", data=b"not a jpeg"))
    with pytest.raises(ImageConversionError, match="empty"):
        compressed_msg_to_bgr(SimpleNamespace(format="jpeg", data=b""))
