"""fer-analyze on adversarial inputs (issue 19): the regression suite.

Every bad input is built here from the real footage: hostile file names,
a truncated video, damaged rosbag2 recordings and emotions.jsonl files, a
full disk (in-process fault injection), a reused output folder.  Each test
names the issue 19 item it reproduces.
"""

from __future__ import annotations

import builtins
import errno
import json
import math
import re
import shutil
from pathlib import Path
from typing import Dict, List
from urllib.parse import unquote

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, footage
from fer_ros.session import annotated_video
from fer_ros.session.cli import main
from fer_ros.session.data import FrameSelection, SessionError
from fer_ros.session.recording import load_recording, read_record_file
from fer_ros.session.safe_output import RESERVED_NAMES, inside, session_names
from fer_ros.session.sources import open_source
from fer_ros.video_io import FrameSource
from test_session_analysis import (BAG_START_NS, FOOTAGE, emotion, image_message,
                                   run_cli, typestore, write_bag)

#: Short footage (72 frames, one face) for the runs that need a video.
SHORT_FOOTAGE = "single_face.mp4"
#: Frames (resized to BAG_SIZE) in the damaged-bag tests' recordings.
BAG_FRAMES = 60
#: Frame size of those recordings: 60 raw frames are about 3.7 MB.
BAG_SIZE = (192, 108)
#: Temporary files of atomic writes: hidden, with this mark.
PARTIAL_MARK = ".partial"


def leftovers(folder: Path) -> List[Path]:
    """List the temporary files of atomic writes anywhere under ``folder``."""
    return [p for p in folder.rglob("*") if PARTIAL_MARK in p.name]


def error_lines(stderr: str) -> List[str]:
    """Return the ``fer-analyze: error:`` lines of a run's stderr."""
    return [line for line in stderr.splitlines() if line.startswith("fer-analyze: error:")]


def warning_lines(stderr: str) -> List[str]:
    """Return the ``fer-analyze: warning:`` lines of a run's stderr."""
    return [line for line in stderr.splitlines() if line.startswith("fer-analyze: warning:")]


