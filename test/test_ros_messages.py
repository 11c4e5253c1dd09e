"""Real rclpy publish/subscribe of the custom messages across two processes."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")
msg_module = pytest.importorskip("fer_ros.msg")

pytestmark = pytest.mark.ros
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_emotion_array_crosses_processes_intact(ros_domain):
    from rclpy.context import Context
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    publisher = subprocess.Popen([sys.executable, str(FIXTURES / "emotion_publisher.py")])
    context = Context()
    rclpy.init(context=context)
    received = []
    try:
        node = rclpy.create_node("emotion_test_listener", context=context)
        node.create_subscription(msg_module.EmotionArray, "emotions", received.append,
                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + 30.0
        while not received and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
        publisher.wait(timeout=30)
    assert received, "no EmotionArray received from the other process"
    msg = received[0]
    assert msg.header.frame_id == "camera_optical"
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1234, 5678)
    assert msg.model == "fer2013_3class" and msg.tracked_faces == 1
    face = msg.emotions[0]
    assert face.face_id == "face_7" and face.label == "positive"
    assert (face.roi.x_offset, face.roi.y_offset, face.roi.width, face.roi.height) == \
        (10, 20, 30, 40)
    assert list(face.labels) == ["negative", "neutral", "positive"]
    assert list(face.probabilities) == [0.125, 0.25, 0.625]
    assert face.has_dynamic and face.dynamic_label == "negative"
    assert list(face.dynamic_probabilities) == [0.5, 0.25, 0.25]
    assert face.sequence_length == 40 and face.stability == 0.875
    assert publisher.returncode == 0


def test_label_constants_are_fixed():
    emotion = msg_module.Emotion
    assert (emotion.NEGATIVE, emotion.NEUTRAL, emotion.POSITIVE) == \
        ("negative", "neutral", "positive")
    assert (emotion.ANGRY, emotion.DISGUST, emotion.FEAR, emotion.HAPPY, emotion.SAD,
            emotion.SURPRISE) == ("angry", "disgust", "fear", "happy", "sad", "surprise")
