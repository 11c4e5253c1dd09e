"""PersonRegistry with synthetic embeddings: identities, conflicts, bounds, known people.

The fake embedder reads who a face is from its box: ``y`` is the index of a
synthetic face vector, so a test decides what each track shows.  Real faces
on real footage are in test_face_embedding.py.
"""

import json
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pytest

from fer_ros.face_embedding import unit_rows
from fer_ros.identity import (CHECK_INTERVAL_S, PROVISIONAL_LOOKS, STALE_TRACK_S,
                              PersonRegistry)

DIMENSION = 16
FRAME = np.zeros((4, 4, 3), np.uint8)


class FakeEmbedder:
    """Embeds the face vector whose index is the box's ``y``; counts faces embedded."""

    name = "fake"
    dimension = DIMENSION

    def __init__(self, faces: np.ndarray) -> None:
        self.faces = unit_rows(faces)
        self.embedded = 0

    def embed(self, bgr_frame: np.ndarray, boxes: Sequence[Tuple[float, ...]]) -> np.ndarray:
        self.embedded += len(boxes)
        return self.faces[[int(box[1]) for box in boxes]].reshape(-1, DIMENSION)


def orthogonal_faces(count: int) -> np.ndarray:
    """``count`` faces of different people (distance sqrt(2) apart)."""
    return np.eye(DIMENSION, dtype=np.float32)[:count]


def near(face: np.ndarray, distance: float, towards: int) -> np.ndarray:
    """Return a unit vector at ``distance`` from ``face``, rotated towards axis ``towards``."""
    angle = 2.0 * np.arcsin(distance / 2.0)
    other = np.eye(DIMENSION, dtype=np.float32)[towards]
    other = other - face * np.dot(face, other)
    other /= np.linalg.norm(other)
    return (np.cos(angle) * face + np.sin(angle) * other).astype(np.float32)


def box(face: int, x: float = 0.0) -> Tuple[float, float, float, float]:
    return (x, float(face), 50.0, 50.0)


def run(registry: PersonRegistry, frames: List[Tuple[float, Dict[str, int], List[str]]]
        ) -> List[Dict[str, str]]:
    """Feed ``(stamp, {track: face}, ended)`` frames; return every frame's mapping."""
    return [registry.update(stamp, FRAME, {t: box(f) for t, f in faces.items()}, ended)
            for stamp, faces, ended in frames]


def shown(stamps: np.ndarray, faces: Dict[str, int], ended_first: Sequence[str] = ()
          ) -> List[Tuple[float, Dict[str, int], List[str]]]:
    return [(float(s), dict(faces), list(ended_first) if i == 0 else [])
            for i, s in enumerate(stamps)]


@pytest.mark.parametrize("gap_s", [2.0, 10.0, 3600.0])
def test_a_person_keeps_their_id_after_a_gap_of_any_length(gap_s):
    registry = PersonRegistry(FakeEmbedder(orthogonal_faces(3)))
    first = run(registry, shown(np.arange(0, 5, 0.1), {"face_1": 0}))
    # Someone else meanwhile, then the first person again on a new track.
    other = run(registry, shown(np.arange(5, 6, 0.1), {"face_2": 1}, ["face_1"]))
    back = run(registry, shown(np.arange(6 + gap_s, 8 + gap_s, 0.1), {"face_3": 0}, ["face_2"]))
    assert {m["face_1"] for m in first} == {"person_1"}
    assert {m["face_2"] for m in other} == {"person_2"}
    assert {m["face_3"] for m in back} == {"person_1"}


def test_two_people_in_one_frame_are_never_merged_even_when_alike():
    faces = orthogonal_faces(1)
    alike = np.stack([faces[0], near(faces[0], 0.05, 1)])
    registry = PersonRegistry(FakeEmbedder(alike))
    mappings = run(registry, shown(np.arange(0, 3, 0.1), {"face_1": 0, "face_2": 1}))
    assert all(m == {"face_1": "person_1", "face_2": "person_2"} for m in mappings)
    # Both leave and come back together: still two people, one each.
    back = run(registry, shown(np.arange(10, 12, 0.1), {"face_3": 1, "face_4": 0},
                               ["face_1", "face_2"]))
    assert all(len(set(m.values())) == 2 for m in back)
    assert registry.state_size()["people"] == 2


