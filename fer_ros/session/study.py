r"""The study data of a batch: study.csv and --group-by's comparison (study_groups.csv).

``study.csv`` has one row per session (``scope`` = ``session``: all its
faces together) and one per face of the session (``scope`` = ``face``;
``person_id`` where the summary gives one): frames, time on screen, emotion
shares, mean valence, stability.  ``--group-by`` is a regular expression
with named groups searched in each input's file name, e.g.
``(?P<participant>P\d+)_(?P<phase>pre|post)``: its groups become columns;
its last named group is the condition compared (``phase``) and the others
say who (``participant``); a group named ``date`` is the session's date
instead.  ``study_groups.csv`` then has one row per participant: per
condition the sessions, frames, mean valence and mean stability (means
over the participant's sessions in that condition, all faces together),
and the difference of each later condition from the first, plus a last row
``all`` (sessions and frames summed, the rest averaged over participants;
differences over those with both conditions).
Conditions are ordered as the pattern lists them (``pre|post``: post − pre),
otherwise alphabetically.
"""

from __future__ import annotations

import csv
import datetime
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Pattern, Sequence, Tuple

from fer_ros.session.data import SessionError, SessionOutputs

#: The study's files in the output folder.
STUDY_CSV = "study.csv"
GROUPS_CSV = "study_groups.csv"

#: Named group of --group-by that gives a session's date rather than a group.
DATE_GROUP = "date"

#: Unit name of the last row of study_groups.csv: sessions and frames
#: summed, measures and differences averaged over units.
MEAN_ROW = "all"

#: Digits kept for the numbers of the study CSVs.
CSV_DIGITS = 6

#: A pattern group that is a plain alternation of names: its order is the conditions'.
_ALTERNATION = re.compile(r"\(\?P<(\w+)>((?:[\w\- ]+\|)+[\w\- ]+)\)")


@dataclass
class Study:
    """A batch's sessions with their dates and groups.

    :param sessions: the analysed sessions, in input order.
    :param failures: one line per input that could not be analysed.
    :param dates: each session's date (ISO text, "" when unknown).
    :param groups: each session's named groups (empty without --group-by or
        when its name does not match).
    :param group_names: the pattern's named groups, ``date`` excepted.
    :param unmatched: sessions whose file name did not match.
    :param condition_order: the values of the condition group, ordered.
    """

    sessions: List[SessionOutputs]
    failures: List[str] = field(default_factory=list)
    dates: List[str] = field(default_factory=list)
    groups: List[Dict[str, str]] = field(default_factory=list)
    group_names: List[str] = field(default_factory=list)
    unmatched: List[str] = field(default_factory=list)
    condition_order: List[str] = field(default_factory=list)


def group_pattern(text: str) -> Pattern[str]:
    """Compile a ``--group-by`` pattern.

    :param text: a regular expression with at least one named group.
    :return: the compiled pattern.
    :raises SessionError: one line saying what is wrong with it.
    """
    try:
        pattern = re.compile(text)
    except re.error as error:
        raise SessionError(f"--group-by {text!r}: not a regular expression ({error})") from None
    if not [name for name in pattern.groupindex if name != DATE_GROUP]:
        raise SessionError(f"--group-by {text!r}: needs a named group such as "
                           r"(?P<phase>pre|post)")
    return pattern


def condition_order(pattern: Pattern[str], condition: str, seen: Sequence[str]) -> List[str]:
    """Order the conditions: as the pattern's alternation lists them, else alphabetically.

    :param pattern: the --group-by pattern.
    :param condition: the name of its condition group.
    :param seen: the values found in file names.
    :return: every value seen, ordered.
    """
    listed: List[str] = []
    for match in _ALTERNATION.finditer(pattern.pattern):
        if match.group(1) == condition:
            listed = match.group(2).split("|")
    values = set(seen)
    return [v for v in listed if v in values] + sorted(values - set(listed))


def input_date(summary: Mapping[str, Any]) -> str:
    """Return a session's date: its input's modification time, local, ``YYYY-MM-DD HH:MM``."""
    try:
        mtime = Path(summary["input"]["path"]).stat().st_mtime
    except (OSError, KeyError, TypeError):
        return ""
    return datetime.datetime.fromtimestamp(mtime).strftime("%Y-%m-%d %H:%M")


