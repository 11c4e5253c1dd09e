"""The ROS4HRI bridge: conversions and face bookkeeping without ROS, then the node over DDS."""

import math
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, footage
from fer_ros.hri import (FaceRegistry, NormalizedRoi, face_topic, is_valid_face_id,
                         normalized_roi)
from fer_ros.labels import EXPRESSION_OF_LABEL
from fer_ros.parameters import (CLASSIFIER_PARAMETER_NAMES, FER_NODE_PARAMETERS,
                                HRI_BRIDGE_PARAMETERS, NODE_PARAMETERS, defaults, validate)

# --- pure: ROIs, ids, registry, parameters ----------------------------------------


def test_normalized_roi_divides_by_the_image_size_and_clips_to_the_unit_square():
    inside = normalized_roi(160, 120, 320, 240, 640, 480, 0.9)
    assert (inside.xmin, inside.ymin, inside.xmax, inside.ymax, inside.c) == \
        pytest.approx((0.25, 0.25, 0.75, 0.75, 0.9))
    outside = normalized_roi(600, 400, 80, 120, 640, 480, 1.2)
    assert (outside.xmin, outside.ymin) == pytest.approx((600 / 640, 400 / 480))
    assert (outside.xmax, outside.ymax, outside.c) == (1.0, 1.0, 1.0)
    clipped = NormalizedRoi(-0.2, -1.0, 0.5, 0.5, -0.1)
    assert (clipped.xmin, clipped.ymin, clipped.c) == (0.0, 0.0, 0.0)


def test_normalized_roi_needs_the_image_size():
    with pytest.raises(ValueError, match=r"unknown size \(0x480\)"):
        normalized_roi(1, 1, 10, 10, 0, 480, 0.5)


def test_face_topics_and_ids_follow_rep155():
    assert face_topic("face_3", "expression") == "/humans/faces/face_3/expression"
    assert all(is_valid_face_id(i) for i in ("face_1", "f00003", "abcde", "_x"))
    assert not any(is_valid_face_id(i) for i in ("", "1abc", "a-b", "a/b", "face 1", "é"))


def test_registry_adds_expires_and_reports_changes():
    registry = FaceRegistry(timeout_s=1.0, max_faces=4)
    changes = registry.update(["face_1", "face_2", "face_1"], now=0.0)
    assert changes.added == ["face_1", "face_2"] and changes.removed == changes.refused == []
    assert registry.update(["face_2"], now=0.9).added == []
    assert registry.ids == ["face_1", "face_2"]      # face_1 unseen for 0.9 s: still held
    changes = registry.update(["face_2", "face_3"], now=1.5)
    assert changes.removed == ["face_1"] and changes.added == ["face_3"]
    assert registry.expire(now=2.4) == [] and registry.expire(now=2.6) == ["face_2", "face_3"]
    assert len(registry) == 0


def test_registry_bound_replaces_the_face_unseen_longest_or_refuses():
    registry = FaceRegistry(timeout_s=10.0, max_faces=2)
    registry.update(["a"], now=0.0)
    registry.update(["b"], now=1.0)
    changes = registry.update(["b", "c"], now=2.0)      # a: unseen longest, not in view
    assert changes.removed == ["a"] and changes.added == ["c"]
    changes = registry.update(["b", "c", "d"], now=3.0)  # all held faces in view
    assert changes.refused == ["d"] and changes.removed == [] and registry.ids == ["b", "c"]
    changes = registry.update(["9lives", "ok"], now=4.0)  # b, c out of view: b goes
    assert changes.refused == ["9lives"] and changes.removed == ["b"]
    assert registry.ids == ["c", "ok"]
    assert registry.clear() == ["c", "ok"] and len(registry) == 0


def test_registry_refuses_invalid_settings():
    with pytest.raises(ValueError, match="max_faces"):
        FaceRegistry(1.0, 0)
    with pytest.raises(ValueError, match="timeout_s"):
        FaceRegistry(-1.0, 4)


