"""Session statistics: per face track, per person and over all faces (summary.json's content).

A person (with re-identification) is summarised exactly like a face, over
all the rows of all their face tracks; ``face_ids`` lists those tracks.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np

from fer_ros.labels import valence_of
from fer_ros.session.data import FaceRow, SessionData
from fer_ros.session.persons import person_name
from fer_ros.stability import stability_of


def shares(labels_seen: Sequence[str], labels: Sequence[str]) -> Dict[str, float]:
    """Share of each label among ``labels_seen`` (0 for all when empty)."""
    total = len(labels_seen)
    return {label: (sum(seen == label for seen in labels_seen) / total if total else 0.0)
            for label in labels}


def face_summary(rows: Sequence[FaceRow], labels: Sequence[str],
                 frame_period_s: float) -> Dict[str, Any]:
    """Statistics of one face over the session.

    ``stability`` / ``label_change_rate`` / ``valence_mssd`` summarise the
    per-frame values over the window T; ``whole_session`` applies the same
    definitions (:func:`fer_ros.stability.stability_of`, unsmoothed frame
    labels) to all of the face's frames at once.

    :param rows: the face's rows, in time order (at least one).
    :param labels: class names.
    :param frame_period_s: time between processed frames, seconds.
    :return: JSON-ready dict.
    """
    times = np.array([r.time_s for r in rows])
    valence = np.array([r.valence for r in rows])
    stability = np.array([r.stability for r in rows])
    change_rate = np.array([r.label_change_rate for r in rows])
    mssd = np.array([r.valence_mssd for r in rows])
    share = shares([r.label for r in rows], labels)
    frame_valence = valence_of(np.array([r.probabilities for r in rows]), labels)
    span = float(times[-1] - times[0]) + frame_period_s
    whole = stability_of(times, [r.frame_label for r in rows], frame_valence, span)
    summary: Dict[str, Any] = {
        "frames": len(rows),
        "first_seen_s": float(times[0]), "last_seen_s": float(times[-1]),
        "time_on_screen_s": len(rows) * frame_period_s,
        "emotion_shares": share,
        "dominant_emotion": max(share, key=lambda label: share[label]),
        "mean_confidence": float(np.mean([r.confidence for r in rows])),
        "mean_valence": float(valence.mean()), "valence_sd": float(valence.std()),
        "stability": {"mean": float(stability.mean()), "min": float(stability.min()),
                      "final": float(stability[-1])},
        "label_change_rate": {"mean": float(change_rate.mean()),
                              "max": float(change_rate.max())},
        "valence_mssd": {"mean": float(mssd.mean()), "max": float(mssd.max())},
        "whole_session": {"stability": whole.stability,
                          "label_change_rate": whole.label_change_rate,
                          "valence_mssd": whole.valence_mssd},
    }
    dynamic = [r.dynamic_label for r in rows if r.dynamic_label]
    if dynamic:
        summary["dynamic_emotion_shares"] = shares(dynamic, labels)
    return summary


def person_of_face(rows: Sequence[FaceRow]) -> str:
    """Return the person a face track showed in most of its rows ("" without persons).

    A track's person may change when the registry finds it was someone else
    (two people swapped places under the tracker); ties go to the first.
    """
    counts: Dict[str, int] = {}
    for row in rows:
        if row.person_id:
            counts[row.person_id] = counts.get(row.person_id, 0) + 1
    return max(counts, key=lambda person_id: counts[person_id]) if counts else ""


def person_summary(rows: Sequence[FaceRow], labels: Sequence[str],
                   frame_period_s: float) -> Dict[str, Any]:
    """Statistics of one person over the session: :func:`face_summary` of all their rows.

    :param rows: the person's rows, in time order (at least one).
    :param labels: class names.
    :param frame_period_s: time between processed frames, seconds.
    :return: JSON-ready dict: ``name`` (a known person's, else None),
        ``face_ids`` (their face tracks, in order of appearance), then the
        same keys as a face.
    """
    return {"name": person_name(rows[0].person_id),
            "face_ids": list(dict.fromkeys(row.face_id for row in rows)),
            **face_summary(rows, labels, frame_period_s)}


def overall_summary(session: SessionData, faces: Mapping[str, Dict[str, Any]]
                    ) -> Dict[str, Any]:
    """Statistics over every face-frame of the session (for comparisons).

    :param session: the session.
    :param faces: its per-face summaries.
    :return: JSON-ready dict.
    """
    rows = session.rows
    share = shares([r.label for r in rows], session.labels)
    valence = np.array([r.valence for r in rows]) if rows else np.zeros(0)

    def mean(values: Union[Sequence[float], np.ndarray]) -> Optional[float]:
        return float(np.mean(values)) if len(values) else None

    return {
        "faces": len(faces),
        "persons": len(session.person_ids()),
        "face_seconds": float(sum(f["time_on_screen_s"] for f in faces.values())),
        "emotion_shares": share,
        "dominant_emotion": max(share, key=lambda label: share[label]) if rows else None,
        "mean_valence": mean(valence),
        "valence_sd": float(valence.std()) if rows else None,
        "mean_stability": mean([r.stability for r in rows]),
        "mean_label_change_rate": mean([r.label_change_rate for r in rows]),
        "mean_valence_mssd": mean([r.valence_mssd for r in rows]),
    }


def summarize(session: SessionData) -> Dict[str, Any]:
    """Compute the session's summary.json content.

    :param session: the analysed session.
    :return: JSON-ready dict: input, model, frame counts, ``faces`` (per
        face id, in order of appearance; with its ``person_id`` when
        re-identified), ``persons`` (per person, in order of appearance;
        empty without re-identification), ``session`` (all faces together),
        ``anonymized``; ``only`` with ``--only``; ``frames_expected`` /
        ``frames_read`` only when the input ended early, ``warnings`` only
        when there are any.
    """
    period = session.frame_period_s()
    faces = {}
    for face_id in session.face_ids():
        rows = session.rows_of(face_id)
        faces[face_id] = face_summary(rows, session.labels, period)
        if person_of_face(rows):
            faces[face_id]["person_id"] = person_of_face(rows)
    persons = {person_id: person_summary(session.rows_of_person(person_id), session.labels,
                                         period)
               for person_id in session.person_ids()}
    times = [f.time_s for f in session.frames]
    selection = asdict(session.selection)
    completeness: Dict[str, Any] = {}
    if session.frames_read is not None:
        completeness = {"frames_expected": session.description.frame_count,
                        "frames_read": session.frames_read}
    if session.warnings:
        completeness["warnings"] = list(session.warnings)
    if session.only:
        completeness["only"] = list(session.only)
    return {
        "input": {**asdict(session.description), "selection": selection},
        "model": session.model,
        "labels": list(session.labels),
        "stability_window_s": session.stability_window_s,
        "frames_processed": len(session.frames),
        "frames_with_faces": sum(f.faces > 0 for f in session.frames),
        "frames_unreadable": session.skipped_frames,
        **completeness,
        "analysed_from_s": float(min(times)),
        "analysed_to_s": float(max(times)),
        "frame_period_s": period,
        "processing_s": session.processing_s,
        "faces": faces,
        "persons": persons,
        "session": overall_summary(session, faces),
        "anonymized": session.anonymized,
    }
