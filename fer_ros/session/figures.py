"""Outputs of a session analysis: figures, annotated video and report.html.

:func:`analyze_and_report` is what ``fer-analyze`` runs: it opens every
input first (so a bad one fails before any work), analyses each session with
:mod:`fer_ros.session.analysis`, and writes per session ``faces.csv``,
``summary.json``, three PNG figures, ``annotated.mp4`` (videos and bags) and
a self-contained ``report.html`` (figures embedded as data URIs, no scripts,
no external resources).  With several sessions each gets its own folder and
the top-level ``report.html`` compares them side by side.  Figures are drawn
with matplotlib's object API (Agg canvas), never pyplot, so no display is
needed.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from fer_ros.overlay import draw_overlay
from fer_ros.pipeline import FrameResult
from fer_ros.session.analysis import (FaceRow, FrameSelection, SessionData, SessionError,
                                      analyze_source, check_start, expand_inputs,
                                      is_recording,
                                      load_recording, open_source, pipeline_values,
                                      summarize, write_faces_csv, write_summary_json)

#: Colour of each emotion in every figure (red negative, grey neutral, green positive).
LABEL_COLOURS = {
    "negative": "#d62728", "neutral": "#9e9e9e", "positive": "#2ca02c",
    "angry": "#d62728", "disgust": "#8c564b", "fear": "#9467bd", "happy": "#2ca02c",
    "sad": "#1f77b4", "surprise": "#ff7f0e", "contempt": "#e377c2"}
#: Line colours of faces and sessions, in order
#: (no red or green, which would read as negative or positive emotion).
SERIES_COLOURS = ("#1f77b4", "#ff7f0e", "#9467bd", "#17becf", "#8c564b", "#e377c2",
                  "#bcbd22", "#7f7f7f")
#: At most this many faces (those seen longest) get their own plot rows.
MAX_PLOTTED_FACES = 6
#: At most this many faces are listed in the report's table (longest first).
MAX_TABLE_FACES = 25
#: A gap longer than this many frame periods breaks a face's lines and bars.
GAP_FRAME_PERIODS = 1.5
#: Width of the figures, inches (at FIGURE_DPI: about 1000 pixels).
FIGURE_WIDTH_IN = 10.0
#: Resolution of the PNG figures, dots per inch.
FIGURE_DPI = 100
#: Shares smaller than this are not written inside the share bars.
MIN_LABELLED_SHARE = 0.06
#: Valences (and their differences) within +-this are shown as neutral, not coloured.
NEUTRAL_VALENCE_BAND = 0.05
#: FourCC of the annotated video.
VIDEO_FOURCC = "mp4v"
#: File names of the per-session figures, in report order.
FIGURE_FILES = {"timeline": "timeline.png", "valence": "valence_stability.png",
                "shares": "emotion_shares.png"}


# --- annotated video --------------------------------------------------------

class AnnotatedVideoWriter:
    """Write the processed frames with the node's overlay into an MP4 file.

    :param path: the video file to write.
    :param frame_rate: frames/s written into the file.
    """

    def __init__(self, path: Path, frame_rate: float) -> None:
        self.path = path
        self.frame_rate = max(1.0, float(frame_rate))
        self.frames = 0
        self._writer: Optional[cv2.VideoWriter] = None
        self._size: Tuple[int, int] = (0, 0)

    def __call__(self, image: np.ndarray, result: FrameResult) -> None:
        """Annotate one frame and append it (resized to the first frame's size)."""
        overlay = draw_overlay(image, result)
        if self._writer is None:
            self._size = (overlay.shape[1], overlay.shape[0])
            fourcc = cv2.VideoWriter.fourcc(*VIDEO_FOURCC)
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.frame_rate,
                                           self._size)
            if not self._writer.isOpened():
                raise OSError(f"{self.path}: cannot write a {VIDEO_FOURCC} video")
        if (overlay.shape[1], overlay.shape[0]) != self._size:
            overlay = cv2.resize(overlay, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(overlay)
        self.frames += 1

    def close(self) -> None:
        """Finish the file."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None


# --- figures ---------------------------------------------------------------

def _figure(height_in: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(FIGURE_WIDTH_IN, height_in), dpi=FIGURE_DPI,
                  layout="constrained")


def label_colour(label: str, index: int = 0) -> str:
    """Colour of an emotion label (a series colour for unknown labels)."""
    return LABEL_COLOURS.get(label, SERIES_COLOURS[index % len(SERIES_COLOURS)])


def plotted_faces(session: SessionData) -> List[str]:
    """Return the faces seen longest (at most MAX_PLOTTED_FACES), in order of appearance."""
    counts: Dict[str, int] = {}
    for row in session.rows:
        counts[row.face_id] = counts.get(row.face_id, 0) + 1
    longest = sorted(counts, key=lambda face_id: -counts[face_id])[:MAX_PLOTTED_FACES]
    return [face_id for face_id in counts if face_id in longest]


def with_gaps(times: np.ndarray, values: np.ndarray, period_s: float
              ) -> Tuple[np.ndarray, np.ndarray]:
    """Insert NaN where a series has a gap, so lines are not drawn across it.

    :param times: sample times, seconds, increasing.
    :param values: sample values.
    :param period_s: normal spacing; a step over GAP_FRAME_PERIODS of it is a gap.
    :return: ``(times, values)`` with one NaN sample inside each gap.
    """
    gaps = np.flatnonzero(np.diff(times) > GAP_FRAME_PERIODS * period_s) + 1
    if not gaps.size:
        return times, values.astype(np.float64)
    mids = (times[gaps - 1] + times[gaps]) / 2.0
    return (np.insert(times.astype(np.float64), gaps, mids),
            np.insert(values.astype(np.float64), gaps, np.nan))


def window_mean(times: np.ndarray, values: np.ndarray, window_s: float) -> np.ndarray:
    """Mean of the values within the window ``(t - window_s, t]`` at each sample.

    :param times: sample times, seconds, non-decreasing.
    :param values: sample values.
    :param window_s: window length, seconds.
    :return: one mean per sample.
    """
    sums = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    starts = np.searchsorted(times, times - window_s, side="right")
    ends = np.arange(1, len(times) + 1)
    return (sums[ends] - sums[starts]) / (ends - starts)


def label_runs(rows: Sequence[FaceRow], period_s: float) -> List[Tuple[str, float, float]]:
    """Split one face's rows into runs of the same label; gaps end a run.

    :param rows: one face's rows, in time order.
    :param period_s: time between processed frames, seconds.
    :return: ``(label, start_s, duration_s)`` per run, in time order.
    """
    runs: List[Tuple[str, float, float]] = []
    for i, row in enumerate(rows):
        joined = (i > 0 and row.label == rows[i - 1].label
                  and row.time_s - rows[i - 1].time_s <= GAP_FRAME_PERIODS * period_s)
        if joined:
            label, start, _ = runs[-1]
            runs[-1] = (label, start, row.time_s + period_s - start)
        else:
            runs.append((row.label, row.time_s, period_s))
    return runs


def _legend_handles(labels: Sequence[str]) -> List[Any]:
    from matplotlib.patches import Patch

    return [Patch(facecolor=label_colour(label, i), label=label)
            for i, label in enumerate(labels)]


def _label_legend(fig: Any, labels: Sequence[str]) -> None:
    """Put the emotion colours below the figure (none without labels)."""
    if labels:
        fig.legend(handles=_legend_handles(labels), loc="outside lower center",
                   ncol=len(labels))


def _no_faces(ax: Any) -> None:
    ax.text(0.5, 0.5, "no faces detected", ha="center", va="center",
            transform=ax.transAxes, fontsize=14, color="#666666")
    ax.set_yticks([])


def plot_timeline(session: SessionData, path: Path) -> Path:
    """Per face: stacked smoothed class probabilities over time, with the label bar.

    :param session: the session.
    :param path: PNG file to write.
    :return: ``path``.
    """
    faces = plotted_faces(session)
    period = session.frame_period_s()
    fig = _figure(1.3 + 1.7 * max(1, len(faces)))
    axes = fig.subplots(max(1, len(faces)), 1, sharex=True, squeeze=False)[:, 0]
    grid = np.array([f.time_s for f in session.frames])
    position = {f.index: i for i, f in enumerate(session.frames)}
    for ax, face_id in zip(axes, faces):
        rows = session.rows_of(face_id)
        probs = np.array([r.smoothed_probabilities for r in rows])
        on_grid = np.full((len(grid), len(session.labels)), np.nan)
        on_grid[[position[r.frame_index] for r in rows]] = probs
        # Each frame's step lasts one period, so the last one is drawn to its end.
        steps = np.append(grid, grid[-1] + period)
        on_grid = np.vstack([on_grid, on_grid[-1:]])
        bottom = np.zeros(len(steps))
        for i, label in enumerate(session.labels):
            top = bottom + on_grid[:, i]
            ax.fill_between(steps, bottom, top, color=label_colour(label, i), alpha=0.55,
                            linewidth=0, step="post")
            bottom = top
        for label, start, duration in label_runs(rows, period):
            ax.broken_barh([(start, duration)], (1.04, 0.12),
                           color=label_colour(label, session.labels.index(label)))
        ax.set_ylim(0, 1.18)
        ax.set_yticks([0, 0.5, 1.0])
        ax.set_ylabel(f"{face_id}\nprobability")
        ax.grid(axis="x", alpha=0.3)
    if not faces:
        _no_faces(axes[0])
    axes[0].set_xlim(grid.min(), grid.max() + period)
    axes[-1].set_xlabel("time from the start of the input (s)")
    fig.suptitle("Emotion over time per face: stacked areas = smoothed class "
                 "probabilities, top bar = published label")
    _label_legend(fig, session.labels)
    fig.savefig(path)
    return path


def plot_valence(session: SessionData, path: Path) -> Path:
    """Valence per face (and its mean over the window T) above the stability.

    :param session: the session.
    :param path: PNG file to write.
    :return: ``path``.
    """
    faces = plotted_faces(session)
    period, window = session.frame_period_s(), session.stability_window_s
    fig = _figure(6.2)
    ax_valence, ax_stability = fig.subplots(2, 1, sharex=True,
                                            gridspec_kw={"height_ratios": [3, 2]})
    for i, face_id in enumerate(faces):
        rows = session.rows_of(face_id)
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        times = np.array([r.time_s for r in rows])
        valence = np.array([r.valence for r in rows])
        ax_valence.plot(*with_gaps(times, valence, period), color=colour, linewidth=0.8,
                        alpha=0.45)
        ax_valence.plot(*with_gaps(times, window_mean(times, valence, window), period),
                        color=colour, linewidth=2.2)
        ax_stability.plot(*with_gaps(times, np.array([r.stability for r in rows]), period),
                          color=colour, linewidth=1.8, label=face_id)
    ax_valence.axhline(0.0, color="#444444", linewidth=0.8)
    ax_valence.set_ylim(-1.05, 1.05)
    ax_valence.set_ylabel("valence\n(-1 negative, +1 positive)")
    ax_valence.set_title(f"Valence (thin: per frame, thick: mean over the last T = "
                         f"{window:g} s) and stability over the same window")
    ax_stability.set_ylim(-0.02, 1.05)
    ax_stability.set_ylabel("stability over\nthe last T (0-1)")
    ax_stability.set_xlabel("time from the start of the input (s)")
    grid = [f.time_s for f in session.frames]
    ax_stability.set_xlim(min(grid), max(grid) + period)
    start, span = min(grid), max(grid) + period - min(grid)
    if window <= span:  # a bracket as long as the window, at the start
        ax_stability.annotate("", xy=(start + window, 0.1), xytext=(start, 0.1),
                              arrowprops={"arrowstyle": "|-|", "color": "#333333"})
        ax_stability.text(start + window / 2, 0.14, f"window T = {window:g} s",
                          ha="center", fontsize=9, color="#333333")
    else:
        ax_stability.text(0.01, 0.1, f"window T = {window:g} s (longer than the analysed "
                          "span)", transform=ax_stability.transAxes, fontsize=9,
                          color="#333333")
    for ax in (ax_valence, ax_stability):
        ax.grid(alpha=0.3)
    if faces:
        fig.legend(handles=ax_stability.get_lines(), loc="outside lower center",
                   ncol=min(len(faces), MAX_PLOTTED_FACES))
    else:
        _no_faces(ax_valence)
    fig.savefig(path)
    return path


def plot_shares(session: SessionData, summary: Mapping[str, Any], path: Path) -> Path:
    """Horizontal bars: share of each emotion per face and for all faces.

    :param session: the session.
    :param summary: its summary (from :func:`summarize`).
    :param path: PNG file to write.
    :return: ``path``.
    """
    faces = plotted_faces(session)
    entries = [("all faces", summary["session"]["emotion_shares"])] + [
        (face_id, summary["faces"][face_id]["emotion_shares"]) for face_id in faces]
    fig = _figure(1.6 + 0.55 * len(entries))
    ax = fig.subplots()
    _draw_stacked_shares(ax, [name for name, _ in entries][::-1], session.labels,
                         [share for _, share in entries][::-1], fontsize=10)
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter("{x:.0%}")
    ax.set_title("Share of processed frames with each emotion (published label)")
    if not session.rows:
        _no_faces(ax)
    _label_legend(fig, session.labels)
    fig.savefig(path)
    return path


def _draw_stacked_shares(ax: Any, positions: Sequence[Any], labels: Sequence[str],
                         shares: Sequence[Mapping[str, float]], fontsize: int) -> None:
    """Draw one horizontal bar per row, stacked by emotion share, with percentages.

    :param ax: matplotlib axes.
    :param positions: bar positions (numbers or row names), bottom to top.
    :param labels: class names, in stacking order.
    :param shares: per row, share of each label (0..1; missing labels are 0).
    :param fontsize: size of the percentages written on the bars.
    """
    left = np.zeros(len(positions))
    for i, label in enumerate(labels):
        values = np.array([share.get(label, 0.0) for share in shares])
        ax.barh(positions, values, left=left, color=label_colour(label, i), label=label,
                edgecolor="white")
        for y, (x0, value) in enumerate(zip(left, values)):
            if value >= MIN_LABELLED_SHARE:
                ax.text(x0 + value / 2, y, f"{value:.0%}", ha="center", va="center",
                        color="white", fontsize=fontsize, fontweight="bold")
        left += values


def plot_comparison(names: Sequence[str], summaries: Sequence[Mapping[str, Any]],
                    path: Path) -> Path:
    """Sessions in rows: emotion shares, mean valence, stability, change rate.

    :param names: session names (top to bottom).
    :param summaries: their summaries.
    :param path: PNG file to write.
    :return: ``path``.
    """
    labels = list(dict.fromkeys(label for s in summaries for label in s["labels"]))
    overall = [s["session"] for s in summaries]
    fig = _figure(1.5 + 0.55 * len(names))
    ax_shares, ax_valence, ax_stability, ax_rate = fig.subplots(
        1, 4, sharey=True, gridspec_kw={"width_ratios": [2.4, 1.1, 1, 1]})
    rows = np.arange(len(names))
    _draw_stacked_shares(ax_shares, list(rows), labels, [o["emotion_shares"] for o in overall],
                         fontsize=9)
    for y, stats in enumerate(overall):
        if not stats["faces"]:
            ax_shares.text(0.5, y, "no faces", ha="center", va="center", fontsize=9,
                           color="#666666")
    ax_shares.set_yticks(rows, names)
    ax_shares.invert_yaxis()
    ax_shares.set_xlim(0, 1)
    ax_shares.xaxis.set_major_formatter("{x:.0%}")
    ax_shares.set_title("share of each emotion", fontsize=11)
    valence = [o["mean_valence"] for o in overall]
    _comparison_bars(ax_valence, valence, [o["valence_sd"] for o in overall],
                     [_valence_colour(v) for v in valence], "mean valence (±SD)")
    ax_valence.axvline(0.0, color="#444444", linewidth=0.8)
    ax_valence.set_xlim(-1, 1)
    _comparison_bars(ax_stability, [o["mean_stability"] for o in overall], None,
                     [SERIES_COLOURS[0]] * len(names), "mean stability")
    ax_stability.set_xlim(0, 1)
    _comparison_bars(ax_rate, [o["mean_label_change_rate"] for o in overall], None,
                     [SERIES_COLOURS[1]] * len(names), "label changes / s")
    fig.suptitle("Sessions compared (all faces of each session together; numbers in "
                 "the table)")
    _label_legend(fig, labels)
    fig.savefig(path)
    return path


def _valence_colour(value: Optional[float]) -> str:
    if value is None:
        return LABEL_COLOURS["neutral"]
    return label_colour("positive" if value > NEUTRAL_VALENCE_BAND else "negative"
                        if value < -NEUTRAL_VALENCE_BAND else "neutral")


def _comparison_bars(ax: Any, values: Sequence[Optional[float]],
                     errors: Optional[Sequence[Optional[float]]], colours: Sequence[str],
                     title: str) -> None:
    """Draw one horizontal bar per session; sessions without faces say so."""
    widths = [v if v is not None else 0.0 for v in values]
    xerr = [e if e is not None else 0.0 for e in errors] if errors is not None else None
    ax.barh(range(len(values)), widths, color=colours, xerr=xerr, capsize=3,
            error_kw={"ecolor": "#555555", "elinewidth": 1})
    for y, value in enumerate(values):
        if value is None:
            ax.text(0.5, y, "no faces", transform=ax.get_yaxis_transform(), ha="center",
                    va="center", fontsize=9, color="#666666")
    ax.set_title(title, fontsize=11)
    ax.grid(axis="x", alpha=0.3)


# --- report.html ------------------------------------------------------------

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
"""


@dataclass
class SessionOutputs:
    """The files written for one session.

    :param name: session name.
    :param folder: its output folder.
    :param summary: the summary (summary.json content).
    :param figures: figure key (see FIGURE_FILES) -> PNG path.
    :param files: every file written, report.html last.
    """

    name: str
    folder: Path
    summary: Dict[str, Any]
    figures: Dict[str, Path] = field(default_factory=dict)
    files: List[Path] = field(default_factory=list)


def data_uri(path: Path) -> str:
    """Encode a PNG file as a ``data:image/png;base64`` URI."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _e(value: Any) -> str:
    return html.escape(str(value))


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
             (f"{overall['faces']}", "faces (tracks)"),
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
                if summary["frames_unreadable"] else "")),
            ("Model", _e(summary["model"] or "unknown") + " — classes "
             + _e(", ".join(summary["labels"]))),
            ("Stability window T", f"{summary['stability_window_s']:g} s")]
    table = "".join(f'<tr><th class="l">{k}</th><td class="l">{v}</td></tr>' for k, v in rows)
    return f'<div class="cards">{card_html}</div><table>{table}</table>'


def faces_table_html(summary: Mapping[str, Any]) -> str:
    """Make the per-face table (longest on screen first)."""
    faces = summary["faces"]
    labels = summary["labels"]
    if not faces:
        return '<p class="note">No face was detected in the analysed frames.</p>'
    order = sorted(faces, key=lambda face_id: -faces[face_id]["time_on_screen_s"])
    head = ("<tr><th class='l'>Face</th><th>On screen</th><th>Seen (s)</th>"
            "<th class='l'>Most frequent</th>"
            + "".join(f"<th>{_e(label)}</th>" for label in labels)
            + "<th>Mean valence</th><th>Stability mean / min</th><th>Changes per s</th>"
            "<th>Valence MSSD</th><th>Whole-session stability</th></tr>")
    body = []
    for face_id in order[:MAX_TABLE_FACES]:
        face = faces[face_id]
        body.append(
            f"<tr><td class='l'>{_e(face_id)}</td><td>{face['time_on_screen_s']:.1f} s</td>"
            f"<td>{face['first_seen_s']:.1f}–{face['last_seen_s']:.1f}</td>"
            f"<td class='l'>{_e(face['dominant_emotion'])}</td>"
            + "".join(_share_cell(label, face["emotion_shares"][label], i)
                      for i, label in enumerate(labels))
            + f"<td>{_signed(face['mean_valence'])}</td>"
            f"<td>{face['stability']['mean']:.2f} / {face['stability']['min']:.2f}</td>"
            f"<td>{face['label_change_rate']['mean']:.2f}</td>"
            f"<td>{face['valence_mssd']['mean']:.3f}</td>"
            f"<td>{face['whole_session']['stability']:.2f}</td></tr>")
    more = (f'<p class="note">{len(order) - MAX_TABLE_FACES} shorter tracks are not listed '
            "(see summary.json).</p>" if len(order) > MAX_TABLE_FACES else "")
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
</dl>
<p class="note">Processing every Nth frame halves (or more) the frames per window, so
stability values are comparable only between sessions analysed with the same step.</p>
"""


def session_body_html(outputs: SessionOutputs, heading: str = "h2",
                      file_prefix: str = "", glossary: bool = True) -> str:
    """Make the report body of one session (figures embedded, links to its files).

    :param outputs: the session's outputs.
    :param heading: tag of the section headings.
    :param file_prefix: relative folder of the session's files from the report.
    :param glossary: include the "How to read this" section.
    """
    summary = outputs.summary
    figures = "".join(
        f'<img alt="{_e(key)}" src="{data_uri(outputs.figures[key])}">'
        for key in FIGURE_FILES if key in outputs.figures)
    files = ", ".join(f'<a href="{_e(file_prefix + p.name)}">{_e(p.name)}</a>'
                      for p in outputs.files if p.suffix not in (".png", ".html"))
    return (f"<{heading}>Overview</{heading}>{overview_html(summary)}"
            f"<{heading}>Faces</{heading}>{faces_table_html(summary)}"
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
    path.write_text(html_page(f"Emotion session report: {outputs.name}", subtitle,
                              session_body_html(outputs)))
    return path


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
        ("faces (tracks)", [float(o["faces"]) for o in overall], "count"),
        ("face time on screen", [o["face_seconds"] for o in overall], "seconds")]
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


def write_comparison_report(sessions: Sequence[SessionOutputs], folder: Path) -> Path:
    """Write folder/report.html comparing the sessions, each shown in full too.

    :param sessions: the sessions' outputs, in command-line order.
    :param folder: the top output folder (sessions are in its subfolders).
    :return: the report path.
    """
    names = [s.name for s in sessions]
    summaries = [s.summary for s in sessions]
    figure = plot_comparison(names, summaries, folder / "comparison.png")
    columns = "".join(
        f"<div><h3>{_e(s.name)}</h3>"
        f'<p class="note">{_e(input_text(s.summary))}; {_e(selection_text(s.summary))}. '
        f'<a href="{_e(s.folder.name)}/report.html">Full report</a></p>'
        + "".join(f'<img alt="{key}" src="{data_uri(s.figures[key])}">'
                  for key in ("shares", "valence") if key in s.figures) + "</div>"
        for s in sessions)
    sections = "".join(
        f"<h2>Session {_e(s.name)}</h2>"
        + session_body_html(s, "h3", f"{s.folder.name}/", glossary=False)
        for s in sessions)
    body = (f"<h2>Comparison</h2>{comparison_table_html(names, summaries)}"
            f'<img alt="comparison" src="{data_uri(figure)}">'
            f'<div class="cols">{columns}</div>{sections}'
            f"<h2>How to read this</h2>{GLOSSARY}")
    title = "Emotion sessions compared: " + " vs ".join(names)
    path = folder / "report.html"
    path.write_text(html_page(title, f"{len(sessions)} sessions", body))
    return path


# --- the whole analysis -----------------------------------------------------

@dataclass
class AnalysisRequest:
    """What ``fer-analyze`` was asked to do.

    :param inputs: videos, folders of videos, rosbag2 recordings, emotions.jsonl files.
    :param output: the output folder.
    :param selection: which frames to process.
    :param topic: the image topic of rosbag2 inputs.
    :param model: ``3class``, ``7class`` or a model path (overrides the params file).
    :param params_file: fer node parameters YAML.
    :param recordings: emotions.jsonl files analysed without a model.
    :param compare: the inputs are exactly two sessions to compare.
    :param annotated_video: write annotated.mp4.
    :param show_progress: progress bars on stderr.
    """

    inputs: List[Path]
    output: Path
    selection: FrameSelection = field(default_factory=FrameSelection)
    topic: Optional[str] = None
    model: Optional[str] = None
    params_file: Optional[Path] = None
    recordings: List[Path] = field(default_factory=list)
    compare: bool = False
    annotated_video: bool = True
    show_progress: bool = True


def unique_names(paths: Sequence[Path]) -> List[str]:
    """Folder names for the sessions: their stems, numbered where they clash."""
    names: List[str] = []
    for path in paths:
        stem = path.parent.name if is_recording(path) and path.stem == "emotions" \
            else (path.stem if path.is_file() else path.name)
        name, number = stem, 2
        while name in names:
            name, number = f"{stem}_{number}", number + 1
        names.append(name)
    return names


def analyze_and_report(request: AnalysisRequest) -> Tuple[Path, List[SessionOutputs]]:
    """Analyse every session of the request and write all outputs.

    :param request: inputs, output folder and options.
    :return: the top report.html and each session's outputs.
    :raises SessionError, BagError, ModelLoadError, DetectorError, OSError:
        with one line naming the input and the problem.
    """
    values = pipeline_values(request.params_file, request.model)
    paths = request.recordings + expand_inputs(request.inputs)
    if not paths:
        raise SessionError("no input given")
    for path in request.recordings:
        if not path.is_file():
            raise SessionError(f"{path}: no such file")
    if request.compare and len(paths) != 2:
        raise SessionError(f"--compare needs exactly two sessions, got {len(paths)}")
    if request.output.exists() and not request.output.is_dir():
        raise SessionError(f"{request.output}: exists and is not a folder")
    sources = {path: open_source(path, request.topic) for path in paths
               if path not in request.recordings and not is_recording(path)}
    for source in sources.values():
        check_start(source.description, request.selection)
    names = unique_names(paths)
    single = len(paths) == 1
    request.output.mkdir(parents=True, exist_ok=True)
    results: List[SessionOutputs] = []
    try:
        for path, name in zip(paths, names):
            folder = request.output if single else request.output / name
            folder.mkdir(parents=True, exist_ok=True)
            results.append(_analyze_one(path, name, folder, sources.get(path), values,
                                        request))
    finally:
        for source in sources.values():
            source.close()
    if single:
        return results[0].files[-1], results
    return write_comparison_report(results, request.output), results


def _analyze_one(path: Path, name: str, folder: Path, source: Any,
                 values: Dict[str, Any], request: AnalysisRequest) -> SessionOutputs:
    from fer_ros.pipeline import build_pipeline

    files: List[Path] = []
    if source is None:
        session = load_recording(path, request.selection)
    else:
        pipeline, model = build_pipeline(values)
        writer = None
        if request.annotated_video:
            rate = source.description.frame_rate / request.selection.every
            writer = AnnotatedVideoWriter(folder / "annotated.mp4", rate)
        try:
            session = analyze_source(source, pipeline, model, request.selection, writer,
                                     request.show_progress)
        finally:
            if writer is not None:
                writer.close()
        if writer is not None and writer.frames:
            files.append(writer.path)
    session.description.name = name
    return write_session_outputs(session, folder, files)


def write_session_outputs(session: SessionData, folder: Path,
                          extra_files: Sequence[Path] = ()) -> SessionOutputs:
    """Write faces.csv, summary.json, the figures and report.html of a session.

    :param session: the analysed session.
    :param folder: its output folder (exists).
    :param extra_files: files already written there (the annotated video).
    :return: what was written.
    """
    summary = summarize(session)
    outputs = SessionOutputs(session.description.name, folder, summary)
    outputs.files += [write_faces_csv(session, folder / "faces.csv"),
                      write_summary_json(summary, folder / "summary.json"), *extra_files]
    outputs.figures = {
        "timeline": plot_timeline(session, folder / FIGURE_FILES["timeline"]),
        "valence": plot_valence(session, folder / FIGURE_FILES["valence"]),
        "shares": plot_shares(session, summary, folder / FIGURE_FILES["shares"])}
    outputs.files += list(outputs.figures.values())
    write_session_report(outputs)
    return outputs
