"""Train a static FER CNN from a YAML config: ``python -m training.train_static CONFIG``.

Writes into ``runs/<name>/``: the config as run, ``model_summary.txt``,
``training_log.csv``, ``best.keras`` (best validation accuracy),
``metrics.json``, ``confusion.png`` and ``curves.png``.  A run that is
interrupted resumes from its last finished epoch when started again with
the same config (Keras ``BackupAndRestore``, written every epoch); a run
that has finished is not trained again (``--evaluate-only`` re-evaluates it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import yaml

from fer_ros.test_time_augmentation import TtaViews
from training.augmentation import AugmentationConfig, build_augmenter, mix_batch
from training.common import (FinishedRunError, TrainConfig, build_optimizer,
                             load_train_and_validation, parse_overrides,
                             predict_probabilities, schedule_callbacks, start_run,
                             training_precision, tta_views, write_model_summary)
from training.distillation import blend_targets, cached_teacher_targets

#: Training targets: one array [N, classes], or one per output of a multi-task model.
Targets = Union[np.ndarray, Dict[str, np.ndarray]]


def make_dataset(images: np.ndarray, targets: Targets, weights: Optional[Targets],
                 batch_size: int, augmentation: Optional[AugmentationConfig] = None,
                 seed: int = 1, mixup_alpha: float = 0.0):
    """Build a ``tf.data`` pipeline of (face float [B,48,48,1], target[, weight]).

    :param images: uint8 [N,48,48] faces.
    :param targets: float [N, classes] (one-hot, or blended with a teacher's
        probabilities), or one such array per output of a multi-task model.
    :param weights: per-face sample weights [N] (per output for a multi-task
        model), or None.
    :param batch_size: faces per batch.
    :param augmentation: training pipeline (shuffled, augmented, mixed up
        when ``mixup_alpha`` > 0); None for evaluation.
    :param seed: shuffle and augmentation seed.
    :param mixup_alpha: Beta parameter of mixup (:func:`training.augmentation.mix_batch`).
    """
    import tensorflow as tf

    x = images[..., None].astype(np.float32)
    if mixup_alpha > 0 and weights is None:
        weights = np.ones(len(x), np.float32)
    ds = tf.data.Dataset.from_tensor_slices(
        (x, targets) if weights is None else (x, targets, weights))
    if augmentation is None:
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    augmenter = build_augmenter(augmentation, seed)
    ds = ds.map(lambda a, *rest: (augmenter(a, training=True), *rest),
                num_parallel_calls=tf.data.AUTOTUNE)
    if mixup_alpha > 0:
        ds = ds.map(lambda a, y, w: _mix(a, y, w, mixup_alpha),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _mix(faces, targets, weights, alpha: float):
    """Mixup of one batch whose targets are one array or one per output."""
    if isinstance(targets, dict):
        return mix_batch(faces, targets, weights, alpha)
    faces, mixed, mixed_weights = mix_batch(faces, {"y": targets}, {"y": weights}, alpha)
    return faces, mixed["y"], mixed_weights["y"]


def fit(config: TrainConfig, run_dir: Path, model, train_ds, val_ds, train_samples: int,
        checkpoints: Dict[Path, str], early_stopping: bool = False, **compile_args) -> float:
    """Compile and train ``model``, resuming from the run's last finished epoch.

    :param config: the experiment.
    :param run_dir: its run folder (backup, training_log.csv).
    :param model: an uncompiled model.
    :param train_ds: training batches; ``val_ds``: validation batches.
    :param train_samples: training faces (sizes the learning-rate schedule).
    :param checkpoints: best-model file -> validation metric it is chosen by
        (with ``config.checkpoint == "last"`` the file holds the last epoch).
    :param early_stopping: stop when the first checkpoint's metric stops
        improving (never with ``checkpoint: last``: its schedule is fixed).
    :param compile_args: ``loss`` and metrics for ``model.compile``.
    :return: seconds spent training in this session.
    """
    import keras

    write_model_summary(model, run_dir)
    model.compile(optimizer=build_optimizer(config, train_samples), **compile_args)
    callbacks = [keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
                 keras.callbacks.CSVLogger(str(run_dir / "training_log.csv"), append=True)]
    for path, monitor in checkpoints.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        callbacks.append(keras.callbacks.ModelCheckpoint(
            str(path), monitor=monitor, mode="max",
            save_best_only=config.checkpoint == "best"))
    if early_stopping and config.checkpoint == "best":
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=next(iter(checkpoints.values())), mode="max",
            patience=config.early_stopping_patience))
    started = time.time()
    model.fit(train_ds, validation_data=val_ds, epochs=config.epochs,
              callbacks=callbacks + schedule_callbacks(config),
              verbose=1 if sys.stdout.isatty() else 2)
    return round(time.time() - started, 1)


def distillation_targets(config: TrainConfig, run_dir: Path, x_train: np.ndarray,
                         fingerprint: str, heads) -> Optional[Dict[str, np.ndarray]]:
    """Return the teachers' probabilities per head, or None without teachers."""
    if not config.teachers:
        return None
    print(f"distilling from {', '.join(config.teachers)} "
          f"(weight {config.distillation_weight})", flush=True)
    return cached_teacher_targets(run_dir, config.teachers, heads, x_train, fingerprint)


