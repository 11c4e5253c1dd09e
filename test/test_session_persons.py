"""fer-analyze per person: re-identification, known people, --only, --anonymize (issue 17).

Every clip is built here from the project's footage and analysed by the
real command (``main``: BlazeFace, the shipped model, dlib embeddings), so
nothing skips; the clips are short (every 4th frame, 10 fps stills)
because each embedding costs ~0.1 s.
"""

from __future__ import annotations

import base64
import csv
import json
import re
import stat
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
import pytest

from conftest import footage
from fer_ros.detection import create_detector
from fer_ros.identity import PersonRegistry
from fer_ros.pipeline import FaceResult, FrameResult
from fer_ros.session.cli import main
from fer_ros.session.data import FaceRow
from fer_ros.session.figures import FIGURE_DPI, FIGURE_WIDTH_IN
from fer_ros.session.persons import PersonChanges
from test_face_embedding import face_crop, side_by_side
from test_privacy import laplacian_correlation

#: One woman, crying and laughing (472 frames at 24 fps, 640x360).
WOMAN = "WolfgangLanger_Pexels.mp4"
#: Frames per second of the clips made from stills.
STILL_FPS = 10.0
Box = Tuple[float, float, float, float]


# --- clips -----------------------------------------------------------------------

def write_video(path: Path, frames: Sequence[np.ndarray], fps: float) -> Path:
    """Write frames (all of one size) as an mp4v video."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def read_frames(path: Path) -> List[np.ndarray]:
    """Every frame of a video, decoded."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def woman_frames(step: int, start: int = 0, stop: int = 10**6) -> Tuple[List[np.ndarray], float]:
    """Every ``step``-th frame of the woman's video in [start, stop), and their rate."""
    capture = cv2.VideoCapture(str(footage(WOMAN)))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    frames = read_frames(footage(WOMAN))[start:stop:step]
    assert len(frames) > 5
    return frames, fps / step


@pytest.fixture(scope="module")
def group6() -> Tuple[np.ndarray, List[Box]]:
    """group6.jpg and its six face boxes, left to right."""
    image = cv2.imread(str(footage("group6.jpg")))
    faces = sorted(create_detector().detect(image), key=lambda face: face.x)
    assert len(faces) == 6
    return image, [face.box for face in faces]


def still(image: np.ndarray, seconds: float) -> List[np.ndarray]:
    return [image] * int(round(seconds * STILL_FPS))


# --- outputs ---------------------------------------------------------------------

def analyze(*args: object) -> Path:
    """Run fer-analyze in this process; return the output folder (the argument after --output)."""
    argv = [str(a) for a in args]
    assert main(argv + ["--quiet"]) == 0
    return Path(argv[argv.index("--output") + 1])


def summary_of(output: Path) -> dict:
    return json.loads((output / "summary.json").read_text())