def test_a_newcomer_seen_beside_a_person_never_becomes_them_later():
    faces = orthogonal_faces(1)
    alike = np.stack([faces[0], near(faces[0], 0.1, 1)])
    registry = PersonRegistry(FakeEmbedder(alike))
    run(registry, shown(np.arange(0, 2, 0.1), {"face_1": 0}))
    # face_2 (a look-alike) is born beside face_1, then face_1 ends while
    # face_2 is still provisional: its second looks must not hand it to person_1.
    together = run(registry, shown(np.arange(2, 2.3, 0.1), {"face_1": 0, "face_2": 1}))
    alone = run(registry, shown(np.arange(2.3, 5, 0.1), {"face_2": 1}, ["face_1"]))
    assert together[-1] == {"face_1": "person_1", "face_2": "person_2"}
    assert {m["face_2"] for m in alone} == {"person_2"}


def test_simultaneous_newcomers_are_assigned_together_not_greedily():
    e = np.eye(DIMENSION, dtype=np.float32)
    a, b = e[0], near(e[0], 0.65, 1)
    x1 = near(e[0], 0.30, 1)  # between A (0.30) and B (0.36)
    x2 = near(e[0], 0.35, 2)  # close to A only (0.35; 0.72 from B)
    # Nearest pair first (x1 -> A) would leave x2 a stranger; the joint
    # assignment gives both their person: x1 -> B, x2 -> A.
    registry = PersonRegistry(FakeEmbedder(np.stack([a, b, x1, x2])))
    run(registry, shown(np.arange(0, 1, 0.1), {"face_1": 0, "face_2": 1}))
    after = run(registry, shown(np.arange(3, 3.5, 0.1), {"face_3": 2, "face_4": 3},
                                ["face_1", "face_2"]))
    assert after[0] == {"face_3": "person_2", "face_4": "person_1"}


def test_people_who_swap_places_keep_their_ids():
    registry = PersonRegistry(FakeEmbedder(orthogonal_faces(2)))
    before = run(registry, shown(np.arange(0, 2, 0.1), {"left": 0, "right": 1}))
    # Out of view together, back on the other sides as new tracks.
    after = run(registry, shown(np.arange(4, 6, 0.1), {"left2": 1, "right2": 0},
                                ["left", "right"]))
    assert before[-1] == {"left": "person_1", "right": "person_2"}
    assert all(m == {"left2": "person_2", "right2": "person_1"} for m in after)


def test_a_track_that_jumps_to_another_person_is_re_identified():
    """The tracker keeps both ids through a swap: refresh embeddings fix the persons."""
    embedder = FakeEmbedder(orthogonal_faces(2))
    registry = PersonRegistry(embedder, refresh_interval_s=1.0)
    run(registry, shown(np.arange(0, 3, 0.1), {"left": 0, "right": 1}))
    swapped = run(registry, shown(np.arange(3, 8, 0.1), {"left": 1, "right": 0}))
    assert swapped[0] == {"left": "person_1", "right": "person_2"}  # not seen yet
    assert swapped[-1] == {"left": "person_2", "right": "person_1"}
    # Settled within a few refreshes, and stays so.
    settled = [i for i, m in enumerate(swapped) if m == swapped[-1]]
    assert settled == list(range(settled[0], len(swapped))) and settled[0] <= 35


def test_a_first_look_away_is_handed_back_after_a_second_look():
    faces = orthogonal_faces(3)  # face 2: the first person turned away
    embedder = FakeEmbedder(faces)
    registry = PersonRegistry(embedder)
    run(registry, shown(np.arange(0, 2, 0.1), {"face_1": 0}))
    first = registry.update(5.0, FRAME, {"face_2": box(2)}, ["face_1"])
    assert first == {"face_2": "person_2"}  # provisional: looks like a stranger
    later = run(registry, shown(np.arange(5.1, 7, 0.1), {"face_2": 0}))
    assert later[-1] == {"face_2": "person_1"}
    assert registry.state_size()["people"] == 1
    # The dropped provisional number is not reused.
    newcomer = registry.update(8.0, FRAME, {"face_3": box(1)}, ["face_2"])
    assert newcomer == {"face_3": "person_3"}


