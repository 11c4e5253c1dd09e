"""Person re-identification: one ``person_id`` per person across a whole session.

The tracker's face ids (``face_3``) end as soon as a face is lost for
``track_max_age_s``.  :class:`PersonRegistry` maps each track to a person
that outlives it (REP-155 separates face and person ids the same way):

- **Birth.**  A new track's face is embedded (:mod:`fer_ros.face_embedding`)
  and matched against the remembered people that no other track shows in
  this frame; simultaneous new tracks are assigned together (Hungarian, on
  the Euclidean distance between the face and each person's centroid), so
  two faces in one frame never become one person.  A face farther than
  ``match_distance`` from everyone is a new person, ``person_1``,
  ``person_2``... in order of first appearance.
- **A second look.**  A new person stays *provisional* for its first
  :data:`PROVISIONAL_LOOKS` embeddings (one every :data:`CHECK_INTERVAL_S`):
  a face first seen turned away or behind a hand that then matches a
  remembered person (never seen in the same frame as it) is handed back to
  that person and the provisional one is dropped (its number is not
  reused, so numbers may skip).  So a track's ``person_id`` may change
  during its first ~1 s, and after that only on evidence:
- **Switches.**  Every ``refresh_interval_s`` a track is embedded again; a
  face :data:`SWITCH_STRIKES` times in a row farther than
  :data:`SWITCH_DISTANCE` from its person is another person (the IoU
  tracker carried the id onto someone else, e.g. two people swapping
  places): the track is re-identified as if new.  Likewise when two tracks
  of one person show in one frame (one had lingered undetected).
- **Known people.**  :meth:`PersonRegistry.enroll` adds people by name
  (``child``, ``therapist``); a track matched to one carries the name as its
  ``person_id``.  Unmatched people stay anonymous.
- **Bounded.**  At most ``max_people`` anonymous people (the least recently
  seen without a live track is forgotten first), at most
  ``max_embeddings_per_person`` recent embeddings each, at most
  ``max_refreshes_per_update`` refresh embeddings per frame.  Embeddings stay
  in memory; :meth:`PersonRegistry.export_people` / ``import_people`` exist
  for a user who asks to keep them.

Per-frame use (after :meth:`fer_ros.tracking.FaceTracker.update`)::

    persons = registry.update(stamp, bgr, {face_id: detection.box ...},
                              tracker_update.ended)   # {face_id: person_id}

Cost: a frame with no new track and no refresh due costs microseconds; each
embedding ~0.1 s (dlib, see :mod:`fer_ros.face_embedding`).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Deque, Dict, Iterable, List, Mapping, Optional, Sequence, Set

import numpy as np
from scipy.optimize import linear_sum_assignment

from fer_ros.detection import FaceDetector
from fer_ros.face_embedding import (Box, EnrollmentError, FaceEmbedder,
                                    embeddings_from_folder, unit_rows)

#: A face closer than this to a person's centroid is that person (Euclidean
#: distance between unit embeddings; measured with dlib on the project's
#: footage: same person <= 0.39 against a centroid, different people >= 0.43
#: except one look-alike pair at 0.35; see fer_ros.face_embedding).
MATCH_DISTANCE = 0.40
#: A settled track's face this far from its person counts a strike: above
#: every same-person distance measured (max 0.47 between two frames).
SWITCH_DISTANCE = 0.50
#: Consecutive strikes after which a track is re-identified.
SWITCH_STRIKES = 2
#: Seconds between two embeddings of a settled track (bounded CPU).
REFRESH_INTERVAL_S = 10.0
#: Seconds between the looks of a provisional or suspect track.
CHECK_INTERVAL_S = 0.5
#: Embeddings (birth included) during which a new person may still turn out
#: to be a remembered one.
PROVISIONAL_LOOKS = 3
#: Anonymous people remembered at most (enrolled ones are not counted).
MAX_PEOPLE = 100
#: Recent embeddings kept per person (besides enrolment photos).
MAX_EMBEDDINGS_PER_PERSON = 16
#: Refresh embeddings computed per update at most (births are never delayed).
MAX_REFRESHES_PER_UPDATE = 1
#: A track neither updated nor ended for this long is forgotten, seconds.
STALE_TRACK_S = 60.0
#: Names of known people: they become person ids, and ROS names.
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
#: Anonymous person ids; reserved, so no known person may be named like this.
ANONYMOUS_PATTERN = re.compile(r"person_[0-9]+")
#: Cost of an assignment that is not allowed (above any real distance).
_FORBIDDEN = 1e6


def valid_name(name: str) -> bool:
    """Tell whether ``name`` may name a known person (and be their person id)."""
    return bool(NAME_PATTERN.fullmatch(name)) and not ANONYMOUS_PATTERN.fullmatch(name)


@dataclass
class Person:
    """One remembered person.

    :param person_id: ``person_N``, or the name of a known person.
    :param name: the known person's name, None when anonymous.
    :param enrolled: [K, D] embeddings from enrolment photos (never dropped).
    :param recent: up to ``max_embeddings_per_person`` embeddings seen live.
    :param first_seen: stamp of the first frame showing them (NaN: not yet).
    :param last_seen: stamp of the last frame showing them (NaN: not yet).
    """

    person_id: str
    name: Optional[str]
    enrolled: np.ndarray
    recent: Deque[np.ndarray]
    first_seen: float = math.nan
    last_seen: float = math.nan
    centroid: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.update_centroid()

    def add(self, embedding: np.ndarray) -> None:
        """Remember one more embedding (the oldest live one goes when full)."""
        self.recent.append(embedding)
        self.update_centroid()

    def update_centroid(self) -> None:
        """Recompute the unit mean of every embedding held."""
        stacked = np.concatenate([self.enrolled, np.array(self.recent, np.float32)
                                  .reshape(-1, self.enrolled.shape[1])])
        if not len(stacked):
            self.centroid = np.zeros(self.enrolled.shape[1], np.float32)
            return
        self.centroid = unit_rows(stacked.mean(axis=0, keepdims=True))[0]


@dataclass
class _Track:
    person_id: str
    born: float
    last_seen: float
    next_look: float
    looks: int = 1
    provisional: bool = False
    strikes: int = 0
    co_detected: Set[str] = field(default_factory=set)


class PersonRegistry:
    """Give each short-lived face track a person id that survives losses.

    :param embedder: computes face embeddings (e.g. ``DlibFaceEmbedder``).
    :param match_distance: a face closer than this to a person is them.
    :param refresh_interval_s: seconds between embeddings of a settled track.
    :param max_people: anonymous people remembered at most.
    :param max_embeddings_per_person: recent embeddings kept per person.
    :param max_refreshes_per_update: refresh embeddings per update at most.
    """

    def __init__(self, embedder: FaceEmbedder, match_distance: float = MATCH_DISTANCE,
                 refresh_interval_s: float = REFRESH_INTERVAL_S, max_people: int = MAX_PEOPLE,
                 max_embeddings_per_person: int = MAX_EMBEDDINGS_PER_PERSON,
                 max_refreshes_per_update: int = MAX_REFRESHES_PER_UPDATE) -> None:
        if not 0.0 < match_distance < 2.0:
            raise ValueError(f"match_distance must be in (0, 2), got {match_distance}")
        if refresh_interval_s <= 0.0:
            raise ValueError(f"refresh_interval_s must be > 0, got {refresh_interval_s}")
        for label, value in (("max_people", max_people),
                             ("max_embeddings_per_person", max_embeddings_per_person)):
            if value < 1:
                raise ValueError(f"{label} must be >= 1, got {value}")
        if max_refreshes_per_update < 0:
            raise ValueError(f"max_refreshes_per_update must be >= 0, "
                             f"got {max_refreshes_per_update}")
        self.embedder = embedder
        self.match_distance = match_distance
        self.refresh_interval_s = refresh_interval_s
        self.max_people = max_people
        self.max_embeddings_per_person = max_embeddings_per_person
        self.max_refreshes_per_update = max_refreshes_per_update
        #: Least recently seen first.
        self._people: "OrderedDict[str, Person]" = OrderedDict()
        self._tracks: Dict[str, _Track] = {}
        self._next_number = 1
        self._last_stamp = -math.inf

    # ----------------------------------------------------------------- per frame
    def update(self, stamp: float, frame_bgr: np.ndarray, boxes: Mapping[str, Box],
               ended: Iterable[str] = ()) -> Dict[str, str]:
        """Identify the tracked faces of one frame.

        Call it for every processed frame, also one without faces (empty
        ``boxes``), so that ended tracks are dropped.  It embeds the faces of
        new tracks (all of them, now) and at most ``max_refreshes_per_update``
        others whose look is due; otherwise it computes nothing heavy.

        :param stamp: the frame's time, seconds.
        :param frame_bgr: [H,W,3] uint8 BGR frame (read only when a face is
            embedded).
        :param boxes: ``{track_id: (x, y, width, height)}`` of the faces
            detected in this frame, pixels.
        :param ended: ids of tracks that ended (the tracker's ``ended``).
        :return: ``{track_id: person_id}`` for every track in ``boxes``.
        """
        for track_id in ended:
            self.forget_track(track_id)
        if stamp < self._last_stamp:  # bag loop or clock reset: reschedule
            for track in self._tracks.values():
                track.next_look = stamp
        self._last_stamp = stamp
        for track_id in [t for t, track in self._tracks.items()
                         if stamp - track.last_seen > STALE_TRACK_S and t not in boxes]:
            self.forget_track(track_id)
        # A person shows at most one face per frame.  Two tracks of one person
        # (one lingered undetected while the person got a new one) that show
        # together are identified again, jointly, as if new.
        by_person: Dict[str, List[str]] = {}
        for track_id in boxes:
            if track_id in self._tracks:
                by_person.setdefault(self._tracks[track_id].person_id, []).append(track_id)
        holders = {p: tracks[0] for p, tracks in by_person.items() if len(tracks) == 1}
        births = [t for t in boxes if t not in self._tracks or
                  self._tracks[t].person_id not in holders]
        for track_id in births:
            self.forget_track(track_id)
        if births:
            embeddings = self.embedder.embed(frame_bgr, [boxes[t] for t in births])
            self._assign(births, embeddings, stamp, blocked=set(holders))
        due = sorted((t for t in holders.values() if self._tracks[t].next_look <= stamp),
                     key=lambda t: (not self._unsettled(t), self._tracks[t].next_look))
        due = due[:self.max_refreshes_per_update]
        if due:
            embeddings = self.embedder.embed(frame_bgr, [boxes[t] for t in due])
            for track_id, embedding in zip(due, embeddings):
                self._look_again(track_id, embedding, stamp, boxes)
        shown = {t: self._tracks[t].person_id for t in boxes}
        for track_id, person_id in shown.items():
            track = self._tracks[track_id]
            track.last_seen = stamp
            if track.provisional:
                track.co_detected.update(p for p in shown.values() if p != person_id)
            person = self._people[person_id]
            if math.isnan(person.first_seen):
                person.first_seen = stamp
            person.last_seen = stamp
            self._people.move_to_end(person_id)
        return shown

    def forget_track(self, track_id: str) -> None:
        """Drop a track (ended or no longer shown); its person is remembered."""
        self._tracks.pop(track_id, None)

    def person_of(self, track_id: str) -> Optional[str]:
        """Person id of a live track, None for an unknown track."""
        track = self._tracks.get(track_id)
        return track.person_id if track is not None else None

    # ------------------------------------------------------------ known people
    def enroll(self, name: str, embeddings: np.ndarray) -> None:
        """Add a known person (or more embeddings of one).

        :param name: their person id from now on, e.g. ``"child"``: a letter
            then letters, digits or ``_`` (64 at most), not ``person_<N>``.
        :param embeddings: [K, D] embeddings of their face (K >= 1), by the
            registry's embedder.
        :raises ValueError: for a bad name or embeddings of the wrong shape.
        """
        if not valid_name(name):
            raise ValueError(f"known person name {name!r} is not allowed: use a letter then "
                             f"letters, digits or '_' (not person_<N>)")
        vectors = np.asarray(embeddings, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) == 0 or \
                vectors.shape[1] != self.embedder.dimension:
            raise ValueError(f"embeddings of {name!r} must be [K, {self.embedder.dimension}] "
                             f"with K >= 1, got {vectors.shape}")
        vectors = unit_rows(vectors)
        person = self._people.get(name)
        if person is None:
            person = Person(name, name, vectors, deque(maxlen=self.max_embeddings_per_person))
            self._people[name] = person
            self._people.move_to_end(name, last=False)
        else:
            person.enrolled = np.concatenate([person.enrolled, vectors])
            person.update_centroid()

    def enroll_from_folder(self, folder: Path, detector: FaceDetector) -> Dict[str, int]:
        """Enroll every person of a folder: one sub-folder of photos per name.

        :param folder: e.g. ``people/`` with ``child/*.jpg`` and ``therapist/*.jpg``.
        :param detector: finds the single face in each photo.
        :return: ``{name: photos enrolled}``.
        :raises fer_ros.face_embedding.EnrollmentError: one line naming the
            file or folder (no face, several faces, unreadable, empty, a
            sub-folder name that is not a valid person name).
        """
        folder = Path(folder)
        if folder.is_dir():  # every name is checked before any photo is read
            for sub in sorted(folder.iterdir()):
                if sub.is_dir() and not sub.name.startswith(".") and not valid_name(sub.name):
                    raise EnrollmentError(f"{sub}: folder name is not a valid person name "
                                          f"(a letter then letters, digits or '_')")
        found = embeddings_from_folder(folder, detector, self.embedder)
        for name, vectors in found.items():
            self.enroll(name, vectors)
        return {name: len(vectors) for name, vectors in found.items()}

    def enroll_from_file(self, path: Path) -> int:
        """Remember the people an earlier session saved (``fer-analyze --save-people``).

        :param path: the JSON file :meth:`export_people` was written to.
        :return: the number of people imported.
        :raises fer_ros.face_embedding.EnrollmentError: one line naming the
            file when it is unreadable, not such a file, or from another embedder.
        """
        import json

        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise EnrollmentError(f"{path}: not a people file written by --save-people "
                                  f"({error})") from None
        if not isinstance(data, dict) or not isinstance(data.get("people"), list):
            raise EnrollmentError(f"{path}: not a people file written by --save-people "
                                  "(no list of people)")
        try:
            return self.import_people(data)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise EnrollmentError(f"{path}: {error}") from None

    # ------------------------------------------------------------- inspection
    def people(self) -> List[Person]:
        """Every remembered person, least recently seen first (read only)."""
        return list(self._people.values())

    def state_size(self) -> Dict[str, int]:
        """Sizes of the bounded state: live tracks, people, embeddings held."""
        return {"tracks": len(self._tracks), "people": len(self._people),
                "embeddings": sum(len(p.recent) + len(p.enrolled)
                                  for p in self._people.values())}

    # ------------------------------------------------------- export / import
    def export_people(self) -> Dict[str, Any]:
        """Everything needed to recognise the remembered people in another session.

        Contains face embeddings (biometric data): write it only when a user
        asks for it.

        :return: ``{"embedder": name, "dimension": D, "people": [{"person_id",
            "name", "enrolled": float32 [K, D], "recent": float32 [M, D]}]}``.
        """
        dimension = self.embedder.dimension
        return {"embedder": self.embedder.name, "dimension": dimension,
                "people": [{"person_id": p.person_id, "name": p.name,
                            "enrolled": p.enrolled.copy(),
                            "recent": np.array(p.recent, np.float32).reshape(-1, dimension)}
                           for p in self._people.values()]}

    def import_people(self, data: Mapping[str, Any]) -> int:
        """Remember the people of :meth:`export_people` (same embedder only).

        Known people are enrolled under their names; anonymous ones keep
        their ids, and new anonymous ids continue after the highest one.

        :return: the number of people imported.
        :raises ValueError: when the data come from another embedder or are malformed.
        """
        if data.get("embedder") != self.embedder.name or \
                data.get("dimension") != self.embedder.dimension:
            raise ValueError(f"people were exported with embedder {data.get('embedder')!r} "
                             f"({data.get('dimension')}-d), not {self.embedder.name!r} "
                             f"({self.embedder.dimension}-d)")
        count = 0
        for entry in data.get("people", []):
            dimension = self.embedder.dimension
            enrolled = np.asarray(entry.get("enrolled", []), np.float32).reshape(-1, dimension)
            recent = np.asarray(entry.get("recent", []), np.float32).reshape(-1, dimension)
            person_id = str(entry["person_id"])
            if entry.get("name"):
                self.enroll(str(entry["name"]), np.concatenate([enrolled, recent]))
            elif ANONYMOUS_PATTERN.fullmatch(person_id) and len(recent) \
                    and person_id not in self._people:
                self._people[person_id] = Person(
                    person_id, None, np.zeros((0, dimension), np.float32),
                    deque(unit_rows(recent), maxlen=self.max_embeddings_per_person))
                self._people.move_to_end(person_id, last=False)
                self._next_number = max(self._next_number, int(person_id[7:]) + 1)
            else:
                raise ValueError(f"cannot import person {person_id!r}: not a known name or "
                                 f"an unused person_<N> id with embeddings")
            count += 1
        return count

    # --------------------------------------------------------------- internals
    def _unsettled(self, track_id: str) -> bool:
        track = self._tracks[track_id]
        return track.provisional or track.strikes > 0

    def _distances(self, embeddings: np.ndarray, person_ids: Sequence[str]) -> np.ndarray:
        if not person_ids:
            return np.zeros((len(embeddings), 0))
        centroids = np.stack([self._people[p].centroid for p in person_ids])
        return np.linalg.norm(embeddings[:, None, :] - centroids[None, :, :], axis=2)

    def _assign(self, track_ids: List[str], embeddings: np.ndarray, stamp: float,
                blocked: Set[str]) -> None:
        """Match new tracks to people no other face shows now, else new people."""
        candidates = [p for p in self._people if p not in blocked]
        distances = self._distances(embeddings, candidates)
        matched: Dict[int, str] = {}
        if candidates:
            cost = np.where(distances <= self.match_distance, distances, _FORBIDDEN)
            for row, col in zip(*linear_sum_assignment(cost)):
                if cost[row, col] < _FORBIDDEN:
                    matched[int(row)] = candidates[col]
        for row, track_id in enumerate(track_ids):
            person_id = matched.get(row)
            provisional = person_id is None and PROVISIONAL_LOOKS > 1
            if person_id is None:
                person_id = self._new_person()
            self._people[person_id].add(embeddings[row])
            interval = CHECK_INTERVAL_S if provisional else self.refresh_interval_s
            self._tracks[track_id] = _Track(person_id, stamp, stamp, stamp + interval,
                                            provisional=provisional)

    def _look_again(self, track_id: str, embedding: np.ndarray, stamp: float,
                    boxes: Mapping[str, Box]) -> None:
        """Use a later embedding of a track: second look, memory, or switch."""
        track = self._tracks[track_id]
        track.looks += 1
        person = self._people[track.person_id]
        if track.provisional:
            shown = {self._tracks[t].person_id for t in boxes if t in self._tracks}
            eligible = [p for p in self._people
                        if p not in shown and p not in track.co_detected]
            if eligible:
                own = unit_rows((person.centroid + embedding)[None])
                distances = np.minimum(self._distances(embedding[None], eligible),
                                       self._distances(own, eligible))[0]
                best = int(np.argmin(distances))
                if distances[best] <= self.match_distance:
                    self._hand_back(track_id, eligible[best], embedding)
                    track.next_look = stamp + self.refresh_interval_s
                    return
            person.add(embedding)
            track.provisional = track.looks < PROVISIONAL_LOOKS
        else:
            distance = float(np.linalg.norm(embedding - person.centroid))
            if distance <= self.match_distance:
                person.add(embedding)
            track.strikes = track.strikes + 1 if distance > SWITCH_DISTANCE else 0
            if track.strikes >= SWITCH_STRIKES:
                self.forget_track(track_id)
                # What this track showed as its person was someone else: it
                # is no evidence that its person shared a frame with anyone.
                for other in self._tracks.values():
                    other.co_detected.discard(track.person_id)
                shown = {self._tracks[t].person_id for t in boxes if t in self._tracks}
                self._assign([track_id], embedding[None], stamp, blocked=shown)
                return
        track.next_look = stamp + (CHECK_INTERVAL_S if self._unsettled(track_id)
                                   else self.refresh_interval_s)

    def _hand_back(self, track_id: str, person_id: str, embedding: np.ndarray) -> None:
        """Give a provisional track to a remembered person; drop its own if unused."""
        track = self._tracks[track_id]
        provisional_id = track.person_id
        track.person_id = person_id
        track.provisional = False
        self._people[person_id].add(embedding)
        # Its number is not reused: consumers may have seen it for a moment.
        if not any(t.person_id == provisional_id for t in self._tracks.values()):
            del self._people[provisional_id]

    def _new_person(self) -> str:
        """Create an anonymous person, forgetting the least recently seen if full."""
        anonymous = [p.person_id for p in self._people.values() if p.name is None]
        held = {t.person_id for t in self._tracks.values()}
        evictable = [p for p in anonymous if p not in held]  # least recently seen first
        for person_id in evictable[:max(0, len(anonymous) + 1 - self.max_people)]:
            del self._people[person_id]
        person_id = f"person_{self._next_number}"
        self._next_number += 1
        self._people[person_id] = Person(
            person_id, None, np.zeros((0, self.embedder.dimension), np.float32),
            deque(maxlen=self.max_embeddings_per_person))
        return person_id
