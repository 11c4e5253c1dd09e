"""Train the CNN-LSTM on CK+ sequences: ``python -m training.train_lstm CONFIG``.

Each CK+ sequence becomes per-frame features of the static CNN (its
``features`` layer, spatially averaged), resampled to l frames (thesis
Algorithm 1).  Evaluation is subject-wise k-fold cross-validation: no
subject is in both the training and the test part of a fold.  On the same
folds the static CNN is scored by a per-sequence vote (mean of its frame
probabilities), so the two are compared on identical test sequences.
The shipped model is then trained on every subject for the median best
epoch of the folds.

CK+ holds only the peak frames of posed expressions: it has no neutral
sequences.  So that the CNN-LSTM also knows "neutral", the training part of
every fold (never the test part) can be extended with pseudo-sequences from
FER2013 Training: one face seen in a few slightly jittered views, as a
still face looks to a camera (``extra_data``, ``extra_per_class``).

Writes ``runs/<name>/``: config.yaml, metrics.json (per fold and mean, both
models), comparison.md, confusion.png (pooled CV predictions of the
CNN-LSTM), curves.png (first fold), best.keras; with ``--export`` also
``fer_ros/weights/<static model>_lstm.tflite``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import yaml

WEIGHTS = Path(__file__).resolve().parent.parent / "fer_ros" / "weights"


@dataclass
class LstmConfig:
    """One CNN-LSTM experiment; every field can be set in the YAML file."""

    name: str
    static_model: str = "3class"
    data: str = "../shared/data/ckplus48.npz"
    sequence_length: int = 40
    lstm_units: int = 64
    dense_units: int = 256
    dropout: float = 0.25
    epochs: int = 400
    early_stopping_patience: int = 50
    batch_size: int = 16
    learning_rate: float = 1e-3
    folds: int = 5
    seed: int = 1
    output_root: str = "runs"
    extra_data: str = ""          # FER2013 file for still-face pseudo-sequences; "" = none
    extra_per_class: int = 0      # pseudo-sequences per class from extra_data
    extra_frames: int = 3         # jittered views per pseudo-sequence


def sequence_features(config: LstmConfig):
    """Per-sequence feature arrays, labels, subjects, and the static vote."""
    from fer_ros.classification import EmotionClassifier
    from fer_ros.datasets import load_any
    from fer_ros.labels import relabel
    from fer_ros.parameters import TEST_TIME_VIEWS, defaults

    # Features as the node computes them with its default test-time views.
    classifier = EmotionClassifier.load(config.static_model, threads=2,
                                        **TEST_TIME_VIEWS[defaults()["test_time_views"]])
    data = load_any(config.data)
    y_frames = relabel(data.labels, classifier.labels)
    probabilities, features = classifier.predict(data.images)
    sequences, labels, subjects, votes = [], [], [], []
    for sequence in sorted(set(data.sequence.tolist())):
        rows = np.flatnonzero(data.sequence == sequence)
        rows = rows[np.argsort(data.frame[rows])]
        if y_frames[rows[0]] < 0:
            continue  # a class the model does not have (e.g. surprise for 3 classes)
        sequences.append(features[rows])
        labels.append(int(y_frames[rows[0]]))
        subjects.append(str(data.subject[rows[0]]))
        votes.append(probabilities[rows].mean(axis=0))
    return (classifier, sequences, np.array(labels), np.array(subjects), np.array(votes),
            data.fingerprint())


def jittered_views(face: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` slightly moved views of one face (rotation, shift, scale)."""
    import cv2

    views = []
    for _ in range(count):
        matrix = cv2.getRotationMatrix2D((24, 24), rng.uniform(-5, 5), rng.uniform(0.97, 1.03))
        matrix[:, 2] += rng.uniform(-2, 2, size=2)
        views.append(cv2.warpAffine(face, matrix, (48, 48), borderMode=cv2.BORDER_REFLECT))
    return np.stack(views)


