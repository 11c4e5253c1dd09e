"""Train a static FER CNN from a YAML config: ``python -m training.train_static CONFIG``.

Writes into ``runs/<name>/``: the config as run, ``model_summary.txt``,
``training_log.csv``, ``best.keras`` (best validation accuracy),
``metrics.json``, ``confusion.png`` and ``curves.png``.  A run that is
interrupted resumes from its last finished epoch when started again with
the same config (Keras ``BackupAndRestore``, written every epoch).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import yaml

from fer_ros.test_time_augmentation import TtaViews
from training.augmentation import AugmentationConfig
from training.distillation import blend_targets, check_distillation_weight


#: Optimizers a config can name.
OPTIMIZERS = ("adam", "sgd")


@dataclass
class TrainConfig:
    """One static-FER experiment.  Every field can be set in the YAML file."""

    name: str
    label_set: str = "3class"
    train_data: List[str] = field(default_factory=lambda: ["../shared/data/fer2013.npz"])
    train_split: str = "Training"
    val_data: str = "../shared/data/fer2013.npz"
    val_split: str = "PublicTest"
    architecture: str = "vgg"
    model: Dict[str, Any] = field(default_factory=dict)
    epochs: int = 40
    batch_size: int = 128
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"          # "cosine" or "plateau"
    optimizer: str = "adam"              # "adam" or "sgd" (Nesterov momentum)
    momentum: float = 0.9                # of "sgd"
    mixup_alpha: float = 0.0             # Beta(alpha, alpha) mixup of faces; 0 = off
    plateau_factor: float = 0.1
    plateau_patience: int = 12
    early_stopping_patience: int = 20
    label_smoothing: float = 0.0
    class_weighting: bool = True
    drop_blank: bool = True
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    tta_flip: bool = True
    tta_zooms: List[float] = field(default_factory=lambda: [1.0])  # test-time zooms
    tta_shifts: List[List[int]] = field(default_factory=lambda: [[0, 0]])  # pixels
    seed: int = 1
    threads: int = 0                     # 0 = TensorFlow's default
    max_train_samples: int = 0           # 0 = all; >0 for smoke tests
    output_root: str = "runs"
    multitask: bool = False              # one trunk, 7-class and 3-class heads
    init_weights: str = ""               # start from this .keras (same architecture)
    teachers: List[str] = field(default_factory=list)  # runs to distil from (an ensemble)
    distillation_weight: float = 0.5     # share of the teachers' probabilities in targets

    def __post_init__(self) -> None:
        """Reject settings that would only fail after data loading."""
        check_distillation_weight(self.distillation_weight)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}")
        if self.mixup_alpha < 0:
            raise ValueError(f"mixup_alpha must be >= 0, not {self.mixup_alpha}")
        tta_views(self)  # checks the test-time views

    @classmethod
    def from_yaml(cls, path: Path, overrides: Optional[Dict[str, Any]] = None
                  ) -> "TrainConfig":
        """Read a config file; unknown keys are an error."""
        raw = yaml.safe_load(path.read_text()) or {}
        raw.update(overrides or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown config key(s) {unknown}")
        if "augmentation" in raw:
            raw["augmentation"] = AugmentationConfig(**(raw["augmentation"] or {}))
        return cls(**raw)

    def to_dict(self) -> Dict[str, Any]:
        """Plain-dict form, written into the run folder."""
        return dataclasses.asdict(self)


def load_split(paths: List[str], split: str, label_set: str, drop_blank: bool):
    """Load, mix and relabel datasets; return images, y, fingerprint, junk counts."""
    from fer_ros.datasets import concatenate, find_junk, load_any
    from fer_ros.labels import label_set as labels_for

    data = concatenate(load_any(p) for p in paths)
    if split:
        data = data.subset((data.split == split) | (data.split == ""))
    junk = find_junk(data.images)
    counts = {name: int(mask.sum()) for name, mask in junk.items()}
    if drop_blank:
        data = data.subset(~junk["blank"])
    images, y = data.targets(labels_for(label_set))
    return images, y, data.fingerprint(), counts


def make_dataset(images: np.ndarray, y: np.ndarray, num_classes: int,
                 batch_size: int, augmenter=None, weights=None,
                 shuffle_seed: Optional[int] = None,
                 targets: Optional[np.ndarray] = None, mixup_alpha: float = 0.0):
    """Build a ``tf.data`` pipeline of (face float [B,48,48,1], target[, weight]).

    The target is the one-hot label, or ``targets`` (float [N, classes],
    e.g. blended with a teacher's probabilities) when given.  With
    ``mixup_alpha`` > 0 the augmented faces of each batch are mixed
    (:func:`training.augmentation.mix_batch`), and every face has a weight.
    """
    import tensorflow as tf

    from training.augmentation import mix_batch

    x = images[..., None].astype(np.float32)
    if targets is None:
        targets = np.eye(num_classes, dtype=np.float32)[y]
    if mixup_alpha > 0 and weights is None:
        weights = np.ones(num_classes, np.float32)
    tensors = (x, targets) if weights is None else (
        x, targets, np.array([weights[int(c)] for c in y], dtype=np.float32))
    ds = tf.data.Dataset.from_tensor_slices(tensors)
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augmenter is not None:
        ds = ds.map(lambda a, *rest: (augmenter(a, training=True), *rest),
                    num_parallel_calls=tf.data.AUTOTUNE)
    if mixup_alpha > 0:
        def mix(a, target, weight):
            a, target, weight = mix_batch(a, {"y": target}, {"y": weight}, mixup_alpha)
            return a, target["y"], weight["y"]
        ds = ds.map(mix, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def predict_probabilities(model, images: np.ndarray, tta: TtaViews,
                          batch_size: int = 256) -> np.ndarray:
    """Class probabilities averaged over the test-time views ``tta``."""
    import tensorflow as tf

    forward = tf.function(lambda a: model(a, training=False))
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        out.append(tta.average(forward(tta.views(batch)).numpy(), len(batch)))
    return np.concatenate(out) if out else np.zeros((0, model.output_shape[-1]))


def tta_views(config: TrainConfig) -> TtaViews:
    """Return the test-time views a run's model is evaluated (and shipped) with."""
    return TtaViews(config.tta_flip, tuple(config.tta_zooms),
                    tuple(tuple(shift) for shift in config.tta_shifts))


def start_run(config: TrainConfig) -> Path:
    """Set threads and seeds, create the run folder and record the config in it.

    Must run before TensorFlow is first imported (thread settings).
    """
    if config.threads > 0:
        os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(config.threads))
        os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    import keras

    run_dir = Path(config.output_root) / config.name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    keras.utils.set_random_seed(config.seed)
    return run_dir


