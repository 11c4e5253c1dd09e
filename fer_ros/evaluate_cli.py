"""``fer-evaluate``: accuracy, per-class metrics and plots of a model on labelled data.

    fer-evaluate --model 3class --data fer2013.npz --split PublicTest --output eval/
    fer-evaluate --model my.tflite --data fer2013.npz --split PublicTest --compare-with 3class
    fer-evaluate --model 3class --average-with other.keras --data fer2013.npz --split PublicTest

Data may be FER2013 (.npz or .csv), CK+ (.npz or the original folders) or a
folder per class; labels are mapped onto the model's classes (7 -> 3 where
needed; samples with no counterpart, such as surprise for 3 classes, are
left out and counted).  The accuracy comes with its 95% confidence
interval; ``--compare-with`` scores a second model on the same faces and
tells whether the difference between the two is more than chance;
``--average-with`` scores the mean of several models' probabilities (what an
ensemble of them would score) before anyone exports it; with
``--fusion-gain`` it also says what fusing them into ``--model`` with a
weight of their own gains on faces the weight was not chosen on (a weaker
model may help at a small weight and hurt at an equal one).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np


def evaluate(model: str, data: Path, split: str, output: Optional[Path],
             tta_flip: Optional[bool], batch_size: int = 256,
             collapse_to_three: bool = False,
             tta_zooms: Optional[Sequence[float]] = None,
             compare_with: Optional[str] = None,
             average_with: Sequence[str] = (), fusion: bool = False) -> int:
    """Evaluate and report; return the exit code.

    :param compare_with: a second model scored on the same faces (with its
        own test-time views); the report adds the paired difference and its
        McNemar p-value.
    :param average_with: models whose probabilities are averaged with
        ``model``'s, each model weighing the same (an ensemble file counts
        as one model); they take the same test-time view overrides.
    :param fusion: with ``average_with``, also report the cross-fitted gain
        of fusing their mean into ``model`` with a weight chosen on half of
        the faces and scored on the other half (see ``fusion_gain``).
    """
    from fer_ros.classification import EmotionClassifier
    from fer_ros.datasets import load_any
    from fer_ros.evaluation import (classification_metrics, paired_comparison,
                                    plot_confusion, report_line, write_metrics)
    from fer_ros.labels import THREE_CLASS_LABELS, relabel

    if fusion and not average_with:
        raise ValueError("--fusion-gain needs --average-with: the models to fuse in")

    classifier = EmotionClassifier.load(model, tta_flip=tta_flip, tta_zooms=tta_zooms)
    members = [classifier] + [EmotionClassifier.load(m, tta_flip=tta_flip, tta_zooms=tta_zooms)
                              for m in average_with]
    other = EmotionClassifier.load(compare_with) if compare_with else None
    dataset = load_any(data)
    if split:
        dataset = dataset.subset(dataset.split == split)
        if not len(dataset):
            raise ValueError(f"{data}: no samples in split {split!r}")
    labels = classifier.labels
    if collapse_to_three:
        if len(labels) != 7:
            raise ValueError("--collapse-to-3class needs a 7-class model")
        labels = THREE_CLASS_LABELS
    y = relabel(dataset.labels, labels)
    keep = y >= 0
    images, y = dataset.images[keep], y[keep]
    if not len(images):
        raise ValueError(f"{data}: no samples with labels the model knows")
    trained = [Path(m.source).name for m in members if m.info.trained_on(data, split)]
    if split and trained:
        print(f"note: {', '.join(trained)} trained on the {split} faces of {data.name}: "
              "these are training figures, not held-out ones")
    member_probabilities = [probabilities(m, images, labels, batch_size) for m in members]
    predicted = np.mean(member_probabilities, axis=0).argmax(axis=1)
    metrics = classification_metrics(y, predicted, labels)
    name = " + ".join(Path(m.source).name for m in members)
    metrics.update({"model": classifier.source, "data": str(data), "split": split,
                    "averaged_with": [m.source for m in members[1:]],
                    **classifier.info.tta.to_sidecar(),
                    "collapsed_7_to_3": collapse_to_three,
                    "left_out_unmapped_labels": int((~keep).sum()),
                    "trained_on_these_faces": trained,
                    "data_hash": dataset.fingerprint()})
    print(report_line(f"{'mean of ' if len(members) > 1 else ''}{name} on {data.name}"
                      f"{':' + split if split else ''}", metrics))
    for label, values in metrics["per_class"].items():
        print(f"  {label:>9s}: precision {values['precision']:.3f} recall "
              f"{values['recall']:.3f} F1 {values['f1']:.3f} (n={values['support']})")
    if fusion:
        metrics["fusion"] = fusion_report(member_probabilities, y)
    if other is not None:
        other_predicted = predicted_classes([other], images, labels, batch_size)
        comparison = paired_comparison(predicted == y, other_predicted == y)
        metrics["comparison"] = {"model": other.source, **comparison}
        print(comparison_line(Path(other.source).name, comparison))
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        write_metrics(output / "metrics.json", metrics)
        plot_confusion(metrics["confusion_matrix"], labels,
                       output / "confusion.png",
                       f"{Path(classifier.source).stem}: accuracy {metrics['accuracy']:.3f}")
        print(f"wrote {output / 'metrics.json'} and {output / 'confusion.png'}")
    return 0


def predicted_classes(classifiers: Sequence[Any], images: np.ndarray,
                      labels: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """Class indices into ``labels`` of the mean probabilities of classifiers.

    A 7-class model is scored on 3 classes by collapsing its probabilities.

    :raises ValueError: when a model's classes cannot be read as ``labels``.
    """
    return np.mean([probabilities(c, images, labels, batch_size) for c in classifiers],
                   axis=0).argmax(axis=1)


def probabilities(classifier, images: np.ndarray, labels: Sequence[str],
                  batch_size: int = 256) -> np.ndarray:
    """Return a classifier's probabilities of ``labels`` for faces (7 collapsed to 3 if needed)."""
    from fer_ros.labels import THREE_CLASS_LABELS, collapse_probabilities

    probs = np.concatenate([classifier.predict_proba(images[i:i + batch_size])
                            for i in range(0, len(images), batch_size)])
    if tuple(classifier.labels) != tuple(labels):
        if tuple(labels) != tuple(THREE_CLASS_LABELS) or len(classifier.labels) != 7:
            raise ValueError(f"{classifier.source}: its classes {list(classifier.labels)} "
                             f"cannot be scored as {list(labels)}")
        probs = collapse_probabilities(probs, classifier.labels)
    return probs