def test_bridge_parameters_are_registered_complete_and_share_the_fer_classifier_defaults():
    assert NODE_PARAMETERS["hri_bridge"] is HRI_BRIDGE_PARAMETERS
    names = [spec.name for spec in HRI_BRIDGE_PARAMETERS]
    assert len(names) == len(set(names))
    assert set(CLASSIFIER_PARAMETER_NAMES) < set(names)
    for spec in HRI_BRIDGE_PARAMETERS:
        assert len(spec.description) > 10, spec.name
        if isinstance(spec.default, (int, float)) and not isinstance(spec.default, bool):
            assert spec.value_range is not None, spec.name
        if isinstance(spec.default, str) and spec.name not in ("model", "dynamic_model"):
            assert spec.choices, spec.name     # the two models also take file paths
    assert validate(defaults(HRI_BRIDGE_PARAMETERS), HRI_BRIDGE_PARAMETERS) == []
    fer = {spec.name: spec for spec in FER_NODE_PARAMETERS}
    for spec in HRI_BRIDGE_PARAMETERS:
        if spec.name in CLASSIFIER_PARAMETER_NAMES:
            assert (spec.default, spec.value_range, spec.choices, spec.read_only) == \
                (fer[spec.name].default, fer[spec.name].value_range, fer[spec.name].choices,
                 fer[spec.name].read_only)
    assert validate({"mode": "detect"}, HRI_BRIDGE_PARAMETERS) == [
        "parameter 'mode' = 'detect' is not one of 'bridge', 'expression'"]


def test_the_executable_is_registered_for_pip_and_colcon():
    entry = "hri_bridge = fer_ros.nodes.hri_bridge:main"
    assert entry in (REPO / "setup.py").read_text()
    assert '"hri_bridge:fer_ros.nodes.hri_bridge"' in (REPO / "CMakeLists.txt").read_text()
    wrapper = Path(sys.prefix) / "lib" / "fer_ros" / "hri_bridge"
    assert wrapper.is_file(), f"{wrapper}: reinstall fer_ros (tools/setup.sh)"
    assert "from fer_ros.nodes.hri_bridge import main" in wrapper.read_text()


