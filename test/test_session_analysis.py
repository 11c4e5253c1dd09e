"""fer-analyze: session analysis of videos, rosbag2 recordings and emotions.jsonl."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import pytest

from conftest import REPO, footage
from fer_ros.pipeline import build_pipeline
from fer_ros.session.analysis import analyze_source, pipeline_values, unique_names
from fer_ros.session.cli import main
from fer_ros.session.data import FaceRow, FrameSelection, SessionError
from fer_ros.session.figures import label_runs, window_mean, with_gaps
from fer_ros.session.sources import open_source
from fer_ros.video_io import FrameSource

#: Footage with one face that changes emotion (472 frames, 24 fps).
FOOTAGE = "WolfgangLanger_Pexels.mp4"
#: Seconds of the footage analysed by the fast tests.
CLIP_END_S = 2.0
#: Files every analysed video or bag session gets.
SESSION_FILES = ("faces.csv", "summary.json", "timeline.png", "valence_stability.png",
                 "emotion_shares.png", "annotated.mp4", "report.html")
#: Header stamp of the first frame written into the test bags, nanoseconds.
BAG_START_NS = 1_700_000_000_123_456_789


def run_cli(*args: object) -> subprocess.CompletedProcess:
    """Run fer-analyze as a separate process from the checkout."""
    return subprocess.run([sys.executable, "-m", "fer_ros.session.cli", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Check: non-zero exit, one stderr line naming the problem, no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fer-analyze: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


def image_message(store, image: np.ndarray, stamp_ns: int, encoding: str = "bgr8"):
    """Make a rosbags sensor_msgs/Image holding a BGR frame."""
    types = store.types
    data = image if encoding == "bgr8" else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9,
                                                   nanosec=stamp_ns % 10**9),
        frame_id="camera")
    return types["sensor_msgs/msg/Image"](
        header=header, height=image.shape[0], width=image.shape[1], encoding=encoding,
        is_bigendian=0, step=image.shape[1] * 3,
        data=np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8))


def write_bag(path: Path, topics: Dict[str, list], storage: str = "sqlite3",
              msgtype: str = "sensor_msgs/msg/Image") -> Path:
    """Write ``{topic: [(stamp_ns, message), ...]}`` into a new rosbag2."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = typestore()
    with Writer(path, version=9, storage_plugin=StoragePlugin[storage.upper()]) as writer:
        for topic, messages in topics.items():
            connection = writer.add_connection(topic, msgtype, typestore=store)
            for stamp_ns, message in messages:
                writer.write(connection, stamp_ns, store.serialize_cdr(message, msgtype))
    return path


def storages() -> List[str]:
    """List the rosbag2 storages the installed rosbags can write."""
    rosbag2 = pytest.importorskip("rosbags.rosbag2")
    return [name for name in ("sqlite3", "mcap")
            if hasattr(rosbag2.StoragePlugin, name.upper())]


@pytest.fixture(scope="module")
def footage_bags(tmp_path_factory) -> Dict[str, Path]:
    """Write the first CLIP_END_S seconds of the footage as rosbag2 recordings.

    sqlite3 with bgr8 images, mcap with rgb8 (another conversion path);
    header stamps are BAG_START_NS plus the video position.
    """
    video = footage(FOOTAGE)
    store = typestore()
    source = FrameSource(str(video))
    frames = []
    for frame in source.frames():
        if frame.time_s > CLIP_END_S + 0.5:
            break
        frames.append(frame)
    source.close()
    folder = tmp_path_factory.mktemp("bags")
    bags = {}
    for storage, encoding in zip(storages(), ("bgr8", "rgb8")):
        messages = [(BAG_START_NS + round(f.time_s * 1e9),
                     image_message(store, f.image, BAG_START_NS + round(f.time_s * 1e9),
                                   encoding)) for f in frames]
        bags[storage] = write_bag(folder / f"footage_{storage}",
                                  {"/camera/image_raw": messages}, storage)
    return bags


@pytest.fixture(scope="module")
def footage_report(tmp_path_factory) -> Path:
    """Run fer-analyze once on the first CLIP_END_S seconds of the footage."""
    video = footage(FOOTAGE)
    output = tmp_path_factory.mktemp("report")
    result = run_cli(video, "--output", output, "--end", CLIP_END_S, "--every", 2)
    assert result.returncode == 0, result.stderr
    return output


