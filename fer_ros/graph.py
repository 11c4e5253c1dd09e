"""The fer_ros node graph, as data: what ``fer.launch.py`` and ``fer-ros-demo`` start.

``launch/fer.launch.py`` (launch_ros) and :mod:`fer_ros.demo` (plain
processes, for machines without launch_ros) both describe this graph; a
test checks that the launch file names the same nodes, executables and
topic remappings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

#: Default camera topic the graph's ``image`` inputs are remapped to.
DEFAULT_CAMERA_TOPIC = "/camera/image_raw"


@dataclass(frozen=True)
class NodeSpec:
    """One node of the graph.

    :param name: node name.
    :param executable: executable in ``lib/fer_ros`` (ros2 run / launch_ros).
    :param module: Python module whose ``main()`` runs it.
    :param remappings: topic remappings ``from -> to``.
    """

    name: str
    executable: str
    module: str
    remappings: Dict[str, str] = field(default_factory=dict)


#: fer_ros nodes the launch file starts only on request (``hri:=true``).
OPTIONAL_NODES = [NodeSpec("hri_bridge", "hri_bridge", "fer_ros.nodes.hri_bridge")]


def fer_graph(camera_topic: str = DEFAULT_CAMERA_TOPIC) -> List[NodeSpec]:
    """List the nodes the launch file starts with a video source and recorder."""
    return [
        NodeSpec("video_source", "video_source", "fer_ros.nodes.video_source",
                 {"image": camera_topic}),
        NodeSpec("fer", "fer_node", "fer_ros.nodes.fer_node",
                 {"image": camera_topic, "image/compressed": camera_topic + "/compressed"}),
        NodeSpec("emotion_recorder", "emotion_recorder", "fer_ros.nodes.emotion_recorder"),
    ]
