"""``python -m training.model_card``: the shipped models' card, with its figures.

    python -m training.model_card                     # docs/MODEL_CARD.md, docs/model_card/
    python -m training.model_card --limit 200 --max-frames 48 --output /tmp/card

Measures the shipped ``3class`` and ``7class`` models on FER2013
PublicTest (per-class metrics, confusion, calibration before and after
temperature scaling, the node's test-time views against the model's own,
what the 3-class model says about surprised faces), the node's smoothing
on real footage, and facts about the training data; then writes the card
(``MODEL_CARD.md``), every figure it shows (PNG, in ``model_card/``) and
every number in it (``model_card/model_card.json``).  Only the prose is
written here; every number in the card comes from the run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from fer_ros.evaluation import (CALIBRATION_BINS, accuracy_interval, classification_metrics,
                                expected_calibration_error, fit_temperature, git_revision,
                                negative_log_likelihood, paired_comparison, plot_confusion,
                                reliability_curve, scale_temperature)
from fer_ros.labels import (FER2013_LABELS, SEVEN_TO_THREE, THREE_CLASS_LABELS, relabel,
                            valence_of)
from fer_ros.parameters import TEST_TIME_VIEWS, default_of

#: The shipped models the card describes.
MODELS = ("3class", "7class")
#: View sets compared (keys of fer_ros.parameters.TEST_TIME_VIEWS).
VIEW_SETS = ("model", "flip", "none")
#: What each view set is, in the card's words.
VIEW_NAMES = {"model": "the model's own", "flip": "face + mirror", "none": "one pass"}
#: The view set the fer node uses unless told otherwise.
NODE_VIEWS = str(default_of("test_time_views"))
#: The node's default smoothing time constant, seconds.
NODE_SMOOTHING_S = float(default_of("smoothing_time_constant_s"))
#: Parts of PublicTest in the temperature's cross-fitting (fit on the rest, measure on one).
CROSS_FIT_FOLDS = 2
#: Seed of the cross-fitting folds and of ``--limit``'s sample of faces.
SEED = 2013
#: A fitted temperature this close to 1 counts as "no change needed".
NEAR_ONE = 0.03
#: Smallest held-out ECE gain for which the card recommends temperature scaling.
MATERIAL_ECE_GAIN = 0.01
#: Confidence on surprised faces this close to that on the others gives no warning.
NO_WARNING_GAP = 0.05
#: Faces per classifier call.
BATCH_SIZE = 256
#: Resolution of the figures, dots per inch.
FIGURE_DPI = 100
#: Progress units of one footage frame (detection + tracking), in face-view passes.
FRAME_UNITS = 20
#: Progress units of loading and checking the data set, in face-view passes.
DATA_UNITS = 20000
CARD_NAME = "MODEL_CARD.md"
FIGURE_FOLDER = "model_card"
DEFAULT_DATA = "../shared/data/fer2013.npz"
DEFAULT_VIDEO = "../shared/media/WolfgangLanger_Pexels.mp4"
SURPRISE = FER2013_LABELS.index("surprise")


class Progress:
    """Print how far the run is, with the elapsed time and an estimate of what is left.

    :param total: work units of the whole run (face-view passes and their equivalents).
    """

    def __init__(self, total: float) -> None:
        self.total = max(total, 1.0)
        self.done = 0.0
        self.start = time.monotonic()

    def advance(self, units: float, what: str) -> None:
        """Count ``units`` of finished work and print one line about ``what``."""
        self.done += units
        elapsed = time.monotonic() - self.start
        share = min(self.done / self.total, 1.0)
        left = elapsed * (1.0 - share) / share if share > 0 else float("nan")
        print(f"[{100 * share:3.0f}%] {what} (elapsed {elapsed:.0f} s, about {left:.0f} s "
              f"left)", flush=True)


# --- data -------------------------------------------------------------------

def load_faces(data: Path, limit: int) -> Dict[str, Any]:
    """Load FER2013 Training and PublicTest, and the facts the card reports about them.

    :param data: FER2013 .npz or .csv.
    :param limit: evaluate on this many PublicTest faces (a seeded sample); 0 = all.
    :return: ``images`` and ``y`` (7-class) of the evaluated PublicTest faces,
        their ``junk`` mask, and ``facts`` (class counts, junk, duplicates).
    """
    from fer_ros.datasets import find_junk
    from training.common import load_split

    train_images, train_y, train_hash, train_junk = load_split(
        [str(data)], "Training", "7class", drop_blank=False)
    test_images, test_y, test_hash, test_junk = load_split(
        [str(data)], "PublicTest", "7class", drop_blank=False)
    facts = {
        "data": str(data), "fingerprint": {"Training": train_hash, "PublicTest": test_hash},
        "class_counts": {split: {label: int((y == c).sum())
                                 for c, label in enumerate(FER2013_LABELS)}
                         for split, y in (("Training", train_y), ("PublicTest", test_y))},
        "junk": {"Training": train_junk, "PublicTest": test_junk},
    }
    facts["duplicates"], in_training = exact_duplicates(train_images, train_y, test_images,
                                                        test_y)
    junk = find_junk(test_images)
    junk_mask = junk["blank"] | junk["flat_background"]
    if limit and limit < len(test_images):
        keep = np.sort(np.random.default_rng(SEED).choice(len(test_images), limit,
                                                          replace=False))
        test_images, test_y = test_images[keep], test_y[keep]
        junk_mask, in_training = junk_mask[keep], in_training[keep]
    return {"images": test_images, "y": test_y, "junk": junk_mask,
            "in_training": in_training, "facts": facts}


def _image_keys(images: np.ndarray) -> np.ndarray:
    """One hashable key per image: identical pixels, identical key."""
    flat = np.ascontiguousarray(images.reshape(len(images), -1))
    return flat.view(np.dtype((np.void, flat.shape[1]))).ravel()


def exact_duplicates(train_images: np.ndarray, train_y: np.ndarray,
                     test_images: np.ndarray, test_y: np.ndarray
                     ) -> Tuple[Dict[str, int], np.ndarray]:
    """Count pixel-identical faces within and across the splits (blank tiles left out).

    :return: ``(counts, in_training)``: ``training_repeats`` /
        ``publictest_repeats`` (faces that repeat an earlier face of the same
        split), ``*_conflicting`` (groups of identical faces with more than one
        label), ``publictest_in_training`` (PublicTest faces whose pixels are
        also in Training) and ``publictest_in_training_other_label`` (of those,
        with another label there); ``in_training`` is bool [len(test_images)].
    """
    from fer_ros.datasets import find_junk

    out: Dict[str, int] = {}
    keys = {}
    kept = {}
    for name, images, y in (("training", train_images, train_y),
                            ("publictest", test_images, test_y)):
        keep = kept[name] = ~find_junk(images)["blank"]
        key, label = _image_keys(images[keep]), y[keep]
        unique, inverse = np.unique(key, return_inverse=True)
        out[f"{name}_repeats"] = int(len(key) - len(unique))
        labels_per_group = np.unique(np.stack([inverse, label]), axis=1)[0]
        out[f"{name}_conflicting"] = int((np.bincount(labels_per_group) > 1).sum())
        keys[name] = (key, label)
    train_labels: Dict[bytes, set] = {}
    for key, label in zip(*keys["training"]):
        train_labels.setdefault(key.tobytes(), set()).add(int(label))
    shared = [(train_labels.get(key.tobytes()), int(label))
              for key, label in zip(*keys["publictest"])]
    out["publictest_in_training"] = sum(1 for labels, _ in shared if labels)
    out["publictest_in_training_other_label"] = sum(
        1 for labels, label in shared if labels and labels != {label})
    in_training = np.zeros(len(test_images), bool)
    in_training[kept["publictest"]] = [bool(labels) for labels, _ in shared]
    return out, in_training


# --- predictions ------------------------------------------------------------

def predict(model: str, view_set: str, images: np.ndarray, threads: int,
            progress: Progress) -> Tuple[np.ndarray, Any]:
    """Class probabilities of every face with one view set.

    :return: ``(probabilities float32 [N, K], the classifier)``.
    """
    from fer_ros.classification import EmotionClassifier

    classifier = EmotionClassifier.load(model, threads=threads, **TEST_TIME_VIEWS[view_set])
    out = [np.zeros((0, len(classifier.labels)), np.float32)]
    for start in range(0, len(images), BATCH_SIZE):
        batch = images[start:start + BATCH_SIZE]
        out.append(classifier.predict_proba(batch))
        progress.advance(len(batch) * classifier.info.tta.num_views,
                         f"{model}, {VIEW_NAMES[view_set]} views: "
                         f"{min(start + BATCH_SIZE, len(images))}/{len(images)} faces")
    return np.concatenate(out), classifier


def targets_of(model: str, y7: np.ndarray) -> np.ndarray:
    """Return the model's class index of each face (-1: the model has no class for it)."""
    if model == "7class":
        return y7
    return relabel([FER2013_LABELS[c] for c in y7], THREE_CLASS_LABELS)


