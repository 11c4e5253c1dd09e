"""fer-ros-demo end to end on real footage: separate processes over DDS."""

import json
import subprocess
import sys

import pytest

from conftest import footage

pytest.importorskip("fer_ros.msg")
pytestmark = [pytest.mark.ros, pytest.mark.slow]


def run_demo(video, output, *extra):
    completed = subprocess.run(
        [sys.executable, "-m", "fer_ros.demo", "--video", str(video), "--output",
         str(output), *extra], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr
    records = [json.loads(line) for line in
               (output / "emotions.jsonl").read_text().splitlines()]
    return records


def test_single_face_video(tmp_path, ros_domain):
    records = run_demo(footage("single_face.mp4"), tmp_path)
    assert len(records) >= 0.95 * 72
    one_face = sum(len(r["emotions"]) == 1 for r in records)
    assert one_face >= 0.90 * 72
    ids = {e["face_id"] for r in records for e in r["emotions"]}
    assert 1 <= len(ids) <= 2
    assert (tmp_path / "overlay.mp4").stat().st_size > 10_000
    stamps = [r["stamp"] for r in records]
    assert stamps == sorted(stamps)


def test_no_face_video(tmp_path, ros_domain):
    records = run_demo(footage("no_face.mp4"), tmp_path)
    import cv2

    frames = int(cv2.VideoCapture(str(footage("no_face.mp4"))).get(
        cv2.CAP_PROP_FRAME_COUNT))
    assert len(records) >= 0.95 * frames
    assert all(r["emotions"] == [] for r in records)


def test_missing_video_is_one_clear_error(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "fer_ros.demo", "--video", str(tmp_path / "nope.mp4"),
         "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert completed.returncode != 0
    assert completed.stderr.strip().splitlines() == [
        f"fer-ros-demo: error: {tmp_path / 'nope.mp4'}: no such file"]


def test_dynamic_predictions_and_stability_on_real_footage(tmp_path, ros_domain):
    from fer_ros.pipeline import shipped_dynamic_path

    assert shipped_dynamic_path("3class") is not None, "the 3-class CNN-LSTM is shipped"
    records = run_demo(footage("WolfgangLanger_Pexels.mp4"), tmp_path)
    faces = [e for r in records for e in r["emotions"]]
    assert len(records) >= 0.95 * 472 and len(faces) >= 0.9 * len(records)
    # A stability value for the face in every frame it is seen...
    assert all(e["stability_samples"] >= 1 and 0.0 <= e["stability"] <= 1.0 for e in faces)
    # ...and CNN-LSTM predictions once enough frames are buffered (default 10).
    dynamic = [e for e in faces if e["has_dynamic"]]
    assert len(dynamic) >= 0.8 * len(faces)
    assert all(e["sequence_length"] >= 10 and e["dynamic_label"] in e["labels"]
               for e in dynamic)
    first = next(i for i, e in enumerate(faces) if e["has_dynamic"])
    assert 9 <= first <= 20


# --- supervision: a node that dies, SIGTERM to the demo --------------------------

def child_pids(parent: int) -> dict:
    """``{pid: command line}`` of the direct children of ``parent`` (from /proc)."""
    from pathlib import Path

    children = {}
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent:
                pid = int(status.parent.name)
                children[pid] = (status.parent / "cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, IndexError, ValueError):
            continue
    return children


def start_demo(video, output):
    import time

    demo = subprocess.Popen(
        [sys.executable, "-m", "fer_ros.demo", "--video", str(video), "--output", str(output)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    jsonl = output / "emotions.jsonl"
    deadline = time.monotonic() + 180
    while not (jsonl.is_file() and len(jsonl.read_text().splitlines()) >= 20):
        assert demo.poll() is None, demo.communicate()
        assert time.monotonic() < deadline, "no records after 180 s"
        time.sleep(0.2)
    return demo


def node_pid(demo, module):
    return next(pid for pid, command in child_pids(demo.pid).items()
                if module.encode() in command)


def assert_valid_jsonl(path):
    lines = path.read_text().splitlines()
    assert lines and all(isinstance(json.loads(line), dict) for line in lines)
    return len(lines)


@pytest.mark.parametrize("node, module", [("fer", "fer_ros.nodes.fer_node"),
                                          ("emotion_recorder",
                                           "fer_ros.nodes.emotion_recorder")])
def test_a_killed_node_ends_the_run_with_its_name_and_no_false_success(
        tmp_path, ros_domain, node, module):
    import os
    import signal

    demo = start_demo(footage("WolfgangLanger_Pexels.mp4"), tmp_path)
    os.kill(node_pid(demo, module), signal.SIGKILL)
    stdout, stderr = demo.communicate(timeout=120)
    assert demo.returncode == 1
    assert f"fer-ros-demo: error: the {node} node was killed by signal 9" in stderr
    assert "wrote" not in stdout  # no success line
    if node == "fer":  # the recorder closed its file: every line a complete record
        assert assert_valid_jsonl(tmp_path / "emotions.jsonl") >= 20


def test_sigterm_stops_every_node_and_leaves_playable_files(tmp_path, ros_domain):
    import os
    import signal
    import time

    from fer_ros.demo import video_frames

    demo = start_demo(footage("WolfgangLanger_Pexels.mp4"), tmp_path)
    children = child_pids(demo.pid)
    assert len(children) == 3
    demo.send_signal(signal.SIGTERM)
    _, stderr = demo.communicate(timeout=60)
    assert demo.returncode == 143 and "terminated" in stderr
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") for pid in children):
        assert time.monotonic() < deadline, "node processes outlived the demo"
        time.sleep(0.1)
    assert assert_valid_jsonl(tmp_path / "emotions.jsonl") >= 20
    assert video_frames(tmp_path / "overlay.mp4") >= 10


def test_recordings_are_private_files(tmp_path, ros_domain):
    import stat

    output = tmp_path / "private"
    run_demo(footage("single_face.mp4"), output)
    assert stat.S_IMODE(output.stat().st_mode) & 0o077 == 0
    for name in ("emotions.jsonl", "overlay.mp4"):
        assert stat.S_IMODE((output / name).stat().st_mode) == 0o600, name
