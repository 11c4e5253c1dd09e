"""Frame counts, rates and the health they add up to, judged against the input rate."""

from fer_ros.frame_statistics import FrameStatistics, rate


class Clock:
    """A settable monotonic clock."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def feed(statistics, clock, input_fps, processed_every, seconds=3.0):
    """Receive frames at ``input_fps``; process every ``processed_every``-th one."""
    for i in range(int(seconds * input_fps)):
        clock.now = i / input_fps
        statistics.on_received(replaced_pending=i % processed_every != 0)
        if i % processed_every == 0:
            statistics.on_processed(12.0)


def test_rate_of_times():
    assert rate([]) == 0.0 and rate([1.0]) == 0.0
    assert abs(rate([0.0, 0.5, 1.0]) - 2.0) < 1e-9


def test_keeping_up_with_a_slow_camera_is_healthy():
    clock = Clock()
    statistics = FrameStatistics(clock)
    feed(statistics, clock, input_fps=5.0, processed_every=1)
    health = statistics.health()
    assert health.ok and health.message == "ok"
    assert dict(health.values)["fps"] == "5.0"


def test_processing_a_third_of_a_fast_camera_warns_with_both_rates():
    clock = Clock()
    statistics = FrameStatistics(clock)
    feed(statistics, clock, input_fps=30.0, processed_every=3)
    health = statistics.health(tracked_faces=2)
    assert not health.ok
    assert "frames dropped" in health.message or "of 30.0 frames/s" in health.message
    values = dict(health.values)
    assert values["input_fps"] == "30.0" and values["tracked_faces"] == "2"


def test_a_fixed_rate_is_not_the_yardstick():
    """12 fps processed of 12 received is fine, though below the old fixed 10-30 fps bars."""
    clock = Clock()
    statistics = FrameStatistics(clock)
    feed(statistics, clock, input_fps=12.0, processed_every=1)
    assert statistics.health().ok


def test_mostly_bad_frames_warn():
    statistics = FrameStatistics(Clock())
    for _ in range(10):
        statistics.on_received(False)
    statistics.bad_frames = 8
    health = statistics.health()
    assert not health.ok and "8 of 10" in health.message


def test_no_frames_yet():
    health = FrameStatistics(Clock()).health()
    assert health.ok and health.message == "waiting for images"
