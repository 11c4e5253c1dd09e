"""dlib face embeddings and PersonRegistry on clips built from the project's footage.

Each clip runs the real chain: BlazeFace -> IoU tracker -> PersonRegistry
with the dlib embedder.  tools/setup.sh installs dlib-bin and
face-recognition-models, so nothing here skips.
"""

import sys
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Tuple

import cv2
import numpy as np
import pytest

from conftest import footage
from fer_ros.detection import FaceDetector, create_detector
from fer_ros.face_embedding import (DLIB_RECOGNITION_FILE, DlibFaceEmbedder, EnrollmentError,
                                    create_face_embedder, embeddings_from_folder)
from fer_ros.identity import PersonRegistry
from fer_ros.model_files import ModelLoadError
from fer_ros.tracking import FaceTracker

#: Frames per second the clips are processed at (every 3rd frame of 30 fps video).
CLIP_FPS = 10.0
#: The part of WolfgangLanger_Pexels.mp4 replaced by an absence, seconds.
CUT_START_S, CUT_END_S = 6.2, 8.2
Frames = Iterable[Tuple[float, np.ndarray]]


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return create_detector()


@pytest.fixture(scope="module")
def embedder() -> DlibFaceEmbedder:
    return DlibFaceEmbedder()


@pytest.fixture(scope="module")
def group6() -> Tuple[np.ndarray, List[Tuple[float, float, float, float]]]:
    """group6.jpg and its six face boxes, left to right."""
    image = cv2.imread(str(footage("group6.jpg")))
    faces = sorted(create_detector().detect(image), key=lambda face: face.x)
    assert len(faces) == 6
    return image, [face.box for face in faces]


def identify(frames: Frames, detector: FaceDetector, registry: PersonRegistry
             ) -> List[Dict[str, Tuple[str, float]]]:
    """Run a clip; per frame ``{track_id: (person_id, box centre x)}``."""
    tracker = FaceTracker(max_age_s=1.0)
    results = []
    for stamp, frame in frames:
        faces = detector.detect(frame)
        update = tracker.update([face.box for face in faces], stamp)
        persons = registry.update(stamp, frame, {t: f.box for t, f in zip(update.face_ids, faces)},
                                  update.ended)
        results.append({t: (persons[t], f.x + f.width / 2)
                        for t, f in zip(update.face_ids, faces)})
    return results


def wolfgang_with_a_gap(gap_s: float) -> Iterator[Tuple[float, np.ndarray]]:
    """WolfgangLanger_Pexels.mp4 (10 fps) with 6.2-8.2 s replaced by ``gap_s`` of empty frames.

    As in issue 17, where a 2 s cut made two faces in fer-analyze.
    """
    capture = cv2.VideoCapture(str(footage("WolfgangLanger_Pexels.mp4")))
    shift = gap_s - (CUT_END_S - CUT_START_S)
    index, gap_shown = -1, False
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        index += 1
        time_s = index / 30.0
        if index % 3 or CUT_START_S <= time_s < CUT_END_S:
            continue
        if time_s < CUT_START_S:
            yield time_s, frame
            continue
        if not gap_shown:  # the person is away: the camera sees an empty room
            for stamp in np.arange(CUT_START_S, CUT_START_S + gap_s, 0.5):
                yield float(stamp), np.zeros_like(frame)
            gap_shown = True
        yield time_s + shift, frame


def still(image: np.ndarray, start: float, seconds: float) -> Frames:
    return [(start + i / CLIP_FPS, image) for i in range(int(seconds * CLIP_FPS))]


def face_crop(image: np.ndarray, box: Tuple[float, float, float, float], side: int) -> np.ndarray:
    """Crop a square around a face (2.2 box sides), resized to ``side`` pixels."""
    x, y, width, height = box
    half = 1.1 * max(width, height)
    cx, cy = x + width / 2, y + height / 2
    top, left = int(max(0, cy - half)), int(max(0, cx - half))
    crop = image[top:int(cy + half), left:int(cx + half)]
    return cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    canvas = np.full((360, 640, 3), 90, np.uint8)
    canvas[60:300, 60:300] = left
    canvas[60:300, 340:580] = right
    return canvas


