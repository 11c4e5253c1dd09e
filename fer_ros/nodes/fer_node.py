"""The ``fer`` node: camera images in, ``EmotionArray`` on ``emotions`` out.

Subscribes ``image`` (sensor_msgs/Image, or ``image/compressed`` with
``image_transport: compressed``) with sensor-data QoS.  The subscription
callback only keeps the newest frame; a worker thread processes it, so a
slow frame never queues others (latest frame wins; dropped frames are
counted in ``/diagnostics``).  Publishes ``emotions`` (fer_ros/EmotionArray,
one per processed frame) and ``~/overlay`` (annotated sensor_msgs/Image,
only while someone subscribes).
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections import deque
from typing import Any, Deque, Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image

from fer_ros.model_files import ModelLoadError
from fer_ros.detection import DetectorError
from fer_ros.image_conversion import (ImageConversionError, compressed_msg_to_bgr,
                                      fill_image_msg, image_msg_to_bgr)
from fer_ros.msg import Emotion, EmotionArray
from fer_ros.nodes.messages import frame_to_msg, stamp_to_seconds
from fer_ros.nodes.node_runner import run_node
from fer_ros.overlay import draw_overlay
from fer_ros.nodes.parameter_declaration import declare_parameters
from fer_ros.parameters import FER_NODE_PARAMETERS, PARAMETERS_BY_NAME, check
from fer_ros.pipeline import build_pipeline

#: Diagnostics WARN when the processing rate falls below this, frames/s.
WARN_BELOW_FPS = 10.0
#: Diagnostics WARN when more than this share of frames was dropped or bad.
WARN_DROPPED_SHARE = 0.5
#: Hot-path warnings are printed at most once per this many seconds.
LOG_THROTTLE_S = 5.0
#: Frames whose processing time is kept for the diagnostics median.
TIMING_WINDOW = 100


class FerNode(Node):
    """Facial emotion recognition on a camera stream."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("fer", **kwargs)
        self.values = declare_parameters(self, FER_NODE_PARAMETERS)
        self.pipeline, self.model_name = build_pipeline(self.values)
        self.get_logger().info(
            f"static model {self.pipeline.classifier.source} "
            f"labels={list(self.pipeline.classifier.labels)}; CNN-LSTM "
            f"{'on' if self.pipeline.dynamic else 'off'}; detector "
            f"{self.values['detector_model']}")
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._emotions_pub = self.create_publisher(
            EmotionArray, "emotions", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
            qos_overriding_options=QoSOverridingOptions.with_default_policies())
        self._overlay_pub = self.create_publisher(Image, "~/overlay", 2)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        self._lock = threading.Condition()
        self._pending: Optional[Any] = None
        self._stopping = False
        self.received = self.processed = self.dropped = self.bad_frames = self.failures = 0
        self._durations_ms: Deque[float] = deque(maxlen=TIMING_WINDOW)
        self._processed_times: Deque[float] = deque(maxlen=TIMING_WINDOW)
        self._worker = threading.Thread(target=self._work, name="fer_worker", daemon=True)
        self._worker.start()
        self.create_timer(1.0, self._publish_diagnostics)

        # Sensor-data QoS (best effort, depth 1): a RELIABLE subscription would
        # never match best-effort camera drivers, and depth 1 keeps only the
        # newest frame.  Created last, once the model is loaded: the node is
        # ready when this subscription exists.
        compressed = self.values["image_transport"] == "compressed"
        self._subscription = self.create_subscription(
            CompressedImage if compressed else Image,
            "image/compressed" if compressed else "image", self._on_image,
            qos_profile_sensor_data,
            qos_overriding_options=QoSOverridingOptions.with_default_policies())
        qos = self._subscription.qos_profile
        self.get_logger().info(
            f"subscribed to {self._subscription.topic_name} "
            f"({'CompressedImage' if compressed else 'Image'}, "
            f"{qos.reliability.name.lower()}, depth {qos.depth}); "
            f"publishing {self._emotions_pub.topic_name} (reliable, depth 10) and "
            f"{self._overlay_pub.topic_name}")

    # -- parameters ---------------------------------------------------------
    def _on_set_parameters(self, parameters) -> SetParametersResult:
        for parameter in parameters:
            spec = PARAMETERS_BY_NAME.get(parameter.name)
            problem = check(spec, parameter.value) if spec else None
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        for parameter in parameters:
            self.values[parameter.name] = parameter.value
            if parameter.name == "min_detection_score":
                self.pipeline.detector.min_score = float(parameter.value)
            elif parameter.name == "smoothing_time_constant_s":
                self.pipeline.config.smoothing_time_constant_s = float(parameter.value)
        return SetParametersResult(successful=True)

    # -- frames -------------------------------------------------------------
    def _on_image(self, msg: Any) -> None:
        with self._lock:
            self.received += 1
            if self._pending is not None:
                self.dropped += 1
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
                self.bad_frames += 1
                self.get_logger().warn(f"skipping bad frame: {error}",
                                       throttle_duration_sec=LOG_THROTTLE_S)
            except Exception as error:  # a node never dies on one frame
                self.failures += 1
                self.get_logger().error(f"frame failed: {type(error).__name__}: {error}",
                                        throttle_duration_sec=LOG_THROTTLE_S)

    def process(self, msg: Any) -> Any:
        """Convert, run the pipeline, publish; return the EmotionArray."""
        started = time.perf_counter()
        bgr = (compressed_msg_to_bgr(msg) if isinstance(msg, CompressedImage)
               else image_msg_to_bgr(msg))
        stamp = stamp_to_seconds(msg.header.stamp)
        if stamp == 0.0:  # drivers without a clock: use arrival time
            stamp = self.get_clock().now().nanoseconds * 1e-9
        result = self.pipeline.process(bgr, stamp)
        out = frame_to_msg(result, msg.header, self.pipeline.classifier.labels,
                           self.pipeline.dynamic.labels if self.pipeline.dynamic else (),
                           self.pipeline.config.stability_window_s, self.model_name,
                           EmotionArray, Emotion, bgr.shape[1], bgr.shape[0])
        self._emotions_pub.publish(out)
        if self.values["publish_overlay"] and self._overlay_pub.get_subscription_count():
            overlay = fill_image_msg(Image(), draw_overlay(bgr, result), "bgr8")
            overlay.header = msg.header
            self._overlay_pub.publish(overlay)
        self.processed += 1
        self._durations_ms.append((time.perf_counter() - started) * 1000.0)
        self._processed_times.append(time.monotonic())
        self.get_logger().debug(f"frame {stamp:.3f}: {len(result.faces)} face(s)")
        return out

    # -- diagnostics --------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        times = list(self._processed_times)
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and \
            times[-1] > times[0] else 0.0
        median_ms = statistics.median(self._durations_ms) if self._durations_ms else 0.0
        lost = self.dropped + self.bad_frames + self.failures
        level, message = DiagnosticStatus.OK, "ok"
        if self.received and lost / self.received > WARN_DROPPED_SHARE:
            level, message = DiagnosticStatus.WARN, "most frames dropped or bad"
        elif times and fps < WARN_BELOW_FPS:
            level, message = DiagnosticStatus.WARN, f"processing below {WARN_BELOW_FPS} fps"
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: emotion recognition",
                                  message=message, hardware_id="")
        status.values = [KeyValue(key=k, value=str(v)) for k, v in (
            ("fps", f"{fps:.1f}"), ("processing_ms_median", f"{median_ms:.1f}"),
            ("received", self.received), ("processed", self.processed),
            ("dropped", self.dropped), ("bad_frames", self.bad_frames),
            ("failures", self.failures),
            ("tracked_faces", len(self.pipeline.tracker.tracks)))]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)

    def shutdown(self) -> None:
        """Stop the worker thread (call before destroy_node)."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        self._worker.join(timeout=5.0)


def main(args: Optional[list] = None) -> int:
    """Run the fer node until interrupted; return the exit code."""
    return run_node("fer_node", FerNode, (ModelLoadError, DetectorError, ValueError),
                    close=FerNode.shutdown, args=args)


if __name__ == "__main__":
    sys.exit(main())