def load_train_and_validation(config: TrainConfig, label_set: str):
    """Load training and validation faces, labels, and the facts metrics.json records.

    :return: ``(x_train, y_train, x_val, y_val, facts)``.
    """
    x_train, y_train, train_hash, train_junk = load_split(
        config.train_data, config.train_split, label_set, config.drop_blank)
    if config.max_train_samples:
        keep = np.random.default_rng(config.seed).permutation(len(x_train))
        keep = keep[:config.max_train_samples]
        x_train, y_train = x_train[keep], y_train[keep]
    x_val, y_val, val_hash, val_junk = load_split(
        [config.val_data], config.val_split, label_set, drop_blank=False)
    facts = {"train_samples": int(len(x_train)), "train_data_hash": train_hash,
             "val_data_hash": val_hash, "junk_in_train_source": train_junk,
             "junk_in_val": val_junk}
    return x_train, y_train, x_val, y_val, facts


def learning_rate_schedule(config: TrainConfig, train_samples: int):
    """Return the learning rate: a cosine decay, or a constant for the plateau schedule."""
    import keras

    if config.lr_schedule == "cosine":
        steps = int(np.ceil(train_samples / config.batch_size)) * config.epochs
        return keras.optimizers.schedules.CosineDecay(config.learning_rate,
                                                      decay_steps=steps, alpha=0.01)
    if config.lr_schedule == "plateau":
        return config.learning_rate
    raise ValueError(f"lr_schedule must be 'cosine' or 'plateau', not {config.lr_schedule!r}")


