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
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import yaml

from fer_ros.model_files import with_features_output
from fer_ros.preprocessing import FACE_SIZE

WEIGHTS = Path(__file__).resolve().parent.parent / "fer_ros" / "weights"
#: Largest accepted difference between Keras and LiteRT probabilities per
#: weight format (float16 rounds each weight to ~3 significant digits; int8
#: to 256 levels per channel).
EXPORT_TOLERANCE = {"float32": 1e-4, "float16": 5e-3, "int8": 0.05}
#: Least share of check faces on which int8 and Keras must pick the same class.
INT8_MIN_AGREEMENT = 0.97
#: The shipped model must stay at or below this size on disk, bytes (a
#: three-member int8 ensemble of the VGG trunks is about 2.6 MB).
MAX_SHIPPED_BYTES = 3_000_000
#: Validation faces used to compare the exported model with Keras.
CHECK_FACES = 256


#: How :func:`export_tflite` stores weights: ``float32``; ``float16`` (half
#: the size, computed in float32 after loading); ``int8`` (dynamic-range
#: quantisation: a quarter of the size, and LiteRT's int8 kernels, which are
#: faster on CPU; activations stay floating point).
WEIGHT_FORMATS = ("float32", "float16", "int8")


def ensemble_model(members: Sequence[Any], weights: Optional[Sequence[float]] = None):
    """Combine trained classifiers into one model: ``[mean probabilities, features]``.

    Each member is wrapped by :func:`fer_ros.model_files.with_features_output`;
    the ensemble outputs the average of the members' class probabilities
    (weighted by ``weights``, normalised to sum to 1; equal by default) and
    the concatenation of their feature vectors (the members' feature spaces differ, so they are
    not averaged).  Exported as one LiteRT graph, it costs one interpreter
    call per batch.

    :param members: two or more single-output models with the same classes.
    :param weights: one positive weight per member, or None for equal weights.
    :return: a two-output ``keras.Model`` named after its members.
    :raises ValueError: for fewer than two members, differing class counts or
        unusable weights.
    """
    import keras

    if len(members) < 2:
        raise ValueError("an ensemble needs at least two models")
    shares = member_shares(len(members), weights)
    classes = {int(m.outputs[0].shape[-1]) for m in members}
    if len(classes) != 1:
        raise ValueError(f"ensemble members disagree on the class count: {sorted(classes)}")
    faces = keras.Input((FACE_SIZE, FACE_SIZE, 1), name="faces")
    probabilities, features = [], []
    for index, member in enumerate(members):
        wrapped = with_features_output(member)
        # A fresh name per member: nested models must be uniquely named.
        renamed = keras.Model(wrapped.inputs, wrapped.outputs, name=f"member_{index}")
        outputs = renamed(faces)
        probabilities.append(outputs[0])
        if len(outputs) > 1:
            features.append(outputs[1])
    if shares is None:
        mean = keras.layers.Average(name="probabilities")(probabilities)
    else:
        mean = keras.layers.Add(name="probabilities")([
            keras.layers.Rescaling(share, name=f"member_{index}_share")(p)
            for index, (p, share) in enumerate(zip(probabilities, shares))])
    outputs = [mean]
    if len(features) == len(members):
        outputs.append(keras.layers.Concatenate(name="face_features")(features))
    # TensorFlow scope names allow [A-Za-z0-9_.\\/>-] only.
    distinct = "__".join(dict.fromkeys(m.name for m in members))
    return keras.Model(faces, outputs, name=f"ensemble{len(members)}_{distinct}")


def member_shares(count: int, weights: Optional[Sequence[float]]) -> Optional[List[float]]:
    """Members' weights normalised to sum to 1 (None: equal weights).

    :raises ValueError: for a wrong count or a weight that is not positive.
    """
    if weights is None:
        return None
    if len(weights) != count:
        raise ValueError(f"{len(weights)} member weights for {count} members")
    if any(not np.isfinite(w) or w <= 0 for w in weights):
        raise ValueError(f"member weights must be positive numbers, not {list(weights)}")
    total = float(sum(weights))
    return [float(w) / total for w in weights]