def still_face_sequences(config: LstmConfig, classifier) -> Tuple[List[np.ndarray], np.ndarray]:
    """Pseudo-sequences of still faces from ``extra_data`` (Training split)."""
    from fer_ros.datasets import find_junk, load_any

    if not config.extra_data or config.extra_per_class <= 0:
        return [], np.zeros(0, np.int64)
    data = load_any(config.extra_data)
    data = data.subset(((data.split == "Training") | (data.split == ""))
                       & ~find_junk(data.images)["blank"])
    images, y = data.targets(classifier.labels)
    rng = np.random.default_rng(config.seed)
    sequences, labels = [], []
    for c in range(len(classifier.labels)):
        rows = np.flatnonzero(y == c)
        for row in rng.choice(rows, size=min(config.extra_per_class, len(rows)),
                              replace=False):
            sequences.append(classifier.features(
                jittered_views(images[row], config.extra_frames, rng)))
            labels.append(c)
    return sequences, np.array(labels)


def subject_folds(subjects: np.ndarray, folds: int, seed: int) -> List[np.ndarray]:
    """Test-index arrays of ``folds`` subject-disjoint folds."""
    unique = np.random.default_rng(seed).permutation(np.unique(subjects))
    groups = np.array_split(unique, folds)
    return [np.flatnonzero(np.isin(subjects, group)) for group in groups]


def fit(config: LstmConfig, x: np.ndarray, y: np.ndarray, num_classes: int,
        validation: Optional[Tuple[np.ndarray, np.ndarray]], epochs: int):
    """Train one CNN-LSTM; return the model and its history."""
    import keras

    from training.models import build_cnn_lstm

    keras.utils.set_random_seed(config.seed)
    model = build_cnn_lstm(x.shape[2], num_classes, config.sequence_length,
                           config.lstm_units, config.dense_units, config.dropout)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    callbacks = []
    if validation is not None:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.early_stopping_patience,
            restore_best_weights=True))
    history = model.fit(x, y, batch_size=config.batch_size, epochs=epochs,
                        validation_data=validation, callbacks=callbacks, verbose=0)
    return model, history.history


