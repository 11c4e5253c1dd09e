"""Export training runs' best models for the node: ``training.export RUN [RUN ...] --name N``.

One run exports its ``best.keras``; several runs (same classes and test-time
views) export as one ensemble graph that averages their probabilities and
concatenates their feature vectors.  Writes ``fer_ros/weights/NAME.tflite``
and ``NAME.json`` (labels, test-time views, feature size, and the exported
model's own accuracy on the runs' validation split), after checking that the
exported model reproduces the Keras model(s).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import yaml

WEIGHTS = Path(__file__).resolve().parent.parent / "fer_ros" / "weights"
#: Largest accepted difference between Keras and LiteRT probabilities per
#: weight format (float16 rounds each weight to ~3 significant digits; int8
#: to 256 levels per channel).
EXPORT_TOLERANCE = {"float32": 1e-4, "float16": 5e-3, "int8": 0.05}
#: Least share of check faces on which int8 and Keras must pick the same class.
INT8_MIN_AGREEMENT = 0.97
#: The shipped model must stay at or below this size on disk, bytes.
MAX_SHIPPED_BYTES = 2_000_000
#: Validation faces used to compare the exported model with Keras.
CHECK_FACES = 256


def read_run(run_dir: Path) -> Dict[str, Any]:
    """Return the config of a run folder, checked to hold a ``best.keras``."""
    config_path, model_path = run_dir / "config.yaml", run_dir / "best.keras"
    for path in (config_path, model_path):
        if not path.is_file():
            raise OSError(f"{path}: not found (is {run_dir} a finished run?)")
    return yaml.safe_load(config_path.read_text())


def common_setting(configs: Sequence[Dict[str, Any]], key: str, default: Any,
                   runs: Sequence[Path]) -> Any:
    """Return the value of ``key`` shared by all runs; ValueError if they differ."""
    values = [c.get(key, default) for c in configs]
    if any(v != values[0] for v in values[1:]):
        raise ValueError(f"runs disagree on {key}: " +
                         ", ".join(f"{r}={v}" for r, v in zip(runs, values)))
    return values[0]


def export_runs(run_dirs: Sequence[Path], name: str, out_dir: Path = WEIGHTS,
                weights: str = "float16") -> Path:
    """Export one run, or an ensemble of runs, as ``out_dir/name.tflite`` (+ sidecar).

    :param run_dirs: single-head run folders (``best.keras`` + ``config.yaml``).
    :param name: output file stem, e.g. ``fer2013_3class``.
    :param out_dir: output folder.
    :param weights: weight format (see ``fer_ros.classification.WEIGHT_FORMATS``).
    :return: the written ``.tflite`` path.
    :raises OSError, ValueError, RuntimeError: for missing runs, runs that do
        not fit together, an oversized or unfaithful export.
    """
    import keras

    from fer_ros.classification import (EmotionClassifier, ensemble_model,
                                        export_tflite)
    from fer_ros.evaluation import git_revision
    from fer_ros.labels import label_set
    from fer_ros.test_time_augmentation import TtaViews
    from training.train_static import load_split

    configs = [read_run(r) for r in run_dirs]
    label_set_name = common_setting(configs, "label_set", "3class", run_dirs)
    labels = label_set(label_set_name)
    views = TtaViews(bool(common_setting(configs, "tta_flip", False, run_dirs)),
                     tuple(common_setting(configs, "tta_zooms", [1.0], run_dirs)),
                     common_setting(configs, "tta_shifts", [[0, 0]], run_dirs))
    members = [keras.models.load_model(r / "best.keras", compile=False) for r in run_dirs]
    model = members[0] if len(members) == 1 else ensemble_model(members)
    info = {
        "labels": list(labels), **views.to_sidecar(),
        "model": model.name, "architecture": configs[0]["architecture"],
        "params": int(model.count_params()), "runs": [str(r) for r in run_dirs],
        "git_revision": git_revision(),
    }
    path = export_tflite(model, out_dir / f"{name}.tflite", info, weights)
    if path.stat().st_size > MAX_SHIPPED_BYTES:
        raise RuntimeError(f"{path}: {path.stat().st_size} bytes, over the "
                           f"{MAX_SHIPPED_BYTES}-byte budget for shipped models")
    # The validation faces exactly as training evaluated the runs.
    faces, y, _, _ = load_split([configs[0]["val_data"]], configs[0]["val_split"],
                                label_set_name, drop_blank=False)
    if not len(faces):
        raise ValueError(f"{configs[0]['val_data']}: no validation faces for {labels}")
    check_against_keras(path, model, faces[:CHECK_FACES], views, weights)
    validation = validation_metrics(EmotionClassifier.load(path), faces, y)
    validation["evaluated_on"] = f"{configs[0]['val_data']}:{configs[0]['val_split']}"
    sidecar = path.with_suffix(".json")
    content = json.loads(sidecar.read_text())
    content["validation"] = validation
    sidecar.write_text(json.dumps(content, indent=2) + "\n")
    print(f"exported {', '.join(map(str, run_dirs))} -> {path} "
          f"({path.stat().st_size / 1e6:.2f} MB, {weights} weights): validation "
          f"accuracy {validation['accuracy']:.4f} ({views.num_views} views), "
          f"{validation['accuracy_without_tta']:.4f} one pass")
    return path


def check_against_keras(path: Path, model, faces: np.ndarray, views, weights: str) -> None:
    """Raise RuntimeError when the exported model strays from the Keras model."""
    import keras

    from fer_ros.classification import EmotionClassifier
    from training.train_static import predict_probabilities

    if len(model.outputs) > 1:  # an ensemble: compare its probabilities
        model = keras.Model(model.inputs, model.outputs[0])
    exported = EmotionClassifier.load(path).predict_proba(faces)
    original = predict_probabilities(model, faces, views)
    difference = float(np.abs(exported - original).max())
    agreement = float((exported.argmax(1) == original.argmax(1)).mean())
    print(f"exported vs Keras on {len(faces)} validation faces: max |difference| "
          f"{difference:.1e}, same class {agreement:.1%}")
    if difference > EXPORT_TOLERANCE[weights] or (
            weights == "int8" and agreement < INT8_MIN_AGREEMENT):
        raise RuntimeError(f"exported model differs from Keras: max |difference| "
                           f"{difference:.2e}, same class on {agreement:.1%} of faces")


def validation_metrics(classifier, faces: np.ndarray, y: np.ndarray,
                       batch_size: int = 256) -> Dict[str, Any]:
    """Accuracy with the model's views and in one pass, macro-F1, sample count."""
    import dataclasses

    from fer_ros.evaluation import classification_metrics
    from fer_ros.test_time_augmentation import TtaViews

    def predicted() -> np.ndarray:
        return np.concatenate([classifier.predict_proba(faces[i:i + batch_size]).argmax(1)
                               for i in range(0, len(faces), batch_size)])

    metrics = classification_metrics(y, predicted(), classifier.labels)
    classifier.info = dataclasses.replace(classifier.info, tta=TtaViews())
    one_pass = float((predicted() == y).mean())
    return {"accuracy": metrics["accuracy"], "accuracy_without_tta": round(one_pass, 4),
            "macro_f1": metrics["macro_f1"], "samples": metrics["samples"]}


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit code."""
    from fer_ros.classification import WEIGHT_FORMATS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+",
                        help="run folder(s) with best.keras; several = an ensemble")
    parser.add_argument("--name", required=True, help="output name, e.g. fer2013_3class")
    parser.add_argument("--out-dir", type=Path, default=WEIGHTS)
    parser.add_argument("--weights", choices=WEIGHT_FORMATS, default="float16",
                        help="weight storage (default float16: half the size of "
                             "float32; int8: a quarter, and faster on CPU)")
    args = parser.parse_args(argv)
    try:
        export_runs(args.runs, args.name, args.out_dir, args.weights)
    except (OSError, KeyError, ValueError, RuntimeError) as error:
        print(f"export: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