def build_optimizer(config: TrainConfig, train_samples: int):
    """Return the config's optimizer with its learning-rate schedule."""
    import keras

    rate = learning_rate_schedule(config, train_samples)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=config.momentum, nesterov=True)
    return keras.optimizers.Adam(rate)


def schedule_callbacks(config: TrainConfig) -> list:
    """Return the schedule's callbacks: ReduceLROnPlateau for plateau, none for cosine."""
    import keras

    if config.lr_schedule != "plateau":
        return []
    return [keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss", factor=config.plateau_factor,
        patience=config.plateau_patience, min_lr=1e-6)]


def write_model_summary(model, run_dir: Path) -> None:
    """Save the Keras summary into the run folder and print the parameter count."""
    summary: List[str] = []
    model.summary(print_fn=lambda line, **_: summary.append(line))
    (run_dir / "model_summary.txt").write_text("\n".join(summary) + "\n")
    print(f"model {model.name}: {model.count_params():,} parameters", flush=True)


def distillation_targets(config: TrainConfig, run_dir: Path, x_train: np.ndarray,
                         fingerprint: str, heads) -> Optional[Dict[str, np.ndarray]]:
    """Return the teachers' probabilities per head, or None without teachers."""
    if not config.teachers:
        return None
    from training.distillation import cached_teacher_targets

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
    from training.models import build_model
    from training.augmentation import build_augmenter

    labels = labels_for(config.label_set)
    x_train, y_train, x_val, y_val, facts = load_train_and_validation(config, config.label_set)
    print(f"train: {len(x_train)} faces {np.bincount(y_train, minlength=len(labels))}"
          f" (junk in source: {facts['junk_in_train_source']}); validation: {len(x_val)} "
          f"faces", flush=True)

    weights = class_weights(y_train, len(labels)) if config.class_weighting else None
    augmenter = build_augmenter(config.augmentation, config.seed)
    soft = distillation_targets(config, run_dir, x_train, facts["train_data_hash"],
                                (config.label_set,))
    targets = None if soft is None else blend_targets(
        np.eye(len(labels), dtype=np.float32)[y_train], soft[config.label_set],
        config.distillation_weight)
    train_ds = make_dataset(x_train, y_train, len(labels), config.batch_size,
                            augmenter, weights, shuffle_seed=config.seed, targets=targets,
                            mixup_alpha=config.mixup_alpha)
    val_ds = make_dataset(x_val, y_val, len(labels), 512)

    model = build_model(config.architecture, len(labels), **config.model)
    write_model_summary(model, run_dir)
    model.compile(
        optimizer=build_optimizer(config, len(x_train)),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"])
    callbacks = [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        keras.callbacks.ModelCheckpoint(str(run_dir / "best.keras"),
                                        monitor="val_accuracy", save_best_only=True),
        keras.callbacks.CSVLogger(str(run_dir / "training_log.csv"), append=True),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max",
                                      patience=config.early_stopping_patience),
    ] + schedule_callbacks(config)
    started = time.time()
    model.fit(train_ds, validation_data=val_ds, epochs=config.epochs,
              callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2)
    train_seconds = time.time() - started

    facts["train_seconds_this_session"] = round(train_seconds, 1)
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
    import tensorflow as tf

    from fer_ros.evaluation import plot_curves, read_history_csv
    from training.models import HEAD_OUTPUTS, build_multitask
    from training.augmentation import build_augmenter, mix_batch

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

    def dataset(x, y7, y3, batch, augment, soft=None):
        labels, weights = targets(y7, y3, soft)
        ds = tf.data.Dataset.from_tensor_slices(
            (x[..., None].astype(np.float32), labels, weights))
        if augment:
            ds = ds.shuffle(len(x), seed=config.seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch)
        if augment:
            augmenter = build_augmenter(config.augmentation, config.seed)
            ds = ds.map(lambda a, y, w: (augmenter(a, training=True), y, w),
                        num_parallel_calls=tf.data.AUTOTUNE)
            if config.mixup_alpha > 0:
                ds = ds.map(lambda a, y, w: mix_batch(a, y, w, config.mixup_alpha),
                            num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)

    model = build_multitask(config.architecture, **config.model)
    if config.init_weights:
        # Warm restart: a new learning-rate cycle from a trained model.
        model.set_weights(keras.models.load_model(config.init_weights).get_weights())
        print(f"initialised from {config.init_weights}", flush=True)
    write_model_summary(model, run_dir)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
    model.compile(optimizer=build_optimizer(config, len(x_train)),
                  loss={name: loss for name in HEAD_OUTPUTS.values()},
                  # weighted: surprise has weight 0 for the 3-class head
                  weighted_metrics={name: ["accuracy"] for name in HEAD_OUTPUTS.values()})
    callbacks = [keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
                 keras.callbacks.CSVLogger(str(run_dir / "training_log.csv"), append=True)]
    for head, output in HEAD_OUTPUTS.items():
        (run_dir / head).mkdir(exist_ok=True)
        callbacks.append(keras.callbacks.ModelCheckpoint(
            str(run_dir / head / "best_multitask.keras"),
            monitor=f"val_{output}_accuracy", mode="max", save_best_only=True))
    callbacks += schedule_callbacks(config)
    started = time.time()
    model.fit(dataset(x_train, y7_train, y3_train, config.batch_size, True, soft),
              validation_data=dataset(x_val, y7_val, y3_val, 512, False),
              epochs=config.epochs, callbacks=callbacks,
              verbose=1 if sys.stdout.isatty() else 2)
    train_seconds = time.time() - started
    plot_curves(read_history_csv(run_dir / "training_log.csv"), run_dir / "curves.png",
                model.name)
    facts.update(train_seconds_this_session=round(train_seconds, 1))
    evaluate_heads(config, run_dir, x_val, y7_val, y3_val, facts)
    return run_dir


