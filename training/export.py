"""Export a training run's best model for the node: ``python -m training.export RUN --name NAME``.

Writes ``fer_ros/weights/NAME.tflite`` and ``NAME.json`` (labels, test-time views,
feature size, and the run's validation metrics), then checks that the
exported model reproduces the Keras model's probabilities.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np
import yaml

WEIGHTS = Path(__file__).resolve().parent.parent / "fer_ros" / "weights"
#: Largest accepted difference between Keras and LiteRT probabilities
#: (float16 weights round each weight to ~3 significant digits).
EXPORT_TOLERANCE = 1e-4
EXPORT_TOLERANCE_FLOAT16 = 5e-3
#: The shipped model must stay at or below this size on disk, bytes.
MAX_SHIPPED_BYTES = 2_000_000


def export_run(run_dir: Path, name: str, out_dir: Path = WEIGHTS,
               float16_weights: bool = True) -> Path:
    """Export ``run_dir/best.keras`` as ``out_dir/name.tflite`` (+ sidecar)."""
    import keras

    from fer_ros.classification import EmotionClassifier, export_tflite
    from fer_ros.labels import label_set
    from fer_ros.test_time_augmentation import TtaViews

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    model = keras.models.load_model(run_dir / "best.keras", compile=False)
    info = {
        "labels": list(label_set(config["label_set"])),
        **TtaViews(bool(config.get("tta_flip", False)),
                   tuple(config.get("tta_zooms", [1.0]))).to_sidecar(),
        "model": model.name, "architecture": config["architecture"],
        "params": int(model.count_params()), "run": str(run_dir),
        "validation": {k: metrics[k] for k in ("evaluated_on", "accuracy",
                                               "accuracy_without_tta", "macro_f1",
                                               "samples") if k in metrics},
        "train_data_hash": metrics.get("train_data_hash"),
        "git_revision": metrics.get("git_revision"),
    }
    path = export_tflite(model, out_dir / f"{name}.tflite", info, float16_weights)
    if path.stat().st_size > MAX_SHIPPED_BYTES:
        raise RuntimeError(f"{path}: {path.stat().st_size} bytes, over the "
                           f"{MAX_SHIPPED_BYTES}-byte budget for shipped models")
    faces = np.random.default_rng(0).integers(0, 256, (8, 48, 48)).astype(np.uint8)
    exported = EmotionClassifier.load(path).predict_proba(faces)
    original = EmotionClassifier.load(run_dir / "best.keras",
                                      tta_flip=info["tta_flip"],
                                      tta_zooms=info["tta_zooms"]).predict_proba(faces)
    difference = float(np.abs(exported - original).max())
    if difference > (EXPORT_TOLERANCE_FLOAT16 if float16_weights else EXPORT_TOLERANCE):
        raise RuntimeError(f"exported model differs from Keras by {difference:.2e}")
    print(f"exported {run_dir} -> {path} ({path.stat().st_size / 1e6:.2f} MB, "
          f"max |difference| {difference:.1e})")
    return path


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder with best.keras")
    parser.add_argument("--name", required=True, help="output name, e.g. fer2013_3class")
    parser.add_argument("--out-dir", type=Path, default=WEIGHTS)
    parser.add_argument("--float32", action="store_true",
                        help="keep float32 weights (default: float16, half the size)")
    args = parser.parse_args(argv)
    try:
        export_run(args.run, args.name, args.out_dir, not args.float32)
    except (OSError, KeyError, ValueError, RuntimeError) as error:
        print(f"export: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
