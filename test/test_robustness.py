"""Robustness: fuzzed images, malformed messages, bad models and parameters, bursts.

All bounded in time (seconds each).
"""

import resource
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from fer_ros.image_conversion import ENCODINGS, ImageConversionError, image_msg_to_bgr

ODD_ENCODINGS = sorted(ENCODINGS) + ["32FC1", "64FC1", "16SC1", "bayer_rggb8", "", "BGR8",
                                     "rgb16", "nv12", "jpeg"]


def random_message(rng):
    """Make a message whose every field may be wrong."""
    encoding = ODD_ENCODINGS[rng.integers(len(ODD_ENCODINGS))]
    height = int(rng.choice([0, 1, 2, 7, 48, 480, 100000, -3]))
    width = int(rng.choice([0, 1, 3, 8, 64, 640, 70000, -1]))
    step = int(rng.choice([0, 1, width, width * 3, width * 4 + 7, 2**31 - 1]))
    size = int(rng.choice([0, 1, 10, max(0, step * max(height, 0)), 5000]))
    size = min(size, 4_000_000)
    data = rng.integers(0, 256, size, dtype=np.uint8)
    kind = rng.integers(3)
    data = data.tobytes() if kind == 0 else (data.tolist() if kind == 1 and size < 5000
                                             else bytearray(data.tobytes()))
    return SimpleNamespace(height=height, width=width, encoding=encoding, step=step,
                           is_bigendian=int(rng.integers(2)), data=data)


def test_fuzzed_messages_either_convert_or_raise_the_documented_error():
    rng = np.random.default_rng(7)
    converted = 0
    for _ in range(3000):
        msg = random_message(rng)
        try:
            bgr = image_msg_to_bgr(msg)
        except ImageConversionError:
            continue
        converted += 1
        assert bgr.dtype == np.uint8 and bgr.ndim == 3 and bgr.shape[2] == 3
        assert bgr.shape[:2] == (msg.height, msg.width)
    assert converted > 0


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint16, np.int64, np.bool_])
def test_odd_numpy_dtypes_in_data(dtype):
    data = np.ones(48 * 48 * 3, dtype=dtype)
    msg = SimpleNamespace(height=48, width=48, encoding="bgr8", step=48 * 3, is_bigendian=0,
                          data=data)
    try:
        bgr = image_msg_to_bgr(msg)
    except ImageConversionError:
        return
    assert bgr.shape == (48, 48, 3)


