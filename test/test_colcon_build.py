"""The package builds with colcon (the ROS 2 robot route).

Against the ROS 2 PyPI wheels here and in CI, against the sourced distro on
a robot (``colcon test``); test/ros_workspace.py chooses.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ros_workspace import AMENT_CMAKE_INDEX, ros_build_environment

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_symlink_install_has_executables_launch_files_and_messages(colcon_workspace):
    colcon_workspace.require_built()
    install = colcon_workspace.install
    for executable in ("fer_node", "video_source", "emotion_recorder", "hri_bridge"):
        path = install / "lib" / "fer_ros" / executable
        assert path.is_file(), path
        assert os.access(path, os.X_OK), f"{path} is not executable"
    assert (install / "share" / "fer_ros" / "launch" / "fer.launch.py").is_file()
    assert (install / "share" / "fer_ros" / "config" / "fer.yaml").is_file()
    check = subprocess.run(
        colcon_workspace.command(
            sys.executable, "-c", "import fer_ros.msg, fer_ros.pipeline; "
            "print(fer_ros.msg.EmotionArray.__name__, fer_ros.msg.__file__)"),
        cwd=colcon_workspace.root, capture_output=True, text=True,
        env=colcon_workspace.run_env, timeout=120)
    name, _, location = check.stdout.strip().partition(" ")
    assert name == "EmotionArray", check.stderr
    assert Path(location).is_relative_to(install), location


def make_prefix(path: Path) -> Path:
    """Make ``path`` look like a ROS 2 install (ament_cmake in its index)."""
    (path / AMENT_CMAKE_INDEX).parent.mkdir(parents=True)
    (path / AMENT_CMAKE_INDEX).touch()
    return path


def test_build_environment_with_the_wheels_uses_this_environment(tmp_path):
    venv = make_prefix(tmp_path / "venv")
    env, cmake_arguments = ros_build_environment({"PATH": "/usr/bin"}, venv)
    assert env["AMENT_PREFIX_PATH"] == str(venv)
    assert env["PATH"].split(os.pathsep)[0] == str(venv / "bin")
    assert cmake_arguments == [f"-DCMAKE_PREFIX_PATH={venv}"]


def test_build_environment_on_a_sourced_distro_is_left_as_sourced(tmp_path):
    # On a robot sys.prefix is /usr (no ROS there) and ROS is in
    # AMENT_PREFIX_PATH: pointing CMake at sys.prefix stops it with "No
    # 'rosidl_typesupport_c' found".
    distro = make_prefix(tmp_path / "opt_ros_jazzy")
    sourced = {"PATH": "/usr/bin", "AMENT_PREFIX_PATH": f"/ws/install/x{os.pathsep}{distro}"}
    env, cmake_arguments = ros_build_environment(sourced, tmp_path / "usr")
    assert env == sourced
    assert cmake_arguments == []


def test_build_environment_without_ros_is_none(tmp_path):
    assert ros_build_environment({"PATH": "/usr/bin"}, tmp_path / "usr") is None
