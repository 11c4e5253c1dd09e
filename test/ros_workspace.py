"""Build fer_ros with colcon in a temporary workspace, on either ROS 2 there is.

Two ROS 2 installations are supported, the same two the README describes:

- the ROS 2 PyPI wheels in this interpreter's environment (``tools/setup.sh``,
  CI): CMake finds ROS 2 in ``sys.prefix``, which is put in
  ``AMENT_PREFIX_PATH`` as sourcing a distro would;
- a sourced distro (``source /opt/ros/<distro>/setup.bash``; ``colcon test``
  on a robot): its environment is used as it is.

The workspace is built once per test session with ``--symlink-install`` (the
harder case: the installed executables link into the build folder) and
shared by test_colcon_build.py and test_launch_real.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import pytest

REPO = Path(__file__).resolve().parent.parent
#: Marker file of ament_cmake in an ament index.
AMENT_CMAKE_INDEX = Path("share/ament_index/resource_index/packages/ament_cmake")
#: Longest a colcon build of fer_ros may take on a loaded 2-core machine, s.
BUILD_TIMEOUT_S = 900


def ros_build_environment(environ: Mapping[str, str], prefix: Path
                          ) -> Optional[Tuple[Dict[str, str], List[str]]]:
    """Environment and extra CMake arguments to build a ROS 2 package here.

    :param environ: the current environment.
    :param prefix: this interpreter's ``sys.prefix``.
    :return: ``(environment, cmake_arguments)``, or None where neither the
        ROS 2 wheels are installed in ``prefix`` nor a distro is sourced.
    """
    if (prefix / AMENT_CMAKE_INDEX).is_file():
        env = dict(environ, AMENT_PREFIX_PATH=str(prefix), _ROS_WHEELS_BOOTSTRAP_COMPLETE="1",
                   PATH=os.pathsep.join([str(prefix / "bin"), environ.get("PATH", "")]))
        return env, [f"-DCMAKE_PREFIX_PATH={prefix}"]
    sourced = [Path(p) for p in environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if any((p / AMENT_CMAKE_INDEX).is_file() for p in sourced):
        return dict(environ), []
    return None


def ros_run_environment(environ: Mapping[str, str], prefix: Path) -> Dict[str, str]:
    """Environment for running ROS 2 tools and nodes, before any workspace is sourced.

    With the wheels this is what sourcing a distro and activating the
    environment give: ``AMENT_PREFIX_PATH`` and ``PATH`` lead to ``prefix``.

    :param environ: the current environment.
    :param prefix: this interpreter's ``sys.prefix``.
    :return: the environment.
    """
    env = dict(environ)
    if (prefix / AMENT_CMAKE_INDEX).is_file():
        env["AMENT_PREFIX_PATH"] = os.pathsep.join(
            [str(prefix)] + [p for p in environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)
                             if p and Path(p) != prefix])
        env["PATH"] = os.pathsep.join([str(prefix / "bin"), environ.get("PATH", "")])
    return env


def tool(name: str) -> Optional[str]:
    """Path of a command-line tool: beside this interpreter first, then on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


#: What a copy of a source tree that is not a git checkout leaves out.
NOT_SOURCES = (".git", ".venv", "build", "install", "log", "runs", "out", "__pycache__")


def copy_package(target: Path) -> None:
    """Copy the checkout's tracked and new (not ignored) files into ``target``.

    Outside a git checkout (a source archive on a robot) the whole tree but
    build outputs and environments is copied.
    """
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
        capture_output=True, text=True)
    if listed.returncode != 0:
        shutil.copytree(REPO, target, ignore=shutil.ignore_patterns(*NOT_SOURCES))
        return
    for name in filter(None, listed.stdout.split("\0")):
        source = REPO / name
        if source.is_file():  # a file being moved may be listed but gone
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@dataclass
class ColconWorkspace:
    """A temporary colcon workspace holding a copy of fer_ros."""

    root: Path
    build: subprocess.CompletedProcess
    run_env: Dict[str, str]

    @property
    def install(self) -> Path:
        """Return the package's install prefix."""
        return self.root / "install" / "fer_ros"

    def require_built(self) -> None:
        """Fail the test, with colcon's output, unless the build succeeded."""
        assert self.build.returncode == 0, \
            self.build.stdout[-3000:] + self.build.stderr[-3000:]

    def command(self, *args: str) -> List[str]:
        """Make a command line that runs ``args`` after sourcing the workspace."""
        return ["bash", "-c", 'source "$0/install/setup.bash" && exec "$@"',
                str(self.root), *args]


@pytest.fixture(scope="session")
def colcon_workspace(tmp_path_factory) -> ColconWorkspace:
    """``colcon build --symlink-install`` of a copy of fer_ros, once per session."""
    colcon = tool("colcon")
    if colcon is None:
        pytest.skip("colcon not installed (tools/setup.sh --dev installs it)")
    build_environment = ros_build_environment(os.environ, Path(sys.prefix))
    if build_environment is None:
        pytest.skip("no ROS 2 to build against: neither the ROS 2 wheels in "
                    f"{sys.prefix} (tools/setup.sh) nor a sourced distro")
    env, cmake_arguments = build_environment
    root = tmp_path_factory.mktemp("colcon_ws")
    copy_package(root / "src" / "fer_ros")
    build = subprocess.run(
        [colcon, "build", "--symlink-install", "--packages-select", "fer_ros",
         "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF",
         *cmake_arguments], cwd=root, env=env, capture_output=True, text=True,
        timeout=BUILD_TIMEOUT_S)
    return ColconWorkspace(root, build, ros_run_environment(os.environ, Path(sys.prefix)))