def per_class_rows(metrics: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Per-class precision and recall with their 95% (Wilson) intervals, and F1."""
    confusion = np.asarray(metrics["confusion_matrix"])
    rows = []
    for c, label in enumerate(metrics["labels"]):
        hits, predicted, actual = int(confusion[c, c]), int(confusion[:, c].sum()), \
            int(confusion[c].sum())
        precision_ci = accuracy_interval(hits, predicted)
        recall_ci = accuracy_interval(hits, actual)
        rows.append({"label": label, **metrics["per_class"][label],
                     "precision_ci95": [round(v, 4) for v in precision_ci],
                     "recall_ci95": [round(v, 4) for v in recall_ci]})
    return rows


def calibration_study(probabilities: np.ndarray, y: np.ndarray,
                      folds: int = CROSS_FIT_FOLDS, seed: int = SEED
                      ) -> Tuple[Dict[str, Any], np.ndarray]:
    """ECE and NLL before and after temperature scaling, cross-fitted.

    The faces are cut into ``folds`` random parts; for each part a
    temperature is fitted on the others and the part is measured before and
    after scaling with it; the card reports the mean over parts.  The
    temperature to ship is fitted on all faces.

    :return: ``(JSON-ready results, out-of-fold scaled probabilities [N, K])``.
    """
    parts = np.array_split(np.random.default_rng(seed).permutation(len(y)), folds)
    scaled = np.asarray(probabilities, np.float64).copy()
    rows = []
    for held in parts:
        fit = np.setdiff1d(np.arange(len(y)), held)
        temperature = fit_temperature(probabilities[fit], y[fit])
        scaled[held] = scale_temperature(probabilities[held], temperature)
        rows.append({"faces": int(len(held)), "temperature": round(temperature, 4),
                     "ece_before": expected_calibration_error(probabilities[held], y[held]),
                     "ece_after": expected_calibration_error(scaled[held], y[held]),
                     "nll_before": negative_log_likelihood(probabilities[held], y[held]),
                     "nll_after": negative_log_likelihood(scaled[held], y[held])})
    mean = {key: float(np.mean([row[key] for row in rows]))
            for key in ("ece_before", "ece_after", "nll_before", "nll_after")}
    result = {
        **{key: round(value, 4) for key, value in mean.items()},
        "temperature": round(fit_temperature(probabilities, y), 4),
        "folds": [{key: round(value, 4) if isinstance(value, float) else value
                   for key, value in row.items()} for row in rows],
        "argmax_unchanged": bool((scaled.argmax(axis=1)
                                  == np.asarray(probabilities).argmax(axis=1)).all()),
        "mean_confidence_before": round(float(np.max(probabilities, axis=1).mean()), 4),
        "mean_confidence_after": round(float(scaled.max(axis=1).mean()), 4),
        "accuracy": round(float((np.argmax(probabilities, axis=1) == y).mean()), 4),
    }
    return result, scaled


def measured_files(data: Path, twins: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Return, per shipped model, what the card measures on PublicTest.

    A shipped model trained on PublicTest (the final models, trained on
    Training + PublicTest) would score its own training faces there: the card
    then measures its held-out twin (the same recipe trained without them).

    :param twins: shipped name -> held-out twin file.
    :return: shipped name -> the name or file to measure.
    :raises ValueError: when such a model has no twin, or a twin is not held out.
    """
    from fer_ros.classification import EmotionClassifier

    twins = twins or {}
    unknown = set(twins) - set(MODELS)
    if unknown:
        raise ValueError(f"--twin {sorted(unknown)}: the card describes {list(MODELS)}")
    measured = {}
    for model in MODELS:
        measured[model] = twins.get(model, model)
        classifier = EmotionClassifier.load(measured[model])
        if classifier.info.trained_on(data, "PublicTest"):
            hint = (" and so was its twin" if model in twins
                    else f"; give its held-out twin: --twin {model}=FILE")
            raise ValueError(f"{model} was trained on the {data.name} PublicTest faces"
                             f"{hint}")
    return measured


def evaluate_model(model: str, faces: Dict[str, Any], threads: int, figures: Path,
                   progress: Progress, measured: str = "") -> Dict[str, Any]:
    """Everything the card says about one model on PublicTest.

    :param measured: the held-out twin measured in place of ``model``
        (see :func:`measured_files`); "" measures ``model`` itself.
    :return: JSON-ready results; ``figures`` receives the confusion matrix and
        the reliability diagram.
    """
    from fer_ros.classification import EmotionClassifier
    from fer_ros.model_files import file_fingerprint

    y_all = targets_of(model, faces["y"])
    keep = y_all >= 0
    y = y_all[keep]
    probabilities, classifiers, views = {}, {}, {}
    for view_set in VIEW_SETS:
        probabilities[view_set], classifiers[view_set] = predict(
            measured or model, view_set, faces["images"], threads, progress)
        views[view_set] = classifiers[view_set].info.tta.num_views
    own = classifiers["model"]
    shipped = EmotionClassifier.load(model) if measured and measured != model else own
    labels = tuple(own.labels)
    metrics = classification_metrics(y, probabilities["model"][keep].argmax(axis=1), labels)
    name = f"confusion_{model}.png"
    plot_confusion(metrics["confusion_matrix"], labels, figures / name,
                   f"{model}, {VIEW_NAMES['model']} views ({views['model']}), FER2013 "
                   f"PublicTest: accuracy {metrics['accuracy']:.3f}")
    result: Dict[str, Any] = {
        "model": model, "file": Path(shipped.source).name,
        "sha256": file_fingerprint(shipped.source), "labels": list(labels),
        "sidecar": {key: shipped.info.extra.get(key) for key in
                    ("model", "params", "weights_dtype", "validation", "trained_on")
                    if shipped.info.extra and key in shipped.info.extra},
        "temperatures": [{**views.to_sidecar(), "temperature": t}
                         for views, t in own.info.temperatures],
        "faces": int(len(y)), "left_out": int((~keep).sum()),
        "metrics": metrics, "per_class": per_class_rows(metrics), "confusion_figure": name,
        "views": {}, "calibration": {},
    }
    if shipped is not own:
        result["held_out_twin"] = {
            "file": Path(own.source).name, "sha256": file_fingerprint(own.source),
            "trained_on": (own.info.extra or {}).get("trained_on")}
    correct = {v: probabilities[v][keep].argmax(axis=1) == y for v in VIEW_SETS}
    seen = faces["in_training"][keep]
    result["seen_in_training"] = {
        name: {"faces": int(mask.sum()),
               "accuracy": round(float(correct["model"][mask].mean()), 4) if mask.any()
               else 0.0,
               "accuracy_ci95": [round(v, 4) for v in accuracy_interval(
                   int(correct["model"][mask].sum()), int(mask.sum()))]}
        for name, mask in (("in_training", seen), ("not_in_training", ~seen))}
    curves = {}
    for view_set in VIEW_SETS:
        hits = int(correct[view_set].sum())
        result["views"][view_set] = {
            "passes_per_face": views[view_set],
            "accuracy": round(hits / len(y), 4) if len(y) else 0.0,
            "accuracy_ci95": [round(v, 4) for v in accuracy_interval(hits, len(y))],
            "vs_model_views": paired_comparison(correct[view_set], correct["model"])}
        calibration, scaled = calibration_study(probabilities[view_set][keep], y)
        result["calibration"][view_set] = calibration
        curves[view_set] = (reliability_curve(probabilities[view_set][keep], y),
                            reliability_curve(scaled, y))
    result["reliability_figure"] = f"reliability_{model}.png"
    plot_reliability(curves, model, figures / result["reliability_figure"])
    node = probabilities[NODE_VIEWS]
    if faces["junk"].any():
        junk = node[faces["junk"]]
        result["junk"] = {"faces": int(len(junk)),
                          "mean_confidence": round(float(junk.max(axis=1).mean()), 4),
                          "labels": _label_shares(junk, labels)}
    result["by_fer2013_label"] = {
        FER2013_LABELS[c]: _label_shares(node[faces["y"] == c], labels)
        for c in range(len(FER2013_LABELS))}
    surprise = node[faces["y"] == SURPRISE]
    result["surprise"] = {
        "faces": int(len(surprise)),
        "labels": _label_shares(surprise, labels),
        "mean_probabilities": {label: round(float(surprise[:, c].mean()), 4)
                               if len(surprise) else 0.0 for c, label in enumerate(labels)},
        "mean_valence": round(float(valence_of(surprise, labels).mean()), 4)
        if len(surprise) else 0.0,
        "mean_confidence": round(float(surprise.max(axis=1).mean()), 4)
        if len(surprise) else 0.0,
        "mean_confidence_other_faces": round(float(
            node[faces["y"] != SURPRISE].max(axis=1).mean()), 4)
        if (faces["y"] != SURPRISE).any() else 0.0,
        "labels_with_model_views": _label_shares(
            probabilities["model"][faces["y"] == SURPRISE], labels)}
    return result


def _label_shares(probabilities: np.ndarray, labels: Sequence[str]) -> Dict[str, float]:
    """Share of faces whose top class is each label."""
    top = np.asarray(probabilities).argmax(axis=1) if len(probabilities) else np.zeros(0, int)
    return {label: round(float((top == c).mean()) if len(top) else 0.0, 4)
            for c, label in enumerate(labels)}


# --- the node's smoothing on footage ------------------------------------------

def follow_footage(video: Path, model: str, smoothing_s: float, max_frames: int,
                   threads: int, progress: Progress) -> Dict[str, Any]:
    """Run the node's pipeline (its defaults but one) over a video; keep every face's trace.

    :param smoothing_s: ``smoothing_time_constant_s`` of this run.
    :param max_frames: stop after this many frames; 0 = the whole video.
    :return: ``labels``, ``frame_rate``, ``frames`` and ``tracks``: face id ->
        ``stamps`` [T], ``raw`` [T, K] and ``smoothed`` [T, K] probabilities,
        ``label`` [T] (the published label's index).
    """
    from fer_ros.pipeline import build_pipeline
    from fer_ros.video_io import FrameSource

    pipeline, _ = build_pipeline({"model": model, "smoothing_time_constant_s": smoothing_s,
                                  "dynamic_model": "none", "threads": threads})
    labels = tuple(pipeline.classifier.labels)
    source = FrameSource(str(video))
    rows: Dict[str, Dict[str, list]] = {}
    frames = 0
    try:
        rate = source.frame_rate
        for frame in source.frames():
            if max_frames and frame.index >= max_frames:
                break
            for face in pipeline.process(frame.image, frame.time_s).faces:
                track = rows.setdefault(face.face_id, {"stamps": [], "raw": [],
                                                       "smoothed": [], "label": []})
                track["stamps"].append(frame.time_s)
                track["raw"].append(face.probabilities)
                track["smoothed"].append(face.smoothed_probabilities)
                track["label"].append(labels.index(face.label))
            frames += 1
            if frames % 100 == 0:
                progress.advance(100 * FRAME_UNITS, f"{model}, smoothing {smoothing_s:g} s: "
                                 f"{frames} frames")
    finally:
        source.close()
    progress.advance((frames % 100) * FRAME_UNITS,
                     f"{model}, smoothing {smoothing_s:g} s: {frames} frames")
    tracks = {face_id: {key: np.asarray(values) for key, values in track.items()}
              for face_id, track in rows.items()}
    return {"labels": labels, "frame_rate": rate, "frames": frames, "tracks": tracks,
            "video": video.name}


def label_changes(run: Dict[str, Any]) -> Dict[str, float]:
    """How often the published label changes: per second of tracked face, and run lengths."""
    changes, seconds, runs = 0, 0.0, []
    interval = 1.0 / run["frame_rate"]
    for track in run["tracks"].values():
        label, stamps = track["label"], track["stamps"]
        switch = np.flatnonzero(label[1:] != label[:-1]) + 1
        changes += len(switch)
        seconds += float(stamps[-1] - stamps[0]) + interval
        bounds = np.concatenate([[0], switch, [len(label)]])
        runs.extend(np.diff(bounds) * interval)
    return {"changes": int(changes), "face_seconds": round(seconds, 2),
            "changes_per_second": round(changes / seconds, 3) if seconds else 0.0,
            "median_label_run_s": round(float(np.median(runs)), 3) if runs else 0.0}


def published_delays(raw: Dict[str, Any], smoothed: Dict[str, Any]) -> List[float]:
    """Delay of each change of the smoothed label behind the unsmoothed one, seconds.

    For each frame where the smoothed run's published label switches to L,
    the delay is the time since the latest frame (at or before it) on which
    the unsmoothed run's label switched to L; faces are matched by id and
    frame stamp.
    """
    delays = []
    for face_id, track in smoothed["tracks"].items():
        other = raw["tracks"].get(face_id)
        if other is None:
            continue
        stamps, first, second = np.intersect1d(track["stamps"], other["stamps"],
                                               return_indices=True)
        published, unsmoothed = track["label"][first], other["label"][second]
        onsets = {i for i in range(len(unsmoothed))
                  if i == 0 or unsmoothed[i] != unsmoothed[i - 1]}
        for i in range(1, len(published)):
            if published[i] == published[i - 1]:
                continue
            starts = [j for j in onsets if j <= i and unsmoothed[j] == published[i]]
            if starts:
                delays.append(float(stamps[i] - stamps[max(starts)]))
    return delays


def filter_delays(smoothing_s: float, frame_rate: float) -> Dict[str, float]:
    """Return the delays of the node's exponential moving average at a frame rate, seconds.

    :return: ``mean_delay_s`` (centre of mass of its impulse response) and
        ``half_step_s`` (time its output takes to cover half of a step).
    """
    interval = 1.0 / frame_rate
    if smoothing_s <= 0:
        return {"mean_delay_s": 0.0, "half_step_s": 0.0}
    alpha = 1.0 - math.exp(-interval / smoothing_s)
    half_steps = math.ceil(math.log(0.5) / math.log(1.0 - alpha))
    return {"mean_delay_s": round(interval * (1.0 - alpha) / alpha, 3),
            "half_step_s": round(half_steps * interval, 3)}


def smoothing_study(video: Path, max_frames: int, threads: int, figures: Path,
                    progress: Progress) -> Dict[str, Any]:
    """Compare the node's default smoothing with none, on real footage, for each model."""
    result: Dict[str, Any] = {"video": video.name, "smoothing_s": NODE_SMOOTHING_S,
                              "views": NODE_VIEWS, "models": {}}
    for model in MODELS:
        raw = follow_footage(video, model, 0.0, max_frames, threads, progress)
        smoothed = follow_footage(video, model, NODE_SMOOTHING_S, max_frames, threads,
                                  progress)
        delays = published_delays(raw, smoothed)
        result.update(frames=raw["frames"], frame_rate=round(raw["frame_rate"], 3),
                      faces=len(raw["tracks"]))
        result["models"][model] = {
            "without": label_changes(raw), "with": label_changes(smoothed),
            "median_change_delay_s": round(float(np.median(delays)), 3) if delays else None,
            "changes_measured": len(delays),
            **filter_delays(NODE_SMOOTHING_S, raw["frame_rate"])}
        if model == MODELS[0]:
            result["figure"] = "smoothing.png"
            result["plotted_class"] = plot_smoothing(raw, smoothed, figures / result["figure"])
    return result


# --- figures (matplotlib's object API: no pyplot state) ----------------------------

def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=FIGURE_DPI)