def train(config: TrainConfig) -> Path:
    """Run one experiment and return its run folder."""
    run_dir = start_run(config)
    import keras

    from fer_ros.datasets import class_weights
    from fer_ros.evaluation import plot_curves, read_history_csv
    from fer_ros.labels import label_set as labels_for
    from training.models import build_model, float32_copy

    labels = labels_for(config.label_set)
    x_train, y_train, x_val, y_val, facts = load_train_and_validation(config, config.label_set)
    print(f"train: {len(x_train)} faces {np.bincount(y_train, minlength=len(labels))}"
          f" (junk in source: {facts['junk_in_train_source']}); validation: {len(x_val)} "
          f"faces", flush=True)

    onehot = np.eye(len(labels), dtype=np.float32)[y_train]
    soft = distillation_targets(config, run_dir, x_train, facts["train_data_hash"],
                                (config.label_set,))
    targets = onehot if soft is None else blend_targets(onehot, soft[config.label_set],
                                                        config.distillation_weight)
    weights = None
    if config.class_weighting:
        per_class = class_weights(y_train, len(labels))
        weights = np.array([per_class[int(c)] for c in y_train], np.float32)
    train_ds = make_dataset(x_train, targets, weights, config.batch_size,
                            config.augmentation, config.seed, config.mixup_alpha)
    val_ds = make_dataset(x_val, np.eye(len(labels), dtype=np.float32)[y_val], None, 512)

    with training_precision(config.precision):
        model = build_model(config.architecture, len(labels), **config.model)
        facts["train_seconds_this_session"] = fit(
            config, run_dir, model, train_ds, val_ds, len(x_train),
            {run_dir / "best.keras": "val_accuracy"}, early_stopping=True,
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
            metrics=["accuracy"])
    if config.precision != "float32":
        # The checkpoint was saved in the training precision; keep a float32 model.
        float32_copy(keras.models.load_model(run_dir / "best.keras")).save(run_dir / "best.keras")
    best = evaluate_run(config, run_dir, x_val, y_val, facts)
    plot_curves(read_history_csv(run_dir / "training_log.csv"), run_dir / "curves.png",
                best.name)
    return run_dir


def evaluate_run(config: TrainConfig, run_dir: Path, x_val: np.ndarray, y_val: np.ndarray,
                 facts: Dict[str, Any]):
    """Evaluate a single-head run's best.keras (metrics.json, confusion.png); return it."""
    import keras

    from fer_ros.labels import label_set as labels_for

    best = keras.models.load_model(run_dir / "best.keras")
    evaluate_model(best, run_dir, config, x_val, y_val, labels_for(config.label_set), facts)
    return best