def write_recording(path: Path, records: int = 6, face_id: str = "face_1",
                    label: str = "") -> Path:
    """Write an emotions.jsonl with ``records`` records of one face (plus an empty frame)."""
    lines = []
    for i in range(records):
        entry = emotion(face_id, [0.1, 0.2, 0.7] if i % 3 else [0.7, 0.2, 0.1])
        if label:
            entry["label"] = label
        lines.append(json.dumps({"stamp": 100.0 + 0.5 * i, "emotions": [entry],
                                 "stability_window": 5.0, "model": "fer2013_3class"}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def small_bags(tmp_path_factory) -> Dict[str, Path]:
    """Write mcap and sqlite3 recordings of BAG_FRAMES footage frames resized to BAG_SIZE."""
    source = FrameSource(str(footage(SHORT_FOOTAGE)), size=BAG_SIZE)
    store = typestore()
    messages = []
    for frame in source.frames():
        if frame.index >= BAG_FRAMES:
            break
        stamp = BAG_START_NS + round(frame.time_s * 1e9)
        messages.append((stamp, image_message(store, frame.image, stamp)))
    source.close()
    folder = tmp_path_factory.mktemp("bags")
    bags = {}
    for storage in ("mcap", "sqlite3"):
        bags[storage] = write_bag(folder / f"small_{storage}",
                                  {"/camera/image_raw": messages}, storage)
    return bags


def damaged_copy(bag: Path, target: Path, damage) -> Path:
    """Copy a rosbag2 folder and apply ``damage(bytes) -> bytes`` to its storage file."""
    shutil.copytree(bag, target)
    storage = next(p for p in target.iterdir() if p.suffix in (".mcap", ".db3"))
    storage.write_bytes(damage(storage.read_bytes()))
    return target


# --- item 3: no script in the comparison report; item 4: names stay inside --output ---

def test_hostile_video_names_stay_inside_output_and_links_stay_relative(tmp_path, capsys):
    """Items 3, 4, 7: javascript:, ..., report.html and $...$ as video names in a folder run."""
    videos = tmp_path / "sessions"
    videos.mkdir()
    hostile = ["javascript:alert(1).mp4", "...mp4", "report.html.mp4", r"$\frac{1$.mp4"]
    for name in hostile:
        shutil.copy(footage(SHORT_FOOTAGE), videos / name)
    output = tmp_path / "out"
    assert main([str(videos), "--output", str(output), "--end", "0.4", "--every", "4",
                 "--no-video", "--quiet"]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "sessions"]
    folders = sorted(p.name for p in output.iterdir() if p.is_dir())
    assert folders == sorted(["javascript_alert(1)", "session", "report.html_session",
                              "$_frac{1$"])
    page = (output / "report.html").read_text()
    assert "Comparison" in page
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert hrefs and all(href.startswith("./") for href in hrefs)
    assert not any("javascript:" in href.lower() for href in hrefs)
    for href in hrefs:
        target = output / unquote(href)
        assert target.is_file(), href
        inside(output, target)


def test_recordings_without_a_folder_name_get_their_own_folders(tmp_path, monkeypatch, capsys):
    """Item 4: recordings whose folder yields an empty name no longer overwrite the root."""
    first = write_recording(tmp_path / "rec" / "emotions.jsonl")
    second = write_recording(tmp_path / " " / "emotions.jsonl")
    monkeypatch.chdir(first.parent)
    output = tmp_path / "out"
    assert main(["--from-jsonl", "emotions.jsonl", "--from-jsonl", str(second),
                 "--output", str(output)]) == 0, capsys.readouterr().err
    assert not (output / "faces.csv").exists()
    assert "Comparison" in (output / "report.html").read_text()
    for name in ("rec", "session"):
        assert (output / name / "report.html").is_file(), name
        assert (output / name / "faces.csv").is_file(), name


def test_session_names_are_safe_and_distinct():
    names = session_names(["..", "", ".", "report.html", "Report.HTML", "a/b", "c\\d",
                           "con", "x", "X", "session", " .hidden"])
    assert len({n.casefold() for n in names}) == len(names)
    assert names[:3] == ["session", "session_2", "session_3"]
    assert names[5:7] == ["a_b", "c_d"]
    assert names[-1] == "hidden"
    for name in names:
        assert name.casefold() not in RESERVED_NAMES and name not in (".", "..")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=40), min_size=1, max_size=8))
def test_session_names_property(raw_names):
    """Any names become distinct, non-empty single path segments inside the output."""
    names = session_names(raw_names)
    root = Path("/tmp/fer_out")
    assert len({n.casefold() for n in names}) == len(names)
    for name in names:
        assert name and name not in (".", "..") and "/" not in name and "\\" not in name
        assert "\x00" not in name and name.casefold() not in RESERVED_NAMES
        assert (root / name).parent == root


# --- item 6: a full disk leaves no partial file under a final name ---------------------

class FullDisk:
    """A file object that raises ENOSPC once more than ``budget`` bytes were written."""

    def __init__(self, stream, budget: int) -> None:
        self._stream, self._budget = stream, budget

    def write(self, data):
        if len(data) > self._budget:
            self._stream.write(data[:self._budget])
            self._budget = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self._budget -= len(data)
        return self._stream.write(data)

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._stream.close()


def fill_disk_at(monkeypatch, output: Path, stem: str, budget: int = 100) -> None:
    """Make writes of the output file named ``stem.*`` under ``output`` fail with ENOSPC."""
    real_open = builtins.open

    def open_on_a_full_disk(file, mode="r", *args, **kwargs):
        stream = real_open(file, mode, *args, **kwargs)
        path = Path(str(file)) if isinstance(file, (str, Path)) else None
        if path is not None and any(c in mode for c in "wax") and output in path.parents \
                and path.name.startswith(f".{stem}."):
            return FullDisk(stream, budget)
        return stream

    monkeypatch.setattr(builtins, "open", open_on_a_full_disk)


@pytest.mark.parametrize("file_name", ["faces.csv", "summary.json", "timeline.png",
                                       "report.html"])
