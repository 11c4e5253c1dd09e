"""What every trainer shares: experiment configs, data loading, run folders, optimisers.

A run is a folder ``runs/<name>/`` holding the config as run, the model,
its training log and metrics.  :class:`TrainConfig` reads an experiment's
YAML file (unknown keys are errors) with command-line overrides
(:func:`parse_overrides`).  Used by ``train_static``, ``distillation`` and
``export``; imports none of them.
"""

from __future__ import annotations

import dataclasses
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
import yaml

from fer_ros.test_time_augmentation import TtaViews
from training.augmentation import AugmentationConfig


#: Optimizers a config can name.
OPTIMIZERS = ("adam", "sgd")
#: Which model a run keeps: the epoch with the best validation accuracy, or
#: the last epoch (for runs whose schedule was fixed beforehand, e.g. trained
#: on Training + PublicTest).
CHECKPOINTS = ("best", "last")
#: Precisions a run can train in (Keras dtype policies).  Weights stay
#: float32 either way; ``mixed_bfloat16`` computes in bfloat16, which CPUs
#: with AMX or AVX512-BF16 and recent GPUs run faster.  Saved models are
#: float32 whatever the run trained in (:func:`training.models.float32_copy`).
PRECISIONS = ("float32", "mixed_bfloat16")


@dataclass
class TrainConfig:
    """One static-FER experiment.  Every field can be set in the YAML file."""

    name: str
    label_set: str = "3class"
    train_data: List[str] = field(default_factory=lambda: ["../shared/data/fer2013.npz"])
    train_split: str = "Training"       # "+"-joined for several, e.g. Training+PublicTest
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
    drop_validation_duplicates: bool = False  # train without faces also in validation
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
    checkpoint: str = "best"             # "best" on validation, or "last" (fixed schedule)
    precision: str = "float32"           # or "mixed_bfloat16" (see PRECISIONS)

    def __post_init__(self) -> None:
        """Reject settings that would only fail after data loading."""
        check_distillation_weight(self.distillation_weight)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}")
        if self.mixup_alpha < 0:
            raise ValueError(f"mixup_alpha must be >= 0, not {self.mixup_alpha}")
        tta_views(self)  # checks the test-time views
        check_precision(self.precision)
        if self.checkpoint not in CHECKPOINTS:
            raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, not {self.checkpoint!r}")
        if self.validation_in_training() and self.checkpoint == "best":
            raise ValueError(
                f"val_split {self.val_split!r} is among the training splits "
                f"{self.train_split!r}: choosing the best epoch on faces the model trains on "
                "is meaningless; fix the schedule beforehand and use checkpoint: last")

    def validation_in_training(self) -> bool:
        """Whether the validation faces are also training faces (a final, all-data run)."""
        return (bool(self.val_split) and self.val_data in self.train_data
                and (not self.train_split
                     or self.val_split in split_names(self.train_split)))

    def trained_on(self) -> str:
        """Return the sidecar's ``trained_on`` entry: ``DATA[+DATA...]:SPLIT`` (see ModelInfo)."""
        return f"{'+'.join(self.train_data)}:{self.train_split}"

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


def check_distillation_weight(weight: float) -> None:
    """Raise ValueError unless ``weight`` (the teachers' share) is in [0, 1]."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"distillation_weight must be in [0, 1], not {weight}")


def check_precision(precision: str) -> None:
    """Raise ValueError unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")


def split_names(split: str) -> List[str]:
    """Return the split names of a ``"+"``-joined setting, e.g. ``Training+PublicTest``."""
    return [name.strip() for name in split.split("+") if name.strip()]


def load_split(paths: List[str], split: str, label_set: str, drop_blank: bool):
    """Load, mix and relabel datasets; return images, y, fingerprint, junk counts.

    :param split: one split name, several joined by ``+``, or "" for all
        samples; samples without a split are always kept.
    """
    from fer_ros.datasets import concatenate, find_junk, load_any
    from fer_ros.labels import label_set as labels_for

    data = concatenate(load_any(p) for p in paths)
    if split:
        data = data.subset(np.isin(data.split, split_names(split)) | (data.split == ""))
    junk = find_junk(data.images)
    counts = {name: int(mask.sum()) for name, mask in junk.items()}
    if drop_blank:
        data = data.subset(~junk["blank"])
    images, y = data.targets(labels_for(label_set))
    return images, y, data.fingerprint(), counts


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
             "junk_in_val": val_junk, "train_split": config.train_split,
             "checkpoint": config.checkpoint}
    if config.validation_in_training():
        facts["validation_in_training"] = True  # its figures are not independent
    if config.drop_validation_duplicates:
        keep = ~duplicates_of(x_train, x_val)
        facts["validation_duplicates_dropped"] = int((~keep).sum())
        x_train, y_train = x_train[keep], y_train[keep]
        facts["train_samples"] = int(len(x_train))
    return x_train, y_train, x_val, y_val, facts


def duplicates_of(images: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Mask of the ``images`` that are pixel-identical to one of ``others``.

    FER2013 holds 279 PublicTest faces that are also in Training; trained on,
    they make the validation accuracy optimistic.
    """
    import hashlib

    seen = {hashlib.sha1(face.tobytes()).digest() for face in others}
    return np.array([hashlib.sha1(face.tobytes()).digest() in seen for face in images],
                    dtype=bool)


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
    # TtaViews checks the pairs (whole pixels, in range) and normalises them.
    return TtaViews(config.tta_flip, tuple(config.tta_zooms),
                    config.tta_shifts)  # type: ignore[arg-type]


class FinishedRunError(ValueError):
    """The run folder already holds a finished training; retraining would overwrite it."""


def finished_epochs(run_dir: Path) -> int:
    """Epochs of a finished training in ``run_dir``, 0 when there is none.

    A run is finished when its ``training_log.csv`` has epochs and no
    ``backup/`` is left to resume from (Keras' BackupAndRestore deletes it
    when ``fit`` returns); an interrupted run keeps its backup.
    """
    log = run_dir / "training_log.csv"
    if (run_dir / "backup").exists() or not log.is_file():
        return 0
    lines = [line for line in log.read_text().splitlines()[1:] if line.strip()]
    return len(lines)


def start_run(config: TrainConfig) -> Path:
    """Set threads and seeds, create the run folder and record the config in it.

    Must run before TensorFlow is first imported (thread settings).

    :raises FinishedRunError: when ``runs/<name>`` already holds a finished
        training (rerunning would start over and overwrite its models).
    """
    run_dir = Path(config.output_root) / config.name
    done = finished_epochs(run_dir)
    if done:
        raise FinishedRunError(
            f"{run_dir}: already trained ({done} epochs in training_log.csv); "
            "re-evaluate it with --evaluate-only, or move the folder away to train again")
    if config.threads > 0:
        os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(config.threads))
        os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    import keras

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    keras.utils.set_random_seed(config.seed)
    return run_dir


@contextmanager
def training_precision(precision: str) -> Iterator[None]:
    """Build and train models inside this block in ``precision`` (see :data:`PRECISIONS`).

    Sets Keras' global dtype policy and restores the previous one on leaving,
    so that models built afterwards (evaluation, export) are float32 again.
    """
    import keras

    check_precision(precision)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


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


def parse_overrides(items: Sequence[str]) -> Dict[str, Any]:
    """Parse ``KEY=VALUE`` command-line overrides; values are YAML (``epochs=1``, ``a=[1,2]``).

    :raises ValueError: for an item without ``=``.
    """
    overrides: Dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not KEY=VALUE")
        key, value = item.split("=", 1)
        overrides[key] = yaml.safe_load(value)
    return overrides