def export_tflite(model, path: Path, info: Dict[str, Any],
                  weights: str = "float32") -> Path:
    """Export a trained Keras classifier to ``.tflite`` plus its JSON sidecar.

    :param model: a model built by :mod:`training.models` (one output), or a
        two-output model such as :func:`ensemble_model`'s.
    :param path: output ``.tflite`` path.
    :param info: sidecar content; must include ``labels``.
    :param weights: weight storage, one of :data:`WEIGHT_FORMATS`.
    :return: the written path.
    :raises ValueError: for an unknown weight format.
    """
    import tensorflow as tf

    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"unknown weight format {weights!r} "
                         f"(use {', '.join(WEIGHT_FORMATS)})")
    wrapped = with_features_output(model)
    # from_keras_model, not from_concrete_functions: the latter loses Keras 3
    # variables here and the interpreter returns NaN.
    converter = tf.lite.TFLiteConverter.from_keras_model(wrapped)
    if weights != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if weights == "float16":
        converter.target_spec.supported_types = [tf.float16]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(converter.convert())
    sidecar = dict(info, weights_dtype=weights)
    sidecar.setdefault("feature_size", int(wrapped.outputs[-1].shape[-1])
                       if len(wrapped.outputs) > 1 else 0)
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return path


def export_sequence_tflite(model, path: Path, info: Dict[str, Any]) -> Path:
    """Export a Keras CNN-LSTM to ``.tflite`` with its sidecar.

    :param model: built by :func:`training.models.build_cnn_lstm`.
    :param path: output ``.tflite``.
    :param info: sidecar; ``labels`` required (length and feature size are
        taken from the model).
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(converter.convert())
    sidecar = dict(info, sequence_length=int(model.input_shape[1]),
                   feature_size=int(model.input_shape[2]))
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return path


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
                weights: str = "float16", member_weights: Optional[Sequence[float]] = None,
                views: Optional[Any] = None) -> Path:
    """Export one run, or an ensemble of runs, as ``out_dir/name.tflite`` (+ sidecar).

    :param run_dirs: single-head run folders (``best.keras`` + ``config.yaml``).
    :param name: output file stem, e.g. ``fer2013_3class``.
    :param out_dir: output folder.
    :param weights: weight format (see ``fer_ros.classification.WEIGHT_FORMATS``).
    :param member_weights: weights of the members' probabilities (ensembles;
        None: equal).
    :param views: test-time views (a ``TtaViews``) for the sidecar instead of
        the runs' own, which then may differ.
    :return: the written ``.tflite`` path.
    :raises OSError, ValueError, RuntimeError: for missing runs, runs that do
        not fit together, an oversized or unfaithful export.
    """
    import keras

    from fer_ros.classification import EmotionClassifier
    from fer_ros.evaluation import git_revision
    from fer_ros.labels import label_set
    from fer_ros.test_time_augmentation import TtaViews
    from training.common import load_split

    configs = [read_run(r) for r in run_dirs]
    label_set_name = common_setting(configs, "label_set", "3class", run_dirs)
    labels = label_set(label_set_name)
    if views is None:
        views = TtaViews(bool(common_setting(configs, "tta_flip", False, run_dirs)),
                         tuple(common_setting(configs, "tta_zooms", [1.0], run_dirs)),
                         common_setting(configs, "tta_shifts", [[0, 0]], run_dirs))
    members = [keras.models.load_model(r / "best.keras", compile=False) for r in run_dirs]
    model = members[0] if len(members) == 1 else ensemble_model(members, member_weights)
    info = {
        "labels": list(labels), **views.to_sidecar(),
        "model": model.name, "architecture": configs[0]["architecture"],
        "params": int(model.count_params()), "runs": [str(r) for r in run_dirs],
        "git_revision": git_revision(),
        **training_provenance(configs),
    }
    if len(members) > 1 and member_weights is not None:
        info["member_weights"] = member_shares(len(members), member_weights)
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
    if info["validation_in_training"]:
        validation["independent"] = False
    sidecar = path.with_suffix(".json")
    content = json.loads(sidecar.read_text())
    content["validation"] = validation
    sidecar.write_text(json.dumps(content, indent=2) + "\n")
    print(f"exported {', '.join(map(str, run_dirs))} -> {path} "
          f"({path.stat().st_size / 1e6:.2f} MB, {weights} weights): validation "
          f"accuracy {validation['accuracy']:.4f} ({views.num_views} views), "
          f"{validation['accuracy_without_tta']:.4f} one pass")
    return path


def training_provenance(configs: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Return what the sidecar says about the members' training data and checkpoints.

    ``validation_in_training`` is true when a member was trained on its
    validation split too (a final all-data run with a schedule fixed
    beforehand): the sidecar's validation figures are then not independent.
    """
    from training.common import TrainConfig

    known = {f.name for f in dataclasses.fields(TrainConfig)} - {"augmentation"}
    members = [TrainConfig(**{"name": "member", **{k: v for k, v in c.items() if k in known}})
               for c in configs]
    return {
        "trained_on": [m.trained_on() for m in members],
        "checkpoint": [m.checkpoint for m in members],
        "validation_in_training": any(m.validation_in_training() for m in members),
        # Members rebuilt from an exported file (training.tflite_members) name
        # the training runs they came from.
        "rebuilt_from": [c.get("rebuilt_from_runs") or None for c in configs],
    }


