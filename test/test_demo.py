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