def test_full_disk_leaves_no_partial_output(tmp_path, monkeypatch, capsys, file_name):
    """Item 6: ENOSPC is one line naming the file; old outputs stay whole, no partial file."""
    recording = write_recording(tmp_path / "session1" / "emotions.jsonl")
    output = tmp_path / "out"
    assert main(["--from-jsonl", str(recording), "--output", str(output)]) == 0
    before = {p.name: p.read_bytes() for p in output.iterdir()}
    fresh = tmp_path / "fresh"
    for folder in (output, fresh):
        capsys.readouterr()
        with monkeypatch.context() as patch:
            fill_disk_at(patch, folder, Path(file_name).stem)
            assert main(["--from-jsonl", str(recording), "--output", str(folder)]) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fer-analyze: error: "), err
        assert str(folder / file_name) in lines[0] and "No space left" in lines[0]
        assert leftovers(folder) == []
    assert {p.name: p.read_bytes() for p in output.iterdir()} == before
    assert not (fresh / file_name).exists()
    assert not (fresh / "report.html").exists()


def test_full_disk_on_the_report_keeps_no_annotated_video(tmp_path, monkeypatch, capsys):
    """Item 6: the text outputs come before the video, which is renamed only at the end."""
    output = tmp_path / "out"
    fill_disk_at(monkeypatch, output, "report")
    assert main([str(footage(SHORT_FOOTAGE)), "--output", str(output), "--end", "0.4",
                 "--quiet"]) == 1
    assert str(output / "report.html") in capsys.readouterr().err
    assert (output / "faces.csv").is_file() and (output / "summary.json").is_file()
    assert not (output / "report.html").exists() and not (output / "annotated.mp4").exists()
    assert leftovers(output) == []


def test_video_writer_losing_frames_is_one_error_line(tmp_path, monkeypatch, capsys):
    """Item 6: OpenCV does not report a full disk; the finished video is checked."""
    real_writer = cv2.VideoWriter

    class LosingWriter:
        """A video writer that silently stops writing after two frames."""

        def __init__(self, *args):
            self._writer, self._frames = real_writer(*args), 0

        def write(self, image):
            self._frames += 1
            if self._frames <= 2:
                self._writer.write(image)

        def __getattr__(self, name):
            return getattr(self._writer, name)

    class Cv2WithLosingWriter:
        VideoWriter = LosingWriter

        def __getattr__(self, name):
            return getattr(cv2, name)

    LosingWriter.fourcc = staticmethod(real_writer.fourcc)
    monkeypatch.setattr(annotated_video, "cv2", Cv2WithLosingWriter())
    output = tmp_path / "out"
    assert main([str(footage(SHORT_FOOTAGE)), "--output", str(output), "--end", "0.4",
                 "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(output / "annotated.mp4") in err[0] and "disk" in err[0]
    assert not (output / "annotated.mp4").exists() and leftovers(output) == []
    assert "annotated.mp4" not in (output / "report.html").read_text()


def test_file_size_limit_loses_only_the_video(tmp_path):
    """Item 6 with a real failing write: the OS refuses files over 260 KB (RLIMIT_FSIZE).

    The annotated video (about 390 KB) cannot be written; it is deleted and
    reported in one line, while the text outputs and figures are complete.
    """
    resource = pytest.importorskip("resource")
    import signal
    import subprocess
    import sys

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (260_000, 260_000))

    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "fer_ros.session.cli", str(footage(SHORT_FOOTAGE)),
         "--output", str(output), "--quiet"], cwd=REPO, capture_output=True, text=True,
        timeout=600, preexec_fn=limit_file_size)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"fer-analyze: error: {output / 'annotated.mp4'}: cannot write ("), result.stderr
    assert json.loads((output / "summary.json").read_text())["frames_processed"] == 72
    assert (output / "report.html").read_text().rstrip().endswith("</html>")
    assert not (output / "annotated.mp4").exists() and leftovers(output) == []


# --- item 7: one line, never a traceback ------------------------------------------------