def run_node(*ros_args, timeout=60):
    return subprocess.run([sys.executable, "-m", "fer_ros.nodes.fer_node", "--ros-args",
                           *ros_args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.ros
def test_missing_model_fails_at_start_up_with_one_line(tmp_path, ros_domain):
    pytest.importorskip("fer_ros.msg")
    missing = tmp_path / "missing.tflite"
    completed = run_node("-p", f"model:={missing}")
    assert completed.returncode == 1
    errors = [line for line in completed.stderr.splitlines() if "error" in line.lower()]
    assert errors == [f"fer_node: error: {missing}: model file not found"]
    assert "Traceback" not in completed.stderr


@pytest.mark.ros
def test_corrupt_model_fails_at_start_up_with_one_line(tmp_path, ros_domain):
    pytest.importorskip("fer_ros.msg")
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"\x00not a flatbuffer" * 64)
    completed = run_node("-p", f"model:={corrupt}")
    assert completed.returncode == 1
    assert "not a valid TFLite model" in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.ros
@pytest.mark.parametrize("parameter, value", [("max_faces", "0"),
                                              ("min_detection_score", "3.5"),
                                              ("detector_model", "giant"),
                                              ("threads", "'four'")])
def test_invalid_parameter_is_rejected_with_its_name(ros_domain, parameter, value):
    pytest.importorskip("fer_ros.msg")
    completed = run_node("-p", f"{parameter}:={value}")
    assert completed.returncode == 1
    assert parameter in completed.stderr and "Traceback" not in completed.stderr


@pytest.mark.ros
def test_malformed_burst_then_good_frame(tiny_model_paths, ros_domain):
    """300 fps of random malformed and good images: bounded queue, node survives."""
    rclpy = pytest.importorskip("rclpy")
    pytest.importorskip("fer_ros.msg")
    from rclpy.context import Context
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from fer_ros.image_conversion import fill_image_msg
    from fer_ros.msg import EmotionArray
    from fer_ros.nodes.fer_node import FerNode

    context = Context()
    rclpy.init(context=context)
    fer = FerNode(context=context, parameter_overrides=[
        Parameter("model", value=str(tiny_model_paths["tflite"])),
        Parameter("dynamic_model", value="none")])
    fer.start()
    stats = fer.statistics
    peer = rclpy.create_node("burst_peer", context=context)
    results = []
    peer.create_subscription(EmotionArray, "emotions", results.append,
                             QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
    publisher = peer.create_publisher(Image, "image", QoSProfile(
        depth=10, reliability=ReliabilityPolicy.RELIABLE))
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(fer)
    executor.add_node(peer)
    try:
        deadline = time.monotonic() + 20
        while publisher.get_subscription_count() == 0 or peer.count_publishers("/emotions") == 0:
            assert time.monotonic() < deadline
            executor.spin_once(timeout_sec=0.02)
        rng = np.random.default_rng(3)
        good = fill_image_msg(Image(), rng.integers(0, 256, (240, 320, 3), dtype=np.uint8),
                              "bgr8")
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        sent = 0
        start = time.monotonic()
        for i in range(900):   # 3 s at 300 fps
            if rng.random() < 0.5:
                msg = good
            else:
                fields = random_message(rng)
                fields.height, fields.width = abs(fields.height) % 5000, abs(fields.width) % 5000
                fields.step = min(abs(fields.step), 2**31 - 1)
                msg = Image(height=fields.height, width=fields.width,
                            encoding=fields.encoding, step=fields.step,
                            is_bigendian=fields.is_bigendian, data=bytes(fields.data)[:200000])
            msg.header.stamp.sec = 1000 + i
            publisher.publish(msg)
            sent += 1
            # The node's queue: at most one frame waits, whatever the rate.
            assert stats.received - stats.processed - stats.dropped - stats.bad_frames \
                - stats.failures <= 2
            executor.spin_once(timeout_sec=0)
            time.sleep(max(0.0, start + (i + 1) / 300 - time.monotonic()))
        last = fill_image_msg(Image(), np.zeros((120, 160, 3), np.uint8), "bgr8")
        last.header.stamp.sec = 5000
        deadline = time.monotonic() + 20
        while not any(r.header.stamp.sec == 5000 for r in results):
            if time.monotonic() > deadline:
                raise AssertionError("no result for the good frame after the burst")
            publisher.publish(last)
            executor.spin_once(timeout_sec=0.05)
        rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
        assert stats.failures == 0
        assert stats.received > 100 and stats.dropped + stats.bad_frames > 0
        assert rss_growth_mb < 150, rss_growth_mb
    finally:
        fer.shutdown()
        fer.destroy_node()
        peer.destroy_node()
        rclpy.try_shutdown(context=context)


@pytest.mark.ros
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_video_source_stops_cleanly_when_interrupted(ros_domain, signum):
    """Ctrl-C or SIGTERM mid-video: exit 0, no 'publisher's context is invalid' traceback."""
    from conftest import footage

    process = subprocess.Popen(
        [sys.executable, "-m", "fer_ros.nodes.video_source", "--ros-args",
         "-p", f"source:={footage('WolfgangLanger_Pexels.mp4')}", "-p", "loop:=true"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        if "publishing" in line:
            break
    time.sleep(1.5)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "Traceback" not in output and "context is invalid" not in output, output
