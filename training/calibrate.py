"""Fit temperature scaling for shipped models and store it in their sidecars.

    python -m training.calibrate 3class 7class            # fer_ros/weights/*.json
    python -m training.calibrate my.tflite --split PublicTest
    python -m training.calibrate 3class --twin 3class=heldout_3class.tflite

For each view set the node and ``fer-analyze`` use (the model's own views,
face + mirror, one pass) this fits the temperature T that minimises the
negative log-likelihood of the validation labels
(:func:`fer_ros.evaluation.fit_temperature`, on the model's probabilities
*without* any stored temperature) and writes the list into the sidecar's
``temperature`` entry; :class:`fer_ros.classification.EmotionClassifier`
then divides the log of the averaged probabilities by the T of the views it
runs with.  T never changes the top class.  ``python -m training.model_card``
measures the result on held-out halves.

A model trained on the validation split itself (the final models trained on
Training + PublicTest) would fit a T on faces it has learnt: it is refused.
Its T comes from its held-out twin instead (``--twin``: the same recipe
trained without that split), and the sidecar says so.
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


def fit_temperatures(model: str, data: Path, split: str, batch_size: int = 256,
                     twin: Optional[str] = None) -> Tuple[Path, List[Dict[str, Any]]]:
    """Fit one temperature per view set of ``model`` on the ``split`` faces.

    :param twin: a held-out twin of ``model`` (same classes and views, not
        trained on ``split``) whose temperatures ``model`` takes.
    :return: the model file and the sidecar entries: the views,
        ``temperature``, faces and where they come from.
    :raises ValueError: when the split holds no faces the model knows, when
        the faces were in the training data of the model that would be
        fitted, or when the twin does not match the model.
    """
    from fer_ros.classification import EmotionClassifier
    from fer_ros.evaluation import fit_temperature
    from fer_ros.model_files import file_fingerprint
    from training.common import load_split

    classifier = EmotionClassifier.load(model)
    fitted = EmotionClassifier.load(twin) if twin else classifier
    if twin and (fitted.labels, fitted.info.tta) != (classifier.labels, classifier.info.tta):
        raise ValueError(f"{twin}: not a twin of {model} (classes or test-time views differ)")
    if fitted.info.trained_on(data, split):
        hint = "" if twin else f"; give its held-out twin: --twin {model}=FILE"
        raise ValueError(f"{fitted.source} was trained on the {data.name} {split} faces: "
                         f"a temperature fitted on them would be overconfident{hint}")
    label_set = {3: "3class", 7: "7class"}.get(len(classifier.labels))
    if label_set is None:
        raise ValueError(f"{model}: {len(classifier.labels)} classes; 3 or 7 are calibrated")
    faces, y, _, _ = load_split([str(data)], split, label_set, drop_blank=False)
    if not len(faces):
        raise ValueError(f"{data}: no {split} faces for {model}")
    provenance = ({"fitted_with": f"held-out twin {Path(fitted.source).name} "
                                  f"(sha256 {file_fingerprint(fitted.source)})"}
                  if twin else {})
    entries = []
    for name, views in view_sets(fitted).items():
        fitted.info = dataclasses.replace(fitted.info, tta=views, temperatures=())
        probabilities = np.concatenate([fitted.predict_proba(faces[i:i + batch_size])
                                        for i in range(0, len(faces), batch_size)])
        temperature = fit_temperature(probabilities, y)
        entries.append({**views.to_sidecar(), "temperature": round(temperature, 4),
                        "view_set": name, "faces": int(len(faces)),
                        "fitted_on": f"{data}:{split}", **provenance})
        print(f"{Path(classifier.source).name}, {name} views: T = {temperature:.3f}"
              + (f" (from {Path(fitted.source).name})" if twin else ""))
    return Path(classifier.source), entries


def parse_twins(pairs: List[str], models: List[str]) -> Dict[str, str]:
    """Read ``MODEL=TWIN`` pairs; every MODEL must be one of ``models``."""
    twins: Dict[str, str] = {}
    for pair in pairs:
        model, separator, twin = pair.partition("=")
        if not separator or not twin or model not in models:
            raise ValueError(f"--twin {pair!r}: expected MODEL=FILE with MODEL one of {models}")
        twins[model] = twin
    return twins


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
    parser.add_argument("--twin", action="append", default=[], metavar="MODEL=FILE",
                        help="fit MODEL's temperatures on FILE, its held-out twin (the "
                             "same recipe not trained on --split); repeat per model")
    args = parser.parse_args(argv)
    from fer_ros.model_files import ModelLoadError

    try:
        twins = parse_twins(args.twin, args.models)
        for model in args.models:
            sidecar = write_temperatures(*fit_temperatures(model, args.data, args.split,
                                                           twin=twins.get(model)))
            print(f"wrote the temperatures into {sidecar}")
    except (ModelLoadError, OSError, ValueError) as error:
        print(f"calibrate: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