def test_mcap_with_random_bytes_in_the_middle_is_read_up_to_the_damage(small_bags, tmp_path,
                                                                       capsys):
    """Item 7: 1 MiB of random bytes in the middle (rosbags: OverflowError) is damage."""
    noise = np.random.default_rng(1).integers(0, 256, 1 << 20, np.uint8).tobytes()

    def overwrite_middle(data: bytes) -> bytes:
        start = len(data) // 2 - len(noise) // 2
        return data[:start] + noise + data[start + len(noise):]

    bag = damaged_copy(small_bags["mcap"], tmp_path / "noisy_bag", overwrite_middle)
    output = tmp_path / "out"
    assert main([str(bag), "--output", str(output), "--every", "5", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and error_lines(err) == []
    summary = json.loads((output / "summary.json").read_text())
    assert summary["frames_expected"] == BAG_FRAMES
    assert 0 < summary["frames_read"] < BAG_FRAMES
    warnings = warning_lines(err)
    assert len(warnings) == 1 and "damaged" in warnings[0]
    assert f"{summary['frames_read']} of {BAG_FRAMES} frames" in warnings[0]
    assert summary["warnings"] and "ended early" in (output / "report.html").read_text()


def test_recording_label_outside_its_labels_is_one_error_line(tmp_path, capsys):
    """Item 7: a label that is not in ``labels`` was a ValueError traceback."""
    recording = write_recording(tmp_path / "emotions.jsonl", label="joy")
    assert main(["--from-jsonl", str(recording), "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{recording}:1" in err[0] and "'joy'" in err[0]


def test_dollar_signs_in_face_ids_and_names_are_plain_text(tmp_path, capsys):
    r"""Item 7: ``$\frac{1$`` as face id and file name was a mathtext ParseSyntaxException."""
    first = write_recording(tmp_path / r"$\frac{1$.jsonl", face_id=r"$\frac{1$")
    second = write_recording(tmp_path / "b" / "emotions.jsonl", face_id=r"face$\frac{1$")
    output = tmp_path / "out"
    assert main(["--compare", str(first), str(second), "--output", str(output)]) == 0, \
        capsys.readouterr().err
    for folder in (output / "$_frac{1$", output / "b"):
        for figure in ("timeline.png", "valence_stability.png", "emotion_shares.png"):
            assert cv2.imread(str(folder / figure)) is not None, folder / figure
    assert (output / "comparison.png").is_file()
    assert r"$\frac{1$" in (output / "$_frac{1$" / "report.html").read_text()


# --- item 8: a truncated video is reported as such -------------------------------------

def test_truncated_video_reports_frames_expected_and_read(tmp_path):
    """Item 8: WolfgangLanger cut at 50% (index at the start) was reported as complete."""
    video = footage(FOOTAGE)
    cut = tmp_path / "cut.mp4"
    data = video.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # the index comes first
    cut.write_bytes(data[:len(data) // 2])
    output = tmp_path / "out"
    result = run_cli(cut, "--output", output, "--every", "12", "--no-video", "--quiet")
    assert result.returncode == 0, result.stderr
    summary = json.loads((output / "summary.json").read_text())
    assert summary["frames_expected"] == summary["input"]["frame_count"] == 472
    assert 0 < summary["frames_read"] < 472
    assert summary["frames_processed"] == math.ceil(summary["frames_read"] / 12)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fer-analyze: warning: "), result.stderr
    assert f"{summary['frames_read']} of 472 frames" in lines[0] and str(cut) in lines[0]
    assert "ended early" in (output / "report.html").read_text()


def test_complete_video_has_no_completeness_keys(tmp_path, capsys):
    """Item 8: normal inputs keep their summary.json unchanged."""
    output = tmp_path / "out"
    assert main([str(footage(SHORT_FOOTAGE)), "--output", str(output), "--every", "8",
                 "--no-video", "--quiet"]) == 0
    assert warning_lines(capsys.readouterr().err) == []
    summary = json.loads((output / "summary.json").read_text())
    assert not {"frames_expected", "frames_read", "warnings"} & set(summary)
    assert summary["frames_processed"] == 9  # frames 0, 8, ... 64 of 72


# --- item 9: damaged recordings are read up to the damage ------------------------------

def test_jsonl_with_a_cut_last_line_keeps_every_complete_record(tmp_path, capsys):
    """Item 9: a recorder killed mid-write; the 6 complete records are kept."""
    recording = write_recording(tmp_path / "session1" / "emotions.jsonl")
    complete = recording.read_text()
    recording.write_text(complete + complete.splitlines()[0][:40])
    output = tmp_path / "out"
    assert main(["--from-jsonl", str(recording), "--output", str(output)]) == 0
    warnings = warning_lines(capsys.readouterr().err)
    assert len(warnings) == 1 and f"{recording}:7" in warnings[0]
    summary = json.loads((output / "summary.json").read_text())
    assert summary["frames_processed"] == 6 and summary["frames_read"] == 6
    assert summary["frames_expected"] == 7


@pytest.mark.parametrize("storage,as_file", [("mcap", True), ("mcap", False),
                                             ("sqlite3", True)])
def test_bag_with_a_missing_or_damaged_tail_is_read_up_to_the_damage(
        small_bags, tmp_path, capsys, storage, as_file):
    """Item 9: an mcap without its end, a sqlite3 file without its last 40%."""
    bag = damaged_copy(small_bags[storage], tmp_path / "cut_bag",
                       lambda data: data[:int(len(data) * 0.6)])
    target = next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3")) if as_file \
        else bag
    source = open_source(target)
    frames = [frame.read_image().shape for frame in source.frames()]
    assert 10 < len(frames) < BAG_FRAMES and source.damage
    assert frames[0] == (BAG_SIZE[1], BAG_SIZE[0], 3)
    output = tmp_path / "out"
    assert main([str(target), "--output", str(output), "--every", "10", "--quiet"]) == 0
    warnings = warning_lines(capsys.readouterr().err)
    assert len(warnings) == 1 and str(target) in warnings[0]
    summary = json.loads((output / "summary.json").read_text())
    assert summary["frames_read"] == len(frames)
    if not as_file:  # metadata.yaml still tells how many there were
        assert summary["frames_expected"] == BAG_FRAMES


def test_unsalvageable_bag_is_one_error_line(tmp_path):
    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(b"\x89MCAP0\r\n" + bytes(range(256)) * 64)
    result = run_cli(garbage, "--output", tmp_path / "out")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fer-analyze: error: ")
    assert str(garbage) in lines[0]


# --- item 10: batches, stale outputs, non-finite times ---------------------------------

def test_batch_analyses_the_good_inputs_and_reports_the_bad(tmp_path, capsys):
    """Item 10: one unreadable file no longer stops the batch."""
    videos = tmp_path / "sessions"
    videos.mkdir()
    shutil.copy(footage(SHORT_FOOTAGE), videos / "good.mp4")
    (videos / "broken.mp4").write_bytes(bytes(range(256)) * 16)
    write_recording(videos / "bad_label.jsonl", label="joy")
    output = tmp_path / "out"
    code = main([str(videos), str(videos / "bad_label.jsonl"), "--output", str(output),
                 "--every", "8", "--no-video", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    errors = error_lines(err)
    assert len(errors) == 2
    assert str(videos / "broken.mp4") in errors[0] and "not a readable video" in errors[0]
    assert "bad_label.jsonl:1" in errors[1]
    assert (output / "good" / "report.html").is_file()
    assert (output / "report.html").is_file()
    assert sorted(p.name for p in output.iterdir()) == ["comparison.png", "good",
                                                        "report.html"]


def test_reused_output_loses_the_stale_annotated_video(tmp_path, capsys):
    """Item 10: a second session in the same --output must not keep the first one's video."""
    output = tmp_path / "out"
    assert main([str(footage(SHORT_FOOTAGE)), "--output", str(output), "--end", "0.3",
                 "--quiet"]) == 0
    assert (output / "annotated.mp4").is_file()
    recording = write_recording(tmp_path / "session1" / "emotions.jsonl")
    assert main(["--from-jsonl", str(recording), "--output", str(output)]) == 0
    assert not (output / "annotated.mp4").exists()
    assert "annotated.mp4" not in (output / "report.html").read_text()


@pytest.mark.parametrize("option,value", [("--start", "nan"), ("--end", "nan"),
                                          ("--end", "inf"), ("--start", "-inf")])
def test_non_finite_times_are_one_error_line(tmp_path, capsys, option, value):
    """Item 10: ``--start nan`` said "has no frames"."""
    assert main([str(footage(SHORT_FOOTAGE)), f"{option}={value}", "--output",
                 str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{option} must be a finite number" in err[0]
    with pytest.raises(SessionError):
        FrameSelection(start_s=float(value)) if option == "--start" else \
            FrameSelection(end_s=float(value))


# --- property-based: the JSONL reader -----------------------------------------------------

#: Lines a recording may contain besides its records: JSON of every kind, cut records,
#: text and numbers that strain the parser.
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["stamp", "emotions", "labels", "label",
                                       "probabilities", "face_id", "roi", "header",
                                       "stability_window"]) | st.text(max_size=5),
                      inner, max_size=5),
    max_leaves=12)


def record_line(index: int) -> str:
    """Make one complete emotion_recorder record (a JSON line)."""
    return json.dumps({"stamp": 10.0 + index, "emotions": [
        emotion("face_1", [0.2, 0.3, 0.5])], "model": "fer2013_3class"})


#: Fields a mutated record gets an arbitrary value in (the record's or its emotion's).
RECORD_KEYS = ("stamp", "stability_window", "emotions")
EMOTION_KEYS = ("face_id", "roi", "labels", "probabilities", "smoothed_probabilities",
                "label", "confidence", "valence", "stability", "stability_samples",
                "dynamic_probabilities", "detection_confidence")


def mutated_record(key_value) -> str:
    """Make a record line with one field replaced by an arbitrary JSON value."""
    key, value = key_value
    entry = emotion("face_1", [0.2, 0.3, 0.5])
    record = {"stamp": 10.0, "emotions": [entry], "stability_window": 5.0}
    (record if key in RECORD_KEYS else entry)[key] = value
    return json.dumps(record)


def not_a_record(line: str) -> bool:
    """Tell whether a line is something the reader must skip (not a JSON object)."""
    try:
        return not isinstance(json.loads(line), dict)
    except (ValueError, RecursionError):
        return True


@settings(max_examples=200, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.binary(max_size=2000)
       | st.lists(st.text(max_size=60) | JSONISH.map(json.dumps)
                  | st.builds(record_line, st.integers(0, 5))
                  | st.tuples(st.sampled_from(RECORD_KEYS + EMOTION_KEYS), JSONISH).map(
                      mutated_record), max_size=8).map(
           lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")))
def test_jsonl_reader_raises_only_its_one_line_error(tmp_path, data):
    """Arbitrary bytes or lines: a session, or a one-line SessionError, nothing else."""
    path = tmp_path / "emotions.jsonl"
    path.write_bytes(data)
    try:
        session = load_recording(path, FrameSelection())
    except SessionError as error:
        assert "\n" not in str(error) and str(path) in str(error)
    else:
        assert session.frames


@settings(max_examples=150, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture])
@given(st.integers(1, 6), st.lists(st.tuples(st.integers(0, 6), st.text(max_size=30)
                                             .filter(not_a_record)), max_size=4),
       st.integers(1, 200))
def test_jsonl_reader_keeps_every_complete_record(tmp_path, records, garbage, cut_at):
    """Records with damaged lines anywhere and a cut last line: every record is kept."""
    lines = [record_line(i) for i in range(records)]
    for position, text in sorted(garbage, reverse=True):
        lines.insert(min(position, len(lines)), text.replace("\n", " ").replace("\r", " "))
    cut = record_line(99)[:min(cut_at, len(record_line(99)) - 1)]
    path = tmp_path / "emotions.jsonl"
    path.write_text("\n".join(lines + [cut]), encoding="utf-8")
    read = read_record_file(path)
    assert [r["stamp"] for _, r in read.records] == [10.0 + i for i in range(records)]
    assert read.damaged and read.damaged[-1][0] == read.last_line
    session = load_recording(path, FrameSelection())
    assert len(session.frames) == records and session.warnings
    assert session.frames_read == records


def test_complete_recording_has_no_warning(tmp_path):
    path = write_recording(tmp_path / "emotions.jsonl")
    session = load_recording(path, FrameSelection())
    assert session.warnings == [] and session.frames_read is None