# ----------------------------------------------------------------- embedder


def test_embeddings_are_unit_vectors_that_tell_people_apart(embedder, group6):
    image, boxes = group6
    vectors = embedder.embed(image, boxes)
    assert vectors.shape == (6, 128) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    distances = np.linalg.norm(vectors[:, None] - vectors[None], axis=2)
    assert distances[np.triu_indices(6, 1)].min() > 0.40
    # The same face at half the size, and cut by the frame's edge, stays close.
    small = cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    x, y, width, height = boxes[0]
    again = embedder.embed(small, [(x / 2, y / 2, width / 2, height / 2),
                                   (-width / 4, y / 2, width / 2, height / 2)])
    assert np.linalg.norm(again[0] - vectors[0]) < 0.25
    assert np.isfinite(again).all()
    assert embedder.embed(image, []).shape == (0, 128)


def test_missing_dlib_or_model_files_give_one_clear_line(tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError) as error:
        DlibFaceEmbedder(tmp_path)
    assert str(error.value).startswith(str(tmp_path)) and "\n" not in str(error.value)
    (tmp_path / "shape_predictor_5_face_landmarks.dat").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="cannot load the face landmark model"):
        DlibFaceEmbedder(tmp_path)
    monkeypatch.setitem(sys.modules, "dlib", None)
    with pytest.raises(ModelLoadError, match=r"dlib is not installed.*pip install dlib-bin"):
        create_face_embedder("dlib")
    with pytest.raises(ValueError, match="unknown face embedding model"):
        create_face_embedder("facenet")
    assert DLIB_RECOGNITION_FILE.endswith(".dat")


# ------------------------------------------------------ re-identification


@pytest.mark.slow
@pytest.mark.parametrize("gap_s", [2.0, 10.0])
def test_a_person_away_for_a_while_keeps_one_person_id(gap_s, detector, embedder):
    results = identify(wolfgang_with_a_gap(gap_s), detector, PersonRegistry(embedder))
    tracks = {t for frame in results for t in frame}
    persons = {person for frame in results for person, _ in frame.values()}
    assert len(tracks) >= 2  # the tracker lost her: the registry joined the tracks
    assert persons == {"person_1"}


@pytest.mark.slow
def test_six_people_in_a_still_stay_six_people_through_a_loss(detector, embedder, group6):
    image, _ = group6
    # Back after 1.5 s out of view (all tracks end): mirrored, smaller, brighter.
    smaller = cv2.resize(image, None, fx=0.85, fy=0.85, interpolation=cv2.INTER_AREA)
    later = cv2.flip(cv2.convertScaleAbs(smaller, alpha=1.1, beta=15), 1)
    frames = list(still(image, 0.0, 1.0))
    frames += still(np.zeros_like(image), 1.0, 1.5) + still(later, 2.5, 1.0)
    results = identify(frames, detector, PersonRegistry(embedder))
    before = [[p for p, _ in sorted(frame.values(), key=lambda v: v[1])]
              for frame in results[:10]]
    after = [[p for p, _ in sorted(frame.values(), key=lambda v: v[1])]
             for frame in results[-10:]]
    assert len(set(before[0])) == 6
    assert all(order == before[0] for order in before)
    assert all(order == before[0][::-1] for order in after)  # mirrored
    assert not set(results[-1]) & set(results[0])  # new tracks, same people


def two_faces(group6: Tuple[np.ndarray, list]) -> Tuple[np.ndarray, np.ndarray]:
    image, boxes = group6
    return face_crop(image, boxes[1], 240), face_crop(image, boxes[2], 240)


