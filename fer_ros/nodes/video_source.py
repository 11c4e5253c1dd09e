"""The ``video_source`` node: a video file, an image or a camera as sensor_msgs/Image.

Publishes ``image`` at the source's frame rate (or ``frame_rate``), stamps
each frame with the time it was taken (camera) or the start time plus the
frame's position in the video (files), and sets ``frame_id``.  Without
``loop`` the node exits after the last frame.  With ``image_transport:
compressed`` it publishes jpeg ``sensor_msgs/CompressedImage`` on
``image/compressed`` instead, the topic image_transport's compressed
plugin uses (a remapping of ``image`` moves it too), for a camera whose
frames cross a network.

With ``wait_for_results`` the node replays files in lockstep with the
pipeline: after each frame it waits (up to ``result_timeout_s``) for the
``emotions`` message carrying that frame's stamp, so a slow machine
processes every frame instead of dropping them (offline replay).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Optional

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from fer_ros.image_conversion import bgr_to_compressed_fields, fill_image_msg
from fer_ros.nodes.messages import seconds_to_stamp
from fer_ros.nodes.node_runner import run_node
from fer_ros.nodes.parameter_declaration import declare_parameters
from fer_ros.parameters import VIDEO_SOURCE_PARAMETERS
from fer_ros.video_io import FrameSource, SourceError


class VideoSourceNode(Node):
    """Publish the frames of a video, image or camera."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("video_source", **kwargs)
        p = declare_parameters(self, VIDEO_SOURCE_PARAMETERS)
        self.params = p
        self.source = FrameSource(p["source"], (p["width"], p["height"]), p["image_frames"])
        self.rate = p["frame_rate"] or self.source.frame_rate
        self.compressed = p["image_transport"] == "compressed"
        # Reliable, depth 5: matches both reliable and best-effort subscribers.
        self.publisher = self.create_publisher(
            CompressedImage if self.compressed else Image, self._image_topic(),
            QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        self.published = 0
        self._results: set = set()
        if p["wait_for_results"]:
            from fer_ros.msg import EmotionArray

            self.create_subscription(
                EmotionArray, "emotions", self._on_result,
                QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
        kind = f"jpeg quality {p['jpeg_quality']}" if self.compressed else p["encoding"]
        self.get_logger().info(
            f"publishing {self.source.kind} {p['source']} on {self.publisher.topic_name} "
            f"at {self.rate:.2f} fps ({kind}, frame_id '{p['frame_id']}')")

    def _image_topic(self) -> str:
        """Return the topic to publish on: 'image', or 'image/compressed' for jpeg.

        As image_transport does, the compressed topic is the (remapped) base
        topic plus '/compressed', so ``image:=/camera/image_raw`` publishes
        /camera/image_raw/compressed; a remapping of 'image/compressed'
        itself still wins.
        """
        if not self.compressed:
            return "image"
        own = self.resolve_topic_name("image/compressed")
        if own != self.resolve_topic_name("image/compressed", only_expand=True):
            return own
        return self.resolve_topic_name("image") + "/compressed"

    def _on_result(self, msg: Any) -> None:
        self._results.add((msg.header.stamp.sec, msg.header.stamp.nanosec))

    def _await_result(self, msg: Any) -> None:
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        deadline = time.monotonic() + self.params["result_timeout_s"]
        while key not in self._results and time.monotonic() < deadline and self.running:
            rclpy.spin_once(self, timeout_sec=0.01)
        self._results.discard(key)

    def wait_for_subscribers(self) -> None:
        """Block (spinning) until enough subscribers matched, or time out.

        ``wait_for_subscribers`` counts the image's subscribers (the fer
        node); ``wait_for_recorders`` those of ``emotions`` besides this
        node's own lockstep subscription (a recorder), so that a recording
        started with the video holds its first frames too.
        """
        deadline = time.monotonic() + self.params["wait_timeout_s"]
        emotions = self.resolve_topic_name("emotions")
        own = 1 if self.params["wait_for_results"] else 0
        wanted = {"image": self.params["wait_for_subscribers"],
                  "emotions": self.params["wait_for_recorders"]}

        def matched() -> dict:
            return {"image": self.publisher.get_subscription_count(),
                    "emotions": max(0, self.count_subscribers(emotions) - own)}
        while self.running and any(matched()[k] < wanted[k] for k in wanted):
            if time.monotonic() > deadline:
                self.get_logger().warning(
                    f"after {self.params['wait_timeout_s']} s: {matched()} subscribers of "
                    f"the {wanted} awaited; starting")
                return
            rclpy.spin_once(self, timeout_sec=0.05)

    @property
    def running(self) -> bool:
        """False once the node's context is shut down (Ctrl-C, SIGTERM, launch exit)."""
        return rclpy.ok(context=self.context)

    def run(self) -> None:
        """Publish every frame at the target rate; loop if asked."""
        period = 1.0 / self.rate
        lockstep = self.params["wait_for_results"] and self.source.kind != "camera"
        while self.running:
            start_stamp = self.get_clock().now().nanoseconds * 1e-9
            next_due = time.monotonic()
            for frame in self.source.frames():
                delay = next_due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if not self.running:  # Ctrl-C / shutdown: stop before publishing
                    break
                next_due = max(next_due + period, time.monotonic()) if lockstep \
                    else next_due + period
                stamp = (self.get_clock().now().nanoseconds * 1e-9
                         if self.source.kind == "camera" else start_stamp + frame.index * period)
                try:
                    msg = self.publish(frame.image, stamp)
                except RuntimeError:  # rclpy's RCLError when shut down meanwhile
                    if self.running:
                        raise
                    break
                if lockstep:
                    self._await_result(msg)
            if not self.params["loop"] or self.source.kind == "camera":
                break
            self.source.rewind()
        if self.running:  # after a shutdown, a log line could not reach /rosout
            self.get_logger().info(f"source finished after {self.published} frames")

    def publish(self, bgr, stamp: float) -> Any:
        """Publish one BGR frame with the given stamp."""
        encoding = self.params["encoding"]
        if encoding == "rgb8" and not self.compressed:  # jpeg has no channel order
            image = bgr[:, :, ::-1]
        elif encoding == "mono8":
            import cv2

            image = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        else:
            image = bgr
        if self.compressed:
            msg = CompressedImage(**bgr_to_compressed_fields(
                image, "jpeg", self.params["jpeg_quality"]))
        else:
            msg = fill_image_msg(Image(), image, encoding)
        seconds_to_stamp(stamp, msg.header.stamp)
        msg.header.frame_id = self.params["frame_id"]
        self.publisher.publish(msg)
        self.published += 1
        return msg


def play(node: VideoSourceNode) -> None:
    """Publish the whole source, then let reliable transport deliver the last frames."""
    node.wait_for_subscribers()
    node.run()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and node.running:
        rclpy.spin_once(node, timeout_sec=0.05)


def main(args: Optional[list] = None) -> int:
    """Run the video source; return the exit code."""
    return run_node("video_source", VideoSourceNode, (SourceError, ValueError), run=play,
                    close=lambda node: node.source.close(), args=args)


if __name__ == "__main__":
    sys.exit(main())