def fusion_report(member_probabilities: Sequence[np.ndarray], y: np.ndarray) -> Dict[str, Any]:
    """Print and return the cross-fitted gain of fusing members 2.. into member 1.

    The added members' probabilities are averaged first; their weight in
    the log-linear fusion runs from 0 to 1 (see ``fusion_gain``).
    """
    from fer_ros.evaluation import fusion_gain

    base, added = member_probabilities[0], np.mean(member_probabilities[1:], axis=0)
    result = fusion_gain(base, added, y, max_weight=1.0)
    alone = (base.argmax(axis=1) == y).mean()
    print(f"fused into --model ({100 * alone:.2f}% alone) with a weight chosen on half the "
          f"faces: gain on the other half {100 * result['median_gain']:+.2f} points (median of "
          f"{result['halves']} halves; weights chosen {result['chosen_weights']})")
    return result


def comparison_line(other: str, comparison: Dict[str, Any]) -> str:
    """One printable line for a paired comparison (see ``paired_comparison``)."""
    return (f"vs {other} on the same faces: {100 * comparison['difference']:+.2f} points "
            f"(right only here: {comparison['only_a']}, only there: {comparison['only_b']}; "
            f"McNemar p = {comparison['p_value']:.3f})")


def _zoom_list(text: str) -> List[float]:
    """Parse ``--tta-zooms``: comma-separated numbers (TtaViews checks their range)."""
    try:
        zooms = [float(z) for z in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") \
            from None
    return zooms


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="fer-evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="3class",
                        help="3class, 7class, or a .tflite/.keras file")
    parser.add_argument("--data", required=True, type=Path,
                        help="FER2013 .npz/.csv, CK+ .npz/folder, or folder per class")
    parser.add_argument("--split", default="",
                        help="only this split (e.g. PublicTest); default: all samples")
    parser.add_argument("--output", type=Path, default=None,
                        help="folder for metrics.json and confusion.png")
    parser.add_argument("--collapse-to-3class", action="store_true",
                        help="score a 7-class model on the 3 valence classes (negative = "
                             "angry+disgust+fear+sad; surprise dropped)")
    flip = parser.add_mutually_exclusive_group()
    flip.add_argument("--tta-flip", dest="tta_flip", action="store_true", default=None,
                      help="average over the face and its mirror image")
    flip.add_argument("--no-tta-flip", dest="tta_flip", action="store_false")
    parser.add_argument("--tta-zooms", type=_zoom_list, default=None, metavar="Z,Z,...",
                        help="test-time zooms to average over, e.g. 1,1.1 (1 = none); "
                             "default: the model's own")
    parser.add_argument("--compare-with", default=None, metavar="MODEL",
                        help="also score this model (3class, 7class or a file) on the same "
                             "faces and report the paired difference (McNemar test)")
    parser.add_argument("--average-with", nargs="+", default=[], metavar="MODEL",
                        help="score the mean of --model's and these models' probabilities "
                             "(each model weighs the same; test-time view options apply "
                             "to all)")
    parser.add_argument("--fusion-gain", action="store_true",
                        help="with --average-with: also the accuracy gain of fusing those "
                             "models into --model with a weight chosen on half of the faces "
                             "and measured on the other half")
    args = parser.parse_args(argv)
    from fer_ros.model_files import ModelLoadError
    from fer_ros.datasets import DatasetError

    try:
        return evaluate(args.model, args.data, args.split, args.output, args.tta_flip,
                        collapse_to_three=args.collapse_to_3class, tta_zooms=args.tta_zooms,
                        compare_with=args.compare_with, average_with=args.average_with,
                        fusion=args.fusion_gain)
    except (ModelLoadError, DatasetError, ValueError, OSError) as error:
        print(f"fer-evaluate: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
