"""ROS4HRI (REP-155) face conventions, without ROS: topic names, normalised ROIs, face ids.

The ``hri_bridge`` node (fer_ros/nodes/hri_bridge.py) publishes fer_ros'
faces the way ROS4HRI consumers (libhri / pyhri, hri_rviz) read them:
``/humans/faces/tracked`` lists the face ids, and each tracked face has its
own topics under ``/humans/faces/<id>/``, which exist exactly as long as
the face is listed.  :class:`FaceRegistry` decides when a face's topics
are created and destroyed; the ``expression`` fields come from
:func:`fer_ros.labels.expression_fields`.

References:
    REP-155, Conventions, Topics, Interfaces for Perception in Human-Robot
    Interaction (https://ros.org/reps/rep-0155.html); hri_msgs
    msg/NormalizedRegionOfInterest2D.msg and msg/Expression.msg.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List

#: Namespace of every per-face topic (absolute, as REP-155 defines it).
FACES_NAMESPACE = "/humans/faces"
#: The list of currently tracked face ids (hri_msgs/IdsList).
TRACKED_FACES_TOPIC = f"{FACES_NAMESPACE}/tracked"
#: A face id must be one token of a ROS 2 topic name: letters, digits and
#: underscores, not starting with a digit (rcl's topic-name validation).
FACE_ID_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


#: Namespace of every per-person topic (REP-155 persons: ids that outlive faces).
PERSONS_NAMESPACE = "/humans/persons"
#: The list of currently tracked person ids (hri_msgs/IdsList).
TRACKED_PERSONS_TOPIC = f"{PERSONS_NAMESPACE}/tracked"


def person_topic(person_id: str, name: str) -> str:
    """Return the topic of one person's stream, e.g. ``/humans/persons/child/face_id``."""
    return f"{PERSONS_NAMESPACE}/{person_id}/{name}"


def face_topic(face_id: str, name: str) -> str:
    """Return the topic of one face's stream, e.g. ``/humans/faces/face_1/roi``.

    :param face_id: the face's id.
    :param name: the stream: ``roi``, ``expression``, ``aligned``, ``cropped``...
    """
    return f"{FACES_NAMESPACE}/{face_id}/{name}"


def is_valid_face_id(face_id: str) -> bool:
    """Tell whether a face id can name topics (one ROS 2 name token)."""
    return FACE_ID_PATTERN.fullmatch(face_id) is not None


def _unit(value: float) -> float:
    return min(1.0, max(0.0, float(value)))


@dataclass
class NormalizedRoi:
    """A face box as hri_msgs/NormalizedRegionOfInterest2D: corners in [0, 1].

    Values outside [0, 1] are clipped, as the message requires.

    :param xmin: left edge, share of the image width.
    :param ymin: top edge, share of the image height.
    :param xmax: right edge, share of the image width.
    :param ymax: bottom edge, share of the image height.
    :param c: confidence of the box, 0.0 to 1.0.
    """

    xmin: float
    ymin: float
    xmax: float
    ymax: float
    c: float

    def __post_init__(self) -> None:
        self.xmin, self.ymin = _unit(self.xmin), _unit(self.ymin)
        self.xmax, self.ymax = _unit(self.xmax), _unit(self.ymax)
        self.c = _unit(self.c)


def normalized_roi(x_offset: float, y_offset: float, width: float, height: float,
                   image_width: int, image_height: int, confidence: float) -> NormalizedRoi:
    """Normalise a pixel box (sensor_msgs/RegionOfInterest fields) by the image size.

    :param x_offset: left edge, pixels.
    :param y_offset: top edge, pixels.
    :param width: box width, pixels.
    :param height: box height, pixels.
    :param image_width: source image width, pixels.
    :param image_height: source image height, pixels.
    :param confidence: detector score, 0.0 to 1.0.
    :return: the box with corners clipped to [0, 1].
    :raises ValueError: when the image size is unknown (zero).
    """
    if image_width <= 0 or image_height <= 0:
        raise ValueError(f"cannot normalise a face box in an image of unknown size "
                         f"({image_width}x{image_height})")
    return NormalizedRoi(x_offset / image_width, y_offset / image_height,
                         (x_offset + width) / image_width, (y_offset + height) / image_height,
                         confidence)


@dataclass
class FaceChanges:
    """What one update of a :class:`FaceRegistry` changed.

    :param added: faces that got topics, in the order they were given.
    :param removed: faces whose topics must go (timed out or replaced).
    :param refused: faces left out (invalid id, or the registry was full).
    """

    added: List[str] = field(default_factory=list)
    removed: List[str] = field(default_factory=list)
    refused: List[str] = field(default_factory=list)


class FaceRegistry:
    """The faces that have per-face topics now, with expiry and a bound.

    A face is added when it is first seen, stays while it is seen at least
    once every ``timeout_s`` seconds, and is removed after that.  At most
    ``max_faces`` faces are held: a new face replaces the one unseen
    longest among those not seen in the same update; if every held face was
    seen in it, the new face is refused (it is given no topics).

    :param timeout_s: how long an unseen face keeps its topics, seconds (>= 0).
    :param max_faces: most faces held at once (>= 1).
    """

    def __init__(self, timeout_s: float, max_faces: int) -> None:
        if timeout_s < 0:
            raise ValueError(f"timeout_s must be >= 0, got {timeout_s}")
        if max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {max_faces}")
        self.timeout_s = float(timeout_s)
        self.max_faces = int(max_faces)
        self._last_seen: Dict[str, float] = {}  # in order of first appearance

    @property
    def ids(self) -> List[str]:
        """Ids of the faces held, in order of first appearance."""
        return list(self._last_seen)

    def __contains__(self, face_id: object) -> bool:
        return face_id in self._last_seen

    def __len__(self) -> int:
        return len(self._last_seen)

    def update(self, face_ids: Iterable[str], now: float) -> FaceChanges:
        """Record the faces seen at ``now``; expire, replace and add faces.

        :param face_ids: the faces seen (duplicates count once).
        :param now: the time, seconds (one clock for every call).
        :return: the faces added, removed and refused.
        """
        seen = list(dict.fromkeys(face_ids))
        for face_id in seen:
            if face_id in self._last_seen:
                self._last_seen[face_id] = now
        changes = FaceChanges(removed=self.expire(now))
        for face_id in seen:
            if face_id in self._last_seen:
                continue
            if not is_valid_face_id(face_id) or not self._make_room(set(seen), changes):
                changes.refused.append(face_id)
                continue
            self._last_seen[face_id] = now
            changes.added.append(face_id)
        return changes

    def expire(self, now: float) -> List[str]:
        """Remove the faces unseen for longer than the timeout; return their ids."""
        gone = [face_id for face_id, last_seen in self._last_seen.items()
                if now - last_seen > self.timeout_s]
        for face_id in gone:
            del self._last_seen[face_id]
        return gone

    def clear(self) -> List[str]:
        """Remove every face; return their ids."""
        gone = list(self._last_seen)
        self._last_seen.clear()
        return gone

    def _make_room(self, seen_now: set, changes: FaceChanges) -> bool:
        if len(self._last_seen) < self.max_faces:
            return True
        unseen = [face_id for face_id in self._last_seen if face_id not in seen_now]
        if not unseen:
            return False
        stalest = min(unseen, key=self._last_seen.__getitem__)
        del self._last_seen[stalest]
        changes.removed.append(stalest)
        return True