def test_a_lingering_track_and_a_new_track_of_one_person_are_split_when_both_show():
    faces = orthogonal_faces(1)
    twins = np.stack([faces[0], near(faces[0], 0.05, 1)])
    registry = PersonRegistry(FakeEmbedder(twins))
    run(registry, shown(np.arange(0, 1, 0.1), {"face_1": 0}))
    # face_1 is undetected (still alive in the tracker); face_2 is the same person.
    assert registry.update(1.2, FRAME, {"face_2": box(0)}) == {"face_2": "person_1"}
    both = registry.update(1.3, FRAME, {"face_1": box(0), "face_2": box(1)})
    assert both["face_1"] == "person_1" and both["face_2"] != "person_1"


def test_embeddings_at_birth_then_sparsely_with_a_budget_per_frame():
    embedder = FakeEmbedder(orthogonal_faces(6))
    registry = PersonRegistry(embedder, refresh_interval_s=10.0, max_refreshes_per_update=1)
    faces = {f"face_{i}": i for i in range(6)}
    counts = []
    for stamp in np.arange(0, 100, 0.1):
        before = embedder.embedded
        registry.update(float(stamp), FRAME, {t: box(f) for t, f in faces.items()})
        counts.append(embedder.embedded - before)
    assert counts[0] == 6 and max(counts[1:]) == 1
    # births + provisional looks + one refresh per face per 10 s
    assert embedder.embedded <= 6 * PROVISIONAL_LOOKS + 6 * 10 + 6


def test_state_is_bounded_and_the_least_recently_seen_is_forgotten():
    embedder = FakeEmbedder(orthogonal_faces(8))
    registry = PersonRegistry(embedder, max_people=3, max_embeddings_per_person=4,
                              refresh_interval_s=0.5)
    ids = []
    for index, face in enumerate([0, 1, 2, 0, 3, 4]):  # one after the other, 10 s each
        track = f"face_{index}"
        ended = [f"face_{index - 1}"] if index else []
        mapping = run(registry, shown(np.arange(10 * index, 10 * index + 10, 0.1),
                                      {track: face}, ended))
        ids.append(mapping[-1][track])
    # person_1 came back before person_4 arrived, so person_2 went first.
    assert ids == ["person_1", "person_2", "person_3", "person_1", "person_4", "person_5"]
    size = registry.state_size()
    assert size["people"] == 3 and size["tracks"] == 1 and size["embeddings"] <= 3 * 4
    assert [p.person_id for p in registry.people()] == ["person_1", "person_4", "person_5"]
    # person_2 was forgotten: they come back as someone new.
    assert registry.update(60.0, FRAME, {"face_9": box(1)}, ["face_5"]) == \
        {"face_9": "person_6"}
    # A track that is never ended is forgotten once stale.
    registry.update(60.0 + STALE_TRACK_S + 1, FRAME, {})
    assert registry.state_size()["tracks"] == 0


def test_known_people_carry_their_names_and_strangers_stay_anonymous():
    faces = orthogonal_faces(3)
    registry = PersonRegistry(FakeEmbedder(faces))
    registry.enroll("child", near(faces[0], 0.2, 5)[None])
    registry.enroll("therapist", np.stack([faces[1], near(faces[1], 0.1, 6)]))
    mapping = run(registry, shown(np.arange(0, 2, 0.1), {"a": 0, "b": 1, "c": 2}))
    assert mapping[-1] == {"a": "child", "b": "therapist", "c": "person_1"}
    # Known people stay through the cap and are not counted in it.
    assert {p.person_id for p in registry.people()} == {"child", "therapist", "person_1"}
    for bad in ("", "person_2", "two words", "1child", "x" * 65):
        with pytest.raises(ValueError, match="not allowed"):
            registry.enroll(bad, faces[:1])
    with pytest.raises(ValueError, match=r"must be \[K, 16\]"):
        registry.enroll("parent", np.zeros((1, 8)))


