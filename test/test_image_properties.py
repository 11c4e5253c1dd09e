"""Property-based tests (hypothesis) of the image converters.

Whatever a message holds, converting it either gives a valid BGR frame or
raises the module's one-line :class:`ImageConversionError`; a frame written
by :func:`array_to_image_fields` reads back unchanged in every encoding.
"""

from types import SimpleNamespace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fer_ros.image_conversion import (ENCODINGS, ImageConversionError,
                                      array_to_image_fields, compressed_msg_to_bgr,
                                      image_msg_to_bgr)

ENCODING_NAMES = sorted(ENCODINGS)


def assert_valid_or_one_line(convert, msg):
    try:
        image = convert(msg)
    except ImageConversionError as error:
        assert str(error) and "\n" not in str(error)
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@settings(max_examples=300, deadline=None)
@given(encoding=st.one_of(st.sampled_from(ENCODING_NAMES), st.text(max_size=12)),
       height=st.integers(-5, 70), width=st.integers(-5, 70), step=st.integers(-10, 600),
       bigendian=st.booleans(), data=st.binary(max_size=20000))
def test_any_raw_message_is_a_frame_or_one_line(encoding, height, width, step, bigendian,
                                                data):
    msg = SimpleNamespace(encoding=encoding, height=height, width=width, step=step,
                          is_bigendian=bigendian, data=data)
    assert_valid_or_one_line(image_msg_to_bgr, msg)


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=4000), image_format=st.sampled_from(["jpeg", "png", "", "x"]))
def test_any_compressed_message_is_a_frame_or_one_line(data, image_format):
    assert_valid_or_one_line(compressed_msg_to_bgr,
                             SimpleNamespace(format=image_format, data=data))


@settings(max_examples=100, deadline=None)
@given(image=arrays(np.uint8, st.tuples(st.integers(1, 24), st.integers(1, 24),
                                        st.just(3))),
       encoding=st.sampled_from(["bgr8", "rgb8", "bgra8", "rgba8", "8UC3"]))
def test_colour_frames_round_trip(image, encoding):
    fields = array_to_image_fields(image if encoding in ("bgr8", "rgb8", "8UC3")
                                   else np.dstack([image, np.full(image.shape[:2], 255,
                                                                  np.uint8)]), encoding)
    back = image_msg_to_bgr(SimpleNamespace(**fields))
    expected = image[:, :, ::-1] if encoding.startswith("rgb") else image
    assert np.array_equal(back, expected)
