"""Classification metrics, ``metrics.json`` and the figures people look at.

Shared by training, ``fer-evaluate`` and the baselines so every experiment
reports the same numbers in the same form.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray,
                           labels: Sequence[str]) -> Dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support and confusion matrix.

    :param y_true: int class indices [N].
    :param y_pred: int predicted indices [N].
    :param labels: class names in index order.
    :return: JSON-ready dict.
    """
    k = len(labels)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    per_class: Dict[str, Dict[str, float]] = {}
    for c, label in enumerate(labels):
        tp = confusion[c, c]
        predicted = confusion[:, c].sum()
        actual = confusion[c, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": round(float(precision), 4),
                            "recall": round(float(recall), 4),
                            "f1": round(float(f1), 4), "support": int(actual)}
    present = [m for m in per_class.values() if m["support"] > 0]
    return {
        "accuracy": round(float((y_true == y_pred).mean()) if len(y_true) else 0.0, 4),
        "macro_f1": round(float(np.mean([m["f1"] for m in present])) if present else 0.0, 4),
        "samples": int(len(y_true)),
        "labels": list(labels),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
    }


def git_revision(path: Path = Path(__file__).parent) -> str:
    """Return the checkout's git revision (with ``-dirty``), or ``"unknown"``."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=path,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def write_metrics(path: Path, metrics: Mapping[str, Any]) -> None:
    """Write metrics as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=False) + "\n")


def plot_confusion(confusion: Sequence[Sequence[int]], labels: Sequence[str],
                   path: Path, title: str = "") -> None:
    """Save a row-normalised confusion matrix with counts as a PNG.

    :param confusion: k x k counts (rows true, columns predicted).
    :param labels: class names.
    :param path: output .png.
    :param title: figure title (accuracy, model name...).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(confusion, dtype=np.float64)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.75 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for (i, j), rate in np.ndenumerate(rates):
        ax.text(j, i, f"{rate:.2f}\n({int(counts[i, j])})", ha="center",
                va="center", fontsize=8, color="white" if rate > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, label="recall share")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curve_series(history: Mapping[str, Sequence[float]], metric: str
                 ) -> List[Tuple[str, Sequence[float]]]:
    """Return ``(label, values)`` of every train and validation series of ``metric``.

    A single-head run logs ``accuracy``; a multi-task run logs one series per
    head (``emotion_3class_accuracy``), each labelled with its head.  The
    overall ``loss`` is taken alone when logged.
    """
    names = [metric] if metric in history else sorted(
        key for key in history
        if key.endswith("_" + metric) and not key.startswith("val_"))
    series = []
    for name in names:
        head = name[:-len(metric)].rstrip("_")
        for prefix, split in (("", "train"), ("val_", "validation")):
            values = history.get(prefix + name)
            if values:
                series.append((" ".join(filter(None, (split, head, metric))), values))
    return series


def plot_curves(history: Mapping[str, Sequence[float]], path: Path,
                title: str = "") -> None:
    """Save training curves (loss and accuracy, train vs validation) as a PNG.

    :param history: per-epoch series such as ``loss``, ``val_loss``,
        ``accuracy``, ``val_accuracy`` (or one accuracy per head of a
        multi-task run) and optionally ``learning_rate``.
    :param path: output .png.
    :param title: figure title.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key in zip(axes, ("loss", "accuracy")):
        for label, values in curve_series(history, key):
            ax.plot(range(1, len(values) + 1), values,
                    "--" if label.startswith("validation") else "-", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if history.get("learning_rate"):
        lr_axis = axes[0].twinx()
        lr_axis.plot(history["learning_rate"], ":", color="grey")
        lr_axis.set_yscale("log")
        lr_axis.set_ylabel("learning rate (dotted)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def read_history_csv(path: Path) -> Dict[str, List[float]]:
    """Read a Keras ``CSVLogger`` file into per-column float lists."""
    import csv

    history: Dict[str, List[float]] = {}
    if not path.is_file():
        return history
    with open(path, newline="") as stream:
        for row in csv.DictReader(stream):
            for key, value in row.items():
                if key != "epoch" and value not in (None, ""):
                    history.setdefault(key, []).append(float(value))
    return history


def report_line(name: str, metrics: Mapping[str, Any],
                extra: Optional[Mapping[str, Any]] = None) -> str:
    """One printable summary line for an experiment."""
    parts = [f"{name}: accuracy {metrics['accuracy']:.4f}",
             f"macro-F1 {metrics['macro_f1']:.4f}", f"n={metrics['samples']}"]
    for key, value in (extra or {}).items():
        parts.append(f"{key} {value}")
    return ", ".join(parts)
