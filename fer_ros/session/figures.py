"""The figures of a session report (PNG, matplotlib's object API, no display needed).

Figures are drawn on an Agg canvas, never with pyplot: per person (per
face track without re-identification), the class probabilities over time
with the published label; valence and stability over time; the share of
each emotion; and the comparison of several sessions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from fer_ros.session.data import FaceRow, SessionData
from fer_ros.session.safe_output import atomic_path


#: Colour of each emotion in every figure (red negative, grey neutral, green positive).
LABEL_COLOURS = {
    "negative": "#d62728", "neutral": "#9e9e9e", "positive": "#2ca02c",
    "angry": "#d62728", "disgust": "#8c564b", "fear": "#9467bd", "happy": "#2ca02c",
    "sad": "#1f77b4", "surprise": "#ff7f0e", "contempt": "#e377c2"}

#: Line colours of faces and sessions, in order
#: (no red or green, which would read as negative or positive emotion).
SERIES_COLOURS = ("#1f77b4", "#ff7f0e", "#9467bd", "#17becf", "#8c564b", "#e377c2",
                  "#bcbd22", "#7f7f7f")

#: At most this many persons (faces without re-identification), those seen
#: longest, get their own plot rows.
MAX_PLOTTED_FACES = 6

#: At most this many persons (or faces) are listed in the report's table
#: (longest first).
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

#: File names of the per-session figures, in report order.
FIGURE_FILES = {"timeline": "timeline.png", "valence": "valence_stability.png",
                "shares": "emotion_shares.png"}


def _figure(height_in: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(FIGURE_WIDTH_IN, height_in), dpi=FIGURE_DPI,
                  layout="constrained")


def plain(text: str) -> str:
    r"""Escape ``$`` so matplotlib draws a name as plain text, never as mathtext.

    Face ids and session names come from inputs; ``$\frac{1$`` would
    otherwise be parsed as a formula and fail.
    """
    return str(text).replace("$", r"\$")


def save(fig: Any, path: Path) -> Path:
    """Save a figure as PNG atomically (temporary file, then rename).

    :param fig: the figure.
    :param path: the PNG file.
    :return: ``path``.
    :raises OutputError: naming the file when it cannot be written.
    """
    with atomic_path(path) as temporary:
        fig.savefig(temporary, format="png")
    return path


def label_colour(label: str, index: int = 0) -> str:
    """Colour of an emotion label (a series colour for unknown labels)."""
    return LABEL_COLOURS.get(label, SERIES_COLOURS[index % len(SERIES_COLOURS)])


def plotted_faces(session: SessionData) -> List[str]:
    """Return the persons (else faces) seen longest, at most MAX_PLOTTED_FACES.

    :return: :attr:`FaceRow.subject` values, in order of appearance.
    """
    counts: Dict[str, int] = {}
    for row in session.rows:
        counts[row.subject] = counts.get(row.subject, 0) + 1
    longest = sorted(counts, key=lambda subject: -counts[subject])[:MAX_PLOTTED_FACES]
    return [subject for subject in counts if subject in longest]


def who(session: SessionData) -> str:
    """Return what the figures show one of: ``person`` with re-identification, else ``face``."""
    return "person" if session.person_ids() else "face"


def subject_summary(summary: Mapping[str, Any], subject: str) -> Mapping[str, Any]:
    """Return the summary of a person, else of a face track."""
    return summary.get("persons", {}).get(subject) or summary["faces"][subject]


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

    return [Patch(facecolor=label_colour(label, i), label=plain(label))
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
    """Per person (or face): stacked smoothed class probabilities over time, with the label bar.

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
        rows = session.rows_of_subject(face_id)
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
        ax.set_ylabel(f"{plain(face_id)}\nprobability")
        ax.grid(axis="x", alpha=0.3)
    if not faces:
        _no_faces(axes[0])
    axes[0].set_xlim(grid.min(), grid.max() + period)
    axes[-1].set_xlabel("time from the start of the input (s)")
    fig.suptitle(f"Emotion over time per {who(session)}: stacked areas = smoothed class "
                 "probabilities, top bar = published label")
    _label_legend(fig, session.labels)
    return save(fig, path)


def plot_valence(session: SessionData, path: Path) -> Path:
    """Valence per person or face (and its mean over the window T) above the stability.

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
        rows = session.rows_of_subject(face_id)
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        times = np.array([r.time_s for r in rows])
        valence = np.array([r.valence for r in rows])
        ax_valence.plot(*with_gaps(times, valence, period), color=colour, linewidth=0.8,
                        alpha=0.45)
        ax_valence.plot(*with_gaps(times, window_mean(times, valence, window), period),
                        color=colour, linewidth=2.2)
        ax_stability.plot(*with_gaps(times, np.array([r.stability for r in rows]), period),
                          color=colour, linewidth=1.8, label=plain(face_id))
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
    return save(fig, path)


def plot_shares(session: SessionData, summary: Mapping[str, Any], path: Path) -> Path:
    """Horizontal bars: share of each emotion per person (or face) and for all faces.

    :param session: the session.
    :param summary: its summary (from :func:`summarize`).
    :param path: PNG file to write.
    :return: ``path``.
    """
    faces = plotted_faces(session)
    entries = [("all faces", summary["session"]["emotion_shares"])] + [
        (face_id, subject_summary(summary, face_id)["emotion_shares"]) for face_id in faces]
    fig = _figure(1.6 + 0.55 * len(entries))
    ax = fig.subplots()
    _draw_stacked_shares(ax, [plain(name) for name, _ in entries][::-1], session.labels,
                         [share for _, share in entries][::-1], fontsize=10)
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter("{x:.0%}")
    ax.set_title("Share of processed frames with each emotion (published label)")
    if not session.rows:
        _no_faces(ax)
    _label_legend(fig, session.labels)
    return save(fig, path)


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
        ax.barh(positions, values, left=left, color=label_colour(label, i), label=plain(label),
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
    ax_shares.set_yticks(rows, [plain(name) for name in names])
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
    return save(fig, path)


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
