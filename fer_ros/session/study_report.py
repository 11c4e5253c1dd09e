"""The study overview of a batch: its files, figures, and section of the top report.html.

The section has a table with one row per session, given twice: ordered by
name and ordered by date.  The report runs no scripts, so the two orders
are two tables and two radio buttons switch between them with CSS only
(``:checked ~``); a reader without CSS sees both, one after the other.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np

from fer_ros.session.data import SessionOutputs
from fer_ros.session.figures import SERIES_COLOURS, _figure, _valence_colour, plain, save
from fer_ros.session.html import _number, _share_cell, _signed, data_uri, relative_href
from fer_ros.session.safe_output import write_text
from fer_ros.session.study import (GROUP_MEASURES, GROUPS_CSV, STUDY_CSV, GroupTable, Study,
                                   csv_text, group_csv, group_table, make_study, study_header,
                                   study_rows)

#: The study's figures in the output folder.
STUDY_FIGURE = "study.png"
GROUPS_FIGURE = "study_groups.png"

#: At most this many session names label the study figure's axis.
MAX_LABELLED_SESSIONS = 40

#: Width of the study figure per session, inches (between the limits below).
INCHES_PER_SESSION = 0.35


@dataclass
class StudyOutputs:
    """What :func:`write_study` wrote.

    :param files: study.csv, study_groups.csv (with --group-by) and the figures.
    :param overview_html: the overview section for the top-level report.
    """

    files: List[Path]
    overview_html: str


def write_study(sessions: Sequence[SessionOutputs], failures: Sequence[str], output: Path,
                group_by: Optional[str] = None) -> StudyOutputs:
    """Write study.csv (and study_groups.csv), the study figures, and make the overview.

    :param sessions: the analysed sessions, in input order.
    :param failures: one line per input that could not be analysed.
    :param output: the top output folder.
    :param group_by: the --group-by pattern, or None.
    :return: the files written and the overview section's HTML.
    :raises OutputError: naming a file that cannot be written.
    """
    study = make_study(sessions, failures, group_by)
    header, _ = study_header(study)
    files = [write_text(output / STUDY_CSV, csv_text(header, study_rows(study)))]
    table = group_table(study)
    if table is not None and table.units:
        files.append(write_text(output / GROUPS_CSV, group_csv(table)))
    else:
        table = None
    figure = plot_study(study, by_date(study), output / STUDY_FIGURE)
    files.append(figure)
    groups_figure = plot_groups(table, output / GROUPS_FIGURE) if table is not None else None
    if groups_figure is not None:
        files.append(groups_figure)
    return StudyOutputs(files, overview_html(study, table, figure, groups_figure))


def by_name(study: Study) -> List[int]:
    """Session indices ordered by name."""
    return sorted(range(len(study.sessions)),
                  key=lambda i: (study.sessions[i].name.casefold(), study.sessions[i].name))


def by_date(study: Study) -> List[int]:
    """Session indices ordered by date (undated last), then by name."""
    names = {i: rank for rank, i in enumerate(by_name(study))}
    return sorted(range(len(study.sessions)),
                  key=lambda i: (not study.dates[i], study.dates[i], names[i]))


def plot_study(study: Study, order: Sequence[int], path: Path) -> Path:
    """Mean valence and mean stability per session, sessions in date order.

    :param study: the study.
    :param order: session indices, left to right.
    :param path: PNG file to write.
    :return: ``path``.
    """
    overall = [study.sessions[i].summary["session"] for i in order]
    x = np.arange(len(order))
    fig = _figure(5.5)
    fig.set_figwidth(min(18.0, max(8.0, 2.0 + INCHES_PER_SESSION * len(order))))
    ax_valence, ax_stability = fig.subplots(2, 1, sharex=True)
    valence = [o["mean_valence"] for o in overall]
    ax_valence.bar(x, [v if v is not None else 0.0 for v in valence],
                   color=[_valence_colour(v) for v in valence])
    ax_valence.axhline(0.0, color="#444444", linewidth=0.8)
    ax_valence.set_ylim(-1, 1)
    ax_valence.set_ylabel("mean valence")
    stability = [o["mean_stability"] if o["mean_stability"] is not None else np.nan
                 for o in overall]
    ax_stability.plot(x, stability, "o-", color=SERIES_COLOURS[0], markersize=4)
    ax_stability.set_ylim(0, 1.02)
    ax_stability.set_ylabel("mean stability")
    for ax in (ax_valence, ax_stability):
        ax.grid(axis="y", alpha=0.3)
    step = max(1, int(np.ceil(len(order) / MAX_LABELLED_SESSIONS)))
    ax_stability.set_xticks(x[::step], [plain(study.sessions[i].name) for i in order][::step],
                            rotation=60, ha="right", fontsize=8)
    fig.suptitle(f"{len(order)} sessions in date order (all faces of each session together)")
    return save(fig, path)


def plot_groups(table: GroupTable, path: Path) -> Path:
    """Per condition: one line per unit (participant) and the mean over units (±SD).

    :param table: the --group-by comparison.
    :param path: PNG file to write.
    :return: ``path``.
    """
    fig = _figure(4.2)
    axes = fig.subplots(1, len(GROUP_MEASURES))
    x = np.arange(len(table.conditions))
    for ax, (measure, _) in zip(axes, GROUP_MEASURES):
        values = np.array([[table.cells[u].get(c, {}).get(measure) for c in table.conditions]
                           for u in table.units], dtype=float)
        for row in values:
            ax.plot(x, row, "o-", color="#9a9a9a", alpha=0.6, linewidth=1, markersize=3)
        counts = np.sum(~np.isnan(values), axis=0)
        means = np.array([np.nanmean(col) if n else np.nan for col, n in zip(values.T, counts)])
        sds = np.array([np.nanstd(col, ddof=1) if n > 1 else 0.0
                        for col, n in zip(values.T, counts)])
        ax.errorbar(x, means, yerr=sds, color="black", linewidth=2.2, marker="o", capsize=4,
                    label="mean ± SD over " + (" / ".join(table.unit_names) or "sessions"))
        ax.set_xticks(x, [plain(c) for c in table.conditions])
        ax.set_xlim(-0.4, len(x) - 0.6)
        ax.set_ylim(*((-1, 1) if measure == "mean_valence" else (0, 1.02)))
        ax.set_title(measure.replace("_", " "), fontsize=11)
        ax.grid(axis="y", alpha=0.3)
    axes[0].axhline(0.0, color="#444444", linewidth=0.8)
    axes[0].legend(loc="lower left", fontsize=8)
    who = " / ".join(table.unit_names) or "group"
    fig.suptitle(f"{len(table.units)} × {who}: " + " → ".join(table.conditions)
                 + " (grey: each; black: mean ± SD)")
    return save(fig, path)


def _e(value: Any) -> str:
    return html.escape(str(value))


def session_table(study: Study, order: Sequence[int], css: str) -> str:
    """One row per session in the given order."""
    labels = study_header(study)[1]
    head = ("<tr><th class='l'>Session</th><th class='l'>Date</th>"
            + "".join(f"<th class='l'>{_e(n)}</th>" for n in study.group_names)
            + "<th>Frames</th><th>Faces</th><th>Face time</th><th class='l'>Most frequent</th>"
            + "".join(f"<th>{_e(label)}</th>" for label in labels)
            + "<th>Mean valence</th><th>Mean stability</th></tr>")
    rows = []
    for i in order:
        outputs, summary = study.sessions[i], study.sessions[i].summary
        overall = summary["session"]
        rows.append(
            f"<tr><td class='l'><a href=\"{relative_href(outputs.folder.name, 'report.html')}\">"
            f"{_e(outputs.name)}</a></td><td class='l'>{_e(study.dates[i] or '–')}</td>"
            + "".join(f"<td class='l'>{_e(study.groups[i].get(n, '–'))}</td>"
                      for n in study.group_names)
            + f"<td>{summary['frames_processed']}</td><td>{overall['faces']}</td>"
            f"<td>{overall['face_seconds']:.1f} s</td>"
            f"<td class='l'>{_e(overall['dominant_emotion'] or '–')}</td>"
            + "".join(_share_cell(label, overall["emotion_shares"].get(label, 0.0), k)
                      for k, label in enumerate(labels))
            + f"<td>{_signed(overall['mean_valence'])}</td>"
            f"<td>{_number(overall['mean_stability'])}</td></tr>")
    return f"<table class='{css}'>{head}{''.join(rows)}</table>"


def groups_html(table: GroupTable) -> str:
    """Make the --group-by table: conditions side by side per unit, differences, means."""
    first = table.conditions[0]
    later = table.conditions[1:]
    head = ("<tr>"
            + "".join(f"<th class='l'>{_e(n)}</th>" for n in table.unit_names or ["group"])
            + "".join(f"<th>{_e(c)}: sessions</th><th>{_e(c)}: valence</th>"
                      f"<th>{_e(c)}: stability</th>" for c in table.conditions)
            + "".join(f"<th>valence {_e(c)} − {_e(first)}</th>"
                      f"<th>stability {_e(c)} − {_e(first)}</th>" for c in later) + "</tr>")
    rows = []
    for unit in table.units:
        cells = "".join(
            f"<td>{table.cells[unit].get(c, {}).get('sessions', 0)}</td>"
            f"<td>{_signed(table.cells[unit].get(c, {}).get('mean_valence'))}</td>"
            f"<td>{_number(table.cells[unit].get(c, {}).get('mean_stability'))}</td>"
            for c in table.conditions)
        cells += "".join(
            f"<td><b>{_signed(table.differences[unit][('mean_valence', c)])}</b></td>"
            f"<td><b>{_signed(table.differences[unit][('mean_stability', c)])}</b></td>"
            for c in later)
        name = "".join(f"<td class='l'>{_e(v)}</td>" for v in unit) or \
            "<td class='l'>all sessions</td>"
        rows.append(f"<tr>{name}{cells}</tr>")
    summary = []
    for c in later:
        for measure, _ in GROUP_MEASURES:
            mean, sd, count = table.mean_difference(measure, c)
            summary.append(f"{_e(measure.replace('_', ' '))} {_e(c)} − {_e(first)}: "
                           f"{_signed(mean)}" + (f" ± {sd:.2f} (SD)" if sd is not None else "")
                           + f" over {count} " + _e(" / ".join(table.unit_names) or "group"))
    return (f"<table>{head}{''.join(rows)}</table>"
            + (f"<p>Mean differences: {'; '.join(summary)}.</p>" if summary else ""))


def overview_html(study: Study, table: Optional[GroupTable], figure: Path,
                  groups_figure: Optional[Path]) -> str:
    """Make the study overview section of the top-level report.

    :param study: the study.
    :param table: the --group-by comparison (None without it).
    :param figure: the study figure.
    :param groups_figure: the groups figure, or None.
    :return: HTML (headings h2 and h3).
    """
    parts = [f"<h2>Study overview</h2><p class='sub'>{len(study.sessions)} sessions analysed"
             + (f", {len(study.failures)} could not be" if study.failures else "")
             + ". Numbers are over all faces of each session together; per face in "
             f"<a href=\"{relative_href(STUDY_CSV)}\">{STUDY_CSV}</a>. Dates are the "
             "inputs' modification times (or the pattern's <code>date</code> group).</p>",
             "<div class='order'>Order: <input type='radio' name='study-order' "
             "id='order-name' checked><label for='order-name'>by name</label> "
             "<input type='radio' name='study-order' id='order-date'>"
             "<label for='order-date'>by date</label>",
             session_table(study, by_name(study), "by-name"),
             session_table(study, by_date(study), "by-date"), "</div>"]
    if study.failures:
        parts.append("<h3>Not analysed</h3><ul>"
                     + "".join(f"<li>{_e(line)}</li>" for line in study.failures) + "</ul>")
    parts.append(f'<img alt="study" src="{data_uri(figure)}">')
    if table is not None:
        first = table.conditions[0]
        parts.append(
            f"<h3>By {_e(' / '.join(table.unit_names) or 'group')} and "
            f"{_e(study.group_names[-1])}</h3><p class='note'>Means over each one's sessions "
            f"per {_e(study.group_names[-1])}; differences from {_e(first)}. Also in "
            f"<a href=\"{relative_href(GROUPS_CSV)}\">{GROUPS_CSV}</a>.</p>"
            + groups_html(table))
        if groups_figure is not None:
            parts.append(f'<img alt="groups" src="{data_uri(groups_figure)}">')
    elif study.group_names:
        parts.append("<p class='note'>No session name matched the --group-by pattern.</p>")
    if study.unmatched:
        parts.append("<p class='note'>Not grouped (name does not match --group-by): "
                     + _e(", ".join(study.unmatched)) + ".</p>")
    return "".join(parts)
