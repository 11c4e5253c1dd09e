"""Writing a session's outputs safely: file names, paths inside ``--output``, atomic files.

Session names come from input file and folder names, which anyone can
choose (``...mp4``, ``report.html.mp4``, ``javascript:alert(1).mp4``), so
:func:`session_names` turns them into safe, distinct folder names, and
:func:`inside` refuses any path that would leave the output folder.

Every output file is written atomically: :func:`atomic_path` hands out a
temporary file in the same folder and renames it over the final name only
once it is complete (``os.replace``), so a full disk or a crash never
leaves a truncated file under a final name.  Any ``OSError`` while writing
becomes an :class:`OutputError` whose message is one line naming the file.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import unicodedata
from pathlib import Path
from typing import Iterable, Iterator, List, Set

#: File names the analysis writes itself, in a session folder or the output
#: folder; a session folder may not take one of them (case-insensitively).
RESERVED_NAMES = frozenset({
    "report.html", "comparison.png", "faces.csv", "summary.json", "timeline.png",
    "valence_stability.png", "emotion_shares.png", "annotated.mp4",
    "study.csv", "study_groups.csv", "study.png", "study_groups.png"})

#: Names Windows refuses for files, whatever their suffix.
WINDOWS_DEVICE_NAMES = frozenset(
    {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(1, 10)}
    | {f"lpt{i}" for i in range(1, 10)})

#: Name given to a session whose input yields no usable name.
FALLBACK_NAME = "session"

#: Longest session name kept, characters (file systems allow 255 bytes per
#: name; this leaves room for numbering and temporary-file affixes).
MAX_NAME_CHARS = 80

#: Characters replaced in session names: path separators, characters that
#: Windows refuses in file names, and control characters.
UNSAFE_CHARACTERS = re.compile(r'[/\\:*?"<>|\x00-\x1f\x7f]')

#: Prefix and suffix of temporary files (hidden, so a listing shows only
#: finished outputs).
TEMPORARY_PREFIX = "."
TEMPORARY_MARK = ".partial"


class OutputError(RuntimeError):
    """An output cannot be written; the message is one line naming the file."""


def safe_name(name: str) -> str:
    """Turn a name taken from an input path into a safe folder name.

    Separators, control characters and characters special to Windows or
    URLs become ``_``; leading and trailing dots and spaces go (no ``.``,
    ``..`` or hidden names); names that would be empty, a Windows device
    name, or an output's own name (``report.html``) are changed.

    :param name: e.g. a file stem.
    :return: a non-empty name that is safe as one path segment.
    """
    text = unicodedata.normalize("NFC", name)
    text = UNSAFE_CHARACTERS.sub("_", text).strip(" .")
    text = text[:MAX_NAME_CHARS].rstrip(" .")
    if not text:
        return FALLBACK_NAME
    if text.casefold() in RESERVED_NAMES or text.split(".")[0].casefold() \
            in WINDOWS_DEVICE_NAMES:
        return f"{text}_session"
    return text


def session_names(names: Iterable[str]) -> List[str]:
    """Make safe, distinct (also case-insensitively) names, numbering repeats.

    :param names: raw names, one per session, in order.
    :return: the names to use, in the same order.
    """
    taken: Set[str] = set()
    result: List[str] = []
    for raw in names:
        stem = safe_name(raw)
        name, number = stem, 2
        while name.casefold() in taken:
            name, number = f"{stem}_{number}", number + 1
        taken.add(name.casefold())
        result.append(name)
    return result


def inside(root: Path, path: Path) -> Path:
    """Check that a path lies inside the output folder (links resolved).

    :param root: the output folder.
    :param path: a path to write.
    :return: ``path``.
    :raises OutputError: when it would lie elsewhere.
    """
    resolved_root = root.resolve()
    resolved = path.resolve()
    if resolved != resolved_root and resolved_root not in resolved.parents:
        raise OutputError(f"{path}: refusing to write outside the output folder {root}")
    return path


def temporary_path(path: Path) -> Path:
    """Make a new, unused temporary file beside ``path`` with the same suffix.

    The suffix is kept because writers choose the format by it (OpenCV's
    video writer, matplotlib).

    :param path: the final file.
    :return: the temporary file (created, empty).
    :raises OutputError: when it cannot be created.
    """
    try:
        handle, name = tempfile.mkstemp(
            dir=path.parent, prefix=f"{TEMPORARY_PREFIX}{path.stem}.",
            suffix=f"{TEMPORARY_MARK}{path.suffix}")
    except OSError as error:
        raise write_error(path, error) from None
    os.close(handle)
    # mkstemp makes the file private (0600), and outputs stay so: they
    # describe people (children in therapy).  chmod to share them.
    return Path(name)


def write_error(path: Path, error: OSError) -> OutputError:
    """Make the one-line error for a failed write of ``path``."""
    reason = error.strerror or str(error) or type(error).__name__
    return OutputError(f"{path}: cannot write ({reason}); it was not written")


def remove_quietly(path: Path) -> None:
    """Delete a file if it exists, ignoring errors (clean-up only)."""
    with contextlib.suppress(OSError):
        path.unlink()


def commit(temporary: Path, path: Path) -> Path:
    """Rename a finished temporary file to its final name.

    :param temporary: the complete file.
    :param path: its final name (replaced if it exists).
    :return: ``path``.
    :raises OutputError: when the rename fails (the temporary file is removed).
    """
    try:
        os.replace(temporary, path)
    except OSError as error:
        remove_quietly(temporary)
        raise write_error(path, error) from None
    return path


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Write a file atomically: yield a temporary path, then rename it to ``path``.

    On any error inside the block the temporary file is removed and
    ``path`` is left as it was; an ``OSError`` becomes an :class:`OutputError`.

    :param path: the final file.
    :return: a context manager yielding the temporary path to write to.
    :raises OutputError: naming ``path`` when writing fails.
    """
    temporary = temporary_path(path)
    try:
        yield temporary
    except OSError as error:
        remove_quietly(temporary)
        raise write_error(path, error) from None
    except BaseException:
        remove_quietly(temporary)
        raise
    commit(temporary, path)


def write_text(path: Path, text: str) -> Path:
    """Write a text file (UTF-8) atomically.

    :param path: the final file.
    :param text: its content.
    :return: ``path``.
    :raises OutputError: naming ``path`` when writing fails.
    """
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
    return path


def remove_stale(folder: Path, names: Iterable[str]) -> None:
    """Delete outputs of an earlier run that this run does not write again.

    :param folder: a session's output folder.
    :param names: file names to remove if present (e.g. ``annotated.mp4``
        when no video is written now).
    :raises OutputError: when one exists and cannot be removed.
    """
    for name in names:
        path = folder / name
        try:
            if path.is_file() or path.is_symlink():
                path.unlink()
        except OSError as error:
            raise OutputError(f"{path}: cannot remove the output of an earlier run "
                              f"({error.strerror or error})") from None