def make_study(sessions: Sequence[SessionOutputs], failures: Sequence[str],
               group_by: Optional[str]) -> Study:
    """Date and group the sessions.

    :param sessions: the analysed sessions.
    :param failures: the inputs that could not be analysed.
    :param group_by: the --group-by pattern, or None.
    :return: the study.
    """
    study = Study(list(sessions), list(failures))
    pattern = group_pattern(group_by) if group_by else None
    if pattern is not None:
        study.group_names = [n for n in pattern.groupindex if n != DATE_GROUP]
    for outputs in sessions:
        date = input_date(outputs.summary)
        groups: Dict[str, str] = {}
        if pattern is not None:
            match = pattern.search(Path(outputs.summary["input"]["path"]).name)
            if match is None:
                study.unmatched.append(outputs.name)
            else:
                found = match.groupdict()
                groups = {n: found[n] or "" for n in study.group_names}
                date = found.get(DATE_GROUP) or date
        study.dates.append(date)
        study.groups.append(groups)
    if pattern is not None:
        condition = study.group_names[-1]
        study.condition_order = condition_order(
            pattern, condition, [g[condition] for g in study.groups if g])
    return study


def _number(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, CSV_DIGITS)
    return "" if value is None else value


def study_header(study: Study) -> Tuple[List[str], List[str]]:
    """Columns of study.csv, and the emotion labels of its share columns."""
    labels = list(dict.fromkeys(label for s in study.sessions for label in s.summary["labels"]))
    return (["session", "input", "date", *study.group_names, "scope", "face_id", "person_id",
             "frames", "time_on_screen_s", "dominant_emotion"]
            + [f"share_{label}" for label in labels]
            + ["mean_valence", "valence_sd", "mean_stability", "min_stability",
               "whole_session_stability", "label_change_rate", "valence_mssd"], labels)