def three_class_targets(y7: np.ndarray) -> np.ndarray:
    """3-class labels of FER2013 7-class labels (-1 for surprise)."""
    from fer_ros.labels import FER2013_LABELS, THREE_CLASS_LABELS, relabel

    return relabel(np.array(FER2013_LABELS)[y7], THREE_CLASS_LABELS)


def evaluate_heads(config: TrainConfig, run_dir: Path, x_val: np.ndarray, y7_val: np.ndarray,
                   y3_val: np.ndarray, facts: Dict[str, Any]) -> None:
    """Write each head of a multi-task run as a single-head run folder, evaluated."""
    import keras

    from fer_ros.labels import FER2013_LABELS, THREE_CLASS_LABELS
    from training.models import split_head

    facts = dict(facts, multitask_run=config.name)
    for head, labels, y_val in (("7class", FER2013_LABELS, y7_val),
                                ("3class", THREE_CLASS_LABELS, y3_val)):
        head_dir = run_dir / head
        trained = keras.models.load_model(head_dir / "best_multitask.keras")
        single = split_head(trained, head)
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
    args = parser.parse_args(argv)
    try:
        overrides = {k: yaml.safe_load(v) for k, v in
                     (item.split("=", 1) for item in args.set)}
        config = TrainConfig.from_yaml(args.config, overrides)
        if args.evaluate_only:
            run_dir = evaluate_only(config)
        else:
            run_dir = train_multitask(config) if config.multitask else train(config)
    except (OSError, ValueError) as error:
        print(f"train_static: error: {error}", file=sys.stderr)
        return 1
    print(f"run written to {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
