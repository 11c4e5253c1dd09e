"""Camera on one host, inference on another: the graph across a real network link.

Network namespaces joined by veth pairs stand for a robot and a
workstation (benchmarks/two_hosts.py's ``TwoHosts``; all are removed at the
end, on failure too): ``video_source`` runs in one, the fer node and the
emotion_recorder in the other, with config/fastdds_udp_large_images.xml,
and every DDS byte crosses the link over UDP.  Lockstep replay makes the
result exact: every frame must come back as an EmotionArray with its stamp,
for raw sensor_msgs/Image between two hosts on one subnet (discovery over
multicast, ROS 2's default) and for jpeg CompressedImage between two
subnets joined by a router (Linux routes no multicast, so discovery works
only through ROS_STATIC_PEERS, as between a robot on WiFi and a
workstation on a wired network).  The link's byte counters prove that the
frames went over the network, not through shared memory.

Needs root and ``ip netns`` (CI runs as root); elsewhere it is skipped with
the reason, and it fails instead of skipping when ``CI`` is set.  The first
test, video_source's jpeg topic on one host, runs everywhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from conftest import REPO, footage

sys.path.insert(0, str(REPO / "benchmarks"))
from two_hosts import TwoHosts, namespaces_unavailable, run_graph  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

#: Frames of the test video (single_face.mp4) and bytes of one 640x480 bgr8 frame.
FRAMES = 72
RAW_FRAME_BYTES = 640 * 480 * 3
#: ROS_DOMAIN_IDs of these tests: apart from the other tests' (1-199).
DOMAIN_RAW, DOMAIN_COMPRESSED = 210, 211


@pytest.fixture(scope="module")
def rights():
    """Skip (or fail in CI) where network namespaces cannot be created."""
    reason = namespaces_unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the two-host test, but {reason}")
        pytest.skip(reason)


def test_jpeg_goes_to_the_remapped_image_topic_plus_compressed(ros_domain):
    """As with image_transport, remapping 'image' moves 'image/compressed' along."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage

    from fer_ros.image_conversion import compressed_msg_to_bgr

    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node("jpeg_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    received = []
    node.create_subscription(CompressedImage, "/camera/image_raw/compressed", received.append,
                             qos_profile_sensor_data)
    source = subprocess.Popen(
        [sys.executable, "-m", "fer_ros.nodes.video_source", "--ros-args",
         "-r", "image:=/camera/image_raw", "-p", f"source:={footage('single_face.jpg')}",
         "-p", "image_transport:=compressed", "-p", "jpeg_quality:=80",
         "-p", "width:=320", "-p", "height:=240", "-p", "image_frames:=3",
         "-p", "frame_rate:=10.0", "-p", "wait_for_subscribers:=1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while len(received) < 3 and time.monotonic() < deadline and source.poll() is None:
            executor.spin_once(timeout_sec=0.1)
    finally:
        output = source.communicate(timeout=30)[0]
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    assert source.returncode == 0, output
    assert received, output
    assert received[0].format == "jpeg" and received[0].header.frame_id == "camera"
    assert compressed_msg_to_bgr(received[0]).shape == (240, 320, 3)
    assert "/camera/image_raw/compressed" in output  # the resolved topic is logged


def check_every_frame_came_back(run) -> None:
    """Assert that each published frame has its EmotionArray and every process ended well."""
    assert run.published == FRAMES, run.logs()
    assert len(run.results) == FRAMES and len(set(run.results)) == FRAMES, run.logs()
    assert sum(1 for faces in run.faces if faces) >= 0.9 * FRAMES, run.faces
    assert all(code == 0 for code in run.exit_codes.values()), (run.exit_codes, run.logs())


def test_raw_images_cross_the_link_with_multicast_discovery(rights, tmp_path):
    with TwoHosts(f"r{os.getpid() % 100000}") as hosts:
        run = run_graph(hosts, tmp_path, transport="raw", video=footage("single_face.mp4"),
                        lockstep=True, overlay=True, domain=DOMAIN_RAW)
    check_every_frame_came_back(run)
    # Every frame's bytes came over the link (UDP, not shared memory).
    assert run.link_rx >= FRAMES * RAW_FRAME_BYTES, run.link_rx
    assert (tmp_path / "overlay.mp4").stat().st_size > 0


def test_compressed_images_cross_a_router_with_static_peers(rights, tmp_path):
    with TwoHosts(f"c{os.getpid() % 100000}", routed=True) as hosts:
        run = run_graph(hosts, tmp_path, transport="compressed",
                        video=footage("single_face.mp4"), lockstep=True, domain=DOMAIN_COMPRESSED,
                        static_peers=True)
    check_every_frame_came_back(run)
    # jpeg frames crossed the link once each: far fewer bytes than raw ones, but not none.
    assert FRAMES * 5_000 < run.link_rx < FRAMES * RAW_FRAME_BYTES / 5, run.link_rx