def tiny_image_bag(path: Path, topics=("/camera/image_raw",), frames: int = 2) -> Path:
    """Write a small rosbag2 with grey 32x24 images on each topic."""
    store = typestore()
    image = np.full((24, 32, 3), 128, np.uint8)
    stamps = [BAG_START_NS + i * 40_000_000 for i in range(frames)]
    return write_bag(path, {topic: [(s, image_message(store, image, s)) for s in stamps]
                            for topic in topics})


# --- the CLI on real footage ---------------------------------------------------

@pytest.mark.slow
def test_cli_on_footage_writes_every_output(footage_report):
    for name in SESSION_FILES:
        assert (footage_report / name).is_file(), name
        assert (footage_report / name).stat().st_size > 0, name
    summary = json.loads((footage_report / "summary.json").read_text())
    assert summary["model"] == "fer2013_3class"
    assert summary["input"]["selection"]["every"] == 2
    assert summary["frames_processed"] == 24  # frames 0, 2, ... 46 lie within 2 s
    assert len(summary["faces"]) >= 1
    face = next(iter(summary["faces"].values()))
    assert sum(face["emotion_shares"].values()) == pytest.approx(1.0)
    assert -1.0 <= face["mean_valence"] <= 1.0
    assert 0.0 <= face["stability"]["mean"] <= 1.0
    with open(footage_report / "faces.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == sum(f["frames"] for f in summary["faces"].values())
    assert {"time_s", "face_id", "x", "label", "p_positive", "valence",
            "stability", "valence_mssd"} <= set(rows[0])
    video = cv2.VideoCapture(str(footage_report / "annotated.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == summary["frames_processed"]
    video.release()


@pytest.mark.slow
def test_report_html_is_self_contained(footage_report):
    page = (footage_report / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    images = re.findall(r"""<img[^>]*src="([^"]+)\"""", page)
    assert len(images) == 3
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert "face_1" in page and "How to read this" in page


def test_report_is_well_formed_html(footage_report):
    """Every element the report opens is closed, in order, and the images decode."""
    import base64
    from html.parser import HTMLParser

    void = {"img", "br", "meta", "hr", "input", "link", "col", "wbr"}

    class Checker(HTMLParser):
        def __init__(self):
            super().__init__()
            self.open, self.problems, self.images = [], [], []

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.images.append(dict(attrs)["src"])
            if tag not in void:
                self.open.append(tag)

        def handle_endtag(self, tag):
            if not self.open or self.open[-1] != tag:
                self.problems.append(f"</{tag}> closes {self.open[-1:] or 'nothing'}")
            else:
                self.open.pop()

    checker = Checker()
    checker.feed((footage_report / "report.html").read_text())
    checker.close()
    assert checker.problems == [] and checker.open == []
    for src in checker.images:
        png = base64.b64decode(src.split(",", 1)[1])
        image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.std() > 20  # a drawn figure, not a blank


# --- rosbag2 gives the same results as the video ---------------------------------

def session_rows_by_frame(source_path: Path, selection: FrameSelection
                          ) -> Dict[int, List[FaceRow]]:
    pipeline, model = build_pipeline({})
    source = open_source(source_path)
    try:
        session = analyze_source(source, pipeline, model, selection, show_progress=False)
    finally:
        source.close()
    by_frame: Dict[int, List[FaceRow]] = {f.index: [] for f in session.frames}
    for row in session.rows:
        by_frame[row.frame_index].append(row)
    return by_frame


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag_gives_the_same_results_as_the_video(footage_bags, storage):
    if storage not in footage_bags:
        pytest.skip(f"installed rosbags cannot write {storage}")
    selection = FrameSelection(end_s=CLIP_END_S, every=2)
    from_video = session_rows_by_frame(footage(FOOTAGE), selection)
    from_bag = session_rows_by_frame(footage_bags[storage], selection)
    assert list(from_bag) == list(from_video)
    assert sum(len(rows) for rows in from_video.values()) > 0
    for index, video_rows in from_video.items():
        bag_rows = from_bag[index]
        assert len(bag_rows) == len(video_rows), f"frame {index}"
        for video_row, bag_row in zip(video_rows, bag_rows):
            assert bag_row.face_id == video_row.face_id
            assert bag_row.label == video_row.label
            assert bag_row.frame_label == video_row.frame_label
            np.testing.assert_allclose(bag_row.probabilities, video_row.probabilities,
                                       atol=1e-5)
            np.testing.assert_allclose(bag_row.smoothed_probabilities,
                                       video_row.smoothed_probabilities, atol=1e-5)
            assert bag_row.time_s == pytest.approx(video_row.time_s, abs=1e-6)
            assert bag_row.stamp == pytest.approx(BAG_START_NS * 1e-9 + video_row.time_s)
            assert bag_row.stability == pytest.approx(video_row.stability, abs=1e-6)


@pytest.mark.slow
def test_compare_writes_both_sessions_and_a_comparison(footage_bags, tmp_path):
    video = footage(FOOTAGE)
    bag = footage_bags["sqlite3"]
    result = run_cli("--compare", video, bag, "--output", tmp_path, "--end", 1.0,
                     "--every", 2, "--quiet")
    assert result.returncode == 0, result.stderr
    for name in (video.stem, bag.name):
        for file_name in SESSION_FILES:
            assert (tmp_path / name / file_name).is_file(), f"{name}/{file_name}"
    assert (tmp_path / "comparison.png").is_file()
    page = (tmp_path / "report.html").read_text()
    assert "Comparison" in page and video.stem in page and bag.name in page
    assert f"{bag.name} − {video.stem}" in page  # the difference column
    assert "share positive" in page and "mean valence" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?://""", page, re.I)
    bag_summary = json.loads((tmp_path / bag.name / "summary.json").read_text())
    assert bag_summary["input"]["kind"] == "rosbag2"
    assert bag_summary["input"]["topic"] == "/camera/image_raw"
    assert bag_summary["input"]["storage"] == "sqlite3"


# --- bad inputs: one clear line, non-zero exit ---------------------------------------

def test_corrupt_video_is_one_error_line(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    assert_one_error_line(run_cli(broken, "--output", tmp_path / "out"), str(broken),
                          "not a readable video")


def test_missing_file_is_one_error_line(tmp_path):
    missing = tmp_path / "nowhere.mp4"
    assert_one_error_line(run_cli(missing, "--output", tmp_path / "out"), str(missing),
                          "no such file")


def test_empty_bag_is_one_error_line(tmp_path):
    bag = write_bag(tmp_path / "empty_bag", {})
    assert_one_error_line(run_cli(bag, "--output", tmp_path / "out"), str(bag), "empty")


def test_bag_without_image_topics_is_one_error_line(tmp_path):
    store = typestore()
    text = store.types["std_msgs/msg/String"]
    bag = write_bag(tmp_path / "chatter_bag",
                    {"/chatter": [(BAG_START_NS, text(data="hello"))]},
                    msgtype="std_msgs/msg/String")
    assert_one_error_line(run_cli(bag, "--output", tmp_path / "out"), str(bag),
                          "no sensor_msgs/Image", "/chatter")


def test_unknown_topic_is_one_error_line(tmp_path):
    bag = tiny_image_bag(tmp_path / "camera_bag")
    assert_one_error_line(run_cli(bag, "--topic", "/nope", "--output", tmp_path / "out"),
                          "'/nope'", "/camera/image_raw")


def test_several_image_topics_need_a_choice(tmp_path):
    bag = tiny_image_bag(tmp_path / "two_cameras", ("/left/image", "/right/image"))
    assert_one_error_line(run_cli(bag, "--output", tmp_path / "out"), "--topic",
                          "/left/image, /right/image")


def test_bag_topic_is_chosen_with_or_without_leading_slash(tmp_path):
    bag = tiny_image_bag(tmp_path / "two_cameras", ("/left/image", "/right/image"), 3)
    source = open_source(bag, "right/image")
    assert source.description.topic == "/right/image"
    frames = list(source.frames())
    assert [f.index for f in frames] == [0, 1, 2]
    assert frames[1].time_s == pytest.approx(0.04)
    assert frames[0].read_image().shape == (24, 32, 3)


def test_compressed_image_topic_is_decoded(tmp_path):
    store = typestore()
    compressed = store.types["sensor_msgs/msg/CompressedImage"]
    image = np.random.default_rng(1).integers(0, 256, (24, 32, 3), np.uint8)
    header = store.types["std_msgs/msg/Header"](
        stamp=store.types["builtin_interfaces/msg/Time"](sec=5, nanosec=0), frame_id="cam")
    message = compressed(header=header, format="png", data=np.frombuffer(
        cv2.imencode(".png", image)[1].tobytes(), np.uint8))
    bag = write_bag(tmp_path / "compressed_bag", {"/image/compressed": [(1, message)]},
                    msgtype="sensor_msgs/msg/CompressedImage")
    frames = list(open_source(bag).frames())
    assert len(frames) == 1 and frames[0].stamp == pytest.approx(5.0)
    np.testing.assert_array_equal(frames[0].read_image(), image)


def test_start_after_the_end_is_one_error_line(tmp_path):
    video = footage("single_face.mp4")
    assert_one_error_line(run_cli(video, "--start", 60, "--output", tmp_path / "out"),
                          "--start 60 s is after the end")


def test_bad_parameters_file_is_one_error_line(tmp_path, capsys):
    params = tmp_path / "fer.yaml"
    params.write_text("fer:\n  ros__parameters:\n    min_detection_score: 2.0\n")
    assert main(["x.mp4", "--params-file", str(params), "--output", str(tmp_path)]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "min_detection_score" in error[0]


def test_shipped_parameters_file_and_model_override():
    values = pipeline_values(REPO / "config" / "fer.yaml", "7class")
    assert values["model"] == "7class"
    assert values["stability_window_s"] == 5.0


# --- --from-jsonl ------------------------------------------------------------------

def emotion(face_id: str, probabilities, stability: float = 1.0) -> dict:
    labels = ["negative", "neutral", "positive"]
    best = int(np.argmax(probabilities))
    return {"face_id": face_id,
            "roi": {"x_offset": 10, "y_offset": 20, "width": 50, "height": 60,
                    "do_rectify": False},
            "labels": labels, "probabilities": probabilities,
            "smoothed_probabilities": probabilities, "label": labels[best],
            "confidence": probabilities[best],
            "valence": probabilities[2] - probabilities[0], "stability": stability,
            "label_change_rate": 0.2, "valence_mssd": 0.01, "stability_samples": 3,
            "dynamic_label": ""}


@pytest.fixture
def recording(tmp_path) -> Path:
    """Write an emotions.jsonl by hand: face_1 in 6 frames, face_2 in 3 of them."""
    happy, sad = [0.1, 0.2, 0.7], [0.8, 0.1, 0.1]
    lines = []
    for i in range(6):
        faces = [emotion("face_1", happy if i < 4 else sad, 1.0 - 0.1 * i)]
        if i % 2 == 0:
            faces.append(emotion("face_2", [0.1, 0.8, 0.1]))
        stamp = 100.0 + 0.5 * i
        lines.append(json.dumps({
            "stamp": stamp,
            "header": {"stamp": {"sec": int(stamp), "nanosec": int(stamp % 1 * 1e9)},
                       "frame_id": "camera"},
            "emotions": faces, "stability_window": 5.0, "model": "fer2013_3class"}))
    path = tmp_path / "session1" / "emotions.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(lines) + "\n")
    return path


def test_from_jsonl_builds_the_outputs(recording, tmp_path):
    output = tmp_path / "out"
    assert main(["--from-jsonl", str(recording), "--output", str(output)]) == 0
    for name in SESSION_FILES:
        assert (output / name).is_file() == (name != "annotated.mp4"), name
    summary = json.loads((output / "summary.json").read_text())
    assert summary["input"]["kind"] == "recording"
    assert summary["input"]["name"] == "session1"
    assert summary["frames_processed"] == 6
    assert summary["model"] == "fer2013_3class"
    face_1, face_2 = summary["faces"]["face_1"], summary["faces"]["face_2"]
    assert face_1["emotion_shares"] == pytest.approx(
        {"negative": 2 / 6, "neutral": 0.0, "positive": 4 / 6})
    assert face_1["dominant_emotion"] == "positive"
    assert face_1["time_on_screen_s"] == pytest.approx(3.0)
    assert face_1["stability"]["min"] == pytest.approx(0.5)
    assert face_1["whole_session"]["stability"] == pytest.approx(0.8)  # 1 change in 5 pairs
    assert face_2["frames"] == 3 and face_2["dominant_emotion"] == "neutral"
    assert summary["session"]["faces"] == 2
    with open(output / "faces.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 9
    assert rows[0]["face_id"] == "face_1" and float(rows[0]["p_positive"]) == 0.7
    assert float(rows[0]["time_s"]) == 0.0 and rows[0]["width"] == "50.0"


def test_from_jsonl_with_a_time_range_and_step(recording, tmp_path):
    output = tmp_path / "out"
    assert main(["--from-jsonl", str(recording), "--output", str(output), "--start", "0.5",
                 "--end", "2.0", "--every", "2", "--quiet"]) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["frames_processed"] == 2  # records 2 and 4 (1.0 s and 2.0 s)
    assert summary["analysed_from_s"] == pytest.approx(1.0)


def test_compare_two_recordings(recording, tmp_path):
    other = tmp_path / "session2" / "emotions.jsonl"
    other.parent.mkdir()
    other.write_text(recording.read_text().replace('"face_2"', '"face_9"'))
    output = tmp_path / "out"
    assert main(["--compare", str(recording), str(other), "--output", str(output)]) == 0
    page = (output / "report.html").read_text()
    assert "session2 − session1" in page
    assert (output / "session1" / "report.html").is_file()
    assert (output / "session2" / "faces.csv").is_file()


def test_recording_without_faces(tmp_path):
    path = tmp_path / "emotions.jsonl"
    path.write_text('{"stamp": 1.0, "emotions": []}\n{"stamp": 1.5, "emotions": []}\n')
    assert main(["--from-jsonl", str(path), "--output", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["frames_processed"] == 2 and summary["faces"] == {}
    assert "No face was detected" in (tmp_path / "out" / "report.html").read_text()


def test_malformed_jsonl_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "emotions.jsonl"
    path.write_text('not json\n[1, 2]\n')
    assert main(["--from-jsonl", str(path), "--output", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and f"{path}: has no records (line 1: not valid JSON" in error[0]


def test_damaged_jsonl_line_is_a_warning(tmp_path, capsys):
    path = tmp_path / "emotions.jsonl"
    path.write_text('{"stamp": 1.0, "emotions": []}\nnot json\n{"stamp": 1.5, "emotions": []}\n')
    assert main(["--from-jsonl", str(path), "--output", str(tmp_path / "out")]) == 0
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"fer-analyze: warning: {path}:2: ")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["frames_processed"] == 2 and summary["frames_expected"] == 3


# --- small pure helpers ------------------------------------------------------------

def test_frame_selection():
    selection = FrameSelection(start_s=1.0, end_s=2.0, every=2)
    assert [i for i in range(6) if selection.wants(i, i * 0.5)] == [2, 4]
    assert selection.past_end(2.01) and not selection.past_end(2.0)
    with pytest.raises(SessionError):
        FrameSelection(every=0)
    with pytest.raises(SessionError):
        FrameSelection(start_s=3.0, end_s=2.0)


def test_window_mean_and_gaps():
    times = np.array([0.0, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(window_mean(times, np.array([1.0, 3.0, 5.0, 7.0]), 2.0),
                               [1.0, 2.0, 4.0, 6.0])
    gapped_times, gapped = with_gaps(np.array([0.0, 0.1, 0.2, 1.0]),
                                     np.array([1.0, 2.0, 3.0, 4.0]), 0.1)
    assert len(gapped_times) == 5 and np.isnan(gapped[3])


def test_label_runs_end_at_label_changes_and_gaps():
    def row(time_s: float, label: str) -> FaceRow:
        return FaceRow(0, time_s, time_s, "face_1", (0, 0, 1, 1), 1.0, label, 1.0, label,
                       (1.0,), (1.0,), 0.0, 1.0, 0.0, 0.0, 1, 0.0)

    rows = [row(0.0, "a"), row(0.1, "a"), row(0.2, "b"), row(1.0, "b")]
    runs = label_runs(rows, 0.1)
    assert [(label, round(start, 3), round(duration, 3)) for label, start, duration
            in runs] == [("a", 0.0, 0.2), ("b", 0.2, 0.1), ("b", 1.0, 0.1)]


def test_unique_names(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "emotions.jsonl").write_text("")
    (tmp_path / "s.mp4").write_text("")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "s.mp4").write_text("")
    assert unique_names([tmp_path / "a" / "emotions.jsonl", tmp_path / "s.mp4",
                         tmp_path / "b" / "s.mp4"]) == ["a", "s", "s_2"]