@pytest.mark.slow
def test_two_people_who_swap_places_out_of_view_keep_their_ids(detector, embedder, group6):
    a, b = two_faces(group6)
    frames = list(still(side_by_side(a, b), 0.0, 2.0))
    frames += still(np.full((360, 640, 3), 90, np.uint8), 2.0, 1.5)
    frames += still(side_by_side(b, a), 3.5, 2.0)
    results = identify(frames, detector, PersonRegistry(embedder))
    left_right = [[p for p, _ in sorted(frame.values(), key=lambda v: v[1])]
                  for frame in results if frame]
    assert left_right[0] == ["person_1", "person_2"]
    assert all(order == ["person_1", "person_2"] for order in left_right[:20])
    assert all(order == ["person_2", "person_1"] for order in left_right[20:])


@pytest.mark.slow
def test_two_people_who_swap_places_under_the_tracker_get_their_ids_back(
        detector, embedder, group6):
    """The IoU tracker keeps both tracks through an instant swap; refreshes fix persons."""
    a, b = two_faces(group6)
    frames = list(still(side_by_side(a, b), 0.0, 3.0)) + still(side_by_side(b, a), 3.0, 4.0)
    results = identify(frames, detector, PersonRegistry(embedder, refresh_interval_s=1.0))
    assert set(results[0]) == set(results[-1])  # the tracker kept its two tracks
    left_right = [[p for p, _ in sorted(frame.values(), key=lambda v: v[1])]
                  for frame in results]
    assert left_right[0] == ["person_1", "person_2"]
    assert all(order == ["person_2", "person_1"] for order in left_right[-10:])


# -------------------------------------------------------------- known people


def write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


@pytest.mark.slow
def test_known_people_are_named_and_strangers_stay_anonymous(tmp_path, detector, embedder,
                                                             group6):
    capture = cv2.VideoCapture(str(footage("WolfgangLanger_Pexels.mp4")))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 30)
    ok, portrait = capture.read()
    assert ok
    image, boxes = group6
    write(tmp_path / "people" / "child" / "portrait.jpg", portrait)
    write(tmp_path / "people" / "therapist" / "photo.png", face_crop(image, boxes[0], 200))
    registry = PersonRegistry(embedder)
    assert registry.enroll_from_folder(tmp_path / "people", detector) == \
        {"child": 1, "therapist": 1}
    # The enrolled woman later in the video (laughing, 9-11 s), then a stranger.
    capture.set(cv2.CAP_PROP_POS_FRAMES, 270)
    clip = []
    for index in range(20):
        ok, frame = capture.read()
        capture.grab()
        capture.grab()
        clip.append((9.0 + index / CLIP_FPS, frame))
    stranger = side_by_side(face_crop(image, boxes[3], 240), np.full((240, 240, 3), 90, np.uint8))
    clip += still(stranger, 20.0, 1.0)
    persons = [person for frame in identify(clip, detector, registry)
               for person, _ in frame.values()]
    assert set(persons[:20]) == {"child"}
    assert set(persons[20:]) == {"person_1"}


def test_photos_with_no_face_or_two_faces_are_named_in_one_line(
        tmp_path, detector, embedder, group6):
    a, b = two_faces(group6)
    empty = write(tmp_path / "one" / "child" / "wall.jpg", np.full((300, 300, 3), 120, np.uint8))
    with pytest.raises(EnrollmentError) as error:
        embeddings_from_folder(tmp_path / "one", detector, embedder)
    assert str(error.value).startswith(f"{empty}: no face found") and "\n" not in str(error.value)
    write(tmp_path / "two" / "child" / "a.jpg", a)
    pair = write(tmp_path / "two" / "therapist" / "pair.png", side_by_side(a, b))
    with pytest.raises(EnrollmentError) as error:
        embeddings_from_folder(tmp_path / "two", detector, embedder)
    assert str(error.value).startswith(f"{pair}: 2 faces found") and "\n" not in str(error.value)
    with pytest.raises(EnrollmentError, match="no sub-folder"):
        embeddings_from_folder(tmp_path / "one" / "child", detector, embedder)
    write(tmp_path / "bad" / "Dr Who" / "a.jpg", a)
    with pytest.raises(EnrollmentError, match="Dr Who: folder name is not a valid person name"):
        PersonRegistry(embedder).enroll_from_folder(tmp_path / "bad", detector)