def test_without_hri_msgs_the_node_exits_with_one_line():
    script = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'hri_msgs':\n"
        "            raise ImportError(f\"No module named '{name}'\")\n"
        "sys.meta_path.insert(0, Block())\n"
        "import fer_ros.hri, fer_ros.pipeline, fer_ros.labels, fer_ros.nodes.hri_bridge\n"
        "from fer_ros.nodes.hri_bridge import main\n"
        "sys.exit(main([]))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "hri_bridge: error: hri_msgs is not installed (No module named 'hri_msgs'"), lines


def test_only_the_bridge_node_imports_hri_msgs():
    importers = sorted(str(path.relative_to(REPO)) for path in (REPO / "fer_ros").rglob("*.py")
                       if re.search(r"^\s*(import|from)\s+hri_msgs", path.read_text(), re.M))
    assert importers == ["fer_ros/nodes/hri_bridge.py"]


# --- the node over DDS ---------------------------------------------------------------

try:   # hri_msgs is optional: without it only the pure tests above run
    import hri_msgs.msg as hri_msgs
    import rclpy
    import rclpy.executors
    from rclpy.context import Context
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from fer_ros.image_conversion import fill_image_msg
    from fer_ros.msg import Emotion, EmotionArray
except ImportError as missing:
    ros = pytest.mark.skip(reason=f"needs rclpy, fer_ros.msg and hri_msgs: {missing}")
else:
    ros = pytest.mark.ros
    #: What libhri (pyhri) subscribes to ROS4HRI topics with: reliable, volatile.
    LIBHRI_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    #: What hri_face_detect publishes its tracked list and crops with.
    DETECTOR_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    #: fer_ros' emotions, as the fer node publishes them.
    EMOTIONS_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    #: The expressions hri_msgs/Expression defines as constants.
    HRI_EXPRESSIONS = {value for name, value in vars(hri_msgs.Expression).items()
                       if name.isupper() and isinstance(value, str)}


class BridgeHarness:
    """An hri_bridge node plus a peer node that publishes inputs and records outputs."""

    def __init__(self, overrides):
        from fer_ros.nodes.hri_bridge import HriBridgeNode

        self.context = Context()
        rclpy.init(context=self.context)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.bridge = HriBridgeNode(context=self.context, parameter_overrides=[
            Parameter(name, value=value) for name, value in overrides.items()])
        self.peer = rclpy.create_node("hri_test_peer", context=self.context)
        self.executor.add_node(self.bridge)
        self.executor.add_node(self.peer)
        self.received = defaultdict(list)

    def listen(self, msg_type, topic, qos=None):
        qos = qos or LIBHRI_QOS
        self.peer.create_subscription(msg_type, topic, self.received[topic].append, qos)

    def publisher(self, msg_type, topic, qos):
        publisher = self.peer.create_publisher(msg_type, topic, qos)
        self.spin_until(lambda: publisher.get_subscription_count() > 0)
        return publisher

    def spin_until(self, condition, timeout=20.0):
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            self.executor.spin_once(timeout_sec=0.02)

    def spin_for(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)

    def publishers_of(self, face_id, name):
        return self.peer.count_publishers(face_topic(face_id, name))

    def close(self):
        self.bridge.close()
        self.bridge.destroy_node()
        self.peer.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture
def bridge(ros_domain):
    created = []

    def make(**overrides):
        created.append(BridgeHarness(overrides))
        return created[-1]

    yield make
    for item in created:
        item.close()


def emotion_array(stamp_sec, faces):
    msg = EmotionArray(width=640, height=480)
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp_sec, 250_000_000
    msg.header.frame_id = "camera"
    for face_id, (x, y, w, h) in faces:
        face = Emotion(face_id=face_id, label="positive", valence=0.6, confidence=0.7,
                       detection_confidence=0.95)
        face.roi.x_offset, face.roi.y_offset, face.roi.width, face.roi.height = x, y, w, h
        msg.emotions.append(face)
    return msg


@ros
def test_bridge_publishes_faces_on_ros4hri_topics_and_removes_them_after_the_timeout(bridge):
    node = bridge(face_timeout_s=1.0)
    tracked, expression, roi = ("/humans/faces/tracked", face_topic("face_1", "expression"),
                                face_topic("face_1", "roi"))
    node.listen(hri_msgs.IdsList, tracked)
    node.listen(hri_msgs.Expression, expression)
    node.listen(hri_msgs.NormalizedRegionOfInterest2D, roi)
    emotions = node.publisher(EmotionArray, "emotions", EMOTIONS_QOS)
    # Per-face publishers appear with the face; ROS4HRI consumers see messages
    # once matched, so publish frames (as a camera would) until they arrive.
    stamp = 100
    while not (node.received[expression] and node.received[roi]):
        stamp += 1
        emotions.publish(emotion_array(stamp, [("face_1", (600, 100, 80, 120))]))
        node.spin_for(0.05)
        assert stamp < 300, "no expression / roi after 200 frames"
    sent = range(101, stamp + 1)
    message = node.received[expression][0]
    assert message.header.stamp.sec in sent and message.header.stamp.nanosec == 250_000_000
    assert message.header.frame_id == "camera"
    assert (message.expression, message.confidence) == ("happy", pytest.approx(0.7))
    assert message.valence == pytest.approx(0.6) and math.isnan(message.arousal)
    box = node.received[roi][0]
    assert box.header.stamp.sec in sent
    assert (box.xmin, box.ymin, box.xmax, box.ymax, box.c) == \
        pytest.approx((600 / 640, 100 / 480, 1.0, 220 / 480, 0.95))
    lists = node.received[tracked]
    assert lists[-1].ids == ["face_1"] and lists[-1].header.stamp.sec in sent

    # A consumer that starts now gets the current list at once (transient local).
    late = []
    node.peer.create_subscription(hri_msgs.IdsList, tracked, late.append, QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL))
    node.spin_until(lambda: late)
    assert late[0].ids == ["face_1"]

    # The face leaves: it stays listed until the timeout, then its topics go.
    emotions.publish(emotion_array(stamp + 1, []))
    node.spin_until(lambda: any(m.header.stamp.sec == stamp + 1 for m in lists))
    assert lists[-1].ids == ["face_1"] and "face_1" in node.bridge.faces
    left = time.monotonic()
    node.spin_until(lambda: node.publishers_of("face_1", "expression") == 0
                    and node.publishers_of("face_1", "roi") == 0)
    assert time.monotonic() - left > 0.5
    node.spin_until(lambda: lists[-1].ids == [])
    assert node.bridge.faces == {} and len(node.bridge.registry) == 0


