"""pip route for fer_ros on a machine without a ROS 2 distro.

``pip install --no-build-isolation .`` (see tools/setup.sh) first builds the
message package with CMake against the ROS 2 PyPI wheels in the running
environment and installs the generated code, the package's ament index entry
and the node executables (``lib/fer_ros/``, where ``ros2 run`` and launch_ros
look, running this interpreter) into ``sys.prefix``; then pip installs the
Python package and its console scripts as usual.  On a ROS 2
distro use colcon instead (CMakeLists.txt); this file is not used there.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build import build

HERE = Path(__file__).resolve().parent
#: What CMake needs to build the interfaces; copied out of the checkout
#: because CMake rejects exported include dirs inside the source tree, and
#: the virtual environment lives at .venv inside it.
INTERFACE_SOURCES = ("CMakeLists.txt", "package.xml", "msg", "launch", "config")


class BuildWithInterfaces(build):
    """``build`` that also generates and installs fer_ros' ROS 2 messages."""

    def run(self):
        prefix = Path(sys.prefix)
        work = HERE / "build" / "interfaces"
        source, binary = work / "src", work / "cmake"
        shutil.rmtree(source, ignore_errors=True)
        source.mkdir(parents=True)
        for name in INTERFACE_SOURCES:
            path = HERE / name
            if path.is_dir():
                shutil.copytree(path, source / name)
            else:
                shutil.copy2(path, source / name)
        env = dict(os.environ, AMENT_PREFIX_PATH=str(prefix),
                   _ROS_WHEELS_BOOTSTRAP_COMPLETE="1")
        subprocess.run(
            ["cmake", "-S", str(source), "-B", str(binary),
             f"-DCMAKE_PREFIX_PATH={prefix}", f"-DCMAKE_INSTALL_PREFIX={prefix}",
             f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF",
             "-DFER_ROS_PIP_BUILD=ON", f"-DFER_ROS_PYTHON={sys.executable}"],
            check=True, env=env)
        subprocess.run(["cmake", "--build", str(binary), "--target", "install",
                        "-j", str(os.cpu_count() or 1)], check=True, env=env)
        super().run()


setup(
    name="fer_ros",
    version="0.1.0",
    description="Facial emotion recognition for ROS 2 robots",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["fer_ros", "fer_ros.*"]),
    package_data={"fer_ros": ["weights/*.tflite", "weights/*.json"]},
    data_files=[("share/fer_ros/launch", ["launch/fer.launch.py"]),
                ("share/fer_ros/config", ["config/fer.yaml",
                                          "config/fastdds_large_images.xml",
                                          "config/fastdds_udp_large_images.xml",
                                          "config/fer.rviz"])],
    cmdclass={"build": BuildWithInterfaces},
    entry_points={"console_scripts": [
        "fer_node = fer_ros.nodes.fer_node:main",
        "video_source = fer_ros.nodes.video_source:main",
        "emotion_recorder = fer_ros.nodes.emotion_recorder:main",
        "hri_bridge = fer_ros.nodes.hri_bridge:main",
        "fer-ros-demo = fer_ros.demo:main",
        "fer-evaluate = fer_ros.evaluate_cli:main",
        "fer-analyze = fer_ros.session.cli:main",
    ]},
)