def evaluate_model(model, run_dir: Path, config: TrainConfig, x_val: np.ndarray,
                   y_val: np.ndarray, labels, facts: Dict[str, Any]) -> Dict[str, Any]:
    """Write metrics.json and confusion.png of a trained model into ``run_dir``."""
    from fer_ros.evaluation import (classification_metrics, git_revision, plot_confusion,
                                    write_metrics)

    probs = predict_probabilities(model, x_val, tta_views(config))
    metrics = classification_metrics(y_val, probs.argmax(axis=1), labels)
    plain = predict_probabilities(model, x_val, TtaViews())
    metrics.update({
        "model": model.name, "architecture": config.architecture,
        "label_set": config.label_set,
        "evaluated_on": f"{config.val_data}:{config.val_split}",
        "accuracy_without_tta": round(float((plain.argmax(1) == y_val).mean()), 4),
        **tta_views(config).to_sidecar(), "params": int(model.count_params()),
        "size_bytes": (run_dir / "best.keras").stat().st_size,
        "seed": config.seed, "git_revision": git_revision(), **facts})
    write_metrics(run_dir / "metrics.json", metrics)
    write_keras_sidecar(run_dir / "best.keras", config, labels)
    title = f"{model.name} on {config.val_split}: acc {metrics['accuracy']:.3f}"
    plot_confusion(metrics["confusion_matrix"], labels, run_dir / "confusion.png", title)
    print(json.dumps({k: metrics[k] for k in ("label_set", "accuracy",
                                              "accuracy_without_tta", "macro_f1",
                                              "params")}), flush=True)
    return metrics


def train_multitask(config: TrainConfig) -> Path:
    """Train one trunk with a 7-class and a 3-class head (see build_multitask).

    Writes the shared run files into ``runs/<name>/`` and, per head, a
    normal single-output run folder ``runs/<name>/<head>/`` (best.keras
    chosen by that head's validation accuracy, config.yaml, metrics.json,
    confusion.png) that ``training.export`` takes as it is.
    """
    run_dir = start_run(config)
    import keras

    from fer_ros.evaluation import plot_curves, read_history_csv
    from training.models import HEAD_OUTPUTS, build_multitask

    x_train, y7_train, x_val, y7_val, facts = load_train_and_validation(config, "7class")
    y3_train, y3_val = three_class_targets(y7_train), three_class_targets(y7_val)
    print(f"train: {len(x_train)} faces (junk in source: {facts['junk_in_train_source']}); "
          f"validation: {len(x_val)} faces", flush=True)

    soft = distillation_targets(config, run_dir, x_train, facts["train_data_hash"],
                                tuple(HEAD_OUTPUTS))

    def targets(y7, y3, soft=None):
        onehot3 = np.zeros((len(y3), 3), np.float32)
        onehot3[y3 >= 0, y3[y3 >= 0]] = 1.0
        labels = {"7class": np.eye(7, dtype=np.float32)[y7], "3class": onehot3}
        if soft is not None:
            labels = {head: blend_targets(labels[head], soft[head],
                                          config.distillation_weight) for head in labels}
        labels = {HEAD_OUTPUTS[head]: target for head, target in labels.items()}
        weights = {HEAD_OUTPUTS["7class"]: np.ones(len(y7), np.float32),
                   HEAD_OUTPUTS["3class"]: (y3 >= 0).astype(np.float32)}
        return labels, weights

    train_ds = make_dataset(x_train, *targets(y7_train, y3_train, soft), config.batch_size,
                            config.augmentation, config.seed, config.mixup_alpha)
    val_ds = make_dataset(x_val, *targets(y7_val, y3_val), 512)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
    with training_precision(config.precision):
        model = build_multitask(config.architecture, **config.model)
        if config.init_weights:
            # Warm restart: a new learning-rate cycle from a trained model.
            model.set_weights(keras.models.load_model(config.init_weights).get_weights())
            print(f"initialised from {config.init_weights}", flush=True)
        facts["train_seconds_this_session"] = fit(
            config, run_dir, model, train_ds, val_ds, len(x_train),
            {run_dir / head / "best_multitask.keras": f"val_{output}_accuracy"
             for head, output in HEAD_OUTPUTS.items()},
            loss={name: loss for name in HEAD_OUTPUTS.values()},
            # weighted: surprise has weight 0 for the 3-class head
            weighted_metrics={name: ["accuracy"] for name in HEAD_OUTPUTS.values()})
    plot_curves(read_history_csv(run_dir / "training_log.csv"), run_dir / "curves.png",
                model.name)
    evaluate_heads(config, run_dir, x_val, y7_val, y3_val, facts)
    return run_dir


