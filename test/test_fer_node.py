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
        self.fer.start()
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
        node.spin_until(lambda: node.fer.statistics.bad_frames >= i + 1)
    result = node.send_and_wait(image_msg(face_frame()), 200)
    assert len(result.emotions) == 1
    assert node.fer.statistics.bad_frames == len(bad) and node.fer.statistics.failures == 0
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
    ({"model": "/nonexistent/missing.tflite"}, "model file not found"),
])
def test_configure_fails_with_the_reason_and_the_node_stays_unconfigured(
        tiny_model_paths, ros_domain, overrides, message):
    from fer_ros.nodes.fer_node import FerNode, StartUpError

    context = Context()
    rclpy.init(context=context)
    try:
        node = FerNode(context=context, parameter_overrides=[
            Parameter(k, value=v) for k, v in
            dict({"model": str(tiny_model_paths["tflite"])}, **overrides).items()])
        with pytest.raises(StartUpError, match=message):
            node.start()
        assert node._state_machine.current_state[1] == "unconfigured"
        assert node.pipeline is None
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_out_of_range_parameter_is_refused_at_start_up(tiny_model_paths, ros_domain):
    from rclpy.exceptions import ParameterException

    from fer_ros.nodes.fer_node import FerNode

    context = Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(ParameterException, match="max_faces"):
            FerNode(context=context, parameter_overrides=[Parameter("max_faces", value=0)])
    finally:
        rclpy.try_shutdown(context=context)


def test_lifecycle_deactivate_stops_processing_and_cleanup_releases_models(harness):
    from rclpy.lifecycle import TransitionCallbackReturn

    node = harness()
    frame = image_msg(face_frame())
    assert len(node.send_and_wait(frame, 30).emotions) == 1
    assert node.fer.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.fer._subscription is None and node.fer._worker is None
    before = len(node.results)
    node.send(frame, 31)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        node.executor.spin_once(timeout_sec=0.05)
    assert len(node.results) == before and node.publisher.get_subscription_count() == 0
    assert node.fer.trigger_activate() == TransitionCallbackReturn.SUCCESS
    node.spin_until(lambda: node.publisher.get_subscription_count() > 0)
    assert len(node.send_and_wait(frame, 32).emotions) == 1
    assert node.fer.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.fer.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert node.fer.pipeline is None
    assert node.fer._state_machine.current_state[1] == "unconfigured"
    assert node.fer.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.fer.pipeline is not None


def test_lifecycle_services_drive_an_unstarted_node(tiny_model_paths, ros_domain):
    """What a lifecycle manager (or `ros2 lifecycle set`) does, through the services."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    from fer_ros.nodes.fer_node import FerNode

    context = Context()
    rclpy.init(context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    fer = FerNode(context=context, parameter_overrides=[
        Parameter("model", value=str(tiny_model_paths["tflite"])),
        Parameter("dynamic_model", value="none"), Parameter("autostart", value=False)])
    manager = rclpy.create_node("lifecycle_manager", context=context)
    executor.add_node(fer)
    executor.add_node(manager)
    get_state = manager.create_client(GetState, "/fer/get_state")
    change_state = manager.create_client(ChangeState, "/fer/change_state")

    def call(client, request):
        assert client.wait_for_service(timeout_sec=10)
        future = client.call_async(request)
        executor.spin_until_future_complete(future, timeout_sec=30)
        return future.result()

    def state():
        return call(get_state, GetState.Request()).current_state.label

    try:
        assert state() == "unconfigured" and fer.pipeline is None
        for transition, expected in ((Transition.TRANSITION_CONFIGURE, "inactive"),
                                     (Transition.TRANSITION_ACTIVATE, "active"),
                                     (Transition.TRANSITION_DEACTIVATE, "inactive"),
                                     (Transition.TRANSITION_CLEANUP, "unconfigured")):
            assert call(change_state, ChangeState.Request(
                transition=Transition(id=transition))).success
            assert state() == expected
            assert (fer._subscription is not None) == (expected == "active")
            assert (fer.pipeline is not None) == (expected != "unconfigured")
    finally:
        fer.shutdown()
        fer.destroy_node()
        manager.destroy_node()
        rclpy.try_shutdown(context=context)


def test_png_bomb_on_the_compressed_topic_is_a_bad_frame(harness):
    import resource

    from test_image_limits import png_bomb

    node = harness(image_transport="compressed")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    node.send(CompressedImage(format="png", data=png_bomb(20000, 20000)), 40)
    node.spin_until(lambda: node.fer.statistics.bad_frames == 1)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 100
    msg = CompressedImage(**bgr_to_compressed_fields(face_frame(), "jpeg"))
    assert len(node.send_and_wait(msg, 41).emotions) == 1


@pytest.mark.parametrize("away_s", [2, 10])
def test_reidentified_person_keeps_its_id_over_dds_after_leaving(harness, away_s):
    node = harness(reidentify=True)
    frame, blank = image_msg(face_frame()), image_msg(np.full((480, 640, 3), 128, np.uint8))
    first = node.send_and_wait(frame, 50).emotions[0]
    assert first.person_id == "person_1"
    for second in range(51, 51 + away_s):  # away longer than track_max_age_s (1 s)
        assert list(node.send_and_wait(blank, second).emotions) == []
    back = node.send_and_wait(frame, 51 + away_s).emotions[0]
    assert back.face_id != first.face_id and back.person_id == "person_1"


def test_overlay_is_blurred_by_default(harness):
    from fer_ros.image_conversion import image_msg_to_bgr

    node = harness()
    overlays = []
    node.peer.create_subscription(Image, "/fer/overlay", overlays.append, 5)
    node.spin_until(lambda: node.fer._overlay_pub.get_subscription_count() > 0)
    frame = face_frame()
    result = node.send_and_wait(image_msg(frame), 60)
    node.spin_until(lambda: overlays)
    roi = result.emotions[0].roi
    inner = (slice(roi.y_offset + roi.height // 4, roi.y_offset + 3 * roi.height // 4),
             slice(roi.x_offset + roi.width // 4, roi.x_offset + 3 * roi.width // 4))
    overlay = image_msg_to_bgr(overlays[-1])
    # Pixelated: far less detail than the camera's face, no longer the same pixels.
    assert cv2.Laplacian(overlay[inner], cv2.CV_32F).std() < \
        0.5 * cv2.Laplacian(frame[inner], cv2.CV_32F).std()
