"""Completion markers: which session folders hold complete outputs (``fer-analyze --resume``).

A batch writes, last and atomically, a small JSON marker into each session
folder once all its outputs are written.  It holds the input's fingerprint,
the settings that shape the results and the size of every output file, so
``--resume`` skips a session only when its outputs are complete (every file
there, none shorter or longer than written), come from the same input (same
name, size, and SHA-256 of its first and last MB: a study copied or moved
elsewhere still resumes) and were made with the same settings.  Anything
else (no marker, another input, other settings, a file missing or changed)
is analysed again; the marker is removed before a session is redone, so an
interruption never leaves a marker beside half-new outputs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from fer_ros import __version__
from fer_ros.session.data import FrameSelection
from fer_ros.session.safe_output import remove_quietly, write_text

#: The marker's file name in a session folder (hidden, like temporary files).
MARKER_NAME = ".fer-analyze-complete.json"

#: Marker format; a marker of another format is not trusted.
MARKER_VERSION = 1

#: Bytes hashed at each end of an input file.
FINGERPRINT_BYTES = 1 << 20

#: Pipeline values that change speed but never results (checked: outputs
#: are byte-identical with 1 and 2 LiteRT threads), so they are not settings.
NOT_SETTINGS = frozenset({"threads"})


def file_fingerprint(path: Path) -> Dict[str, Any]:
    """Identify a file by size and a hash of its first and last MB.

    :param path: the file.
    :return: JSON-ready ``{"size": ..., "sha256_ends": ...}``.
    :raises OSError: when it cannot be read.
    """
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        digest.update(stream.read(FINGERPRINT_BYTES))
        if size > FINGERPRINT_BYTES:
            stream.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
            digest.update(stream.read(FINGERPRINT_BYTES))
    return {"size": size, "sha256_ends": digest.hexdigest()}


def input_fingerprint(path: Path) -> Dict[str, Any]:
    """Identify an input: its name and, per file (every file of a folder), the file's fingerprint.

    :param path: a video, emotions.jsonl, rosbag2 file or folder.
    :return: JSON-ready dict ({} when it cannot be read: never complete).
    """
    try:
        if path.is_dir():
            files = {str(p.relative_to(path)): file_fingerprint(p)
                     for p in sorted(path.rglob("*")) if p.is_file()}
            return {"name": path.resolve().name, "files": files}
        return {"name": path.name, **file_fingerprint(path)}
    except OSError:
        return {}


def analysis_settings(values: Mapping[str, Any], selection: FrameSelection,
                      topic: Optional[str], annotated_video: bool,
                      only: Sequence[str] = (), anonymize: bool = False) -> Dict[str, Any]:
    """Collect the settings a session's outputs depend on, JSON-ready and canonical.

    The known people's folder (``people_dir``) counts by its photos'
    fingerprints, not its path: other photos give other names.

    :param values: the pipeline's parameter values.
    :param selection: which frames are processed.
    :param topic: rosbag2 image topic.
    :param annotated_video: whether annotated.mp4 is written.
    :param only: ``--only`` people.
    :param anonymize: ``--anonymize``.
    :return: a dict that compares equal exactly when the outputs would.
    """
    pipeline = {key: values[key] for key in sorted(values) if key not in NOT_SETTINGS}
    if pipeline.get("people_dir"):
        pipeline["people_dir"] = input_fingerprint(Path(pipeline["people_dir"]).expanduser())
    return json.loads(json.dumps({
        "fer_ros": __version__, "pipeline": pipeline,
        "selection": [selection.start_s, selection.end_s, selection.every],
        "topic": topic, "annotated_video": annotated_video,
        "persons": {"only": list(only), "anonymize": anonymize}}, default=str))


def write_marker(folder: Path, fingerprint: Mapping[str, Any], settings: Mapping[str, Any],
                 files: Sequence[Path]) -> Path:
    """Mark a session folder complete (call it after every output is written).

    :param folder: the session's folder.
    :param fingerprint: from :func:`input_fingerprint`.
    :param settings: from :func:`analysis_settings`.
    :param files: the outputs written, in order (report.html last).
    :return: the marker's path.
    :raises OutputError: when it cannot be written.
    """
    marker = {"version": MARKER_VERSION, "input": dict(fingerprint),
              "settings": dict(settings),
              "files": [[path.name, path.stat().st_size] for path in files]}
    return write_text(folder / MARKER_NAME, json.dumps(marker, indent=1) + "\n")


def clear_marker(folder: Path) -> None:
    """Remove a session folder's marker before its outputs are rewritten."""
    remove_quietly(folder / MARKER_NAME)


def completed_files(folder: Path, fingerprint: Mapping[str, Any],
                    settings: Mapping[str, Any]) -> Optional[List[Path]]:
    """Check a session folder's outputs for this input and these settings.

    :param folder: the session's folder.
    :param fingerprint: the input's, from :func:`input_fingerprint`.
    :param settings: from :func:`analysis_settings`.
    :return: the output files, in the order written, when they are complete;
        None when the session has to be analysed (again).
    """
    try:
        marker = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
        if (not fingerprint or marker.get("version") != MARKER_VERSION
                or marker.get("input") != fingerprint or marker.get("settings") != settings):
            return None
        files = [folder / name for name, _ in marker["files"]]
        if any(path.stat().st_size != size
               for path, (_, size) in zip(files, marker["files"])):
            return None
        json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return files