def rows_of(output: Path) -> List[Dict[str, str]]:
    with open(output / "faces.csv", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def centre_x(row: Dict[str, str]) -> float:
    return float(row["x"]) + float(row["width"]) / 2


def left_to_right(rows: List[Dict[str, str]]) -> Dict[int, List[str]]:
    """Per frame: the person ids from left to right."""
    frames: Dict[int, List[Dict[str, str]]] = {}
    for row in rows:
        frames.setdefault(int(row["frame_index"]), []).append(row)
    return {index: [r["person_id"] for r in sorted(found, key=centre_x)]
            for index, found in frames.items()}


# --- 1. per-person results: the identity checks ----------------------------

@pytest.mark.slow
def test_a_person_away_for_2_s_and_for_10_s_keeps_one_person_id(tmp_path):
    frames, fps = woman_frames(step=4)
    grey = np.full_like(frames[0], 128)
    first, second = len(frames) // 3, 2 * len(frames) // 3
    clip = (frames[:first] + [grey] * round(2.0 * fps) + frames[first:second]
            + [grey] * round(10.0 * fps) + frames[second:])
    video = write_video(tmp_path / "away.mp4", clip, fps)
    output = analyze(video, "--output", tmp_path / "out", "--no-video")

    summary, rows = summary_of(output), rows_of(output)
    assert len(summary["faces"]) >= 3  # the tracker lost her at each absence
    assert list(summary["persons"]) == ["person_1"], summary["persons"].keys()
    person = summary["persons"]["person_1"]
    assert person["name"] is None and person["face_ids"] == list(summary["faces"])
    assert all(face["person_id"] == "person_1" for face in summary["faces"].values())
    assert {row["person_id"] for row in rows} == {"person_1"}
    # Seen before, between and after both absences, never during them.
    gap_1, gap_2 = round(2.0 * fps), round(10.0 * fps)
    segments = [range(0, first), range(first + gap_1, second + gap_1),
                range(second + gap_1 + gap_2, len(clip))]
    shown = [int(row["frame_index"]) for row in rows]
    assert all(any(index in segment for segment in segments) for index in shown)
    assert all(sum(index in segment for index in shown) > 0.8 * len(segment)
               for segment in segments)
    assert person["frames"] == len(rows) <= len(frames)
    assert person["time_on_screen_s"] == pytest.approx(len(rows) / fps, rel=0.02)
    assert person["last_seen_s"] - person["first_seen_s"] > (len(clip) - 2) / fps - 0.5
    assert summary["session"]["persons"] == 1
    # The report is per person: one row for her, with her face tracks.
    page = (output / "report.html").read_text()
    assert "<h2>People</h2>" in page and "Face tracks" in page and "person_1" in page


@pytest.mark.slow
def test_the_six_faces_of_a_still_stay_six_people(tmp_path, group6):
    image, _ = group6
    clip = still(image, 1.0) + still(np.zeros_like(image), 1.5) + still(image, 1.0)
    video = write_video(tmp_path / "group6.mp4", clip, STILL_FPS)
    output = analyze(video, "--output", tmp_path / "out", "--no-video")

    summary, rows = summary_of(output), rows_of(output)
    assert len(summary["persons"]) == 6, list(summary["persons"])
    assert len(summary["faces"]) == 12  # every track ended in the dark
    assert all(len(person["face_ids"]) == 2 for person in summary["persons"].values())
    orders = left_to_right(rows)
    assert len(orders) == 20
    assert len(set(next(iter(orders.values())))) == 6
    assert all(order == next(iter(orders.values())) for order in orders.values())


@pytest.mark.slow
def test_two_people_who_swap_places_keep_their_own_ids(tmp_path, group6):
    image, boxes = group6
    a, b = face_crop(image, boxes[1], 240), face_crop(image, boxes[2], 240)
    # They swap while out of view (longer than the tracker keeps a lost face).
    clip = (still(side_by_side(a, b), 2.0) + still(np.full((360, 640, 3), 90, np.uint8), 1.5)
            + still(side_by_side(b, a), 2.0))
    video = write_video(tmp_path / "swap.mp4", clip, STILL_FPS)
    output = analyze(video, "--output", tmp_path / "out", "--no-video")

    summary, rows = summary_of(output), rows_of(output)
    assert len(summary["persons"]) == 2 and len(summary["faces"]) == 4
    orders = left_to_right(rows)
    before = [order for index, order in orders.items() if index < 20]
    after = [order for index, order in orders.items() if index >= 35]
    assert len(before) == len(after) == 20
    left, right = before[0]
    assert left != right
    assert all(order == [left, right] for order in before)
    assert all(order == [right, left] for order in after)


# --- 2. known people by name, --only --------------------------------------------

@pytest.fixture(scope="module")
def people(tmp_path_factory) -> Path:
    """Enrol the woman as 'anna' from two of her frames written as photos (1.25 s and 5 s)."""
    folder = tmp_path_factory.mktemp("people") / "people"
    (folder / "anna").mkdir(parents=True)
    frames = read_frames(footage(WOMAN))
    for index in (30, 120):
        assert cv2.imwrite(str(folder / "anna" / f"frame_{index}.jpg"), frames[index])
    return folder


@pytest.mark.slow
def test_the_enrolled_person_is_named_in_summary_persons(tmp_path, people):
    output = analyze(footage(WOMAN), "--people", people, "--output", tmp_path / "out",
                     "--start", 9.0, "--end", 11.0, "--every", 3, "--no-video")
    summary = summary_of(output)
    assert list(summary["persons"]) == ["anna"]
    assert summary["persons"]["anna"]["name"] == "anna"
    assert {row["person_id"] for row in rows_of(output)} == {"anna"}


@pytest.mark.slow
def test_only_keeps_the_named_person_everywhere(tmp_path, people, group6):
    image, boxes = group6
    stranger = face_crop(image, boxes[3], 240)
    frames, fps = woman_frames(step=3, start=216, stop=264)  # 9-11 s, laughing
    clip = []
    for frame in frames:
        canvas = np.full((360, 900, 3), 90, np.uint8)
        canvas[:, :640] = frame
        canvas[60:300, 650:890] = stranger
        clip.append(canvas)
    video = write_video(tmp_path / "two.mp4", clip, fps)
    stranger_faces = create_detector().detect(read_frames(video)[0][:, 640:])
    assert len(stranger_faces) == 1
    output = analyze(video, "--people", people, "--only", "anna", "--output", tmp_path / "out")

    summary, rows = summary_of(output), rows_of(output)
    assert summary["only"] == ["anna"] and list(summary["persons"]) == ["anna"]
    assert rows and {row["person_id"] for row in rows} == {"anna"}
    assert all(face["person_id"] == "anna" for face in summary["faces"].values())
    assert all(centre_x(row) < 640 for row in rows)
    assert summary["frames_with_faces"] == len(rows)
    assert "only anna" in (output / "report.html").read_text()
    # In annotated.mp4 the stranger, left out, is pixelated; anna is not.
    x, y, width, height = stranger_faces[0].box
    box = (x + 640, y, width, height)
    originals, annotated = read_frames(video), read_frames(output / "annotated.mp4")
    assert len(annotated) == len(originals)
    hidden = [laplacian_correlation(o, a, box) for o, a in zip(originals, annotated)]
    anna = [tuple(float(row[k]) for k in ("x", "y", "width", "height")) for row in rows]
    frame_of = [int(row["frame_index"]) for row in rows]
    shown = [laplacian_correlation(originals[i], annotated[i], b) for i, b in zip(frame_of, anna)]
    print(f"--only: stranger max {max(hidden):.3f}; anna median {np.median(shown):.3f}")
    assert max(hidden) < 0.2 and np.median(shown) > 0.5


def test_a_photo_without_exactly_one_face_stops_before_any_analysis(tmp_path, capsys, group6):
    image, _ = group6
    video = footage("single_face.mp4")
    for photo, what in ((np.full((200, 200, 3), 128, np.uint8), "no face found"),
                        (image, "6 faces found")):
        folder = tmp_path / what.replace(" ", "_")
        path = folder / "child" / "photo.png"
        path.parent.mkdir(parents=True)
        assert cv2.imwrite(str(path), photo)
        output = folder / "out"
        assert main([str(video), "--people", str(folder), "--output", str(output)]) == 1
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1, error
        assert error[0].startswith(f"fer-analyze: error: --people: {path}: {what}")
        assert not output.exists()  # nothing analysed, nothing written


def test_contradicting_person_options_are_one_line(tmp_path, capsys):
    video = str(footage("single_face.mp4"))
    for args, fragment in ((["--no-reidentify", "--only", "child"], "--only needs re-ident"),
                           (["--no-reidentify", "--people", "p"], "--people needs re-ident"),
                           (["--anonymize", "--save-people", "p.json"], "--anonymize"),
                           (["--only", "person 2"], "--only")):
        with pytest.raises(SystemExit) as exit_code:
            main([video, "--output", str(tmp_path / "out"), *args])
        assert exit_code.value.code == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and fragment in error[0], error
    assert main([video, video, "--output", str(tmp_path / "out"), "--save-people",
                 str(tmp_path / "p.json")]) == 1
    assert "--save-people wants one video" in capsys.readouterr().err
    assert main([video, "--output", str(tmp_path / "out"), "--only", "therapist"]) == 1
    assert "--only therapist: not a known person" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- 3. privacy ----------------------------------------------------------------------

def face_correlations(video: Path, output: Path, every: int) -> List[float]:
    """Laplacian correlation of every faces.csv box: annotated.mp4 against the input frame."""
    originals, annotated = read_frames(video), read_frames(output / "annotated.mp4")
    values = []
    for row in rows_of(output):
        index = int(row["frame_index"])
        box = tuple(float(row[k]) for k in ("x", "y", "width", "height"))
        values.append(laplacian_correlation(originals[index], annotated[index // every], box))
    return values


def assert_report_embeds_figures_only(output: Path) -> None:
    page = (output / "report.html").read_text()
    assert not re.search(r"<(video|source|iframe|object|embed|picture)\b", page, re.I)
    sources = re.findall(r"""\bsrc\s*=\s*["']([^"']*)""", page, re.I)
    assert len(sources) == 3 and len(re.findall(r"data:", page)) == 3
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        image = cv2.imdecode(np.frombuffer(base64.b64decode(source.split(",", 1)[1]), np.uint8),
                             cv2.IMREAD_COLOR)
        # A matplotlib canvas of the figure width, not a frame of the 640x360 input.
        assert image.shape[1] == int(FIGURE_WIDTH_IN * FIGURE_DPI)


def assert_no_embeddings(output: Path) -> None:
    """No file of the session holds a face embedding (128 numbers in a row)."""
    for path in output.iterdir():
        if path.suffix in (".json", ".csv", ".html"):
            text = path.read_text()
            if path.suffix != ".html":  # the report says that there are none
                assert "embedding" not in text.lower() and "enrolled" not in text, path
            lists = re.findall(r"\[([-0-9.e, \n]*)\]", text)
            assert max((len(numbers.split(",")) for numbers in lists), default=0) < 64, path
    with open(output / "faces.csv", encoding="utf-8") as stream:
        assert len(next(csv.reader(stream))) < 40  # no 128 embedding columns


@pytest.mark.slow
def test_anonymize_pixelates_every_face_box_of_faces_csv(tmp_path, group6):
    woman = footage(WOMAN)
    anonymized = analyze(woman, "--anonymize", "--output", tmp_path / "anon",
                         "--end", 2.0, "--every", 2)
    plain = analyze(woman, "--no-reidentify", "--output", tmp_path / "plain",
                    "--end", 2.0, "--every", 2)
    hidden = face_correlations(woman, anonymized, every=2)
    shown = face_correlations(woman, plain, every=2)
    print(f"woman: anonymized max {max(hidden):.3f} median {np.median(hidden):.3f}; "
          f"plain min {min(shown):.3f} median {np.median(shown):.3f} ({len(hidden)} boxes)")
    assert len(hidden) >= 20 and max(hidden) < 0.2
    assert len(shown) == len(hidden) and min(shown) > 0.5  # the metric sees faces
    # Six faces, captions over neighbours.
    image, _ = group6
    still_video = write_video(tmp_path / "group6.mp4", still(image, 0.5), STILL_FPS)
    group = analyze(still_video, "--anonymize", "--output", tmp_path / "group")
    hidden_group = face_correlations(still_video, group, every=1)
    print(f"group6: anonymized max {max(hidden_group):.3f} ({len(hidden_group)} boxes)")
    assert len(hidden_group) == 30 and max(hidden_group) < 0.2

    for output in (anonymized, plain, group):
        assert_report_embeds_figures_only(output)
        assert_no_embeddings(output)
    assert summary_of(anonymized)["anonymized"] is True
    assert "faces pixelated beyond recognition" in (anonymized / "report.html").read_text()
    # --no-reidentify: per face track only, as before.
    plain_summary = summary_of(plain)
    assert plain_summary["persons"] == {} and "person_id" not in plain_summary["faces"]["face_1"]
    assert {row["person_id"] for row in rows_of(plain)} == {""}


@pytest.mark.slow
def test_save_people_writes_the_embeddings_only_where_asked(tmp_path):
    saved = tmp_path / "keep" / "people.json"
    output = analyze(footage("single_face.mp4"), "--save-people", saved,
                     "--output", tmp_path / "out", "--every", 6, "--no-video")
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    data = json.loads(saved.read_text())
    assert data["embedder"] == "dlib_resnet_v1" and data["dimension"] == 128
    assert [p["person_id"] for p in data["people"]] == list(summary_of(output)["persons"])
    assert len(data["people"][0]["recent"][0]) == 128
    assert_no_embeddings(output)

    class Embedder:
        name, dimension = "dlib_resnet_v1", 128

    assert PersonRegistry(Embedder()).import_people(data) == 1  # usable in a later session
    # ... and by fer-analyze: the person keeps the saved id (or name) in the next
    # session (a fresh run would call them person_1).
    data["people"][0]["person_id"] = "person_7"
    saved.write_text(json.dumps(data))
    again = analyze(footage("single_face.mp4"), "--people", saved,
                    "--output", tmp_path / "again", "--every", 6, "--no-video")
    assert list(summary_of(again)["persons"]) == ["person_7"]
    data["people"][0]["name"] = "child"
    saved.write_text(json.dumps(data))
    named = analyze(footage("single_face.mp4"), "--people", saved, "--only", "child",
                    "--output", tmp_path / "named", "--every", 6, "--no-video")
    assert list(summary_of(named)["persons"]) == ["child"]


# --- recordings and the settling of provisional ids ---------------------------------

def test_recorded_person_ids_make_the_persons(tmp_path):
    labels = ["negative", "neutral", "positive"]
    lines = []
    for i in range(6):  # child as face_1, then (after a loss) as face_4; a stranger once
        emotions = [{"face_id": "face_1" if i < 3 else "face_4", "person_id": "child",
                     "labels": labels, "probabilities": [0.1, 0.2, 0.7]}]
        if i == 2:
            emotions.append({"face_id": "face_2", "person_id": "person_3",
                             "labels": labels, "probabilities": [0.7, 0.2, 0.1]})
        lines.append(json.dumps({"stamp": 10.0 + 0.5 * i, "emotions": emotions}))
    recording = tmp_path / "session" / "emotions.jsonl"
    recording.parent.mkdir()
    recording.write_text("\n".join(lines) + "\n")
    output = analyze("--from-jsonl", recording, "--output", tmp_path / "all")
    persons = summary_of(output)["persons"]
    assert list(persons) == ["child", "person_3"]
    assert persons["child"]["face_ids"] == ["face_1", "face_4"]
    assert persons["child"]["frames"] == 6 and persons["child"]["name"] == "child"
    assert persons["person_3"]["name"] is None
    only = analyze("--from-jsonl", recording, "--output", tmp_path / "only", "--only", "child")
    assert list(summary_of(only)["persons"]) == ["child"]
    assert {row["face_id"] for row in rows_of(only)} == {"face_1", "face_4"}


def test_a_handed_back_provisional_id_is_settled_on_its_track_only():
    class Registry:
        def __init__(self):
            self.ids = ["person_1", "person_2"]

        def people(self):
            return [type("Person", (), {"person_id": p}) for p in self.ids]

    def frame(*faces: Tuple[str, str]) -> FrameResult:
        results = [FaceResult(face_id, None, None, None, "", "", 0.0, 0.0, 0.0, None,
                              person_id=person_id) for face_id, person_id in faces]
        return FrameResult(0.0, results, len(results))

    registry = Registry()
    changes = PersonChanges(registry)
    changes.observe(frame(("face_1", "person_1"), ("face_2", "person_2")))
    registry.ids = ["person_1", "person_2", "person_3"]
    changes.observe(frame(("face_3", "person_3")))  # provisional, new
    registry.ids = ["person_1", "person_2"]  # ... handed back: person_3 dropped
    changes.observe(frame(("face_3", "person_1")))
    changes.observe(frame(("face_2", "person_1")))  # a switch: person_2 is remembered

    def row(face_id: str, person_id: str) -> FaceRow:
        return FaceRow(0, 0.0, 0.0, face_id, (0, 0, 1, 1), 1.0, "a", 1.0, "a", (1.0,), (1.0,),
                       0.0, 1.0, 0.0, 0.0, 1, 0.0, person_id=person_id)

    rows = [row("face_3", "person_3"), row("face_3", "person_1"), row("face_2", "person_2"),
            row("face_9", "person_3")]
    assert changes.settle(rows) == 1
    assert [r.person_id for r in rows] == ["person_1", "person_1", "person_2", "person_3"]