def train_lstm(config: LstmConfig, export: bool) -> Path:
    """Cross-validate, compare with the static vote, train and save the final model."""
    from fer_ros.evaluation import (classification_metrics, git_revision, plot_confusion,
                                    plot_curves, write_metrics)
    from fer_ros.sequence import resample

    run_dir = Path(config.output_root) / config.name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(config),
                                                        sort_keys=False))
    classifier, sequences, y, subjects, votes, data_hash = sequence_features(config)
    labels = classifier.labels
    x = np.stack([resample(s, config.sequence_length) for s in sequences])
    extra_sequences, y_extra = still_face_sequences(config, classifier)
    x_extra = (np.stack([resample(s, config.sequence_length) for s in extra_sequences])
               if extra_sequences else np.zeros((0,) + x.shape[1:], np.float32))
    if len(y_extra):
        print(f"+ {len(y_extra)} still-face pseudo-sequences from {config.extra_data} "
              f"(training parts only)", flush=True)
    lengths = sorted({len(s) for s in sequences})
    print(f"{len(sequences)} sequences of {lengths} frames from {len(set(subjects))} "
          f"subjects; features {x.shape[2]}; classes {np.bincount(y, minlength=len(labels))}",
          flush=True)
    folds = subject_folds(subjects, config.folds, config.seed)
    pooled_true, pooled_lstm, pooled_vote, rows, best_epochs = [], [], [], [], []
    for k, test in enumerate(folds):
        train = np.setdiff1d(np.arange(len(y)), test)
        model, history = fit(config, np.concatenate([x[train], x_extra]),
                             np.concatenate([y[train], y_extra]), len(labels),
                             (x[test], y[test]), config.epochs)
        predicted = model.predict(x[test], verbose=0).argmax(axis=1)
        voted = votes[test].argmax(axis=1)
        best_epochs.append(int(np.argmin(history["val_loss"])) + 1)
        rows.append({"fold": k, "test_sequences": int(len(test)),
                     "test_subjects": int(len(set(subjects[test]))),
                     "cnn_lstm_accuracy": round(float((predicted == y[test]).mean()), 4),
                     "static_vote_accuracy": round(float((voted == y[test]).mean()), 4),
                     "best_epoch": best_epochs[-1]})
        print(f"fold {k}: CNN-LSTM {rows[-1]['cnn_lstm_accuracy']:.3f}, static vote "
              f"{rows[-1]['static_vote_accuracy']:.3f} ({len(test)} sequences)", flush=True)
        pooled_true += y[test].tolist()
        pooled_lstm += predicted.tolist()
        pooled_vote += voted.tolist()
        if k == 0:
            plot_curves(history, run_dir / "curves.png", f"{model.name}, fold 0")
    lstm_metrics = classification_metrics(np.array(pooled_true), np.array(pooled_lstm), labels)
    vote_metrics = classification_metrics(np.array(pooled_true), np.array(pooled_vote), labels)
    final_epochs = int(np.median(best_epochs))
    final, _ = fit(config, np.concatenate([x, x_extra]), np.concatenate([y, y_extra]),
                   len(labels), None, final_epochs)
    final.save(run_dir / "best.keras")
    metrics: Dict[str, Any] = {
        "protocol": f"{config.folds}-fold subject-wise cross-validation on {config.data}",
        "labels": list(labels), "sequences": int(len(y)),
        "frames_per_sequence": lengths, "static_model": classifier.source,
        "feature_size": int(x.shape[2]),
        "cnn_lstm": lstm_metrics, "static_vote": vote_metrics,
        "mean_fold_accuracy": {
            "cnn_lstm": round(float(np.mean([r["cnn_lstm_accuracy"] for r in rows])), 4),
            "static_vote": round(float(np.mean([r["static_vote_accuracy"] for r in rows])), 4)},
        "folds": rows, "final_model_epochs": final_epochs,
        "still_face_pseudo_sequences": int(len(y_extra)),
        "params": int(final.count_params()), "data_hash": data_hash, "seed": config.seed,
        "git_revision": git_revision()}
    write_metrics(run_dir / "metrics.json", metrics)
    table = ["| model | pooled accuracy | mean fold accuracy | macro-F1 |", "|---|---|---|---|",
             f"| CNN-LSTM | {lstm_metrics['accuracy']:.3f} | "
             f"{metrics['mean_fold_accuracy']['cnn_lstm']:.3f} | {lstm_metrics['macro_f1']:.3f} |",
             f"| static CNN, per-sequence vote | {vote_metrics['accuracy']:.3f} | "
             f"{metrics['mean_fold_accuracy']['static_vote']:.3f} | "
             f"{vote_metrics['macro_f1']:.3f} |"]
    (run_dir / "comparison.md").write_text("\n".join(table) + "\n")
    print("\n".join(table), flush=True)
    plot_confusion(lstm_metrics["confusion_matrix"], labels, run_dir / "confusion.png",
                   f"CNN-LSTM, {config.folds}-fold subject CV: acc {lstm_metrics['accuracy']:.3f}")
    if export:
        from fer_ros.model_files import file_fingerprint
        from training.export import export_sequence_tflite

        target = WEIGHTS / f"{Path(classifier.source).stem}_lstm.tflite"
        export_sequence_tflite(final, target, {
            "labels": list(labels), "static_model": Path(classifier.source).name,
            "static_model_sha256": file_fingerprint(classifier.source),
            "cross_validation": metrics["mean_fold_accuracy"], "protocol": metrics["protocol"],
            "run": config.name})
        print(f"exported {target}")
    return run_dir


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--export", action="store_true",
                        help="write fer_ros/weights/<static model>_lstm.tflite")
    args = parser.parse_args(argv)
    from fer_ros.model_files import ModelLoadError
    from fer_ros.datasets import DatasetError

    try:
        raw = yaml.safe_load(args.config.read_text()) or {}
        raw.update({k: yaml.safe_load(v) for k, v in (i.split("=", 1) for i in args.set)})
        unknown = set(raw) - {f.name for f in dataclasses.fields(LstmConfig)}
        if unknown:
            raise ValueError(f"{args.config}: unknown config key(s) {sorted(unknown)}")
        run_dir = train_lstm(LstmConfig(**raw), args.export)
    except (OSError, ValueError, ModelLoadError, DatasetError) as error:
        print(f"train_lstm: error: {error}", file=sys.stderr)
        return 1
    print(f"run written to {run_dir}")
    print(json.dumps({"run": str(run_dir)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