def plot_reliability(curves: Dict[str, Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]],
                     model: str, path: Path) -> None:
    """Reliability diagrams of the node's and the model's views, before and after scaling."""
    shown = [view for view in (NODE_VIEWS, "model") if view in curves]
    fig = _figure(4.2 * len(shown), 5.2)
    grid = fig.add_gridspec(2, len(shown), height_ratios=(3, 1))
    for column, view in enumerate(shown):
        ax = fig.add_subplot(grid[0, column])
        counts = fig.add_subplot(grid[1, column], sharex=ax)
        ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
        width = 1.0 / CALIBRATION_BINS
        for curve, name, style, shift in ((curves[view][0], "as shipped", "o-", -0.25),
                                          (curves[view][1], "temperature-scaled "
                                           "(cross-fitted)", "s--", 0.25)):
            filled = curve["count"] > 0
            ax.plot(curve["confidence"][filled], curve["accuracy"][filled], style,
                    markersize=4, label=name)
            centres = curve["edges"][:-1] + width / 2 + shift * width / 2
            counts.bar(centres, curve["count"], width=width / 2, label=name)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy in bin")
        ax.set_title(f"{model}, {VIEW_NAMES[view]} views"
                     + (" (node default)" if view == NODE_VIEWS else ""), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
        counts.set_xlabel(f"top-class probability ({CALIBRATION_BINS} equal-width bins)")
        counts.set_ylabel("faces")
    fig.tight_layout()
    fig.savefig(path)


def plot_smoothing(raw: Dict[str, Any], smoothed: Dict[str, Any], path: Path) -> str:
    """Raw and smoothed probability of one class over time, and both label sequences.

    Plots the longest face track and the class whose raw probability varies most.

    :return: the plotted class.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    labels = raw["labels"]
    fig = _figure(8.0, 4.2)
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1))
    ax = fig.add_subplot(grid[0])
    strips = fig.add_subplot(grid[1], sharex=ax)
    if not raw["tracks"]:
        ax.set_title("no face found in the footage")
        fig.savefig(path)
        return ""
    face_id = max(raw["tracks"], key=lambda key: len(raw["tracks"][key]["stamps"]))
    plain = raw["tracks"][face_id]
    smooth = smoothed["tracks"].get(face_id, plain)
    column = int(np.argmax(plain["raw"].std(axis=0)))
    ax.plot(plain["stamps"], plain["raw"][:, column], color="grey", linewidth=0.8,
            label="smoothing off (0 s): what is published per frame")
    ax.plot(smooth["stamps"], smooth["smoothed"][:, column], color="tab:blue", linewidth=1.6,
            label=f"smoothing {NODE_SMOOTHING_S:g} s (node default)")
    ax.set_ylabel(f"P({labels[column]})")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"{raw['video']}: face {face_id}, 3-class model, "
                 f"{VIEW_NAMES[NODE_VIEWS]} views", fontsize=9)
    colours = ListedColormap(["tab:red", "tab:grey", "tab:green", "tab:orange", "tab:purple",
                              "tab:cyan", "tab:olive"][:len(labels)])
    end = float(plain["stamps"][-1]) + 1.0 / raw["frame_rate"]
    strips.imshow(np.stack([plain["label"], np.interp(
        plain["stamps"], smooth["stamps"], smooth["label"]).round()]), aspect="auto",
        cmap=colours, vmin=-0.5, vmax=len(labels) - 0.5, interpolation="nearest",
        extent=(float(plain["stamps"][0]), end, 1.5, -0.5))
    strips.set_yticks([0, 1], ["label, 0 s", f"label, {NODE_SMOOTHING_S:g} s"], fontsize=8)
    strips.set_xlabel("time in the video, s")
    strips.set_xlim(float(plain["stamps"][0]), end)
    strips.legend(handles=[Patch(color=colours(c), label=label)
                           for c, label in enumerate(labels)],
                  fontsize=7, ncol=len(labels), loc="upper center",
                  bbox_to_anchor=(0.5, -0.55))
    fig.tight_layout()
    fig.savefig(path)
    return labels[column]


def plot_label_map(by_label: Dict[str, Dict[str, float]], labels: Sequence[str],
                   path: Path) -> None:
    """Plot what the 3-class model publishes for the faces of each FER2013 label."""
    rows = list(by_label)
    shares = np.array([[by_label[row][label] for label in labels] for row in rows])
    fig = _figure(5.4, 4.6)
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for (i, j), share in np.ndenumerate(shares):
        ax.text(j, i, f"{share:.2f}", ha="center", va="center", fontsize=8,
                color="white" if share > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), [row + (" (left out)" if SEVEN_TO_THREE.get(row) is None
                                            else "") for row in rows])
    ax.set_xlabel("published by the 3-class model")
    ax.set_ylabel("FER2013 label")
    ax.set_title(f"3class on PublicTest, {VIEW_NAMES[NODE_VIEWS]} views", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the row's faces")
    fig.tight_layout()
    fig.savefig(path)


# --- the card -----------------------------------------------------------------

def _pct(share: float, digits: int = 1) -> str:
    return f"{100 * share:.{digits}f}%"


def _ci(bounds: Sequence[float]) -> str:
    return f"{100 * bounds[0]:.1f}-{100 * bounds[1]:.1f}%"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def _precision(row: Dict[str, Any]) -> str:
    """Precision with its interval; a dash for a class never predicted."""
    if row["precision_ci95"] == [0.0, 1.0] and row["precision"] == 0.0:
        return "- (never predicted)"
    return f"{_pct(row['precision'])} ({_ci(row['precision_ci95'])})"


def _shares(shares: Dict[str, float]) -> str:
    return ", ".join(f"{label} {_pct(share)}" for label, share in
                     sorted(shares.items(), key=lambda item: -item[1]))


def render_card(card: Dict[str, Any]) -> str:
    """Return the card's markdown; every number comes from ``card`` (see :func:`generate`)."""
    models, facts, smoothing = card["models"], card["data"], card["smoothing"]
    three, seven = models["3class"], models["7class"]
    figures = card["figure_folder"]
    faces = card["publictest_faces"]
    sample = (f"a seeded sample of {faces:,} of PublicTest's faces (`--limit`)"
              if card["limit"] else f"all {faces:,} PublicTest faces")
    out = [
        "# Model card: fer_ros' static emotion CNNs (`3class`, `7class`)",
        "",
        f"Generated by `{card['command']}` at git revision {card['git_revision']} on "
        f"{sample} ({card['seconds']:.0f} s on {card['machine']}); do not edit by hand. "
        "Every number and figure below comes from that run; the numbers are also in "
        f"[`{figures}/model_card.json`]({figures}/model_card.json).",
        "",
        "## Model details",
        "",
    ]
    out += _table(
        ["model", "classes (output order)", "file (sha256, first 16 hex)", "network",
         "parameters", "weights", "the model's own views"],
        [[f"`{m['model']}`", ", ".join(m["labels"]), f"`{m['file']}` ({m['sha256']})",
          m["sidecar"].get("model", "?"), f"{m['sidecar'].get('params', 0):,}",
          m["sidecar"].get("weights_dtype", "?"), m["views"]["model"]["passes_per_face"]]
         for m in models.values()])
    out += [
        "Each is an ensemble of CNNs (48x48 grayscale face in, class probabilities "
        "out) exported as one LiteRT graph that averages their probabilities (weights "
        "in the sidecar's `member_weights`); how they were trained is in the README's "
        "\"Models\" and \"Training\" sections. The fer "
        "node publishes, per face and frame, the label with the highest *smoothed* "
        "probability (see [Smoothing](#smoothing-in-the-node)), that probability as "
        "`confidence`, all class probabilities and a valence in [-1, 1].",
        "",
        "## Intended use",
        "",
        "- **An aid for practising emotion reading with a social robot**, for example a "
        "robot that plays expression games with autistic children: the robot reacts to "
        "the expression it sees, and a therapist or researcher runs the session and "
        "reviews it afterwards (`fer-analyze`).",
        "- Research on human-robot interaction: coarse, aggregate descriptions of the "
        "expressions shown during a session (shares of time, changes, stability), "
        "reviewed by a person who also saw the session.",
        "- Users: roboticists, therapists and researchers who know that the output is "
        "an estimate of a *facial expression* that is wrong for about one face in "
        f"{1 / max(1e-9, 1 - three['metrics']['accuracy']):.0f} (3 classes) to one in "
        f"{1 / max(1e-9, 1 - seven['metrics']['accuracy']):.0f} (7 classes) on the "
        "benchmark below, and more often on faces unlike the training data.",
        "",
        "## Out-of-scope uses",
        "",
        "- **Diagnosis or screening** of autism, depression or any other condition, and "
        "clinical assessment or progress scores for a child: the models were never "
        "validated for it, and the labels are not clinical observations.",
        "- **Decisions about people**: hiring, grading, admission, insurance, policing, "
        "border control, lie detection, monitoring employees, pupils or customers.",
        "- Reading what someone *feels*: the models classify the expression on a "
        "face as web annotators labelled it; an expression is not an inner state.",
        "- Anything that needs known accuracy for a group of people (children, older "
        "people, a skin tone, a culture): it is unmeasured (see the data section).",
        "- Identifying people, or estimating age, gender or ethnicity.",
        "- Unattended feedback to a child that a person never checks: a robot that "
        "tells a child \"that was not a happy face\" is wrong whenever the model is.",
        "",
        "## Training data and its known problems",
        "",
        _training_split_sentence(models) + " (Goodfellow et al. 2013, "
        "[arXiv:1307.0414](https://arxiv.org/abs/1307.0414)): 48x48 grayscale faces "
        "found by web image searches for emotion words, each with one label. "
        "Class counts (FER2013's seven labels; for 3 classes negative = angry + "
        "disgust + fear + sad, neutral, positive = happy, and surprise is left out):",
        "",
    ]
    counts = facts["class_counts"]
    out += _table(["split"] + list(FER2013_LABELS) + ["all"],
                  [[split] + [f"{counts[split][label]:,}" for label in FER2013_LABELS]
                   + [f"{sum(counts[split].values()):,}"] for split in counts])
    from fer_ros.datasets import BLANK_STD_THRESHOLD, FLAT_BACKGROUND_SHARE

    junk, dup = facts["junk"], facts["duplicates"]
    out += [
        "Known problems:",
        "",
        "- **Label noise.** FER+ (Barsoum et al. 2016, "
        "[arXiv:1608.01041](https://arxiv.org/abs/1608.01041)) had every FER2013 image "
        "relabelled by 10 crowd taggers, with \"unknown\" and \"not a face\" as options; "
        "their votes often disagree with each other and with the original single "
        "label, so many FER2013 labels are disputed. Goodfellow et al. estimated human "
        "accuracy on FER2013 at about 65 +- 5%. Accuracy against these labels therefore "
        "has a ceiling well below 100%, and part of the confusion between neighbouring "
        "classes below (fear / surprise / sad, angry / disgust, sad / neutral) is "
        "disagreement about the label, not only model error.",
        f"- **Junk images.** `fer_ros.datasets.find_junk` flags blank tiles (pixel "
        f"standard deviation below {BLANK_STD_THRESHOLD:g}): {junk['Training']['blank']} "
        f"in Training, {junk['PublicTest']['blank']} in PublicTest; and flat tiles (over "
        f"{_pct(FLAT_BACKGROUND_SHARE, 0)} of "
        f"the pixels within 8 grey levels of the most common one: text, logos, "
        f"very low contrast): {junk['Training']['flat_background']} in Training, "
        f"{junk['PublicTest']['flat_background']} in PublicTest. Training drops the "
        "blank ones and keeps the flat ones; the evaluation below keeps all of them.",
        f"- **Duplicates.** Pixel-identical faces (blank tiles left out): "
        f"{dup['training_repeats']:,} Training faces repeat another Training face "
        f"({dup['training_conflicting']:,} groups of copies carry different labels), "
        f"{dup['publictest_repeats']:,} PublicTest faces repeat another PublicTest face "
        f"({dup['publictest_conflicting']:,} with different labels), and "
        f"{dup['publictest_in_training']:,} PublicTest faces also occur in Training "
        f"({dup['publictest_in_training_other_label']:,} of them with another label "
        "there). Near-duplicates (the same photo at another crop, scale or contrast) "
        "are not counted and are known to exist.",
        "- **Demographics unknown.** FER2013 has no age, gender, ethnicity or skin-tone "
        "annotations, so performance across groups of people is unmeasured; that "
        "includes children, the intended users' main group.",
        "- **Posed and spontaneous mixed.** Web photos hold many posed, exaggerated, "
        "prototypical expressions (stock photos, actors) beside spontaneous ones, "
        "without saying which is which; the subtle or atypical expressions of a child "
        "in a session may look different from either.",
        "- **Web images vs a robot's camera.** FER2013 faces are centred, mostly "
        "frontal, 48x48 grayscale crops of photos; on the robot the face comes from "
        "BlazeFace on a live camera image (other poses, lighting, motion blur, "
        "distance, the node's own crop margin). No labelled robot footage was "
        "available, so accuracy on it is unmeasured; the footage check below only "
        "measures how steady the output is.",
        "",
        "## Performance on FER2013 PublicTest",
        "",
        "PublicTest chose the checkpoints, the test-time views and the ensemble, so "
        "these numbers are optimistic; the withheld PrivateTest split is measured "
        "independently. Scored with each model's own test-time views (as "
        "`fer-evaluate` and `fer-analyze` use them); 95% Wilson intervals in "
        "brackets.",
        "",
    ] + _twin_lines(models)
    out += _table(["model", "faces", "accuracy", "macro F1"],
                  [[f"`{m['model']}`", f"{m['faces']:,}" + (
                      f" ({m['left_out']} surprise faces left out)" if m["left_out"] else ""),
                    f"**{_pct(m['metrics']['accuracy'])}** "
                    f"({_ci(m['metrics']['accuracy_ci95'])})",
                    f"{m['metrics']['macro_f1']:.3f}"] for m in models.values()])
    out += [
        "Some PublicTest faces are pixel-identical to Training faces (see the data "
        "section), so the model may have seen them with their label: "
        + "; ".join(
            f"`{m['model']}` scores {_pct(seen['in_training']['accuracy'])} on the "
            f"{seen['in_training']['faces']:,} evaluated faces that occur in Training "
            f"and {_pct(seen['not_in_training']['accuracy'])} "
            f"({_ci(seen['not_in_training']['accuracy_ci95'])}) on the other "
            f"{seen['not_in_training']['faces']:,}"
            for m in models.values() for seen in [m["seen_in_training"]]) + ".",
        "",
    ]
    for m in models.values():
        out += [f"`{m['model']}` per class:", ""]
        out += _table(["class", "precision", "recall", "F1", "faces"],
                      [[row["label"], _precision(row),
                        f"{_pct(row['recall'])} ({_ci(row['recall_ci95'])})",
                        f"{row['f1']:.3f}", row["support"]] for row in m["per_class"]])
        out += [f"![confusion matrix of {m['model']}]({figures}/{m['confusion_figure']})", ""]
    out += _views_section(models)
    out += _calibration_section(models, figures)
    out += _smoothing_section(smoothing, figures)
    out += _mapping_section(models, card, figures)
    out += [
        "## How to regenerate",
        "",
        "```bash",
        f"{card['command']}",
        "```",
        "",
        "writes this file, its figures and `model_card.json` (needs `tools/setup.sh "
        "--dev`, `../shared/data/fer2013.npz` and `../shared/media`); "
        "`--limit N --max-frames F --output DIR` makes a quick version on N faces and F "
        "frames.",
        "",
    ]
    return "\n".join(out)


def _training_split_sentence(models: Dict[str, Any]) -> str:
    """Say which FER2013 splits trained and selected the shipped models."""
    if not any("held_out_twin" in m for m in models.values()):
        return ("The static CNNs were trained on FER2013 Training and selected on FER2013 "
                "PublicTest")
    return ("The static CNNs' recipes (networks, schedules, views, ensemble) were chosen "
            "on FER2013 PublicTest with twins trained on FER2013 Training only; "
            + ", ".join(f"`{m['model']}`" for m in models.values() if "held_out_twin" in m)
            + " then repeated them on Training + PublicTest, with the last epoch kept")


def _twin_lines(models: Dict[str, Any]) -> List[str]:
    """Say which shipped models are measured through their held-out twin."""
    out = []
    for m in models.values():
        twin = m.get("held_out_twin")
        if twin:
            out += [f"The shipped `{m['model']}` (`{m['file']}`) was trained on "
                    f"{_sources(m['sidecar'].get('trained_on'))}, so its "
                    "PublicTest figures would be training figures. Every number and "
                    f"figure measured for `{m['model']}` in this card is of its held-out "
                    f"twin `{twin['file']}` (sha256 {twin['sha256']}; trained on "
                    f"{_sources(twin.get('trained_on'))}): the same recipe without the "
                    "PublicTest faces, so its figures are expected to be a conservative "
                    "estimate of the shipped model's.", ""]
    return out


def _sources(trained_on: Optional[Sequence[str]]) -> str:
    """Name the distinct ``trained_on`` entries of an ensemble's members, in order."""
    return ", ".join(dict.fromkeys(trained_on or ["an unrecorded split"]))


def _views_section(models: Dict[str, Any]) -> List[str]:
    out = [
        "## Test-time views: the node's default against the model's own",
        "",
        f"The fer node uses {VIEW_NAMES.get(NODE_VIEWS, NODE_VIEWS)} by default "
        f"(`test_time_views: {NODE_VIEWS}`) for speed; the model's own view set is what "
        "it was validated with (zooms and mirror images, `test_time_views: model`). "
        "\"vs own views\" compares each set with the model's own on the same faces "
        "(exact McNemar test on the faces where one is right and the other wrong).",
        "",
    ]
    rows = []
    for m in models.values():
        for view, v in m["views"].items():
            comparison = v["vs_model_views"]
            rows.append([
                f"`{m['model']}`", f"{VIEW_NAMES[view]} (`{view}`)"
                + (" - node default" if view == NODE_VIEWS else ""),
                v["passes_per_face"], f"{_pct(v['accuracy'])} ({_ci(v['accuracy_ci95'])})",
                "-" if view == "model" else
                f"{100 * comparison['difference']:+.1f} points, p = "
                f"{comparison['p_value']:.3f}",
                f"{m['calibration'][view]['ece_before']:.3f}"])
    out += _table(["model", "views", "passes per face", "accuracy", "vs own views",
                   "ECE (as shipped)"], rows)
    return out


def _calibration_section(models: Dict[str, Any], figures: str) -> List[str]:
    out = [
        "## Calibration",
        "",
        "Is a published confidence of 0.8 right 80% of the time? The reliability "
        "diagrams put faces into "
        f"{CALIBRATION_BINS} equal-width bins of their top-class probability and plot "
        "each bin's accuracy against its mean probability; the expected calibration "
        f"error (ECE, {CALIBRATION_BINS} equal-width bins) is the face-weighted mean gap "
        "between the two (0 = calibrated). Temperature scaling divides the "
        "log of the averaged probabilities by one number T and renormalises "
        "(T > 1 softens, T < 1 sharpens); it never changes the top class, so accuracy "
        f"is unchanged. T is fitted honestly by {CROSS_FIT_FOLDS}-fold cross-fitting "
        f"on PublicTest: the faces are cut into {CROSS_FIT_FOLDS} random halves, T is "
        "fitted (lowest negative log-likelihood) on one half and measured on the other, "
        "and the table gives the mean over halves; \"T (all)\" is the value fitted on "
        "every face, the one to ship. NLL is the mean negative log-likelihood of the "
        "labels, in nats.",
        "",
    ]
    rows = []
    for m in models.values():
        for view, c in m["calibration"].items():
            rows.append([
                f"`{m['model']}`", f"{VIEW_NAMES[view]}"
                + (" (node)" if view == NODE_VIEWS else ""),
                f"{c['ece_before']:.3f}", f"{c['ece_after']:.3f}",
                " / ".join(f"{f['ece_before']:.3f} -> {f['ece_after']:.3f}"
                           for f in c["folds"]),
                f"{c['nll_before']:.3f} -> {c['nll_after']:.3f}",
                " / ".join(f"{f['temperature']:.2f}" for f in c["folds"]),
                f"{c['temperature']:.2f}",
                f"{c['mean_confidence_before']:.3f} -> {c['mean_confidence_after']:.3f}",
                "yes" if c["argmax_unchanged"] else "**no**"])
    out += _table(["model", "views", "ECE before", "ECE after", "per half", "NLL",
                   "T per half", "T (all)", "mean confidence", "top class unchanged"],
                  rows)
    for m in models.values():
        out += [f"![reliability diagram of {m['model']}]({figures}/"
                f"{m['reliability_figure']})", ""]
    out += _calibration_verdict(models) + [""]
    return out


def _calibration_verdict(models: Dict[str, Any]) -> List[str]:
    """Word the recommendation from the numbers."""
    out: List[str] = []
    helps: List[str] = []
    fails: List[str] = []
    for m in models.values():
        for view in (NODE_VIEWS, "model"):
            c = m["calibration"][view]
            better = [f["ece_after"] < f["ece_before"] for f in c["folds"]]
            state = ("close to calibrated in the NLL sense" if abs(c["temperature"] - 1.0)
                     < NEAR_ONE else "overconfident" if c["temperature"] > 1.0
                     else "underconfident")
            verdict = ("lowers the held-out ECE in every half" if all(better) else
                       "lowers the held-out ECE in some halves only" if any(better) else
                       "does not lower the held-out ECE")
            name = f"`{m['model']}` with {VIEW_NAMES[view]} views"
            (helps if all(better) and c["nll_after"] <= c["nll_before"]
             else fails).append(name)
            out.append(
                f"- {name}: as shipped it is {state} (T = {c['temperature']:.2f}); "
                f"scaling {verdict} ({c['ece_before']:.3f} -> {c['ece_after']:.3f}, NLL "
                f"{c['nll_before']:.3f} -> {c['nll_after']:.3f}); top class "
                f"{'unchanged on every face' if c['argmax_unchanged'] else 'CHANGED'}.")
    how = (" To apply it, store T per model and view set in the sidecar and apply it in "
           "`EmotionClassifier` (log-probabilities / T, renormalised), so that "
           "`confidence` on `/emotions` and the probabilities in `fer-analyze` mean "
           "what they say.")
    gains = [m["calibration"][view]["ece_before"] - m["calibration"][view]["ece_after"]
             for m in models.values() for view in (NODE_VIEWS, "model")]
    eces = [m["calibration"][view]["ece_before"]
            for m in models.values() for view in (NODE_VIEWS, "model")]
    if helps and max(gains) < MATERIAL_ECE_GAIN:
        advice = (f"no change needed now. As shipped the models are already close to "
                  f"calibrated (held-out ECE {min(eces):.3f}-{max(eces):.3f}); "
                  f"temperature scaling lowers both the held-out ECE and the NLL for "
                  f"{', '.join(helps)}, but by at most {max(gains):.3f} ECE, under the "
                  f"{MATERIAL_ECE_GAIN:g} this card counts as worth a change"
                  + (f", and not at all for {', '.join(fails)}" if fails else "")
                  + ". If a later model is less well calibrated, the same table says "
                  "which T to use." + how)
    elif not fails:
        advice = "apply temperature scaling everywhere." + how
    elif not helps:
        advice = ("do not apply (further) temperature scaling: for no model and view "
                  "set did it "
                  "lower both the held-out ECE (in every half) and the NLL.")
    else:
        advice = (f"apply temperature scaling only for {', '.join(helps)}; not for "
                  f"{', '.join(fails)}, where it did not lower both the held-out ECE "
                  "(in every half) and the NLL." + how)
    shipped = [f"`{m['model']}` (T = " + ", ".join(f"{t['temperature']:.2f}"
                                                   for t in m["temperatures"])
               + f" for {len(m['temperatures'])} view sets)"
               for m in models.values() if m.get("temperatures")]
    state = (f"The models are measured as shipped: the sidecars of {', '.join(shipped)} "
             "carry temperatures fitted on PublicTest by `python -m training.calibrate`, "
             "which `EmotionClassifier` applies, so T here is what would remain to "
             "correct." if shipped else
             "The shipped models and sidecars are unchanged here: this card only "
             "measures what T would do (`python -m training.calibrate` stores it).")
    out.append(f"\n{state}\n\n**Recommendation:** {advice}")
    return out


def _smoothing_section(smoothing: Dict[str, Any], figures: str) -> List[str]:
    tau = smoothing["smoothing_s"]
    out = [
        "## Smoothing in the node",
        "",
        f"The node averages each face's probabilities over time (an exponential moving "
        f"average with time constant `smoothing_time_constant_s`, default {tau:g} s) and "
        "publishes the label with the highest smoothed probability. On real footage, "
        f"`{smoothing['video']}` ({smoothing['frames']} frames at "
        f"{smoothing['frame_rate']:.1f} fps, {smoothing['faces']} face track(s), "
        "unlabelled), run through `fer_ros.pipeline.build_pipeline` with the node's "
        f"defaults ({VIEW_NAMES[smoothing['views']]} views) and smoothing off (0 s) or "
        f"on ({tau:g} s):",
        "",
    ]
    rows = []
    for model, s in smoothing["models"].items():
        delay = s["median_change_delay_s"]
        rows.append([
            f"`{model}`",
            f"{s['without']['changes_per_second']:.2f} ({s['without']['changes']})",
            f"{s['with']['changes_per_second']:.2f} ({s['with']['changes']})",
            f"{s['without']['median_label_run_s']:.2f} s -> "
            f"{s['with']['median_label_run_s']:.2f} s",
            "-" if delay is None else f"{delay:.2f} s ({s['changes_measured']})",
            f"{s['half_step_s']:.2f} s / {s['mean_delay_s']:.2f} s"])
    out += _table(["model", "label changes per second, 0 s (count)",
                   f"... {tau:g} s (count)", "median time a label lasts",
                   "median delay of a published change (changes)",
                   "filter: half of a step / mean delay"], rows)
    out += [
        "The delay of a published change is the time from the latest frame on which the "
        "unsmoothed label switched to the same label; the filter's delays are those of "
        "the moving average itself at this frame rate (half of a step: when the smoothed "
        "probability has moved halfway to a new constant value; mean delay: centre of "
        "mass of its weights). " + _smoothing_summary(smoothing),
        "",
        f"![raw and smoothed probability over time]({figures}/{smoothing['figure']})",
        "",
        f"*{smoothing['plotted_class'] or 'A class'}'s probability for one face, "
        f"unsmoothed and smoothed, and the label published per frame in each case.*",
        "",
    ]
    return out


def _smoothing_summary(smoothing: Dict[str, Any]) -> str:
    """One sentence on what the default smoothing buys and costs, from the numbers."""
    model = MODELS[0]
    s = smoothing["models"][model]
    before, after = s["without"]["changes_per_second"], s["with"]["changes_per_second"]
    fewer = (f"{before / after:.1f} times fewer" if after > 0 else "none left")
    delay = s["median_change_delay_s"]
    return (f"With the `{model}` model the default smoothing cuts the published label's "
            f"changes from {before:.2f} to {after:.2f} per second ({fewer}), and a label "
            f"lasts a median {s['with']['median_label_run_s']:.2f} s instead of "
            f"{s['without']['median_label_run_s']:.2f} s; "
            + (f"in exchange a change is published a median {delay:.2f} s after the "
               "unsmoothed label shows it." if delay is not None else
               "no published change was left to time on this footage.")
            + " A brief expression (shorter than about the half-step time) may never "
            "reach the published label.")


def _mapping_section(models: Dict[str, Any], card: Dict[str, Any],
                     figures: str) -> List[str]:
    three, seven = models["3class"], models["7class"]
    groups: Dict[str, List[str]] = {}
    for label, target in SEVEN_TO_THREE.items():
        groups.setdefault(target or "left out", []).append(label)
    surprise = three["surprise"]
    seven_surprise = next(row for row in seven["per_class"] if row["label"] == "surprise")
    out = [
        "## What the 3-class mapping leaves out",
        "",
        "The 3-class model is trained and scored on FER2013's labels mapped to valence "
        "classes: " + "; ".join(f"{target}: {', '.join(labels)}"
                                for target, labels in groups.items()) + ". Contempt "
        "exists only in CK+ (the CNN-LSTMs' data; FER2013 has no contempt): it counts "
        "as negative for 3 classes and is dropped for 7.",
        "",
        f"- **Surprise is left out** of 3-class training and of every 3-class accuracy "
        f"in this card ({surprise['faces']} surprise faces in the evaluated PublicTest "
        "faces), because its valence is ambiguous (pleasant or unpleasant surprise). "
        "The robot still sees surprised faces, and the 3-class model must call them "
        "one of its three classes. On PublicTest's surprise faces, with the node's "
        f"default views, it publishes: {_shares(surprise['labels'])} (with the model's "
        f"own views: {_shares(surprise['labels_with_model_views'])}); mean "
        "probabilities " + ", ".join(f"{label} {p:.2f}" for label, p in
                                     surprise["mean_probabilities"].items())
        + f", mean valence {surprise['mean_valence']:+.2f}; its mean confidence on "
        f"them is {surprise['mean_confidence']:.2f}, against "
        f"{surprise['mean_confidence_other_faces']:.2f} on the other faces"
        + (" (so the confidence gives no warning)" if surprise["mean_confidence"]
           > surprise["mean_confidence_other_faces"] - NO_WARNING_GAP else "")
        + ". A surprised child is therefore published as one of the three classes, mostly "
        f"{max(surprise['labels'], key=surprise['labels'].get)}; use the 7-class "
        "model where surprise matters.",
        f"- The 7-class model has a surprise class: recall "
        f"{_pct(seven_surprise['recall'])} ({_ci(seven_surprise['recall_ci95'])}), "
        f"precision {_pct(seven_surprise['precision'])}; its valence for surprise is "
        "0, and `fer-evaluate --collapse-to-3class` drops the surprise probability and "
        "renormalises the rest.",
        "- No class for \"not a face\" or \"unknown\": every crop gets one of the "
        "classes."
        + (f" On the {three['junk']['faces']} blank or flat PublicTest tiles the "
           f"3-class model still answers with a mean confidence of "
           f"{three['junk']['mean_confidence']:.2f} ({_shares(three['junk']['labels'])})."
           if "junk" in three else ""),
        "",
        f"![what the 3-class model publishes per FER2013 label]({figures}/"
        f"{card['label_map_figure']})",
        "",
        "*Rows: the faces of each FER2013 label; columns: the share the 3-class model "
        "publishes as each class (the node's default views).*",
        "",
    ]
    return out


# --- the command ----------------------------------------------------------------

def _machine() -> str:
    """Describe the CPU: its model name (from /proc/cpuinfo where there is one) and cores."""
    import os
    import platform

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def generate(data: Path, video: Path, output: Path, limit: int = 0, max_frames: int = 0,
             threads: int = 1, command: str = "",
             twins: Optional[Dict[str, str]] = None) -> Path:
    """Measure, draw and write the card; return the path of ``MODEL_CARD.md``.

    :param data: FER2013 .npz or .csv.
    :param video: footage for the smoothing section.
    :param output: folder of the card; figures go to ``output/model_card/``.
    :param limit: PublicTest faces evaluated (a seeded sample); 0 = all.
    :param max_frames: footage frames used; 0 = all.
    :param threads: CPU threads of the networks.
    :param command: the command line recorded in the card.
    :param twins: held-out twins of shipped models trained on PublicTest
        (see :func:`measured_files`).
    """
    from fer_ros.video_io import FrameSource

    measured = measured_files(data, twins)
    start = time.monotonic()
    figures = output / FIGURE_FOLDER
    figures.mkdir(parents=True, exist_ok=True)
    source = FrameSource(str(video))
    frames = min(source.frame_count, max_frames) if max_frames else source.frame_count
    source.close()
    faces_total = limit or 3589
    passes = sum(len(MODELS) * n for n in (6, 2, 1))
    progress = Progress(DATA_UNITS + faces_total * passes
                        + 2 * len(MODELS) * frames * FRAME_UNITS)
    faces = load_faces(data, limit)
    progress.advance(DATA_UNITS, f"loaded {data.name}: {len(faces['y'])} PublicTest faces")
    models = {model: evaluate_model(model, faces, threads, figures, progress,
                                    measured[model]) for model in MODELS}
    label_map = "labels_3class.png"
    plot_label_map(models["3class"]["by_fer2013_label"], THREE_CLASS_LABELS,
                   figures / label_map)
    smoothing = smoothing_study(video, max_frames, threads, figures, progress)
    card = {"command": command or "python -m training.model_card",
            "git_revision": git_revision(), "machine": _machine(),
            "limit": limit, "publictest_faces": int(len(faces["y"])),
            "figure_folder": FIGURE_FOLDER, "label_map_figure": label_map,
            "data": faces["facts"], "models": models, "smoothing": smoothing,
            "seconds": time.monotonic() - start}
    (figures / "model_card.json").write_text(json.dumps(_json_ready(card), indent=1) + "\n")
    path = output / CARD_NAME
    path.write_text(render_card(card))
    print(f"wrote {path}, {figures}/*.png and {figures / 'model_card.json'} "
          f"in {card['seconds']:.0f} s")
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m training.model_card",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(DEFAULT_DATA),
                        help="FER2013 .npz or .csv (default: %(default)s)")
    parser.add_argument("--video", type=Path, default=Path(DEFAULT_VIDEO),
                        help="footage for the smoothing section (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=Path("docs"),
                        help="folder of MODEL_CARD.md; figures go to its model_card/ "
                             "(default: %(default)s)")
    parser.add_argument("--limit", type=int, default=0, metavar="N",
                        help="evaluate a seeded sample of N PublicTest faces (0 = all)")
    parser.add_argument("--max-frames", type=int, default=0, metavar="F",
                        help="use the footage's first F frames (0 = all)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of the networks")
    parser.add_argument("--twin", action="append", default=[], metavar="MODEL=FILE",
                        help="measure FILE, the held-out twin of the shipped MODEL, on "
                             "PublicTest (needed when MODEL was trained on PublicTest)")
    args = parser.parse_args(argv)
    for path, what in ((args.data, "--data"), (args.video, "--video")):
        if not path.is_file():
            print(f"{what} {path}: no such file", file=sys.stderr)
            return 2
    if args.limit < 0 or args.max_frames < 0 or args.threads < 1:
        print("--limit and --max-frames must be >= 0, --threads >= 1", file=sys.stderr)
        return 2
    command = "python -m training.model_card" + "".join(
        f" {flag} {value}" for flag, value, default in (
            ("--data", args.data, Path(DEFAULT_DATA)),
            ("--video", args.video, Path(DEFAULT_VIDEO)),
            ("--output", args.output, Path("docs")), ("--limit", args.limit, 0),
            ("--max-frames", args.max_frames, 0), ("--threads", args.threads, 1))
        if value != default) + "".join(f" --twin {pair}" for pair in args.twin)
    from fer_ros.datasets import DatasetError
    from fer_ros.model_files import ModelLoadError
    from fer_ros.video_io import SourceError

    try:
        from training.calibrate import parse_twins

        generate(args.data, args.video, args.output, args.limit, args.max_frames,
                 args.threads, command, parse_twins(args.twin, list(MODELS)))
    except (DatasetError, ModelLoadError, SourceError, OSError, ValueError) as error:
        print(f"model card: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
