"""The frame queue between the fer node's subscription and its worker (no ROS needed)."""

import threading
import time

import pytest

from fer_ros.frame_queue import FrameQueue


def test_frames_come_out_oldest_first_and_a_full_queue_drops_the_oldest():
    queue = FrameQueue(3)
    assert [queue.put(i) for i in range(5)] == [False, False, False, True, True]
    assert len(queue) == 3
    assert [queue.get(0.0) for _ in range(4)] == [2, 3, 4, None]


def test_size_one_keeps_only_the_newest_frame():
    queue = FrameQueue(1)
    assert queue.put("a") is False and queue.put("b") is True
    assert queue.get(0.0) == "b" and queue.get(0.0) is None


def test_a_burst_of_frames_is_not_dropped_by_a_queue_that_holds_it():
    # Several frames delivered at once while the worker is busy: a one-frame
    # slot keeps only the last, a queue of 3 keeps them all.
    for size, kept in ((1, ["f3"]), (3, ["f1", "f2", "f3"])):
        queue = FrameQueue(size)
        for frame in ("f1", "f2", "f3"):
            queue.put(frame)
        assert [queue.get(0.0) for _ in range(len(kept))] == kept


def test_get_waits_for_a_frame_and_stop_wakes_the_worker_for_good():
    queue = FrameQueue(2)
    got = []
    worker = threading.Thread(target=lambda: got.append(queue.get(5.0)))
    worker.start()
    time.sleep(0.05)
    queue.put("frame")
    worker.join(5.0)
    assert got == ["frame"]

    queue.put("left behind")
    waiting = threading.Thread(target=lambda: got.append(queue.get(5.0)))
    assert queue.stop() == 1
    waiting.start()
    waiting.join(5.0)
    assert not waiting.is_alive() and got[-1] is None and queue.stopped
    assert queue.get(0.0) is None


@pytest.mark.parametrize("size", [0, -1])
def test_a_queue_holds_at_least_one_frame(size):
    with pytest.raises(ValueError, match="must be >= 1"):
        FrameQueue(size)
