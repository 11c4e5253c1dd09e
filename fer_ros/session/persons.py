"""People in a session analysis: re-identification, known people, ``--only``, ``--save-people``.

``fer-analyze`` re-identifies by default: the node's
:class:`~fer_ros.identity.PersonRegistry` gives every face a ``person_id``
that survives it leaving the view, so the outputs are per person as well as
per face track.  This module holds what the analysis adds around it:

- **Known people** (``--people DIR``) are enrolled once before any
  analysis (:func:`check_people`), so a photo without exactly one face is
  one error line naming it, not a failure of every session.
- **Settled ids.**  A new track's person stays provisional for its first
  looks; when the registry hands it back to a remembered person it drops
  the provisional id, which the node had published for a moment.  Offline
  the whole session is known, so :class:`PersonChanges` gives those rows
  the person they turned out to be (only rows of that track, only ids the
  registry dropped at that moment), and no one-second "person" appears in
  the report.
- **--only** keeps the rows of some people (:func:`restrict_to_people`).
- **--save-people** writes the registry's embeddings, the only output that
  ever holds them (:func:`save_people`); nothing else is written with them.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from fer_ros.identity import ANONYMOUS_PATTERN, PersonRegistry, valid_name
from fer_ros.parameters import defaults
from fer_ros.pipeline import FrameResult
from fer_ros.session.data import FaceRow, SessionData, SessionError
from fer_ros.session.safe_output import write_text


@dataclass(frozen=True)
class PersonOptions:
    """What the outputs say about people, beyond the pipeline's parameters.

    :param only: keep only these people's rows (``--only``; empty: everyone).
    :param anonymize: pixelate every face in annotated.mp4 (``--anonymize``).
    :param save_people: write the people's embeddings here (``--save-people``).
    """

    only: Tuple[str, ...] = ()
    anonymize: bool = False
    save_people: Optional[Path] = None


def parse_only(text: str) -> Tuple[str, ...]:
    """Parse ``--only NAME[,NAME]``: known people's names or ``person_<N>`` ids.

    :param text: comma-separated names.
    :return: the names, in order, without repeats.
    :raises ValueError: naming a name that can be no person's id (the
        message does not repeat the option).
    """
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names:
        raise ValueError("wants at least one name, e.g. --only child,therapist")
    for name in names:
        if not (valid_name(name) or ANONYMOUS_PATTERN.fullmatch(name)):
            raise ValueError(f"{name!r} is not a person's name (a letter then letters, "
                             f"digits or '_') nor an id like person_2")
    return names


def person_name(person_id: str) -> Optional[str]:
    """Return the known person's name a person id is, None for an anonymous ``person_<N>``."""
    return None if not person_id or ANONYMOUS_PATTERN.fullmatch(person_id) else person_id


def check_reidentification() -> None:
    """Fail early, in one line, when the re-identification packages are missing.

    :raises SessionError: saying what to install, or to pass ``--no-reidentify``.
    """
    missing = [name for name, module in (("dlib-bin", "dlib"),
                                         ("face-recognition-models", "face_recognition_models"))
               if importlib.util.find_spec(module) is None]
    if missing:
        from fer_ros.face_embedding import DLIB_REQUIREMENT, MODELS_REQUIREMENT

        raise SessionError(f"re-identification (on by default) needs {' and '.join(missing)}: "
                           f"`pip install {DLIB_REQUIREMENT} {MODELS_REQUIREMENT}`, or run "
                           "with --no-reidentify")


def check_people(values: Mapping[str, Any]) -> List[str]:
    """Enroll the known people of ``people_dir`` once, before any analysis.

    Each session enrolls them again with its own registry; this only finds
    an unusable folder or photo early.

    :param values: the pipeline's parameter values (``reidentify`` on).
    :return: the names enrolled (none without ``people_dir``).
    :raises SessionError: one line naming the folder or photo.
    :raises ModelLoadError, DetectorError: when a model cannot be loaded.
    """
    from fer_ros.detection import create_detector
    from fer_ros.face_embedding import EnrollmentError
    from fer_ros.pipeline import build_person_registry

    settings = defaults()
    settings.update(values)
    if not settings["reidentify"] or not settings["people_dir"]:
        return []
    detector = create_detector(settings["detector_model"], float(settings["min_detection_score"]),
                               float(settings["min_face_size_px"]), threads=1,
                               verify_min_score=float(settings["verify_min_score"]))
    try:
        registry = build_person_registry(settings, detector)
    except EnrollmentError as error:
        raise SessionError(f"--people: {error}") from None
    assert registry is not None
    return [person.person_id for person in registry.people() if person.name]


