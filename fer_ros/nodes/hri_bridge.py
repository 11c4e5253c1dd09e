"""The ``hri_bridge`` node: fer_ros' faces on ROS4HRI (REP-155) topics.

Two modes (parameter ``mode``):

- ``bridge`` (default) subscribes ``emotions`` (fer_ros/EmotionArray) and
  publishes ``/humans/faces/tracked`` (hri_msgs/IdsList) and, for each
  tracked face, ``/humans/faces/<id>/roi``
  (hri_msgs/NormalizedRegionOfInterest2D, the pixel box divided by the
  image size) and ``/humans/faces/<id>/expression`` (hri_msgs/Expression),
  all with the header of the camera image;
- ``expression`` is a drop-in for the ROS4HRI emotion node: it subscribes
  ``/humans/faces/tracked`` and each listed face's ``aligned`` (or
  ``cropped``) sensor_msgs/Image from a ROS4HRI face detector, classifies
  the crops with fer_ros' classifier, smoothing, stability and CNN-LSTM
  (the fer node's parameters of the same names), and publishes only
  ``/humans/faces/<id>/expression``, with the header of the crop.

A face's topics are created when it appears and destroyed once it has not
been seen for ``face_timeout_s``; at most ``max_tracked_faces`` faces have
them (:class:`fer_ros.hri.FaceRegistry`).  ``expression`` follows
:func:`fer_ros.labels.expression_fields`: the label as an hri_msgs constant
(the 3-class "negative" has none: ""), valence, confidence, and arousal NaN
(fer_ros does not estimate it; hri_msgs has no "unknown" value).

hri_msgs is optional for fer_ros: this is the only module that imports it,
when the node starts; without it the node exits with one error line.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Dict, List, Optional, Set

from rcl_interfaces.msg import SetParametersResult
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from fer_ros.hri import (TRACKED_FACES_TOPIC, TRACKED_PERSONS_TOPIC, FaceChanges,
                         FaceRegistry, face_topic, normalized_roi, person_topic)
from fer_ros.image_conversion import ImageConversionError, image_msg_to_bgr
from fer_ros.labels import expression_fields
from fer_ros.model_files import ModelLoadError
from fer_ros.msg import EmotionArray
from fer_ros.nodes.messages import stamp_to_seconds
from fer_ros.nodes.node_runner import run_node
from fer_ros.nodes.parameter_declaration import accept_changes, declare_parameters
from fer_ros.parameters import CLASSIFIER_PARAMETER_NAMES, HRI_BRIDGE_PARAMETERS
from fer_ros.pipeline import EmotionPipeline, FaceCrop, build_pipeline

#: Hot-path warnings are printed at most once per this many seconds.
LOG_THROTTLE_S = 5.0
#: Longest wait at shutdown for subscribers to acknowledge the empty face list, s.
CLOSE_ACK_TIMEOUT_S = 1.0

# QoS as the ROS4HRI nodes use it.  libhri (hence pyhri) subscribes to every
# /humans/faces topic with the system defaults (reliable, volatile), and
# hri_face_detect / hri_emotion_recognizer publish reliable, volatile, keep
# last 1 / 10.  A reliable publisher matches both reliable and best-effort
# subscribers.
#: /humans/faces/tracked out: transient local as well, so a consumer that
#: starts later gets the current list at once; volatile subscribers match it.
TRACKED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
#: Per-face roi / expression out.
FACE_TOPIC_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
#: From a ROS4HRI face detector (tracked list, face images): what libhri
#: subscribes with, keeping only the newest message, so crops never queue.
DETECTOR_INPUT_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
#: /humans/persons/<id>/face_id out: latched (REP-155), a late consumer gets it.
PERSON_FACE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
#: fer_ros' emotions in: as the fer node publishes them.
EMOTIONS_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


class HriMessagesMissing(RuntimeError):
    """hri_msgs cannot be imported: the bridge cannot run."""


def import_hri_messages() -> Any:
    """Return the ``hri_msgs.msg`` module.

    :raises HriMessagesMissing: when hri_msgs is not installed.
    """
    try:
        import hri_msgs.msg
    except ImportError as error:
        raise HriMessagesMissing(
            f"hri_msgs is not installed ({error}; on a robot: apt install "
            f"ros-$ROS_DISTRO-hri-msgs, or build it from source)") from None
    return hri_msgs.msg


def expiry_period_s(timeout_s: float) -> float:
    """How often faces are checked for expiry: a quarter of the timeout, 0.05-0.25 s."""
    return min(0.25, max(0.05, timeout_s / 4.0))


@dataclass
class FaceTopics:
    """The ROS interfaces of one tracked face, created and destroyed together.

    :param expression: publisher of ``/humans/faces/<id>/expression``.
    :param roi: publisher of ``/humans/faces/<id>/roi`` (bridge mode).
    :param image: subscription to the face's crop (expression mode).
    """

    expression: Any
    roi: Optional[Any] = None
    image: Optional[Any] = None


class HriBridgeNode(Node):
    """Publish fer_ros' faces on ROS4HRI topics (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("hri_bridge", **kwargs)
        self.hri = import_hri_messages()
        self.values = declare_parameters(self, HRI_BRIDGE_PARAMETERS)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.mode: str = self.values["mode"]
        self.registry = FaceRegistry(self.values["face_timeout_s"],
                                     self.values["max_tracked_faces"])
        self.faces: Dict[str, FaceTopics] = {}
        # Persons (fer node with reidentify): /humans/persons/tracked and each
        # person's face_id, with the same lifetime rules as faces.
        self.person_registry = FaceRegistry(self.values["face_timeout_s"],
                                            self.values["max_tracked_faces"])
        self.persons: Dict[str, Any] = {}
        self._person_faces: Dict[str, str] = {}
        self._persons_pub: Optional[Any] = None
        self.pipeline: Optional[EmotionPipeline] = None
        self._tracked_ids: Set[str] = set()
        self._frame_id = ""
        self._tracked_pub: Optional[Any] = None
        if self.mode == "bridge":
            self._start_bridge()
        else:
            self._start_expression()
        self.create_timer(expiry_period_s(self.registry.timeout_s), self._expire)

    def _start_bridge(self) -> None:
        self._tracked_pub = self.create_publisher(
            self.hri.IdsList, TRACKED_FACES_TOPIC, TRACKED_QOS,
            qos_overriding_options=QoSOverridingOptions.with_default_policies())
        self._persons_pub = self.create_publisher(self.hri.IdsList, TRACKED_PERSONS_TOPIC,
                                                  TRACKED_QOS)
        subscription = self.create_subscription(
            EmotionArray, "emotions", self._on_emotions, EMOTIONS_QOS,
            qos_overriding_options=QoSOverridingOptions.with_default_policies())
        self.get_logger().info(
            f"bridge: {subscription.topic_name} -> {TRACKED_FACES_TOPIC} and "
            f"{face_topic('<id>', 'roi')}, {face_topic('<id>', 'expression')}")

    def _start_expression(self) -> None:
        # The fer node's builder, so the classifier parameters mean the same;
        # its face detector (loaded in ~0.1 s) stays unused.
        self.pipeline, model = build_pipeline(
            {name: self.values[name] for name in CLASSIFIER_PARAMETER_NAMES})
        self.create_subscription(self.hri.IdsList, TRACKED_FACES_TOPIC, self._on_tracked,
                                 DETECTOR_INPUT_QOS)
        self.get_logger().info(
            f"expression: {face_topic('<id>', self.values['crop_topic'])} of the faces on "
            f"{TRACKED_FACES_TOPIC} -> {face_topic('<id>', 'expression')} (model {model}, "
            f"CNN-LSTM {'on' if self.pipeline.dynamic else 'off'})")

    # -- bridge mode ------------------------------------------------------------
    def _on_emotions(self, msg: Any) -> None:
        self._frame_id = msg.header.frame_id
        self._apply(self.registry.update([e.face_id for e in msg.emotions], self._now()))
        for emotion in msg.emotions:
            topics = self.faces.get(emotion.face_id)
            if topics is None:
                continue  # refused: over max_tracked_faces
            self._publish_roi(topics, emotion, msg)
            topics.expression.publish(self._expression(msg.header, emotion))
        self._publish_tracked(msg.header)
        self._publish_persons(msg)

    def _publish_persons(self, msg: Any) -> None:
        """Persons of a re-identifying fer node: tracked list and each one's face."""
        faces = {e.person_id: e.face_id for e in msg.emotions if e.person_id}
        if not faces and not self.persons:
            return  # re-identification off: no persons at all
        changes = self.person_registry.update(list(faces), self._now())
        for person_id in changes.removed:
            self._destroy_person(person_id)
        for person_id in changes.added:
            self.persons[person_id] = self.create_publisher(
                String, person_topic(person_id, "face_id"), PERSON_FACE_QOS)
        for person_id, face_id in faces.items():
            if person_id in self.persons and self._person_faces.get(person_id) != face_id:
                self.persons[person_id].publish(String(data=face_id))
                self._person_faces[person_id] = face_id
        if self._persons_pub is not None:
            self._persons_pub.publish(self.hri.IdsList(header=msg.header,
                                                       ids=self.person_registry.ids))

    def _destroy_person(self, person_id: str) -> None:
        publisher = self.persons.pop(person_id, None)
        self._person_faces.pop(person_id, None)
        if publisher is not None:
            self.destroy_publisher(publisher)

    def _publish_roi(self, topics: FaceTopics, emotion: Any, msg: Any) -> None:
        box = emotion.roi
        try:
            roi = normalized_roi(box.x_offset, box.y_offset, box.width, box.height,
                                 msg.width, msg.height, emotion.detection_confidence)
        except ValueError as error:
            self.get_logger().warn(f"no roi for {emotion.face_id}: {error}",
                                   throttle_duration_sec=LOG_THROTTLE_S)
            return
        assert topics.roi is not None
        topics.roi.publish(self.hri.NormalizedRegionOfInterest2D(header=msg.header,
                                                                 **asdict(roi)))

    def _publish_tracked(self, header: Any) -> None:
        if self._tracked_pub is not None:
            self._tracked_pub.publish(self.hri.IdsList(header=header, ids=self.registry.ids))

    # -- expression mode --------------------------------------------------------
    def _on_tracked(self, msg: Any) -> None:
        self._apply(self.registry.update(msg.ids, self._now()))
        self._tracked_ids = {face_id for face_id in msg.ids if face_id in self.registry}
        assert self.pipeline is not None
        self.pipeline.process_crops([], self._tracked_ids)  # forget the faces that left

    def _on_face_image(self, face_id: str, msg: Any) -> None:
        topics = self.faces.get(face_id)
        if face_id not in self._tracked_ids or topics is None or self.pipeline is None:
            return  # the face left the tracked list: its topics expire soon
        stamp = stamp_to_seconds(msg.header.stamp) or self._now()
        try:
            crop = FaceCrop(face_id, image_msg_to_bgr(msg), stamp)
            result = self.pipeline.process_crops([crop], self._tracked_ids)[0]
        except (ImageConversionError, ValueError) as error:
            self.get_logger().warn(f"skipping the crop of face {face_id}: {error}",
                                   throttle_duration_sec=LOG_THROTTLE_S)
            return
        topics.expression.publish(self._expression(msg.header, result))

    # -- faces --------------------------------------------------------------------
    def _apply(self, changes: FaceChanges) -> None:
        for face_id in changes.removed:
            self._destroy_face(face_id)
        for face_id in changes.added:
            self.faces[face_id] = self._create_face(face_id)
        if changes.refused:
            self.get_logger().warn(
                f"faces {changes.refused} get no topics: not a ROS name token, or "
                f"max_tracked_faces ({self.registry.max_faces}) faces in view",
                throttle_duration_sec=LOG_THROTTLE_S)

    def _create_face(self, face_id: str) -> FaceTopics:
        topics = FaceTopics(self.create_publisher(
            self.hri.Expression, face_topic(face_id, "expression"), FACE_TOPIC_QOS))
        if self.mode == "bridge":
            topics.roi = self.create_publisher(self.hri.NormalizedRegionOfInterest2D,
                                               face_topic(face_id, "roi"), FACE_TOPIC_QOS)
        else:
            topics.image = self.create_subscription(
                Image, face_topic(face_id, self.values["crop_topic"]),
                partial(self._on_face_image, face_id), DETECTOR_INPUT_QOS)
        self.get_logger().debug(f"face {face_id}: topics created")
        return topics

    def _destroy_face(self, face_id: str) -> None:
        topics = self.faces.pop(face_id, None)
        if topics is None:
            return
        for publisher in (topics.expression, topics.roi):
            if publisher is not None:
                self.destroy_publisher(publisher)
        if topics.image is not None:
            self.destroy_subscription(topics.image)
        self.get_logger().debug(f"face {face_id}: topics destroyed")

    def _expire(self) -> None:
        for person_id in self.person_registry.expire(self._now()):
            self._destroy_person(person_id)
        removed = self.registry.expire(self._now())
        for face_id in removed:
            self._destroy_face(face_id)
        if removed:
            self._publish_tracked(Header(stamp=self.get_clock().now().to_msg(),
                                         frame_id=self._frame_id))

    def _expression(self, header: Any, face: Any) -> Any:
        return self.hri.Expression(header=header, **expression_fields(face))

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_set_parameters(self, parameters: List[Any]) -> SetParametersResult:
        result = accept_changes(parameters, HRI_BRIDGE_PARAMETERS, self.values)
        if result.successful and self.pipeline is not None:
            for parameter in parameters:
                if parameter.name == "smoothing_time_constant_s":
                    self.pipeline.config.smoothing_time_constant_s = float(parameter.value)
        return result

    def close(self) -> None:
        """Release every face's topics and publish an empty list (call before destroy_node).

        libhri drops its faces only when a new list says so.  After Ctrl-C
        or SIGTERM rclpy has already shut the context down and nothing can
        be sent: consumers then keep the last list until a bridge publishes
        again.
        """
        for face_id in self.registry.clear():
            self._destroy_face(face_id)
        if self._tracked_pub is not None and self.context.ok():
            self._publish_tracked(Header(stamp=self.get_clock().now().to_msg(),
                                         frame_id=self._frame_id))
            self._tracked_pub.wait_for_all_acked(Duration(seconds=CLOSE_ACK_TIMEOUT_S))


def main(args: Optional[list] = None) -> int:
    """Run the ROS4HRI bridge until interrupted; return the exit code."""
    return run_node("hri_bridge", HriBridgeNode, (HriMessagesMissing, ModelLoadError, ValueError),
                    close=HriBridgeNode.close, args=args)


if __name__ == "__main__":
    sys.exit(main())
