"""The fer node in-process: real DDS, tiny model, good and bad frames, parameters."""

import time

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("fer_ros.msg")

from rclpy.context import Context  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from conftest import footage  # noqa: E402
from fer_ros.image_conversion import bgr_to_compressed_fields, fill_image_msg  # noqa: E402
from fer_ros.msg import EmotionArray  # noqa: E402

pytestmark = pytest.mark.ros


class NodeHarness:
    """A fer node plus a test node that publishes images and collects results."""

    def __init__(self, overrides):
        from fer_ros.nodes.fer_node import FerNode

        self.context = Context()
        rclpy.init(context=self.context)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.fer = FerNode(context=self.context, parameter_overrides=[
            Parameter(name, value=value) for name, value in overrides.items()])
        self.peer = rclpy.create_node("fer_test_peer", context=self.context)
        self.results = []
        self.peer.create_subscription(EmotionArray, "emotions", self.results.append,
                                      QoSProfile(depth=100,
                                                 reliability=ReliabilityPolicy.RELIABLE))
        compressed = overrides.get("image_transport") == "compressed"
        self.publisher = self.peer.create_publisher(
            CompressedImage if compressed else Image,
            "image/compressed" if compressed else "image",
            QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        self.executor.add_node(self.fer)
        self.executor.add_node(self.peer)
        self.spin_until(lambda: self.publisher.get_subscription_count() > 0 and
                        self.peer.count_publishers("/emotions") > 0)

    def spin_until(self, condition, timeout=20.0):
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            self.executor.spin_once(timeout_sec=0.02)

    def send(self, msg, stamp_sec):
        msg.header.stamp.sec = stamp_sec
        self.publisher.publish(msg)

    def send_and_wait(self, msg, stamp_sec):
        """Publish and wait until the result for this stamp arrives."""
        self.send(msg, stamp_sec)
        self.spin_until(lambda: any(r.header.stamp.sec == stamp_sec for r in self.results))
        return next(r for r in self.results if r.header.stamp.sec == stamp_sec)

    def close(self):
        self.fer.shutdown()
        self.fer.destroy_node()
        self.peer.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture
def harness(tiny_model_paths, ros_domain):
    created = []

    def make(**overrides):
        overrides.setdefault("model", str(tiny_model_paths["tflite"]))
        overrides.setdefault("dynamic_model", "none")
        created.append(NodeHarness(overrides))
        return created[-1]

    yield make
    for item in created:
        item.close()


def face_frame():
    image = cv2.imread(str(footage("single_face.jpg")))
    return cv2.resize(image, (640, 480))


def image_msg(bgr, encoding="bgr8"):
    return fill_image_msg(Image(), bgr, encoding)


def test_good_frames_give_one_emotion_array_each(harness):
    node = harness()
    frame = face_frame()
    result = node.send_and_wait(image_msg(frame), 1)
    assert len(result.emotions) == 1
    face = result.emotions[0]
    assert face.face_id == "face_1" and face.label in face.labels
    assert abs(sum(face.probabilities) - 1.0) < 1e-4
    assert result.header.stamp.sec == 1
    second = node.send_and_wait(image_msg(frame), 2)
    assert second.emotions[0].face_id == "face_1"


def test_empty_array_when_no_face(harness):
    node = harness()
    result = node.send_and_wait(image_msg(np.full((240, 320, 3), 90, np.uint8)), 5)
    assert list(result.emotions) == []


def test_bad_frames_are_skipped_and_the_node_keeps_publishing(harness):
    node = harness()
    bad = [
        Image(height=10, width=10, encoding="32FC1", step=40, data=bytes(400)),
        Image(height=0, width=0, encoding="bgr8", step=0, data=b""),
        Image(height=100, width=100, encoding="bgr8", step=300, data=bytes(50)),
        Image(height=10, width=10, encoding="bgr8", step=10, data=bytes(300)),
    ]
    for i, msg in enumerate(bad):
        node.send(msg, 100 + i)
        # Give the node time to reject it before the next one replaces it.
        node.spin_until(lambda: node.fer.bad_frames >= i + 1)
    result = node.send_and_wait(image_msg(face_frame()), 200)
    assert len(result.emotions) == 1
    assert node.fer.bad_frames == len(bad) and node.fer.failures == 0
    assert not any(r.header.stamp.sec in range(100, 104) for r in node.results)


def test_rgb8_and_mono8_inputs(harness):
    node = harness()
    frame = face_frame()
    rgb = node.send_and_wait(image_msg(np.ascontiguousarray(frame[:, :, ::-1]), "rgb8"), 7)
    mono = node.send_and_wait(image_msg(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), "mono8"), 8)
    assert len(rgb.emotions) == 1 and len(mono.emotions) == 1


def test_compressed_transport(harness):
    node = harness(image_transport="compressed")
    msg = CompressedImage(**bgr_to_compressed_fields(face_frame(), "jpeg"))
    result = node.send_and_wait(msg, 9)
    assert len(result.emotions) == 1


def test_runtime_parameter_changes_are_validated(harness):
    node = harness()
    good = node.fer.set_parameters([Parameter("min_detection_score", value=0.6)])[0]
    assert good.successful and node.fer.pipeline.detector.min_score == 0.6
    bad = node.fer.set_parameters([Parameter("min_detection_score", value=2.0)])[0]
    assert not bad.successful


@pytest.mark.parametrize("overrides, message", [
    ({"detector_model": "huge"}, "detector_model"),
    ({"max_faces": 0}, "max_faces"),
])
def test_invalid_start_up_parameters_name_the_parameter(tiny_model_paths, ros_domain,
                                                        overrides, message):
    from rclpy.exceptions import ParameterException

    from fer_ros.nodes.fer_node import FerNode

    context = Context()
    rclpy.init(context=context)
    try:
        with pytest.raises((ValueError, ParameterException), match=message):
            FerNode(context=context, parameter_overrides=[
                Parameter(k, value=v) for k, v in
                dict(overrides, model=str(tiny_model_paths["tflite"])).items()])
    finally:
        rclpy.try_shutdown(context=context)


def test_missing_model_fails_at_start_up(tmp_path, ros_domain):
    from fer_ros.model_files import ModelLoadError
    from fer_ros.nodes.fer_node import FerNode

    context = Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(ModelLoadError, match="model file not found"):
            FerNode(context=context, parameter_overrides=[
                Parameter("model", value=str(tmp_path / "missing.tflite"))])
    finally:
        rclpy.try_shutdown(context=context)
