"""Bring up fer_ros: the fer node on a camera topic, optionally a video source and recorder.

Examples::

  ros2 launch fer_ros fer.launch.py camera_topic:=/camera/color/image_raw
  ros2 launch fer_ros fer.launch.py start_video_source:=true video:=/path/clip.mp4 \
      record:=true output_dir:=/tmp/session
  ros2 launch fer_ros fer.launch.py hri:=true rviz:=true namespace:=robot1

The fer node is a lifecycle node; it configures and activates itself
unless ``autostart:=false`` (then a lifecycle manager drives it).
"""

import os
import tempfile
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description():
    """Describe the fer_ros graph (the same one fer-ros-demo starts)."""
    share = Path(get_package_share_directory("fer_ros"))
    camera_topic = LaunchConfiguration("camera_topic")
    arguments = [
        DeclareLaunchArgument("camera_topic", default_value="/camera/image_raw",
                              description="sensor_msgs/Image topic of the camera"),
        DeclareLaunchArgument("params_file", default_value=str(share / "config" / "fer.yaml"),
                              description="YAML file with the fer node's parameters"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of every node (and of 'emotions')"),
        DeclareLaunchArgument("start_video_source", default_value="false",
                              description="also publish a video/image/camera on camera_topic"),
        DeclareLaunchArgument("video", default_value="",
                              description="video_source input: file, /dev/videoN or index"),
        DeclareLaunchArgument("realtime", default_value="false",
                              description="start_video_source with a file: publish at the "
                                          "file's frame rate and let the fer node drop the "
                                          "frames it cannot keep up with; false: replay in "
                                          "lockstep with the fer node, every frame processed "
                                          "(as fer-ros-demo does). Cameras are always live"),
        DeclareLaunchArgument("record", default_value="false",
                              description="record emotions.jsonl and overlay.mp4"),
        DeclareLaunchArgument("output_dir", default_value="fer_recording",
                              description="folder the recorder writes into"),
        DeclareLaunchArgument(
            "large_image_transport", default_value="true",
            description="use config/fastdds_large_images.xml (shared memory for images "
                        "over 512 KB) for these nodes unless FASTDDS_DEFAULT_PROFILES_FILE "
                        "is already set; export it for the camera driver too"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="the fer node configures and activates itself; "
                                          "false: leave it to a lifecycle manager"),
        DeclareLaunchArgument("hri", default_value="false",
                              description="also start the ROS4HRI bridge (/humans/faces/...; "
                                          "needs hri_msgs)"),
        DeclareLaunchArgument("rviz", default_value="false",
                              description="also start rviz2 showing the annotated overlay"),
    ]
    large_images = OpaqueFunction(
        function=large_image_profile, args=[share],
        condition=IfCondition(LaunchConfiguration("large_image_transport")))
    namespace = LaunchConfiguration("namespace")
    video_source = Node(
        package="fer_ros", executable="video_source", name="video_source",
        namespace=namespace, condition=IfCondition(LaunchConfiguration("start_video_source")),
        # A string even where YAML reads a number (video:=0, a camera index):
        # launch_ros parses substituted values as YAML.
        # Files start once the fer node (and the recorder, with record:=true)
        # listen, so a recording holds the video from its first frame, and
        # (unless realtime:=true) wait for each frame's result before the next.
        parameters=[{"source": ParameterValue(LaunchConfiguration("video"), value_type=str),
                     "wait_for_results": ParameterValue(PythonExpression(
                         ["'", LaunchConfiguration("realtime"), "' != 'true'"]),
                         value_type=bool),
                     "wait_for_subscribers": 1,
                     "wait_for_recorders": ParameterValue(PythonExpression(
                         ["1 if '", LaunchConfiguration("record"), "' == 'true' else 0"]),
                         value_type=int)}],
        remappings=[("image", camera_topic)], output="screen")
    fer = Node(
        package="fer_ros", executable="fer_node", name="fer", namespace=namespace,
        parameters=[LaunchConfiguration("params_file"), {
            "autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool)}],
        remappings=[("image", camera_topic),
                    ("image/compressed", PathJoinSubstitution([camera_topic, "compressed"]))],
        output="screen")
    recorder = Node(
        package="fer_ros", executable="emotion_recorder", name="emotion_recorder",
        namespace=namespace, condition=IfCondition(LaunchConfiguration("record")),
        parameters=[{"output_dir": LaunchConfiguration("output_dir")}], output="screen")
    hri_bridge = Node(
        package="fer_ros", executable="hri_bridge", name="hri_bridge", namespace=namespace,
        parameters=[LaunchConfiguration("params_file")],
        condition=IfCondition(LaunchConfiguration("hri")), output="screen")
    rviz = OpaqueFunction(function=rviz_view, args=[share],
                          condition=IfCondition(LaunchConfiguration("rviz")))
    return LaunchDescription(arguments + [large_images, video_source, fer, recorder,
                                          hri_bridge, rviz])


def large_image_profile(context, share: Path):
    """Use the large-image Fast DDS profile, but never replace one the user set."""
    mine = str(share / "config" / "fastdds_large_images.xml")
    theirs = os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", "")
    if theirs and theirs != mine:
        return [LogInfo(msg=f"fer_ros: keeping your FASTDDS_DEFAULT_PROFILES_FILE={theirs} "
                            "(large_image_transport not applied)")]
    return [SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", mine)]


def rviz_view(context, share: Path):
    """Start rviz2 on config/fer.rviz, its overlay topic moved into the namespace."""
    namespace = LaunchConfiguration("namespace").perform(context).strip("/")
    topic = f"/{namespace}/fer/overlay" if namespace else "/fer/overlay"
    view = (share / "config" / "fer.rviz").read_text().replace(
        "Value: /fer/overlay", f"Value: {topic}")
    handle, path = tempfile.mkstemp(prefix="fer_ros_", suffix=".rviz")
    with os.fdopen(handle, "w") as stream:
        stream.write(view)
    return [Node(package="rviz2", executable="rviz2", name="rviz2", arguments=["-d", path],
                 output="screen")]
