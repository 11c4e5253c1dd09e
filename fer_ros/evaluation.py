"""Classification metrics, ``metrics.json`` and the figures people look at.

Shared by training, ``fer-evaluate`` and the baselines so every experiment
reports the same numbers in the same form.
"""

from __future__ import annotations

import json
import subprocess
from math import lgamma
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
    correct = int((y_true == y_pred).sum())
    return {
        "accuracy": round(correct / len(y_true) if len(y_true) else 0.0, 4),
        "accuracy_ci95": [round(bound, 4) for bound in accuracy_interval(correct, len(y_true))],
        "macro_f1": round(float(np.mean([m["f1"] for m in present])) if present else 0.0, 4),
        "samples": int(len(y_true)),
        "labels": list(labels),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
    }


def accuracy_interval(correct: int, total: int, z: float = 1.96) -> Tuple[float, float]:
    """Wilson score interval of an accuracy (95% for the default ``z``).

    How far the accuracy measured on ``total`` faces may be from the
    accuracy on all faces like them: on FER2013's 3,174 PublicTest faces an
    accuracy of 83% is known to about +-1.3 points.

    :param correct: correctly classified samples.
    :param total: samples evaluated.
    :return: ``(low, high)`` in [0, 1]; ``(0, 1)`` when nothing was evaluated.
    """
    if total <= 0:
        return 0.0, 1.0
    share = correct / total
    denominator = 1.0 + z * z / total
    centre = (share + z * z / (2 * total)) / denominator
    half_width = z * np.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) \
        / denominator
    return max(0.0, float(centre - half_width)), min(1.0, float(centre + half_width))


def paired_comparison(correct_a: np.ndarray, correct_b: np.ndarray) -> Dict[str, Any]:
    """Compare two models on the same faces (exact McNemar test).

    Only the faces the models disagree on carry information: with ``b`` faces
    right only for A and ``c`` right only for B, the two-sided p-value is the
    chance of a split at least this uneven if either model were equally
    likely to win each of the ``b + c`` disagreements.

    :param correct_a: bool [N], model A right on each face.
    :param correct_b: bool [N], model B right on the same faces.
    :return: JSON-ready dict: ``difference`` (accuracy A - B), ``only_a``,
        ``only_b``, ``p_value``.
    :raises ValueError: when the arrays differ in length.
    """
    correct_a = np.asarray(correct_a, dtype=bool)
    correct_b = np.asarray(correct_b, dtype=bool)
    if correct_a.shape != correct_b.shape:
        raise ValueError(f"paired comparison needs the same faces: {correct_a.shape} "
                         f"vs {correct_b.shape}")
    only_a = int((correct_a & ~correct_b).sum())
    only_b = int((correct_b & ~correct_a).sum())
    n = only_a + only_b
    # Two-sided exact binomial test with p = 1/2, summed in log space.
    k = min(only_a, only_b)
    log_terms = [_log_binomial(n, i) - n * np.log(2.0) for i in range(k + 1)]
    p_value = min(1.0, 2.0 * float(np.exp(np.logaddexp.reduce(log_terms)))) if n else 1.0
    difference = float(correct_a.mean() - correct_b.mean()) if correct_a.size else 0.0
    return {"difference": round(difference, 4), "only_a": only_a, "only_b": only_b,
            "p_value": round(p_value, 4)}


def _log_binomial(n: int, k: int) -> float:
    """Log of the binomial coefficient ``n choose k``."""
    return lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1)


