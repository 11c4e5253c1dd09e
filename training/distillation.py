"""Knowledge distillation: teachers' probabilities as soft training targets.

A student learns from ``(1 - w) * one_hot + w * teacher_probabilities``
(Hinton et al., 2015, at temperature 1), where the teacher probability is
the mean over one or more finished runs (an ensemble), each evaluated with
its own test-time views on the un-augmented training faces.  The targets
are computed once and cached in the student's run folder, so a resumed run
does not recompute them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence

import numpy as np

from training.common import check_distillation_weight, predict_probabilities

#: Cache of the teachers' targets inside the student's run folder.
CACHE_NAME = "teacher_targets.npz"


def teacher_model_path(run_dir: Path, head: str) -> Path:
    """Return the single-head model of ``run_dir`` that predicts ``head``.

    A multi-task run holds one folder per head (``run/3class/best.keras``);
    a single-head run holds ``run/best.keras`` for its own label set.

    :raises OSError: when the run has no model for that head.
    """
    import yaml

    run_dir = Path(run_dir)
    candidates = [run_dir / head / "best.keras"]
    config = run_dir / "config.yaml"
    if config.is_file() and (yaml.safe_load(config.read_text()) or {}).get(
            "label_set", "3class") == head:
        candidates.insert(0, run_dir / "best.keras")
    for path in candidates:
        if path.is_file():
            return path
    raise OSError(f"{run_dir}: no finished {head} model to distil from "
                  f"(looked for {', '.join(map(str, candidates))})")


def teacher_probabilities(run_dirs: Sequence[Path], head: str,
                          images: np.ndarray) -> np.ndarray:
    """Mean class probabilities of the teachers' ``head`` on ``images``.

    Each teacher uses the test-time views its run was evaluated with.

    :param run_dirs: finished run folders (single-head or multi-task).
    :param head: ``"3class"`` or ``"7class"``.
    :param images: uint8 [N, 48, 48] faces.
    :return: float32 [N, classes], rows sum to 1.
    """
    import keras
    import yaml

    from fer_ros.test_time_augmentation import TtaViews

    if not run_dirs:
        raise ValueError("distillation needs at least one teacher run")
    total = None
    for run_dir in run_dirs:
        path = teacher_model_path(Path(run_dir), head)
        # A run's config records its views under the sidecar's key names.
        views = TtaViews.from_sidecar(
            yaml.safe_load((path.parent / "config.yaml").read_text()) or {})
        model = keras.models.load_model(path, compile=False)
        probs = predict_probabilities(model, images, views)
        print(f"teacher {path}: {views.num_views} views, {len(images)} faces", flush=True)
        total = probs if total is None else total + probs
    return (total / len(run_dirs)).astype(np.float32)


def blend_targets(one_hot: np.ndarray, soft: np.ndarray, weight: float) -> np.ndarray:
    """Return ``(1 - weight) * one_hot + weight * soft`` (rows still sum to 1).

    :raises ValueError: for a weight outside [0, 1] or mismatched shapes.
    """
    check_distillation_weight(weight)
    if one_hot.shape != soft.shape:
        raise ValueError(f"teacher targets {soft.shape} do not match labels {one_hot.shape}")
    return ((1.0 - weight) * one_hot + weight * soft).astype(np.float32)


def cached_teacher_targets(run_dir: Path, teachers: Sequence[str], heads: Sequence[str],
                           images: np.ndarray, fingerprint: str) -> Dict[str, np.ndarray]:
    """Return ``{head: teacher probabilities}``, from the run's cache when it fits.

    The cache is reused only for the same teachers, training faces (by
    ``fingerprint`` and count) and heads; otherwise it is recomputed.
    """
    cache = Path(run_dir) / CACHE_NAME
    key = "|".join([*map(str, teachers), fingerprint, str(len(images))])
    if cache.is_file():
        with np.load(cache) as stored:
            if str(stored["key"]) == key and all(h in stored for h in heads):
                print(f"teacher targets from {cache}", flush=True)
                return {h: stored[h] for h in heads}
    targets = {h: teacher_probabilities([Path(t) for t in teachers], h, images)
               for h in heads}
    np.savez(cache, key=np.array(key), **targets)
    return targets
