"""The ``emotion_recorder`` node: write ``emotions`` and the overlay to files.

Writes ``<output_dir>/emotions.jsonl`` (one JSON object per EmotionArray,
flushed per message and synced to disk every second, so a crash or power
loss loses at most the last second) and ``<output_dir>/overlay.mp4`` (the fer node's
``~/overlay`` images).  ``fer-analyze --from-jsonl`` turns the JSONL into a
session report.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import cv2
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from fer_ros.image_conversion import ImageConversionError, image_msg_to_bgr
from fer_ros.msg import EmotionArray
from fer_ros.nodes.messages import emotion_array_record
from fer_ros.nodes.node_runner import run_node
from fer_ros.nodes.parameter_declaration import declare_parameters
from fer_ros.parameters import EMOTION_RECORDER_PARAMETERS


#: Seconds between two syncs of emotions.jsonl to the disk.
SYNC_PERIOD_S = 1.0


class EmotionRecorderNode(Node):
    """Record EmotionArray messages as JSON lines and overlay images as MP4."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("emotion_recorder", **kwargs)
        self.params = declare_parameters(self, EMOTION_RECORDER_PARAMETERS)
        output = Path(self.params["output_dir"])
        # Private: the recordings describe people (see README, Privacy).
        output.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.output = output
        self.records = 0
        self.overlay_frames = 0
        self._jsonl = open(os.open(output / "emotions.jsonl",
                                   os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w")
        self._writer: Optional[cv2.VideoWriter] = None
        self._ready_file = self.params["ready_file"]
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(EmotionArray, "emotions", self._on_emotions, reliable)
        overlay_topic = self.params["overlay_topic"]
        if overlay_topic:
            self.create_subscription(Image, overlay_topic, self._on_overlay, reliable)
        if self._ready_file:
            self._ready_timer = self.create_timer(0.05, self._check_ready)
        self._unsynced = False
        self.create_timer(SYNC_PERIOD_S, self._sync)
        self.get_logger().info(f"recording {self.resolve_topic_name('emotions')} "
                               f"and {overlay_topic or 'no overlay'} into {output}")

    def _check_ready(self) -> None:
        overlay_topic = self.params["overlay_topic"]
        if self.count_publishers(self.resolve_topic_name("emotions")) > 0 and (
                not overlay_topic
                or self.count_publishers(self.resolve_topic_name(overlay_topic)) > 0):
            Path(self._ready_file).touch()
            self._ready_timer.cancel()

    def _on_emotions(self, msg: Any) -> None:
        self._jsonl.write(json.dumps(emotion_array_record(msg)) + "\n")
        self._jsonl.flush()
        self._unsynced = True
        self.records += 1

    def _sync(self) -> None:
        """Push the records written since the last sync to the disk."""
        if self._unsynced:
            os.fsync(self._jsonl.fileno())
            self._unsynced = False

    def _on_overlay(self, msg: Any) -> None:
        try:
            frame = image_msg_to_bgr(msg)
        except ImageConversionError as error:
            self.get_logger().warn(f"bad overlay frame: {error}", throttle_duration_sec=5.0)
            return
        if self._writer is None:
            fourcc = cv2.VideoWriter.fourcc(*"mp4v")
            self._writer = cv2.VideoWriter(str(self.output / "overlay.mp4"), fourcc,
                                           float(self.params["overlay_fps"]),
                                           (frame.shape[1], frame.shape[0]))
            if (self.output / "overlay.mp4").exists():
                os.chmod(self.output / "overlay.mp4", 0o600)
        self._writer.write(frame)
        self.overlay_frames += 1

    def close(self) -> None:
        """Flush, sync and close the output files."""
        self._jsonl.flush()
        os.fsync(self._jsonl.fileno())
        self._jsonl.close()
        if self._writer is not None:
            self._writer.release()
        self.get_logger().info(f"wrote {self.records} records and "
                               f"{self.overlay_frames} overlay frames")


def main(args: Optional[list] = None) -> int:
    """Record until interrupted; return the exit code."""
    return run_node("emotion_recorder", EmotionRecorderNode, (OSError, ValueError),
                    close=EmotionRecorderNode.close, args=args)


if __name__ == "__main__":
    sys.exit(main())
