"""Fit temperature scaling for shipped models and store it in their sidecars.

    python -m training.calibrate 3class 7class            # fer_ros/weights/*.json
    python -m training.calibrate my.tflite --split PublicTest

For each view set the node and ``fer-analyze`` use (the model's own views,
face + mirror, one pass) this fits the temperature T that minimises the
negative log-likelihood of the validation labels
(:func:`fer_ros.evaluation.fit_temperature`, on the model's probabilities
*without* any stored temperature) and writes the list into the sidecar's
``temperature`` entry; :class:`fer_ros.classification.EmotionClassifier`
then divides the log of the averaged probabilities by the T of the views it
runs with.  T never changes the top class.  ``python -m training.model_card``
measures the result on held-out halves.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

DEFAULT_DATA = "../shared/data/fer2013.npz"


def view_sets(classifier) -> Dict[str, Any]:
    """Return the model's own views, face + mirror and one pass (duplicates once)."""
    from fer_ros.test_time_augmentation import TtaViews

    sets = {"model": classifier.info.tta, "flip": TtaViews(True), "none": TtaViews()}
    unique: Dict[str, Any] = {}
    for name, views in sets.items():
        if views not in unique.values():
            unique[name] = views
    return unique


def fit_temperatures(model: str, data: Path, split: str,
                     batch_size: int = 256) -> Tuple[Path, List[Dict[str, Any]]]:
    """Fit one temperature per view set of ``model`` on the ``split`` faces.

    :return: the model file and the sidecar entries: the views,
        ``temperature``, faces and where they come from.
    :raises ValueError: when the split holds no faces the model knows.
    """
    from fer_ros.classification import EmotionClassifier
    from fer_ros.evaluation import fit_temperature
    from training.common import load_split

    classifier = EmotionClassifier.load(model)
    label_set = {3: "3class", 7: "7class"}.get(len(classifier.labels))
    if label_set is None:
        raise ValueError(f"{model}: {len(classifier.labels)} classes; 3 or 7 are calibrated")
    faces, y, _, _ = load_split([str(data)], split, label_set, drop_blank=False)
    if not len(faces):
        raise ValueError(f"{data}: no {split} faces for {model}")
    entries = []
    for name, views in view_sets(classifier).items():
        classifier.info = dataclasses.replace(classifier.info, tta=views, temperatures=())
        probabilities = np.concatenate([classifier.predict_proba(faces[i:i + batch_size])
                                        for i in range(0, len(faces), batch_size)])
        temperature = fit_temperature(probabilities, y)
        entries.append({**views.to_sidecar(), "temperature": round(temperature, 4),
                        "view_set": name, "faces": int(len(faces)),
                        "fitted_on": f"{data}:{split}"})
        print(f"{Path(classifier.source).name}, {name} views: T = {temperature:.3f}")
    return Path(classifier.source), entries


def write_temperatures(model_file: Path, entries: List[Dict[str, Any]]) -> Path:
    """Store ``entries`` as the sidecar's ``temperature`` list; return the sidecar."""
    sidecar = model_file.with_suffix(".json")
    content = json.loads(sidecar.read_text())
    content["temperature"] = entries
    temporary = sidecar.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(content, indent=2) + "\n")
    temporary.replace(sidecar)
    return sidecar


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="3class, 7class or .tflite files")
    parser.add_argument("--data", type=Path, default=Path(DEFAULT_DATA))
    parser.add_argument("--split", default="PublicTest")
    args = parser.parse_args(argv)
    from fer_ros.model_files import ModelLoadError

    try:
        for model in args.models:
            sidecar = write_temperatures(*fit_temperatures(model, args.data, args.split))
            print(f"wrote the temperatures into {sidecar}")
    except (ModelLoadError, OSError, ValueError) as error:
        print(f"calibrate: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
