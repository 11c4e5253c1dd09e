"""The package builds with colcon (the ROS 2 robot route), here against the PyPI wheels."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_colcon_build_installs_messages_code_and_executables(tmp_path):
    colcon = Path(sys.executable).parent / "colcon"
    if not colcon.exists():
        pytest.skip("colcon not installed (tools/setup.sh --dev installs it)")
    source = tmp_path / "src" / "fer_ros"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    for name in files:
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    prefix = Path(sys.prefix)
    env = dict(os.environ, AMENT_PREFIX_PATH=str(prefix), _ROS_WHEELS_BOOTSTRAP_COMPLETE="1",
               PATH=f"{prefix / 'bin'}:{os.environ['PATH']}")
    completed = subprocess.run(
        [str(colcon), "build", "--packages-select", "fer_ros", "--cmake-args",
         f"-DCMAKE_PREFIX_PATH={prefix}", f"-DPython3_EXECUTABLE={sys.executable}",
         "-DBUILD_TESTING=OFF"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    install = tmp_path / "install" / "fer_ros"
    for executable in ("fer_node", "video_source", "emotion_recorder"):
        assert os.access(install / "lib" / "fer_ros" / executable, os.X_OK)
    assert (install / "share" / "fer_ros" / "launch" / "fer.launch.py").is_file()
    assert (install / "share" / "fer_ros" / "config" / "fer.yaml").is_file()
    site = install / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / \
        "site-packages"
    check = subprocess.run(
        [sys.executable, "-c", "import fer_ros.msg, fer_ros.pipeline; "
         "print(fer_ros.msg.EmotionArray.__name__)"], cwd=tmp_path, capture_output=True,
        text=True, env=dict(os.environ, PYTHONPATH=str(site),
                            LD_LIBRARY_PATH=str(install / "lib")), timeout=120)
    assert check.stdout.strip() == "EmotionArray", check.stderr
