"""The ``fer`` node: camera images in, ``EmotionArray`` on ``emotions`` out.

A managed (lifecycle) node, as ROS4HRI's nodes are:

- ``configure`` checks the parameters and loads the models (an error is
  logged, the transition fails and the node stays unconfigured);
- ``activate`` subscribes ``image`` (sensor_msgs/Image, or
  ``image/compressed`` with ``image_transport: compressed``) with
  sensor-data QoS and starts publishing ``emotions`` (fer_ros/EmotionArray,
  one per processed frame), ``~/overlay`` (annotated sensor_msgs/Image,
  only while someone subscribes) and ``/diagnostics``;
- ``deactivate`` unsubscribes and stops the worker: no CPU while inactive;
- ``cleanup`` / ``shutdown`` release the models.

With ``autostart`` (the default) the node configures and activates itself
at start-up and exits with one error line if that fails; with
``autostart: false`` it waits for a lifecycle manager.

The subscription callback only keeps the newest frame; a worker thread
processes it, so a slow frame never queues others (latest frame wins;
dropped frames are counted in ``/diagnostics``).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image

from fer_ros.frame_statistics import FrameStatistics
from fer_ros.image_conversion import (ImageConversionError, compressed_msg_to_bgr,
                                      fill_image_msg, image_msg_to_bgr)
from fer_ros.model_files import ModelLoadError
from fer_ros.msg import Emotion, EmotionArray
from fer_ros.nodes.messages import frame_to_msg, stamp_to_seconds
from fer_ros.nodes.node_runner import run_node
from fer_ros.nodes.parameter_declaration import accept_changes, declare_parameters
from fer_ros.overlay import draw_overlay
from fer_ros.parameters import FER_NODE_PARAMETERS, validate
from fer_ros.pipeline import EmotionPipeline, build_pipeline

#: Hot-path warnings are printed at most once per this many seconds.
LOG_THROTTLE_S = 5.0
#: Seconds between two /diagnostics messages.
DIAGNOSTICS_PERIOD_S = 1.0

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE


class StartUpError(RuntimeError):
    """The node could not configure or activate itself (autostart)."""


class FerNode(LifecycleNode):
    """Facial emotion recognition on a camera stream (a lifecycle node)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("fer", **kwargs)
        self.values = declare_parameters(self, FER_NODE_PARAMETERS, check_values=False)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.pipeline: Optional[EmotionPipeline] = None
        self.model_name = ""
        self.configure_error = ""
        self.statistics = FrameStatistics()
        self._lock = threading.Condition()
        self._pending: Optional[Any] = None
        self._stopping = False
        self._worker: Optional[threading.Thread] = None
        self._subscription: Optional[Any] = None
        self._emotions_pub: Optional[Any] = None
        self._overlay_pub: Optional[Any] = None
        self._diagnostics_pub: Optional[Any] = None
        self._diagnostics_timer: Optional[Any] = None

    # -- lifecycle ------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Check the parameters, load the models and create the publishers."""
        problems = validate(self.values)
        try:
            if problems:
                raise ValueError("; ".join(problems))
            self.pipeline, self.model_name = build_pipeline(self.values)
        except (ModelLoadError, ValueError) as error:
            self.configure_error = " ".join(str(error).split())
            if not self.values["autostart"]:  # with autostart, main() prints it once
                self.get_logger().error(f"configure failed: {self.configure_error}")
            return FAILURE
        self.get_logger().info(
            f"static model {self.pipeline.classifier.source} "
            f"labels={list(self.pipeline.classifier.labels)}; CNN-LSTM "
            f"{'on' if self.pipeline.dynamic else 'off'}; detector "
            f"{self.values['detector_model']}")
        self._emotions_pub = self.create_lifecycle_publisher(
            EmotionArray, "emotions",
            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
            qos_overriding_options=QoSOverridingOptions.with_default_policies())
        self._overlay_pub = self.create_lifecycle_publisher(Image, "~/overlay", 2)
        self._diagnostics_pub = self.create_lifecycle_publisher(
            DiagnosticArray, "/diagnostics", 10)
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start the worker, subscribe to the camera and publish."""
        self.statistics = FrameStatistics()
        self._stopping = False
        worker = threading.Thread(target=self._work, name="fer_worker", daemon=True)
        worker.start()
        self._worker = worker  # only a started thread is ever joined
        self._diagnostics_timer = self.create_timer(DIAGNOSTICS_PERIOD_S,
                                                    self._publish_diagnostics)
        # Sensor-data QoS (best effort, depth 1): a RELIABLE subscription would
        # never match best-effort camera drivers, and depth 1 keeps only the
        # newest frame.  Created last: the node is ready when it exists.
        compressed = self.values["image_transport"] == "compressed"
        self._subscription = self.create_subscription(
            CompressedImage if compressed else Image,
            "image/compressed" if compressed else "image", self._on_image,
            qos_profile_sensor_data,
            qos_overriding_options=QoSOverridingOptions.with_default_policies())
        qos = self._subscription.qos_profile
        assert self._emotions_pub is not None and self._overlay_pub is not None
        self.get_logger().info(
            f"active: subscribed to {self._subscription.topic_name} "
            f"({'CompressedImage' if compressed else 'Image'}, "
            f"{qos.reliability.name.lower()}, depth {qos.depth}); publishing "
            f"{self._emotions_pub.topic_name} (reliable, depth 10) and "
            f"{self._overlay_pub.topic_name}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe and stop the worker: nothing runs while inactive."""
        self._stop_processing()
        self.get_logger().info("inactive: not subscribed, not processing")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release the models and publishers (back to unconfigured)."""
        self._release()
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop everything and release the models, from any state."""
        self._stop_processing()
        self._release()
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Recover from a failed transition by releasing everything (to unconfigured)."""
        self._stop_processing()
        self._release()
        return SUCCESS

    def start(self) -> None:
        """Configure and activate (``autostart``).

        :raises StartUpError: with the reason, when either transition fails.
        """
        if self.trigger_configure() != SUCCESS:
            raise StartUpError(self.configure_error or "configure failed")
        if self.trigger_activate() != SUCCESS:
            raise StartUpError("activate failed")

    def _stop_processing(self) -> None:
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None
        with self._lock:
            self._stopping = True
            self._pending = None
            self._lock.notify()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
            self._worker = None

    def _release(self) -> None:
        for publisher in (self._emotions_pub, self._overlay_pub, self._diagnostics_pub):
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
        self._emotions_pub = self._overlay_pub = self._diagnostics_pub = None
        self.pipeline = None

    # -- parameters -------------------------------------------------------------
    def _on_set_parameters(self, parameters) -> SetParametersResult:
        result = accept_changes(parameters, FER_NODE_PARAMETERS, self.values)
        if result.successful and self.pipeline is not None:  # else: at configure
            for parameter in parameters:
                if parameter.name == "min_detection_score":
                    self.pipeline.detector.min_score = float(parameter.value)
                elif parameter.name == "smoothing_time_constant_s":
                    self.pipeline.config.smoothing_time_constant_s = float(parameter.value)
        return result

    # -- frames -----------------------------------------------------------------
    def _on_image(self, msg: Any) -> None:
        with self._lock:
            self.statistics.on_received(replaced_pending=self._pending is not None)
            self._pending = msg
            self._lock.notify()

    def _work(self) -> None:
        while True:
            with self._lock:
                while self._pending is None and not self._stopping:
                    self._lock.wait(0.5)
                if self._stopping:
                    return
                msg, self._pending = self._pending, None
            try:
                self.process(msg)
            except ImageConversionError as error:
                self.statistics.bad_frames += 1
                self.get_logger().warn(f"skipping bad frame: {error}",
                                       throttle_duration_sec=LOG_THROTTLE_S)
            except Exception as error:  # a node never dies on one frame
                self.statistics.failures += 1
                self.get_logger().error(f"frame failed: {type(error).__name__}: {error}",
                                        throttle_duration_sec=LOG_THROTTLE_S)

    def process(self, msg: Any) -> Any:
        """Convert, run the pipeline, publish; return the EmotionArray."""
        pipeline, publisher = self.pipeline, self._emotions_pub
        if pipeline is None or publisher is None:
            raise RuntimeError("the fer node is not configured")
        started = time.perf_counter()
        bgr = (compressed_msg_to_bgr(msg) if isinstance(msg, CompressedImage)
               else image_msg_to_bgr(msg))
        stamp = stamp_to_seconds(msg.header.stamp)
        if stamp == 0.0:  # drivers without a clock: use arrival time
            stamp = self.get_clock().now().nanoseconds * 1e-9
        result = pipeline.process(bgr, stamp)
        out = frame_to_msg(result, msg.header, pipeline.classifier.labels,
                           pipeline.dynamic.labels if pipeline.dynamic else (),
                           pipeline.config.stability_window_s, self.model_name,
                           EmotionArray, Emotion, bgr.shape[1], bgr.shape[0])
        publisher.publish(out)
        if self.values["publish_overlay"] and self._overlay_pub is not None and \
                self._overlay_pub.get_subscription_count():
            overlay = fill_image_msg(
                Image(), draw_overlay(bgr, result, self.values["overlay_blur_faces"]), "bgr8")
            overlay.header = msg.header
            self._overlay_pub.publish(overlay)
        self.statistics.on_processed((time.perf_counter() - started) * 1000.0)
        self.get_logger().debug(f"frame {stamp:.3f}: {len(result.faces)} face(s)")
        return out

    # -- diagnostics ------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        if self._diagnostics_pub is None:
            return
        tracked = len(self.pipeline.tracker.tracks) if self.pipeline is not None else 0
        health = self.statistics.health(tracked)
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK if health.ok else DiagnosticStatus.WARN,
            name=f"{self.get_fully_qualified_name()}: emotion recognition",
            message=health.message, hardware_id="")
        status.values = [KeyValue(key=key, value=value) for key, value in health.values]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)

    def shutdown(self) -> None:
        """Stop the worker thread and unsubscribe (call before destroy_node)."""
        self._stop_processing()


def autostart(node: FerNode) -> None:
    """Configure and activate the node if ``autostart`` is set, then spin."""
    import rclpy

    if node.values["autostart"]:
        node.start()
    rclpy.spin(node)


def main(args: Optional[list] = None) -> int:
    """Run the fer node until interrupted; return the exit code."""
    return run_node("fer_node", FerNode, (StartUpError, ValueError), run=autostart,
                    close=FerNode.shutdown, args=args)


if __name__ == "__main__":
    sys.exit(main())