def check_against_keras(path: Path, model, faces: np.ndarray, views, weights: str) -> None:
    """Raise RuntimeError when the exported model strays from the Keras model."""
    import keras

    from fer_ros.classification import EmotionClassifier
    from training.common import predict_probabilities

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


def chosen_views(args: argparse.Namespace):
    """Return the test-time views given on the command line, or None for the runs' own."""
    from fer_ros.test_time_augmentation import TtaViews

    if args.tta_flip is None and args.tta_zooms is None and args.tta_shifts is None:
        return None
    shifts = args.tta_shifts or [0, 0]
    if len(shifts) % 2:
        raise ValueError(f"--tta-shifts needs dx dy pairs, got {len(shifts)} numbers")
    return TtaViews(args.tta_flip != "no", tuple(args.tta_zooms or [1.0]),
                    [shifts[i:i + 2] for i in range(0, len(shifts), 2)])  # type: ignore


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+",
                        help="run folder(s) with best.keras; several = an ensemble")
    parser.add_argument("--name", required=True, help="output name, e.g. fer2013_3class")
    parser.add_argument("--out-dir", type=Path, default=WEIGHTS)
    parser.add_argument("--weights", choices=WEIGHT_FORMATS, default="float16",
                        help="weight storage (default float16: half the size of "
                             "float32; int8: a quarter, and faster on CPU)")
    parser.add_argument("--member-weights", type=float, nargs="+", default=None,
                        metavar="W", help="weights of the runs' probabilities in an "
                                          "ensemble, one per run (default: equal)")
    parser.add_argument("--tta-flip", choices=("yes", "no"), default=None,
                        help="test-time mirror view for the sidecar (default: the "
                             "runs'; yes when other view options are given)")
    parser.add_argument("--tta-zooms", type=float, nargs="+", default=None, metavar="Z",
                        help="test-time zooms for the sidecar (default: the runs')")
    parser.add_argument("--tta-shifts", type=int, nargs="+", default=None, metavar="PX",
                        help="test-time shifts as dx dy pairs, e.g. 0 0 -4 -4 "
                             "(default: the runs')")
    args = parser.parse_args(argv)
    try:
        export_runs(args.runs, args.name, args.out_dir, args.weights, args.member_weights,
                    chosen_views(args))
    except (OSError, KeyError, ValueError, RuntimeError) as error:
        print(f"export: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