def test_export_and_import_recognise_people_in_a_new_session():
    faces = orthogonal_faces(3)
    registry = PersonRegistry(FakeEmbedder(faces))
    registry.enroll("child", faces[:1])
    run(registry, shown(np.arange(0, 2, 0.1), {"a": 0, "b": 1}))
    saved = registry.export_people()
    assert saved["embedder"] == "fake" and len(saved["people"]) == 2
    # What a user would write: JSON with plain lists.
    saved = json.loads(json.dumps(saved, default=lambda array: array.tolist()))
    fresh = PersonRegistry(FakeEmbedder(faces))
    assert fresh.import_people(saved) == 2
    mapping = run(fresh, shown(np.arange(0, 1, 0.1), {"x": 1, "y": 0, "z": 2}))
    assert mapping[-1] == {"x": "person_1", "y": "child", "z": "person_2"}
    # Imported people count in the cap: a newcomer makes room.
    capped = PersonRegistry(FakeEmbedder(faces), max_people=1)
    capped.import_people(saved)
    assert capped.update(0.0, FRAME, {"z": box(2)}) == {"z": "person_2"}
    assert [p.person_id for p in capped.people()] == ["child", "person_2"]
    other = dict(saved, embedder="dlib_resnet_v1")
    with pytest.raises(ValueError, match="exported with embedder 'dlib_resnet_v1'"):
        PersonRegistry(FakeEmbedder(faces)).import_people(other)


def test_people_saved_by_one_session_are_enrolled_from_their_file(tmp_path):
    from fer_ros.face_embedding import EnrollmentError

    faces = orthogonal_faces(3)
    registry = PersonRegistry(FakeEmbedder(faces))
    registry.enroll("child", faces[:1])
    run(registry, shown(np.arange(0, 2, 0.1), {"a": 0, "b": 1}))
    saved = tmp_path / "people.json"
    saved.write_text(json.dumps(registry.export_people(), default=lambda a: a.tolist()))
    fresh = PersonRegistry(FakeEmbedder(faces))
    assert fresh.enroll_from_file(saved) == 2
    assert run(fresh, shown([0.0], {"x": 1, "y": 0}))[-1] == {"x": "person_1", "y": "child"}

    bad = tmp_path / "bad.json"
    for content, message in (("{", "not a people file written by --save-people"),
                             ("[1, 2]", "no list of people"),
                             (json.dumps({"embedder": "other", "dimension": 3, "people": []}),
                              "exported with embedder 'other'"),
                             (json.dumps({"embedder": "fake", "dimension": DIMENSION,
                                          "people": [{"name": "child"}]}), "person_id")):
        bad.write_text(content)
        with pytest.raises(EnrollmentError, match=message) as error:
            PersonRegistry(FakeEmbedder(faces)).enroll_from_file(bad)
        assert str(error.value).startswith(f"{bad}: ") and "\n" not in str(error.value)
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(EnrollmentError, match="not a people file"):
        PersonRegistry(FakeEmbedder(faces)).enroll_from_file(bad)
    with pytest.raises(EnrollmentError, match="not a people file"):
        PersonRegistry(FakeEmbedder(faces)).enroll_from_file(tmp_path / "missing.json")


def test_a_clock_that_goes_back_keeps_identities():
    registry = PersonRegistry(FakeEmbedder(orthogonal_faces(2)))
    run(registry, shown(np.arange(0, 3, 0.1), {"face_1": 0}))
    again = run(registry, shown(np.arange(0, 2, 0.1), {"face_2": 0}, ["face_1"]))
    assert {m["face_2"] for m in again} == {"person_1"}


def test_parameters_are_checked():
    embedder = FakeEmbedder(orthogonal_faces(1))
    for kwargs in ({"match_distance": 0.0}, {"refresh_interval_s": 0.0}, {"max_people": 0},
                   {"max_embeddings_per_person": 0}, {"max_refreshes_per_update": -1}):
        with pytest.raises(ValueError):
            PersonRegistry(embedder, **kwargs)
    assert CHECK_INTERVAL_S < 1.0  # a second look comes within a second
