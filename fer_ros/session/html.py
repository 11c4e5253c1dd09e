"""report.html: a self-contained page per session and a comparison of sessions.

Figures are embedded as data URIs; no scripts, no external resources, so a
report can be e-mailed or opened offline.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from urllib.parse import quote
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from fer_ros.session.data import SessionOutputs
from fer_ros.session.figures import (FIGURE_FILES, MAX_TABLE_FACES, NEUTRAL_VALENCE_BAND,
                                     label_colour, plot_comparison)
from fer_ros.session.safe_output import remove_stale, write_text


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:24px auto;
max-width:1100px;padding:0 16px;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:2px solid #ddd}
.sub{color:#555;margin-top:0}table{border-collapse:collapse;margin:.6em 0 1em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;vertical-align:middle}
th{background:#f2f2f2}td.l,th.l{text-align:left}img{max-width:100%;height:auto;
border:1px solid #e2e2e2;margin:.4em 0}.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:130px}
.card b{display:block;font-size:1.35em}.card>span{color:#555;font-size:.9em}
td{white-space:nowrap}
.share{display:inline-block;height:10px;vertical-align:middle;margin-right:4px}
.pos{color:#1a7f1a}.neg{color:#c0392b}.cols{display:grid;grid-template-columns:1fr 1fr;
gap:18px}dt{font-weight:bold}dd{margin:0 0 .5em 1.2em}.note{color:#555;font-size:.92em}
.order .by-date,#order-date:checked~.by-name{display:none}
#order-date:checked~.by-date{display:table}
"""

#: With more sessions, the top-level report links to each session's report
#: instead of showing them in columns and in full (a study of hundreds).
MAX_COMPARED_SESSIONS = 12


def data_uri(path: Path) -> str:
    """Encode a PNG file as a ``data:image/png;base64`` URI."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _e(value: Any) -> str:
    return html.escape(str(value))


def relative_href(*segments: str) -> str:
    """Make an href to a file beside the report: relative, each segment percent-encoded.

    ``./`` first and ``:`` and ``/`` encoded, so no name can become a
    scheme (``javascript:``), an absolute path or another folder.

    :param segments: folder and file names, e.g. ``("session1", "report.html")``.
    :return: the escaped attribute value, e.g. ``./session1/report.html``.
    :raises ValueError: for an empty, ``.`` or ``..`` segment (browsers
        read ``%2E%2E`` as ``..`` too; session names never are one).
    """
    if any(segment in ("", ".", "..") for segment in segments):
        raise ValueError(f"not a file or folder name: {segments}")
    return _e("./" + "/".join(quote(segment, safe="") for segment in segments))


def _percent(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.0%}"


def _signed(value: Optional[float], digits: int = 2) -> str:
    if value is None:
        return "–"
    css = "pos" if value > NEUTRAL_VALENCE_BAND else \
        "neg" if value < -NEUTRAL_VALENCE_BAND else ""
    return f'<span class="{css}">{value:+.{digits}f}</span>'


def _number(value: Optional[float], digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _share_cell(label: str, share: float, index: int) -> str:
    width = int(round(share * 60))
    return (f'<td><span class="share" style="width:{width}px;background:'
            f'{label_colour(label, index)}"></span>{share:.0%}</td>')


def input_text(summary: Mapping[str, Any]) -> str:
    """One line describing the input (kind, topic, rate, frames)."""
    source = summary["input"]
    if source["kind"] == "rosbag2":
        what = (f"rosbag2 ({source['storage']}), topic {source['topic']} "
                f"({source['message_type'].rsplit('/', 1)[-1]})")
    elif source["kind"] == "recording":
        what = "emotion_recorder output (emotions.jsonl; results as published live)"
    else:
        what = "video"
    return (f"{what}, {source['frame_count']} frames at about "
            f"{source['frame_rate']:.1f} per second")


def selection_text(summary: Mapping[str, Any]) -> str:
    """Describe the analysed range and frame step in words."""
    selection = summary["input"]["selection"]
    every = selection["every"]
    step = "every frame" if every == 1 else f"one frame in {every}"
    return (f"{summary['analysed_from_s']:.1f} s to {summary['analysed_to_s']:.1f} s "
            f"from the start, {step}")


def overview_html(summary: Mapping[str, Any]) -> str:
    """Cards with the headline numbers and a table describing the input."""
    overall = summary["session"]
    dominant = overall["dominant_emotion"] or "–"
    share = overall["emotion_shares"].get(dominant, 0.0) if overall["dominant_emotion"] else None
    cards = [(f"{summary['frames_processed']}", "frames analysed"),
             (f"{overall['faces']}", "faces (tracks)")]
    if summary.get("persons"):
        cards.append((f"{len(summary['persons'])}", "people"))
    cards += [
             (f"{overall['face_seconds']:.1f} s", "face time on screen"),
             (f"{_e(dominant)} {_percent(share)}", "most frequent emotion"),
             (_signed(overall["mean_valence"]), "mean valence"),
             (_number(overall["mean_stability"]), "mean stability")]
    card_html = "".join(f'<div class="card"><b>{value}</b><span>{text}</span></div>'
                        for value, text in cards)
    rows = [("Input", _e(summary["input"]["path"])),
            ("Kind", _e(input_text(summary))),
            ("Analysed", _e(selection_text(summary))),
            ("Frames", f"{summary['frames_processed']} analysed, "
                       f"{summary['frames_with_faces']} with a face"
             + (f", {summary['frames_unreadable']} unreadable (skipped)"
                if summary["frames_unreadable"] else "")
             + (f"; <b>the input ended early: {summary['frames_read']} of "
                f"{summary['frames_expected']} frames read</b>"
                if "frames_read" in summary else "")),
            ("Model", _e(summary["model"] or "unknown") + " — classes "
             + _e(", ".join(summary["labels"]))),
            ("Stability window T", f"{summary['stability_window_s']:g} s")]
    if summary.get("only"):
        rows.append(("People", "only " + _e(", ".join(summary["only"]))
                     + " (the other faces are left out of every output)"))
    rows.append(("Privacy", privacy_text(summary)))
    rows += [("Warning", _e(warning)) for warning in summary.get("warnings", ())]
    table = "".join(f'<tr><th class="l">{k}</th><td class="l">{v}</td></tr>' for k, v in rows)
    return f'<div class="cards">{card_html}</div><table>{table}</table>'


#: Face tracks named in a person's row of the report's table, at most.
MAX_LISTED_TRACKS = 4


def _tracks_cell(face_ids: Sequence[str]) -> str:
    listed = ", ".join(face_ids[:MAX_LISTED_TRACKS])
    more = f" (+{len(face_ids) - MAX_LISTED_TRACKS})" if len(face_ids) > MAX_LISTED_TRACKS else ""
    return f"<td class='l'>{_e(listed + more)}</td>"


def privacy_text(summary: Mapping[str, Any]) -> str:
    """Say what the session's files show of the faces, in words."""
    if summary["input"]["kind"] == "recording":
        video = "no frames (a recording of the node's results)"
    elif summary.get("anonymized"):
        video = "the annotated video: faces pixelated beyond recognition (--anonymize)"
    else:
        video = ("the annotated video, if written: the faces as filmed (--anonymize "
                 "pixelates them)")
    return (f"{video}; this report: figures only, no frame pixels; no face embeddings in "
            "the session's files")


