"""launch/fer.launch.py and fer-ros-demo describe the same node graph.

The launch file is read as Python source (AST), so this runs without
launch_ros; test/test_launch_real.py runs it for real.
"""

import ast
from pathlib import Path

from fer_ros.graph import DEFAULT_CAMERA_TOPIC, OPTIONAL_NODES, fer_graph

LAUNCH_FILE = Path(__file__).resolve().parent.parent / "launch" / "fer.launch.py"


def launch_nodes():
    """fer_ros ``Node(...)`` calls in the launch file: keyword -> AST node."""
    tree = ast.parse(LAUNCH_FILE.read_text())
    nodes = []
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "Node":
            keywords = {k.arg: k.value for k in call.keywords}
            if literal(keywords["package"]) == "fer_ros":
                nodes.append(keywords)
    return nodes


def literal(node):
    return node.value if isinstance(node, ast.Constant) else None


def declared_arguments():
    tree = ast.parse(LAUNCH_FILE.read_text())
    arguments = {}
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == \
                "DeclareLaunchArgument":
            keywords = {k.arg: literal(k.value) for k in call.keywords}
            arguments[literal(call.args[0])] = keywords
    return arguments


def test_same_nodes_and_executables():
    in_launch = {(literal(n["name"]), literal(n["executable"])) for n in launch_nodes()}
    in_demo = {(spec.name, spec.executable) for spec in fer_graph() + OPTIONAL_NODES}
    assert in_launch == in_demo


def test_same_remapped_inputs():
    for node in launch_nodes():
        spec = next(s for s in fer_graph() + OPTIONAL_NODES if s.name == literal(node["name"]))
        remapped = set()
        if "remappings" in node:
            remapped = {literal(pair.elts[0]) for pair in node["remappings"].elts}
        assert remapped == set(spec.remappings), spec.name


def test_launch_arguments_are_described_and_default_camera_matches():
    arguments = declared_arguments()
    assert {"camera_topic", "params_file", "namespace", "start_video_source",
            "video"} <= set(arguments)
    assert all(a.get("description") for a in arguments.values())
    assert arguments["camera_topic"]["default_value"] == DEFAULT_CAMERA_TOPIC


def test_executables_exist_as_entry_points_and_cmake_programs():
    repo = LAUNCH_FILE.parent.parent
    setup = (repo / "setup.py").read_text()
    cmake = (repo / "CMakeLists.txt").read_text()
    for spec in fer_graph() + OPTIONAL_NODES:
        assert f"{spec.executable} = {spec.module}:main" in setup
        assert f'"{spec.executable}:{spec.module}"' in cmake