def study_rows(study: Study) -> List[List[Any]]:
    """Rows of study.csv: per session, its row, then one per face (longest on screen first)."""
    _, labels = study_header(study)
    rows = []
    for outputs, date, groups in zip(study.sessions, study.dates, study.groups):
        summary = outputs.summary
        lead = [outputs.name, summary["input"]["path"], date,
                *[groups.get(name, "") for name in study.group_names]]
        overall = summary["session"]
        rows.append(lead + ["session", "", "", summary["frames_processed"],
                            overall["face_seconds"], overall["dominant_emotion"]]
                    + [overall["emotion_shares"].get(label) for label in labels]
                    + [overall["mean_valence"], overall["valence_sd"],
                       overall["mean_stability"], None, None,
                       overall["mean_label_change_rate"], overall["mean_valence_mssd"]])
        faces = summary["faces"]
        for face_id in sorted(faces, key=lambda f: -faces[f]["time_on_screen_s"]):
            face = faces[face_id]
            rows.append(lead + ["face", face_id, face.get("person_id", ""), face["frames"],
                                face["time_on_screen_s"], face["dominant_emotion"]]
                        + [face["emotion_shares"].get(label) for label in labels]
                        + [face["mean_valence"], face["valence_sd"],
                           face["stability"]["mean"], face["stability"]["min"],
                           face["whole_session"]["stability"],
                           face["label_change_rate"]["mean"], face["valence_mssd"]["mean"]])
    return [[_number(v) for v in row] for row in rows]


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _sd(values: Sequence[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    if len(present) < 2:
        return None
    mean = sum(present) / len(present)
    return (sum((v - mean) ** 2 for v in present) / (len(present) - 1)) ** 0.5


#: Per condition: the measures of study_groups.csv, and their session-summary source.
GROUP_MEASURES = (("mean_valence", "mean_valence"), ("mean_stability", "mean_stability"))


@dataclass
class GroupTable:
    """The --group-by comparison: one row per unit (participant), conditions side by side.

    :param conditions: the condition values, ordered (the first is the reference).
    :param unit_names: the named groups that identify a unit.
    :param units: each unit's values of the pattern's other named groups.
    :param cells: ``cells[unit][condition]`` = sessions, frames and the measures.
    :param differences: ``differences[unit][(measure, condition)]`` = its value
        minus the first condition's.
    """

    conditions: List[str]
    unit_names: List[str]
    units: List[Tuple[str, ...]]
    cells: Dict[Tuple[str, ...], Dict[str, Dict[str, Any]]]
    differences: Dict[Tuple[str, ...], Dict[Tuple[str, str], Optional[float]]]

    def mean_difference(self, measure: str, condition: str
                        ) -> Tuple[Optional[float], Optional[float], int]:
        """Return the mean, SD and count over units of a difference from the first condition."""
        values = [self.differences[u].get((measure, condition)) for u in self.units]
        present = [v for v in values if v is not None]
        return _mean(present), _sd(present), len(present)


def group_table(study: Study) -> Optional[GroupTable]:
    """Aggregate the sessions per unit and condition (None without --group-by)."""
    if not study.group_names:
        return None
    condition, unit_names = study.group_names[-1], study.group_names[:-1]
    members: Dict[Tuple[str, ...], Dict[str, List[Mapping[str, Any]]]] = {}
    for outputs, groups in zip(study.sessions, study.groups):
        if groups:
            unit = tuple(groups[name] for name in unit_names)
            members.setdefault(unit, {}).setdefault(groups[condition], []).append(
                outputs.summary)
    units = sorted(members)
    cells: Dict[Tuple[str, ...], Dict[str, Dict[str, Any]]] = {}
    differences: Dict[Tuple[str, ...], Dict[Tuple[str, str], Optional[float]]] = {}
    for unit in units:
        cells[unit] = {}
        for value, summaries in members[unit].items():
            cell: Dict[str, Any] = {"sessions": len(summaries),
                                    "frames": sum(s["frames_processed"] for s in summaries)}
            for measure, key in GROUP_MEASURES:
                cell[measure] = _mean([s["session"][key] for s in summaries])
            cells[unit][value] = cell
        differences[unit] = {}
        first = cells[unit].get(study.condition_order[0], {})
        for value in study.condition_order[1:]:
            later = cells[unit].get(value, {})
            for measure, _ in GROUP_MEASURES:
                a, b = first.get(measure), later.get(measure)
                differences[unit][(measure, value)] = (b - a if a is not None and b is not None
                                                       else None)
    return GroupTable(study.condition_order, unit_names, units, cells, differences)


def group_csv(table: GroupTable) -> str:
    """study_groups.csv: one row per unit, then the means over units."""
    first = table.conditions[0]
    header = list(table.unit_names) or ["group"]
    for value in table.conditions:
        header += [f"sessions_{value}", f"frames_{value}"] + [
            f"{measure}_{value}" for measure, _ in GROUP_MEASURES]
    for value in table.conditions[1:]:
        header += [f"{measure}_{value}_minus_{first}" for measure, _ in GROUP_MEASURES]
    rows = []
    for unit in table.units:
        row: List[Any] = list(unit) or ["all sessions"]
        for value in table.conditions:
            cell = table.cells[unit].get(value, {})
            row += [cell.get("sessions", 0), cell.get("frames", 0)] + [
                cell.get(measure) for measure, _ in GROUP_MEASURES]
        for value in table.conditions[1:]:
            row += [table.differences[unit][(measure, value)] for measure, _ in GROUP_MEASURES]
        rows.append(row)
    mean_row: List[Any] = [MEAN_ROW] + [""] * (max(1, len(table.unit_names)) - 1)
    for value in table.conditions:
        cells = [table.cells[u].get(value, {}) for u in table.units]
        mean_row += [sum(c.get("sessions", 0) for c in cells),
                     sum(c.get("frames", 0) for c in cells)] + [
            _mean([c.get(measure) for c in cells]) for measure, _ in GROUP_MEASURES]
    for value in table.conditions[1:]:
        mean_row += [table.mean_difference(measure, value)[0] for measure, _ in GROUP_MEASURES]
    return csv_text(header, rows + [mean_row])


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Make CSV text (numbers rounded to CSV_DIGITS, None empty)."""
    stream = io.StringIO()
    writer = csv.writer(stream)
    writer.writerow(header)
    writer.writerows([[_number(v) for v in row] for row in rows])
    return stream.getvalue()