def faces_table_html(summary: Mapping[str, Any]) -> str:
    """Make the per-person table, or the per-face one without persons (longest first)."""
    persons = summary.get("persons") or {}
    faces = persons or summary["faces"]
    labels = summary["labels"]
    if not faces:
        if summary.get("only"):
            return (f'<p class="note">None of {_e(", ".join(summary["only"]))} was seen in '
                    "the analysed frames.</p>")
        return '<p class="note">No face was detected in the analysed frames.</p>'
    order = sorted(faces, key=lambda face_id: -faces[face_id]["time_on_screen_s"])
    head = (f"<tr><th class='l'>{'Person' if persons else 'Face'}</th>"
            + ("<th class='l'>Face tracks</th>" if persons else "")
            + "<th>On screen</th><th>Seen (s)</th><th class='l'>Most frequent</th>"
            + "".join(f"<th>{_e(label)}</th>" for label in labels)
            + "<th>Mean valence</th><th>Stability mean / min</th><th>Changes per s</th>"
            "<th>Valence MSSD</th><th>Whole-session stability</th></tr>")
    body = []
    for face_id in order[:MAX_TABLE_FACES]:
        face = faces[face_id]
        body.append(
            f"<tr><td class='l'>{_e(face_id)}</td>"
            + (_tracks_cell(face["face_ids"]) if persons else "")
            + f"<td>{face['time_on_screen_s']:.1f} s</td>"
            f"<td>{face['first_seen_s']:.1f}–{face['last_seen_s']:.1f}</td>"
            f"<td class='l'>{_e(face['dominant_emotion'])}</td>"
            + "".join(_share_cell(label, face["emotion_shares"][label], i)
                      for i, label in enumerate(labels))
            + f"<td>{_signed(face['mean_valence'])}</td>"
            f"<td>{face['stability']['mean']:.2f} / {face['stability']['min']:.2f}</td>"
            f"<td>{face['label_change_rate']['mean']:.2f}</td>"
            f"<td>{face['valence_mssd']['mean']:.3f}</td>"
            f"<td>{face['whole_session']['stability']:.2f}</td></tr>")
    kind = "people" if persons else "tracks"
    more = (f'<p class="note">{len(order) - MAX_TABLE_FACES} {kind} seen for a shorter time '
            "are not listed (see summary.json).</p>" if len(order) > MAX_TABLE_FACES else "")
    return f"<table>{head}{''.join(body)}</table>{more}"


