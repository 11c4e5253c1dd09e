"""Static facial-emotion classification of batches of 48x48 gray faces.

:class:`EmotionClassifier` is the one inference entry point used by the
node, ``fer-analyze`` and ``fer-evaluate``.  It runs either a LiteRT
(``.tflite``) model, the format fer_ros ships, or a Keras ``.keras`` model
through a compiled ``tf.function``; never ``model.predict`` per frame.

Shipped models live in ``fer_ros/weights/<name>.tflite`` with a JSON
sidecar (labels, test-time views, feature size, validation metrics); a
model may be an ensemble of several CNNs exported as one graph
(``training.export.ensemble_model``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from fer_ros.evaluation import scale_temperature
from fer_ros.labels import FER2013_LABELS, THREE_CLASS_LABELS
from fer_ros.model_files import ModelLoadError, open_model, read_sidecar, with_features_output
from fer_ros.preprocessing import FACE_SIZE
from fer_ros.test_time_augmentation import TtaViews

#: Folder of the models shipped inside the package.
WEIGHTS_DIR = Path(__file__).parent / "weights"
#: Names accepted by :meth:`EmotionClassifier.load` for shipped models.
SHIPPED_MODELS = {"3class": "fer2013_3class", "7class": "fer2013_7class"}


@dataclass(frozen=True)
class ModelInfo:
    """What the sidecar JSON says about a model.

    :param labels: class names in output order.
    :param tta: the views of each face whose predictions are averaged.
    :param feature_size: length of the per-face feature vector (0 if none).
    :param extra: every other sidecar entry (metrics, architecture...).
    :param temperatures: ``(views, T)`` pairs from the sidecar's
        ``temperature`` list (``python -m training.calibrate``): the
        probabilities averaged over ``views`` are temperature-scaled by T.
    """

    labels: Tuple[str, ...]
    tta: TtaViews = TtaViews()
    feature_size: int = 0
    extra: Optional[Dict[str, Any]] = None
    temperatures: Tuple[Tuple[TtaViews, float], ...] = ()

    def temperature(self) -> float:
        """T fitted for the views in use (:attr:`tta`); 1.0 (none) if not fitted for them."""
        for views, temperature in self.temperatures:
            if views == self.tta:
                return temperature
        return 1.0

    def trained_on(self, data: str | Path, split: str) -> bool:
        """Tell whether the sidecar's ``trained_on`` lists ``split`` of the file ``data``.

        Entries read ``DATA[+DATA...]:SPLIT[+SPLIT...]``; data files are
        compared by name, so a moved copy of the dataset still counts.
        """
        for entry in (self.extra or {}).get("trained_on") or []:
            sources, _, splits = str(entry).rpartition(":")
            if (split in [name.strip() for name in splits.split("+")]
                    and any(Path(source).name == Path(data).name
                            for source in sources.split("+"))):
                return True
        return False


def read_temperatures(entries: Any) -> Tuple[Tuple[TtaViews, float], ...]:
    """Parse a sidecar's ``temperature`` list of ``{tta_*..., "temperature": T}``.

    :raises ValueError: for entries that are not objects with views and a T > 0.
    """
    if not isinstance(entries, list):
        raise ValueError("temperature must be a list of {views, temperature} objects")
    parsed = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ValueError(f"temperature entry {entry!r} is not an object")
        temperature = float(entry["temperature"])
        if not 0.0 < temperature < float("inf"):
            raise ValueError(f"temperature must be > 0, not {temperature}")
        parsed.append((TtaViews.from_sidecar(dict(entry)), temperature))
    return tuple(parsed)


def read_model_info(model_path: Path, num_classes: int) -> ModelInfo:
    """Read the JSON sidecar of a model, or infer labels from its class count.

    :param model_path: the model file; the sidecar is ``<stem>.json``.
    :param num_classes: size of the model's probability output.
    :raises ModelLoadError: when the sidecar is unreadable or disagrees.
    """
    raw = read_sidecar(model_path)
    sidecar = model_path.with_suffix(".json")
    if raw is not None:
        try:
            labels = tuple(raw.pop("labels"))
            tta = TtaViews.from_sidecar(raw)
            temperatures = read_temperatures(raw.pop("temperature", []))
        except (ValueError, KeyError, TypeError) as error:
            raise ModelLoadError(f"{sidecar}: unreadable model sidecar ({error})") \
                from None
        if len(labels) != num_classes:
            raise ModelLoadError(f"{sidecar}: {len(labels)} labels for a model with "
                                 f"{num_classes} outputs")
        return ModelInfo(labels, tta, int(raw.pop("feature_size", 0)), raw, temperatures)
    defaults = {3: THREE_CLASS_LABELS, 7: FER2013_LABELS}
    if num_classes not in defaults:
        raise ModelLoadError(f"{model_path}: {num_classes} outputs and no "
                             f"{sidecar.name} naming the labels")
    return ModelInfo(defaults[num_classes])


class EmotionClassifier:
    """Classify batches of 48x48 uint8 gray faces into emotions.

    Use :meth:`load`; the constructor takes an already built backend.
    """

    def __init__(self, backend: Any, info: ModelInfo, source: str) -> None:
        self._backend = backend
        self.info = info
        self.source = source
        self.labels: Tuple[str, ...] = info.labels
        self.feature_size = backend.output_sizes[1] if backend.num_outputs > 1 else 0
        self.predict(np.zeros((1, FACE_SIZE, FACE_SIZE), np.uint8))  # warm-up

    @classmethod
    def load(cls, name_or_path: str | Path = "3class", threads: int = 1,
             tta_flip: Optional[bool] = None,
             tta_zooms: Optional[Sequence[float]] = None,
             tta_shifts: Optional[Sequence[Sequence[int]]] = None) -> "EmotionClassifier":
        """Load a shipped model (``"3class"``, ``"7class"``) or a model file.

        :param name_or_path: shipped name, or a ``.tflite`` / ``.keras`` path.
        :param threads: CPU threads for LiteRT.
        :param tta_flip: override the sidecar's test-time flip setting.
        :param tta_zooms: override the sidecar's test-time zooms
            (``[1.0]`` = none).
        :param tta_shifts: override the sidecar's test-time shifts
            (``[[0, 0]]`` = none).
        :return: a ready (warmed-up) classifier.
        :raises ModelLoadError: when the model is missing or unreadable.
        """
        key = str(name_or_path)
        path = (WEIGHTS_DIR / f"{SHIPPED_MODELS[key]}.tflite" if key in SHIPPED_MODELS
                else Path(name_or_path).expanduser())
        if not path.is_file():
            hint = f" (shipped models: {', '.join(SHIPPED_MODELS)})" \
                if path.suffix == "" else ""
            raise ModelLoadError(f"{path}: model file not found{hint}")
        backend = open_model(path, (FACE_SIZE, FACE_SIZE, 1), threads,
                             keras_wrapper=with_features_output)
        info = read_model_info(path, backend.output_sizes[0])
        if (tta_flip, tta_zooms, tta_shifts) != (None, None, None):
            try:
                tta = TtaViews(info.tta.flip if tta_flip is None else bool(tta_flip),
                               info.tta.zooms if tta_zooms is None else tuple(tta_zooms),
                               # TtaViews checks and normalises the pairs.
                               info.tta.shifts if tta_shifts is None
                               else tta_shifts)  # type: ignore[arg-type]
            except ValueError as error:
                raise ModelLoadError(f"{path}: {error}") from None
            info = dataclasses.replace(info, tta=tta)
        return cls(backend, info, str(path))

    def predict(self, faces: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Class probabilities and feature vectors for a batch of faces.

        :param faces: uint8 [N,48,48] (or [N,48,48,1]) gray crops.
        :return: ``(probabilities float32 [N, len(labels)], temperature-scaled
            when the sidecar has a T for the views in use; features float32
            [N, feature_size])``.
        :raises ValueError: for a wrongly shaped batch.
        """
        faces = np.asarray(faces)
        if faces.ndim == 4 and faces.shape[-1] == 1:
            faces = faces[..., 0]
        if faces.ndim != 3 or faces.shape[1:] != (FACE_SIZE, FACE_SIZE):
            raise ValueError(f"faces must be [N,{FACE_SIZE},{FACE_SIZE}], got {faces.shape}")
        n = len(faces)
        if n == 0:
            return (np.zeros((0, len(self.labels)), np.float32),
                    np.zeros((0, self.feature_size), np.float32))
        tta = self.info.tta
        outputs = self._backend(tta.views(faces))
        probs = tta.average(outputs[0].astype(np.float32), n)
        features = (tta.average(outputs[1].astype(np.float32), n) if len(outputs) > 1
                    else np.zeros((n, 0), np.float32))
        probs /= probs.sum(axis=1, keepdims=True)
        temperature = self.info.temperature()
        if temperature != 1.0:
            probs = scale_temperature(probs, temperature).astype(np.float32)
        return probs, features

    def predict_proba(self, faces: np.ndarray) -> np.ndarray:
        """Class probabilities, float32 [N, len(labels)], rows summing to 1."""
        return self.predict(faces)[0]

    def features(self, faces: np.ndarray) -> np.ndarray:
        """Per-face feature vectors, float32 [N, feature_size]."""
        return self.predict(faces)[1]
