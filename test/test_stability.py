"""Stability metrics against hand-computed cases."""

import pytest

from fer_ros.stability import StabilityMeter, StabilityValues, stability_of


def test_constant_label_is_fully_stable():
    values = stability_of([0.0, 0.1, 0.2, 0.3], ["a"] * 4, [0.5] * 4, window_s=5.0)
    assert values == StabilityValues(1.0, 0.0, 0.0, 4)


def test_hand_computed_changes_rate_and_mssd():
    # labels a a b a over 0.3 s: 2 changes in 3 successive pairs.
    # valences 0, 0, 1, -1: diffs 0, 1, -2 -> squares 0, 1, 4 -> MSSD 5/3.
    values = stability_of([0.0, 0.1, 0.2, 0.3], ["a", "a", "b", "a"], [0, 0, 1, -1], 2.0)
    assert values.stability == pytest.approx(1 - 2 / 3)
    assert values.label_change_rate == pytest.approx(2 / 2.0)
    assert values.valence_mssd == pytest.approx(5 / 3)
    assert values.samples == 4


def test_only_frames_inside_the_window_count():
    # Window (9.0, 10.0]: only the frames at 9.5 and 10.0, no change.
    values = stability_of([0.0, 5.0, 9.5, 10.0], ["x", "y", "z", "z"], [1, -1, 0, 0], 1.0)
    assert values == StabilityValues(1.0, 0.0, 0.0, 2)


def test_irregular_frame_rate_gives_same_rate():
    # The same 2 label changes within 4 s, sampled densely or sparsely.
    dense = stability_of([i * 0.1 for i in range(40)],
                         ["a"] * 10 + ["b"] * 20 + ["a"] * 10, [0] * 40, 4.0)
    sparse = stability_of([0.0, 1.1, 2.9, 3.9], ["a", "b", "a", "a"], [0] * 4, 4.0)
    assert dense.label_change_rate == sparse.label_change_rate == pytest.approx(0.5)


def test_single_or_no_frame():
    assert stability_of([], [], [], 1.0) == StabilityValues()
    assert stability_of([3.0], ["a"], [1.0], 1.0) == StabilityValues(samples=1)


def test_meter_keeps_faces_apart_and_drops_them():
    meter = StabilityMeter(window_s=10.0)
    for i, label in enumerate("aabb"):
        meter.update("f1", i * 0.5, label, 0.0)
        meter.update("f2", i * 0.5, "a", 0.0)
    assert meter.update("f1", 2.0, "b", 0.0).stability == pytest.approx(3 / 4)
    assert meter.update("f2", 2.0, "a", 0.0).stability == 1.0
    meter.drop(["f1"])
    assert meter.faces == ["f2"]


def test_meter_window_slides_and_gaps_count_once():
    meter = StabilityMeter(window_s=1.0)
    meter.update("f", 0.0, "a", -1.0)
    meter.update("f", 0.5, "b", 1.0)
    # After a 3 s gap only the new frame is inside the window.
    assert meter.update("f", 3.5, "a", -1.0) == StabilityValues(1.0, 0.0, 0.0, 1)


def test_meter_history_is_bounded():
    from fer_ros.stability import MAX_SAMPLES_PER_FACE

    meter = StabilityMeter(window_s=1e6)
    for i in range(MAX_SAMPLES_PER_FACE + 500):
        values = meter.update("f", float(i), "a", 0.0)
    assert values.samples == MAX_SAMPLES_PER_FACE


def test_bad_window_is_rejected():
    with pytest.raises(ValueError):
        StabilityMeter(0.0)