def check_only(only: Sequence[str], enrolled: Sequence[str], people_dir: str) -> None:
    """Refuse ``--only`` names that can never match: not enrolled and not ``person_<N>``.

    :raises SessionError: naming them and the known people.
    """
    unknown = [name for name in only
               if name not in enrolled and not ANONYMOUS_PATTERN.fullmatch(name)]
    if unknown:
        known = (f"{people_dir} has {', '.join(enrolled)}" if enrolled
                 else "no known people are enrolled (--people DIR)")
        raise SessionError(f"--only {','.join(unknown)}: not a known person; {known}")


class PersonChanges:
    """Notice provisional person ids that the registry handed back, to settle them.

    :param registry: the pipeline's registry.
    """

    def __init__(self, registry: PersonRegistry) -> None:
        self.registry = registry
        self._last: Dict[str, str] = {}
        #: ``(face_id, dropped person) -> person it turned out to be``.
        self.settled: Dict[Tuple[str, str], str] = {}

    def observe(self, result: FrameResult) -> None:
        """Look at one frame's faces (call it for every processed frame, in order)."""
        for face in result.faces:
            before = self._last.get(face.face_id)
            if before and face.person_id and before != face.person_id:
                remembered = {person.person_id for person in self.registry.people()}
                if before not in remembered:  # dropped now: it was this person all along
                    self.settled[(face.face_id, before)] = face.person_id
            self._last[face.face_id] = face.person_id

    def settle(self, rows: Sequence[FaceRow]) -> int:
        """Give the rows of handed-back provisional ids their person (in place).

        :return: how many rows changed.
        """
        changed = 0
        for row in rows:
            seen = set()
            while (row.face_id, row.person_id) in self.settled and row.person_id not in seen:
                seen.add(row.person_id)
                row.person_id = self.settled[(row.face_id, row.person_id)]
            changed += bool(seen)
        return changed


def restrict_to_people(session: SessionData, only: Sequence[str]) -> None:
    """Keep only the rows of the given people (``--only``), in place.

    Frames keep their place (they were analysed) but count only those
    people's faces; a name not seen in the session is a warning.

    :param session: the analysed session.
    :param only: person ids (names or ``person_<N>``); empty keeps everyone.
    """
    if not only:
        return
    wanted = set(only)
    session.only = tuple(only)
    session.rows = [row for row in session.rows if row.person_id in wanted]
    counts: Dict[int, int] = {}
    for row in session.rows:
        counts[row.frame_index] = counts.get(row.frame_index, 0) + 1
    for frame in session.frames:
        frame.faces = counts.get(frame.index, 0)
    seen = set(session.person_ids())
    missing = [name for name in only if name not in seen]
    if missing:
        session.warnings.append(f"{session.description.path}: --only {','.join(missing)}: "
                                "not seen in this session")


def exported_people(registry: PersonRegistry) -> Dict[str, Any]:
    """Return :meth:`PersonRegistry.export_people` as JSON-ready data (lists of floats)."""
    def plain(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return value.astype(np.float64).tolist()
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, list):
            return [plain(item) for item in value]
        return value

    return plain(registry.export_people())


def save_people(registry: Optional[PersonRegistry], path: Path) -> Path:
    """Write the people's face embeddings (``--save-people``): JSON, private (0600).

    :param registry: the session's registry.
    :param path: the file to write (its folder is created).
    :return: ``path``.
    :raises SessionError: without re-identification.
    :raises OutputError: naming the file when it cannot be written.
    """
    if registry is None:
        raise SessionError("--save-people needs re-identification (drop --no-reidentify)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, json.dumps(exported_people(registry)) + "\n")