GLOSSARY = """
<dl>
<dt>Published label</dt><dd>The emotion the robot would show: the most probable class after
smoothing the per-frame probabilities over time (as the live node publishes it). Shares count
processed frames.</dd>
<dt>Valence</dt><dd>Expected pleasantness under the class probabilities, from −1 (negative)
through 0 (neutral) to +1 (positive).</dd>
<dt>Stability (window T)</dt><dd>1 − share of successive frames within the last T seconds in
which the unsmoothed label changed: 1.0 = the same emotion throughout, 0.0 = it changed every
frame. Mean and minimum over the session are shown; "whole-session stability" applies the same
definition to all of the face's frames at once.</dd>
<dt>Changes per s</dt><dd>Label changes within the window divided by T.</dd>
<dt>Valence MSSD</dt><dd>Mean squared successive difference of the per-frame valence within
the window, 0 to 4: how abruptly valence moves (Jahng, Wood &amp; Trull, 2008).</dd>
<dt>Faces</dt><dd>Each face keeps its id while it stays in view; a face that leaves for longer
than the tracker's limit returns with a new id. Very short tracks are usually passing
detections.</dd>
<dt>People</dt><dd>With re-identification (on unless --no-reidentify) each face is also
recognised as a person, who keeps one id (person_1, person_2, ... or the name of a known
person) however long they are away; the tables and figures are then per person, over all
of the person's face tracks.</dd>
</dl>
<p class="note">Processing every Nth frame halves (or more) the frames per window, so
stability values are comparable only between sessions analysed with the same step.</p>
"""


def session_body_html(outputs: SessionOutputs, heading: str = "h2",
                      folder: Sequence[str] = (), glossary: bool = True) -> str:
    """Make the report body of one session (figures embedded, links to its files).

    :param outputs: the session's outputs.
    :param heading: tag of the section headings.
    :param folder: relative folder of the session's files from the report,
        as path segments (empty: the same folder).
    :param glossary: include the "How to read this" section.
    """
    summary = outputs.summary
    figures = "".join(
        f'<img alt="{_e(key)}" src="{data_uri(outputs.figures[key])}">'
        for key in FIGURE_FILES if key in outputs.figures)
    files = ", ".join(f'<a href="{relative_href(*folder, p.name)}">{_e(p.name)}</a>'
                      for p in outputs.files if p.suffix not in (".png", ".html"))
    return (f"<{heading}>Overview</{heading}>{overview_html(summary)}"
            f"<{heading}>{'People' if summary.get('persons') else 'Faces'}</{heading}>"
            f"{faces_table_html(summary)}"
            f"<{heading}>Figures</{heading}>{figures}"
            + (f"<{heading}>How to read this</{heading}>{GLOSSARY}" if glossary else "")
            + f'<p class="note">Files: {files}.</p>')


