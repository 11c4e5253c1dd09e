"""FaceTracker: stable ids across crossings, absences and crowds."""

import numpy as np
import pytest

from fer_ros.tracking import FaceTracker

FPS = 30.0


def run(tracker, frames):
    """Feed ``frames`` (lists of xywh boxes) at 30 fps; return ids per frame."""
    return [tracker.update(boxes, i / FPS).face_ids for i, boxes in enumerate(frames)]


def test_single_face_keeps_its_id_while_moving():
    frames = [[(100 + 3 * i, 80, 60, 60)] for i in range(60)]
    ids = run(FaceTracker(), frames)
    assert {i[0] for i in ids} == {"face_1"}


def test_two_crossing_faces_keep_their_ids():
    # Faces move towards each other horizontally, overlap, and pass.
    frames = []
    for i in range(60):
        a = (40 + 6 * i, 100, 60, 60)     # left to right
        b = (400 - 6 * i, 110, 60, 60)    # right to left
        frames.append([a, b])
    ids = run(FaceTracker(), frames)
    assert all(frame_ids == ["face_1", "face_2"] for frame_ids in ids)


def test_crossing_faces_in_shuffled_detection_order():
    rng = np.random.default_rng(0)
    tracker = FaceTracker()
    for i in range(60):
        boxes = {"a": (40 + 6 * i, 100, 60, 60), "b": (400 - 6 * i, 104, 60, 60)}
        order = list(boxes)
        rng.shuffle(order)
        ids = tracker.update([boxes[k] for k in order], i / FPS).face_ids
        assignment = dict(zip(order, ids))
        assert assignment == {"a": "face_1", "b": "face_2"}


def test_face_leaving_briefly_keeps_id_and_long_absence_gets_new_id():
    tracker = FaceTracker(max_age_s=1.0)
    box = (200, 120, 80, 80)
    frames = [[box]] * 10 + [[]] * 15 + [[box]] * 5   # 0.5 s gap: same face
    ids = run(tracker, frames)
    assert {i[0] for i in ids if i} == {"face_1"}
    # Now leave for 2 s (> max_age_s): the track ends and a new id starts.
    t = len(frames) / FPS
    update = tracker.update([], t + 2.0)
    assert update.ended == ["face_1"]
    assert tracker.update([box], t + 2.1).face_ids == ["face_2"]


def test_ids_are_never_reused_after_reset():
    tracker = FaceTracker()
    tracker.update([(0, 0, 10, 10)], 0.0)
    assert tracker.reset() == ["face_1"]
    assert tracker.update([(0, 0, 10, 10)], 0.1).face_ids == ["face_2"]


def test_many_faces_in_a_grid_get_distinct_stable_ids():
    grid = [(x * 70, y * 70, 50, 50) for x in range(8) for y in range(5)]
    tracker = FaceTracker()
    first = tracker.update(grid, 0.0).face_ids
    assert len(set(first)) == 40
    for i in range(1, 30):
        jittered = [(x + (i % 3), y - (i % 2), w, h) for x, y, w, h in grid]
        assert tracker.update(jittered, i / FPS).face_ids == first


def test_id_does_not_jump_to_a_new_face_far_away():
    tracker = FaceTracker()
    tracker.update([(0, 0, 50, 50)], 0.0)
    ids = tracker.update([(300, 300, 50, 50)], 1 / FPS).face_ids
    assert ids == ["face_2"]


def test_time_going_backwards_resets_tracks():
    tracker = FaceTracker()
    tracker.update([(0, 0, 50, 50)], 10.0)
    update = tracker.update([(0, 0, 50, 50)], 1.0)
    assert update.ended == ["face_1"] and update.face_ids == ["face_2"]


@pytest.mark.parametrize("kwargs", [{"min_iou": 0.0}, {"min_iou": 1.5}, {"max_age_s": -1}])
def test_bad_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        FaceTracker(**kwargs)
