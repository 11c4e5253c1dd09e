"""Sequence resampling (thesis Algorithm 1) and per-face feature buffers."""

import numpy as np
import pytest

from fer_ros.sequence import FeatureBuffer, resample, resample_indices


@pytest.mark.parametrize("n", range(1, 201))
def test_resample_any_length_to_40(n):
    idx = resample_indices(n, 40)
    assert len(idx) == 40 and idx[0] == 0 and idx.max() < n
    assert np.all(np.diff(idx) >= 0)
    if n <= 40:
        # Upsampling repeats every frame, evenly: counts differ by at most one.
        counts = np.bincount(idx, minlength=n)
        assert counts.min() >= 1 and counts.max() - counts.min() <= 1
    else:
        # Downsampling skips evenly: distinct frames, gaps differ by at most one.
        assert len(set(idx.tolist())) == 40
        gaps = np.diff(idx)
        assert gaps.max() - gaps.min() <= 1


def test_resample_examples():
    assert resample_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
    assert resample_indices(8, 4).tolist() == [0, 2, 4, 6]
    assert resample_indices(5, 5).tolist() == [0, 1, 2, 3, 4]
    sequence = np.arange(10)[:, None] * np.ones((1, 3))
    assert resample(sequence, 5)[:, 0].tolist() == [0, 2, 4, 6, 8]


def test_resample_rejects_empty():
    with pytest.raises(ValueError):
        resample_indices(0, 40)


def test_feature_buffer_is_bounded_and_strided():
    buffer = FeatureBuffer(capacity=4)
    for i in range(10):
        buffer.append("f", np.full(3, i))
    assert buffer.length("f") == 4
    assert buffer.due("f", min_frames=4, stride=5)
    assert buffer.sequence("f")[:, 0].tolist() == [6, 7, 8, 9]
    assert not buffer.due("f", min_frames=4, stride=2)
    buffer.append("f", np.zeros(3))
    buffer.append("f", np.zeros(3))
    assert buffer.due("f", min_frames=4, stride=2)
    buffer.drop(["f"])
    assert buffer.faces == [] and buffer.length("f") == 0