@ros
def test_bridge_gives_topics_to_at_most_max_tracked_faces(bridge):
    node = bridge(max_tracked_faces=2)
    node.listen(hri_msgs.IdsList, "/humans/faces/tracked")
    emotions = node.publisher(EmotionArray, "emotions", EMOTIONS_QOS)
    faces = [(f"face_{i}", (100 * i, 100, 60, 60)) for i in (1, 2, 3)]
    emotions.publish(emotion_array(7, faces))
    lists = node.received["/humans/faces/tracked"]
    node.spin_until(lambda: lists)
    assert lists[-1].ids == ["face_1", "face_2"] and sorted(node.bridge.faces) == lists[-1].ids
    assert node.publishers_of("face_3", "expression") == 0
    node.bridge.close()      # at shutdown consumers are told that every face is gone
    node.spin_until(lambda: lists[-1].ids == [] and node.publishers_of("face_1", "roi") == 0)


@ros
def test_bridge_maps_reidentified_persons_to_humans_persons(bridge):
    from std_msgs.msg import String

    node = bridge(face_timeout_s=1.0)
    persons = "/humans/persons/tracked"
    face_of_child = "/humans/persons/child/face_id"
    node.listen(hri_msgs.IdsList, persons)
    node.listen(String, face_of_child, QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL))
    emotions = node.publisher(EmotionArray, "emotions", EMOTIONS_QOS)
    msg = emotion_array(10, [("face_3", (10, 10, 50, 50)), ("face_4", (200, 10, 50, 50))])
    msg.emotions[0].person_id = "child"  # face_4: not (yet) identified
    emotions.publish(msg)
    node.spin_until(lambda: node.received[persons] and node.received[face_of_child])
    assert node.received[persons][-1].ids == ["child"]
    assert node.received[face_of_child][-1].data == "face_3"
    # The child comes back with a new track: the person's face_id follows it.
    msg = emotion_array(11, [("face_9", (10, 10, 50, 50))])
    msg.emotions[0].person_id = "child"
    emotions.publish(msg)
    node.spin_until(lambda: node.received[face_of_child][-1].data == "face_9")
    # Gone for longer than the timeout: the person's topic goes.
    node.spin_until(lambda: node.peer.count_publishers(face_of_child) == 0)
    assert node.bridge.persons == {}


@ros
def test_bridge_without_person_ids_publishes_no_persons(bridge):
    node = bridge()
    node.listen(hri_msgs.IdsList, "/humans/persons/tracked")
    node.listen(hri_msgs.IdsList, "/humans/faces/tracked")
    emotions = node.publisher(EmotionArray, "emotions", EMOTIONS_QOS)
    emotions.publish(emotion_array(12, [("face_1", (10, 10, 50, 50))]))
    node.spin_until(lambda: node.received["/humans/faces/tracked"])
    node.spin_for(0.3)
    assert node.received["/humans/persons/tracked"] == [] and node.bridge.persons == {}