def fusion_gain(base: np.ndarray, added: np.ndarray, y: np.ndarray, splits: int = 20,
                seed: int = 0, max_weight: float = 0.5) -> Dict[str, Any]:
    """Cross-fitted gain of ``(1 - w) log base + w log added`` over ``base`` alone.

    For each of ``splits`` random halvings of the faces, ``w`` (0 to
    ``max_weight`` in steps of 0.05) is chosen on one half and scored on the
    other, and the other way round: the weight is never scored on the faces
    it was chosen on.  Returns the number of halves scored, the median and
    mean gain in accuracy, the chosen weights, and the accuracy at each
    weight on all the faces (optimistic).

    :param base: probabilities ``[N, C]`` of the model that is kept.
    :param added: probabilities ``[N, C]`` of the model fused into it.
    :param y: true class indices ``[N]``.
    """
    if base.shape != added.shape or len(y) != len(base):
        raise ValueError(f"fusion_gain: shapes {base.shape}, {added.shape} and {len(y)} labels "
                         "do not match")
    if not 0.0 < max_weight <= 1.0:
        raise ValueError(f"fusion_gain: max_weight {max_weight} is not in (0, 1]")
    weights = np.round(np.arange(0.0, max_weight + 1e-9, 0.05), 2)
    log_base, log_added = np.log(base + 1e-7), np.log(added + 1e-7)

    def correct(index: np.ndarray, w: float) -> np.ndarray:
        fused = (1.0 - w) * log_base[index] + w * log_added[index]
        return fused.argmax(axis=1) == y[index]

    rng = np.random.default_rng(seed)
    gains, chosen = [], []
    for _ in range(splits):
        order = rng.permutation(len(y))
        halves = (order[: len(y) // 2], order[len(y) // 2:])
        for fit, test in (halves, halves[::-1]):
            w = weights[int(np.argmax([correct(fit, w).mean() for w in weights]))]
            chosen.append(float(w))
            gains.append(float(correct(test, w).mean() - correct(test, 0.0).mean()))
    everything = np.arange(len(y))
    return {"halves": len(gains), "median_gain": round(float(np.median(gains)), 4),
            "mean_gain": round(float(np.mean(gains)), 4),
            "chosen_weights": sorted(set(chosen)),
            "accuracy_by_weight_all_faces": {str(w): round(float(correct(everything, w).mean()), 4)
                                             for w in weights}}


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
    interval = metrics.get("accuracy_ci95")
    ci = f" (95% CI {interval[0]:.4f}-{interval[1]:.4f})" if interval else ""
    parts = [f"{name}: accuracy {metrics['accuracy']:.4f}{ci}",
             f"macro-F1 {metrics['macro_f1']:.4f}", f"n={metrics['samples']}"]
    for key, value in (extra or {}).items():
        parts.append(f"{key} {value}")
    return ", ".join(parts)


# --- calibration ------------------------------------------------------------

#: Equal-width confidence bins of the expected calibration error (Guo et al. 2017).
CALIBRATION_BINS = 15
#: Range searched for a temperature (it multiplies the log-probabilities by 1/T).
TEMPERATURE_RANGE = (0.05, 20.0)
#: Smallest probability taken into a logarithm (a float32 softmax can round to 0).
MIN_PROBABILITY = 1e-12


def reliability_curve(probabilities: np.ndarray, y_true: np.ndarray,
                      bins: int = CALIBRATION_BINS) -> Dict[str, np.ndarray]:
    """Accuracy against confidence in equal-width bins of the top probability.

    A face falls into bin ``i`` when its top probability is in
    ``(i / bins, (i + 1) / bins]`` (the first bin also takes 0).

    :param probabilities: float [N, K], rows summing to 1.
    :param y_true: int class indices [N].
    :param bins: number of bins over [0, 1].
    :return: ``edges`` [bins + 1], and per bin ``confidence`` (mean top
        probability), ``accuracy`` (share of right argmaxes; NaN for an
        empty bin) and ``count``.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    confidence = probabilities.max(axis=1) if len(probabilities) else np.zeros(0)
    correct = probabilities.argmax(axis=1) == y_true if len(probabilities) \
        else np.zeros(0, bool)
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, confidence, bins) / count
        accuracy = np.bincount(index, correct.astype(np.float64), bins) / count
    return {"edges": np.linspace(0.0, 1.0, bins + 1), "confidence": mean_confidence,
            "accuracy": accuracy, "count": count}


def expected_calibration_error(probabilities: np.ndarray, y_true: np.ndarray,
                               bins: int = CALIBRATION_BINS) -> float:
    """Return the expected calibration error of the top probability (equal-width bins).

    The mean over faces of ``|accuracy - confidence|`` of the face's bin:
    0 when, in every bin, the share of right answers equals the mean
    confidence.  Depends on the number of bins; state it with the value.

    References: Naeini, Cooper & Hauskrecht, AAAI 2015; Guo et al., "On
    Calibration of Modern Neural Networks", ICML 2017.

    :param probabilities: float [N, K], rows summing to 1.
    :param y_true: int class indices [N].
    :param bins: number of equal-width bins over [0, 1].
    :return: ECE in [0, 1] (0.0 for no faces).
    """
    curve = reliability_curve(probabilities, y_true, bins)
    filled = curve["count"] > 0
    if not filled.any():
        return 0.0
    gaps = np.abs(curve["accuracy"][filled] - curve["confidence"][filled])
    return float((gaps * curve["count"][filled]).sum() / curve["count"].sum())


def scale_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature-scale probabilities: ``softmax(log(p) / T)``.

    For a model that averages the probabilities of several views or
    networks the log-probabilities stand in for the logits; dividing them
    by a positive ``T`` never changes the argmax (``T > 1`` softens, ``T < 1``
    sharpens).

    :param probabilities: float [N, K], rows summing to 1.
    :param temperature: T > 0.
    :return: float64 [N, K], rows summing to 1.
    :raises ValueError: for ``T <= 0``.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, not {temperature}")
    logits = np.log(np.maximum(np.asarray(probabilities, np.float64), MIN_PROBABILITY))
    logits /= temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def negative_log_likelihood(probabilities: np.ndarray, y_true: np.ndarray) -> float:
    """Mean negative log-probability of the true classes (nats; 0.0 for no faces)."""
    probabilities = np.asarray(probabilities, np.float64)
    if not len(probabilities):
        return 0.0
    chosen = probabilities[np.arange(len(probabilities)), np.asarray(y_true, np.int64)]
    return float(-np.log(np.maximum(chosen, MIN_PROBABILITY)).mean())


def fit_temperature(probabilities: np.ndarray, y_true: np.ndarray,
                    bounds: Tuple[float, float] = TEMPERATURE_RANGE,
                    tolerance: float = 1e-4) -> float:
    """Fit the temperature that minimises the negative log-likelihood of the labels.

    The negative log-likelihood is convex in 1/T, so a golden-section search over
    log T finds the one minimum.  Fit on faces other than those the scaled
    model is then measured on.

    References: Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.

    :param probabilities: float [N, K], rows summing to 1.
    :param y_true: int class indices [N].
    :param bounds: ``(lowest, highest)`` temperature searched.
    :param tolerance: search stops when the bracket of log T is this narrow.
    :return: the fitted T (1.0 for no faces).
    """
    if not len(probabilities):
        return 1.0
    logits = np.log(np.maximum(np.asarray(probabilities, np.float64), MIN_PROBABILITY))
    y_true = np.asarray(y_true, np.int64)
    chosen = logits[np.arange(len(logits)), y_true]

    def loss(log_t: float) -> float:
        scaled = logits / np.exp(log_t)
        top = scaled.max(axis=1)
        log_norm = top + np.log(np.exp(scaled - top[:, None]).sum(axis=1))
        return float((log_norm - chosen / np.exp(log_t)).mean())

    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    low, high = np.log(bounds[0]), np.log(bounds[1])
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = loss(a), loss(b)
    while high - low > tolerance:
        if loss_a <= loss_b:
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = loss(a)
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = loss(b)
    return float(np.exp((low + high) / 2.0))
