"""Bring up fer_ros: the fer node on a camera topic, optionally a video source and recorder.

Examples::

  ros2 launch fer_ros fer.launch.py camera_topic:=/camera/color/image_raw
  ros2 launch fer_ros fer.launch.py start_video_source:=true video:=/path/clip.mp4 \
      record:=true output_dir:=/tmp/session
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
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
        DeclareLaunchArgument("record", default_value="false",
                              description="record emotions.jsonl and overlay.mp4"),
        DeclareLaunchArgument("output_dir", default_value="fer_recording",
                              description="folder the recorder writes into"),
        DeclareLaunchArgument(
            "large_image_transport", default_value="true",
            description="use config/fastdds_large_images.xml (shared memory for images "
                        "over 512 KB) for these nodes; export it for the camera driver too"),
    ]
    large_images = SetEnvironmentVariable(
        "FASTDDS_DEFAULT_PROFILES_FILE", str(share / "config" / "fastdds_large_images.xml"),
        condition=IfCondition(LaunchConfiguration("large_image_transport")))
    namespace = LaunchConfiguration("namespace")
    video_source = Node(
        package="fer_ros", executable="video_source", name="video_source",
        namespace=namespace, condition=IfCondition(LaunchConfiguration("start_video_source")),
        # A string even where YAML reads a number (video:=0, a camera index):
        # launch_ros parses substituted values as YAML.
        parameters=[{"source": ParameterValue(LaunchConfiguration("video"), value_type=str)}],
        remappings=[("image", camera_topic)], output="screen")
    fer = Node(
        package="fer_ros", executable="fer_node", name="fer", namespace=namespace,
        parameters=[LaunchConfiguration("params_file")],
        remappings=[("image", camera_topic),
                    ("image/compressed", PathJoinSubstitution([camera_topic, "compressed"]))],
        output="screen")
    recorder = Node(
        package="fer_ros", executable="emotion_recorder", name="emotion_recorder",
        namespace=namespace, condition=IfCondition(LaunchConfiguration("record")),
        parameters=[{"output_dir": LaunchConfiguration("output_dir")}], output="screen")
    return LaunchDescription(arguments + [large_images, video_source, fer, recorder])