@ros
def test_bridge_refuses_an_unknown_mode(ros_domain):
    from fer_ros.nodes.hri_bridge import HriBridgeNode

    context = Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(ValueError, match="parameter 'mode' = 'detect' is not one of"):
            HriBridgeNode(context=context, parameter_overrides=[Parameter("mode", value="detect")])
    finally:
        rclpy.try_shutdown(context=context)


@pytest.fixture(scope="module")
def face_crop():
    """Return a real face from footage, cut and letterboxed as hri_face_detect crops it."""
    import cv2

    from fer_ros.detection import BlazeFaceDetector

    image = cv2.imread(str(footage("single_face.jpg")))
    detection, = BlazeFaceDetector().detect(image, bgr=True)
    x, y, w, h = (int(round(v)) for v in detection.box)
    face = image[max(0, y):y + h, max(0, x):x + w]
    face = cv2.resize(face, None, fx=128 / max(face.shape[:2]), fy=128 / max(face.shape[:2]))
    crop = np.zeros((128, 128, 3), np.uint8)
    crop[:face.shape[0], :face.shape[1]] = face
    return crop


@ros
def test_expression_mode_classifies_a_ros4hri_detectors_crops(bridge, face_crop):
    node = bridge(mode="expression", model="3class", dynamic_model="auto",
                  dynamic_min_frames=3, dynamic_stride=1, face_timeout_s=1.0, threads=1)
    assert node.bridge.pipeline is not None and node.bridge.pipeline.dynamic is not None
    expression = face_topic("f00001", "expression")
    node.listen(hri_msgs.Expression, expression)
    tracked = node.publisher(hri_msgs.IdsList, "/humans/faces/tracked", DETECTOR_QOS)
    aligned = node.peer.create_publisher(Image, face_topic("f00001", "aligned"), DETECTOR_QOS)
    cropped = node.peer.create_publisher(Image, face_topic("f00001", "cropped"), DETECTOR_QOS)
    tracked.publish(hri_msgs.IdsList(ids=["f00001"]))
    node.spin_until(lambda: aligned.get_subscription_count() > 0)
    assert cropped.get_subscription_count() == 0    # crop_topic: aligned
    stamp = 200
    while len(node.received[expression]) < 4:      # a detector: list and crop every frame
        stamp += 1
        tracked.publish(hri_msgs.IdsList(ids=["f00001"]))
        crop = fill_image_msg(Image(), face_crop, "bgr8")
        crop.header.stamp.sec, crop.header.frame_id = stamp, "camera"
        aligned.publish(crop)
        node.spin_for(0.05)
        assert stamp < 400, "no expressions after 200 crops"
    messages = node.received[expression]
    assert {m.header.stamp.sec for m in messages} <= set(range(201, stamp + 1))
    for message in messages:
        assert message.expression in HRI_EXPRESSIONS | {""}
        assert -1.0 <= message.valence <= 1.0 and 0.0 < message.confidence <= 1.0
        assert math.isnan(message.arousal) and message.header.frame_id == "camera"
    state = node.bridge.pipeline.state_size
    assert state["crop_faces"] == 1 and state["dynamic"] == 1   # the CNN-LSTM ran

    # The detector drops the face: its state goes at once, its topics after the timeout.
    tracked.publish(hri_msgs.IdsList(ids=[]))
    node.spin_until(lambda: node.bridge.pipeline.state_size["crop_faces"] == 0)
    assert node.publishers_of("f00001", "expression") == 1
    node.spin_until(lambda: node.publishers_of("f00001", "expression") == 0
                    and aligned.get_subscription_count() == 0)


@ros
def test_every_fer_label_maps_to_an_hri_msgs_expression_constant():
    assert {value for value in EXPRESSION_OF_LABEL.values() if value} <= HRI_EXPRESSIONS