def three_class_targets(y7: np.ndarray) -> np.ndarray:
    """3-class labels of FER2013 7-class labels (-1 for surprise)."""
    from fer_ros.labels import FER2013_LABELS, THREE_CLASS_LABELS, relabel

    return relabel(np.array(FER2013_LABELS)[y7], THREE_CLASS_LABELS)


def write_keras_sidecar(model_path: Path, config: TrainConfig, labels) -> Path:
    """Write ``best.json`` beside a run's ``best.keras``: what the run knows about it.

    The same sidecar an exported model carries (labels, test-time views,
    the data it was trained on), so that ``EmotionClassifier.load`` and
    ``fer-evaluate`` score a run's model with its own views and say when
    it is asked about faces it was trained on.
    """
    sidecar = model_path.with_suffix(".json")
    content = {"labels": list(labels), **tta_views(config).to_sidecar(),
               "trained_on": [config.trained_on()],
               "training_run": config.name}
    sidecar.write_text(json.dumps(content, indent=2) + "\n")
    return sidecar


def evaluate_heads(config: TrainConfig, run_dir: Path, x_val: np.ndarray, y7_val: np.ndarray,
                   y3_val: np.ndarray, facts: Dict[str, Any]) -> None:
    """Write each head of a multi-task run as a single-head run folder, evaluated."""
    import keras

    from fer_ros.labels import FER2013_LABELS, THREE_CLASS_LABELS
    from training.models import float32_copy, split_head

    facts = dict(facts, multitask_run=config.name)
    for head, labels, y_val in (("7class", FER2013_LABELS, y7_val),
                                ("3class", THREE_CLASS_LABELS, y3_val)):
        head_dir = run_dir / head
        trained = keras.models.load_model(head_dir / "best_multitask.keras")
        single = float32_copy(split_head(trained, head))  # whatever it trained in
        single.save(head_dir / "best.keras")
        head_config = dataclasses.replace(config, label_set=head, multitask=False)
        (head_dir / "config.yaml").write_text(
            yaml.safe_dump(head_config.to_dict(), sort_keys=False))
        keep = y_val >= 0
        evaluate_model(single, head_dir, head_config, x_val[keep], y_val[keep], labels, facts)


def evaluate_only(config: TrainConfig) -> Path:
    """Re-evaluate a finished run with the config's current test-time views."""
    run_dir = Path(config.output_root) / config.name
    if not run_dir.is_dir():
        raise OSError(f"{run_dir}: no such run to evaluate")
    if config.multitask:
        _, _, x_val, y7_val, facts = load_train_and_validation(config, "7class")
        evaluate_heads(config, run_dir, x_val, y7_val, three_class_targets(y7_val), facts)
    else:
        _, _, x_val, y_val, facts = load_train_and_validation(config, config.label_set)
        evaluate_run(config, run_dir, x_val, y_val, facts)
    return run_dir


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="experiment YAML file")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override config keys (YAML values), e.g. epochs=1")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="do not train: re-evaluate the run's best model(s), e.g. "
                             "with other test-time views (--set tta_zooms=[1,1.1])")
    parser.add_argument("--skip-finished", action="store_true",
                        help="exit 0 without training when the run has already finished "
                             "(for scripts that train several runs in turn)")
    args = parser.parse_args(argv)
    try:
        config = TrainConfig.from_yaml(args.config, parse_overrides(args.set))
        if args.evaluate_only:
            run_dir = evaluate_only(config)
        else:
            run_dir = train_multitask(config) if config.multitask else train(config)
    except FinishedRunError as error:
        if args.skip_finished:
            print(f"train_static: skipped: {error}")
            return 0
        print(f"train_static: error: {error}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        print(f"train_static: error: {error}", file=sys.stderr)
        return 1
    print(f"run written to {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
