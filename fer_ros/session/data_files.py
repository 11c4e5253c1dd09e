"""The session's data files: ``faces.csv`` (one row per face per frame) and ``summary.json``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, List, Mapping, Sequence

from fer_ros.session.data import FaceRow, SessionData
from fer_ros.session.safe_output import atomic_path, write_text


def csv_header(labels: Sequence[str]) -> List[str]:
    """Column names of faces.csv for a label set."""
    return (["frame_index", "time_s", "stamp", "face_id", "person_id",
             "x", "y", "width", "height",
             "detection_score", "label", "confidence", "frame_label"]
            + [f"p_{label}" for label in labels]
            + [f"smoothed_p_{label}" for label in labels]
            + ["valence", "stability", "label_change_rate", "valence_mssd",
               "stability_samples", "tracked_seconds", "dynamic_label"]
            + [f"dynamic_p_{label}" for label in labels])


def csv_values(row: FaceRow, labels: Sequence[str]) -> List[Any]:
    """One faces.csv line (dynamic probabilities empty when there are none)."""
    dynamic: List[Any] = list(row.dynamic_probabilities) or [""] * len(labels)
    return ([row.frame_index, row.time_s, row.stamp, row.face_id, row.person_id, *row.box,
             row.detection_score, row.label, row.confidence, row.frame_label]
            + list(row.probabilities) + list(row.smoothed_probabilities)
            + [row.valence, row.stability, row.label_change_rate, row.valence_mssd,
               row.stability_samples, row.tracked_seconds, row.dynamic_label]
            + dynamic)


def write_faces_csv(session: SessionData, path: Path) -> Path:
    """Write one row per face per processed frame.

    :param session: the session.
    :param path: the CSV file to write (atomically).
    :return: ``path``.
    :raises OutputError: naming the file when it cannot be written.
    """
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(csv_header(session.labels))
            for row in session.rows:
                writer.writerow(csv_values(row, session.labels))
    return path


def write_summary_json(summary: Mapping[str, Any], path: Path) -> Path:
    """Write the summary as indented JSON.

    :param summary: from :func:`summarize`.
    :param path: the file to write (atomically).
    :return: ``path``.
    :raises OutputError: naming the file when it cannot be written.
    """
    return write_text(path, json.dumps(summary, indent=2) + "\n")