def html_page(title: str, subtitle: str, body: str) -> str:
    """Wrap a body into a complete, self-contained HTML page (inline CSS, no scripts)."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
            f'<h1>{_e(title)}</h1><p class="sub">{_e(subtitle)}</p>{body}</body></html>\n')


def write_session_report(outputs: SessionOutputs) -> Path:
    """Write the session's report.html.

    :param outputs: the session's outputs (figures already written).
    :return: the report path.
    """
    path = outputs.folder / "report.html"
    outputs.files.append(path)
    summary = outputs.summary
    subtitle = f"{input_text(summary)} — model {summary['model'] or 'unknown'}"
    return write_text(path, html_page(f"Emotion session report: {outputs.name}", subtitle,
                                      session_body_html(outputs)))


def comparison_rows(summaries: Sequence[Mapping[str, Any]]
                    ) -> List[Tuple[str, List[Optional[float]], str]]:
    """Metric rows of the comparison table: ``(name, value per session, format)``.

    :param summaries: the sessions' summaries.
    :return: formats are ``percent``, ``signed``, ``number`` or ``seconds``.
    """
    labels = list(dict.fromkeys(label for s in summaries for label in s["labels"]))
    overall = [s["session"] for s in summaries]
    rows: List[Tuple[str, List[Optional[float]], str]] = [
        ("frames analysed", [float(s["frames_processed"]) for s in summaries], "count"),
        ("faces (tracks)", [float(o["faces"]) for o in overall], "count")]
    if any(o.get("persons") for o in overall):
        rows.append(("people", [float(o.get("persons", 0)) for o in overall], "count"))
    rows.append(("face time on screen", [o["face_seconds"] for o in overall], "seconds"))
    rows += [(f"share {label}", [o["emotion_shares"].get(label) for o in overall], "percent")
             for label in labels]
    rows += [("mean valence", [o["mean_valence"] for o in overall], "signed"),
             ("mean stability", [o["mean_stability"] for o in overall], "number"),
             ("label changes per s", [o["mean_label_change_rate"] for o in overall], "number"),
             ("valence MSSD", [o["mean_valence_mssd"] for o in overall], "number")]
    return rows


def _format(value: Optional[float], kind: str, difference: bool = False) -> str:
    if value is None:
        return "–"
    if kind == "percent":
        return f"{value * 100:+.0f} pp" if difference else f"{value:.0%}"
    if kind == "seconds":
        return f"{value:+.1f} s" if difference else f"{value:.1f} s"
    if kind == "count":
        return f"{value:+.0f}" if difference else f"{value:.0f}"
    if kind == "signed":  # valence: coloured by sign, also its difference
        return _signed(value)
    return f"{value:+.2f}" if difference else f"{value:.2f}"


def comparison_table_html(names: Sequence[str], summaries: Sequence[Mapping[str, Any]]
                          ) -> str:
    """Metrics per session in columns, plus ``last − first`` for two sessions."""
    two = len(names) == 2
    head = ("<tr><th class='l'>All faces together</th>"
            + "".join(f"<th>{_e(name)}</th>" for name in names)
            + (f"<th>{_e(names[1])} − {_e(names[0])}</th>" if two else "") + "</tr>")
    body = []
    for metric, values, kind in comparison_rows(summaries):
        cells = "".join(f"<td>{_format(v, kind)}</td>" for v in values)
        if two:
            delta = (values[1] - values[0] if values[0] is not None
                     and values[1] is not None else None)
            cells += f"<td><b>{_format(delta, kind, difference=True)}</b></td>"
        body.append(f"<tr><th class='l'>{_e(metric)}</th>{cells}</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def write_comparison_report(sessions: Sequence[SessionOutputs], folder: Path,
                            overview: str = "") -> Path:
    """Write folder/report.html comparing the sessions, each shown in full too.

    :param sessions: the sessions' outputs, in command-line order.
    :param folder: the top output folder (sessions are in its subfolders).
    :param overview: HTML put first (a batch's study overview).
    :return: the report path.
    """
    names = [s.name for s in sessions]
    summaries = [s.summary for s in sessions]
    title = "Emotion sessions compared: " + " vs ".join(names)
    if len(sessions) > MAX_COMPARED_SESSIONS:
        links = "".join(f'<li><a href="{relative_href(s.folder.name, "report.html")}">'
                        f"{_e(s.name)}</a></li>" for s in sessions)
        remove_stale(folder, ["comparison.png"])  # of an earlier, smaller run
        return write_text(folder / "report.html", html_page(
            f"Emotion study: {len(sessions)} sessions", f"{len(sessions)} sessions",
            f"{overview}<h2>Session reports</h2><ul>{links}</ul>"
            f"<h2>How to read this</h2>{GLOSSARY}"))
    figure = plot_comparison(names, summaries, folder / "comparison.png")
    columns = "".join(
        f"<div><h3>{_e(s.name)}</h3>"
        f'<p class="note">{_e(input_text(s.summary))}; {_e(selection_text(s.summary))}. '
        f'<a href="{relative_href(s.folder.name, "report.html")}">Full report</a></p>'
        + "".join(f'<img alt="{key}" src="{data_uri(s.figures[key])}">'
                  for key in ("shares", "valence") if key in s.figures) + "</div>"
        for s in sessions)
    sections = "".join(
        f"<h2>Session {_e(s.name)}</h2>"
        + session_body_html(s, "h3", (s.folder.name,), glossary=False)
        for s in sessions)
    body = (f"{overview}<h2>Comparison</h2>{comparison_table_html(names, summaries)}"
            f'<img alt="comparison" src="{data_uri(figure)}">'
            f'<div class="cols">{columns}</div>{sections}'
            f"<h2>How to read this</h2>{GLOSSARY}")
    return write_text(folder / "report.html",
                      html_page(title, f"{len(sessions)} sessions", body))
