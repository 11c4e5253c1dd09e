"""Static facial-emotion classification of batches of 48x48 gray faces.

:class:`EmotionClassifier` is the one inference entry point used by the
node, ``fer-analyze`` and ``fer-evaluate``.  It runs either a LiteRT
(``.tflite``) model, the format fer_ros ships, or a Keras ``.keras`` model
through a compiled ``tf.function``; never ``model.predict`` per frame.

Shipped models live in ``fer_ros/weights/<name>.tflite`` with a JSON
sidecar (labels, test-time views, feature size, validation metrics); a
model may be an ensemble of several CNNs exported as one graph
(:func:`ensemble_model`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from fer_ros.labels import FER2013_LABELS, THREE_CLASS_LABELS
from fer_ros.native_logs import quiet_native_stderr
from fer_ros.preprocessing import FACE_SIZE
from fer_ros.test_time_augmentation import TtaViews

#: Name of the layer whose output is a classifier's per-face feature map
#: (the last convolutional block; see ``training.models``).
FEATURES_LAYER = "features"
#: Folder of the models shipped inside the package.
WEIGHTS_DIR = Path(__file__).parent / "weights"
#: Names accepted by :meth:`EmotionClassifier.load` for shipped models.
SHIPPED_MODELS = {"3class": "fer2013_3class", "7class": "fer2013_7class"}
#: Batch sizes the LiteRT interpreters are allocated for; a batch is padded
#: up to the next one, so no tensor is re-allocated per frame.  Dense at
#: small sizes (faces x test-time views), to waste little padding.
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)


class ModelLoadError(RuntimeError):
    """A model file is missing, corrupt or does not look like a FER model."""


@dataclass(frozen=True)
class ModelInfo:
    """What the sidecar JSON says about a model.

    :param labels: class names in output order.
    :param tta: the views of each face whose predictions are averaged.
    :param feature_size: length of the per-face feature vector (0 if none).
    :param extra: every other sidecar entry (metrics, architecture...).
    """

    labels: Tuple[str, ...]
    tta: TtaViews = TtaViews()
    feature_size: int = 0
    extra: Optional[Dict[str, Any]] = None


class _LiteRTBackend:
    """LiteRT interpreters, one per batch bucket, created lazily."""

    def __init__(self, path: Path, threads: int) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ModelLoadError("LiteRT is not installed: `pip install ai-edge-litert`") \
                from None
        self._interpreter_cls = Interpreter
        self._content = path.read_bytes()
        self._threads = threads
        self._interpreters: Dict[int, Any] = {}
        try:
            probe = self._interpreter(1)
        except (ValueError, RuntimeError) as error:
            raise ModelLoadError(f"{path}: not a valid TFLite model ({error})") from None
        # TFLite lists outputs in no fixed order; their names end in the
        # exported function's output position (":0" probabilities, ":1"
        # features), which restores the order.
        details = sorted(probe.get_output_details(), key=_output_position)
        self._output_indices = [d["index"] for d in details]
        self.num_outputs = len(details)
        self.output_sizes = [int(d["shape"][-1]) for d in details]

    def _interpreter(self, batch: int):
        interpreter = self._interpreters.get(batch)
        if interpreter is None:
            interpreter = self._interpreter_cls(model_content=self._content,
                                                num_threads=self._threads)
            index = interpreter.get_input_details()[0]["index"]
            interpreter.resize_tensor_input(index, [batch, FACE_SIZE, FACE_SIZE, 1])
            with quiet_native_stderr():
                interpreter.allocate_tensors()
            self._interpreters[batch] = interpreter
        return interpreter

    def __call__(self, x: np.ndarray) -> List[np.ndarray]:
        n = len(x)
        largest = BATCH_BUCKETS[-1]
        if n > largest:  # bounded tensors: run big batches in chunks
            chunks = [self(x[i:i + largest]) for i in range(0, n, largest)]
            return [np.concatenate(parts) for parts in zip(*chunks)]
        bucket = next(b for b in BATCH_BUCKETS if b >= n)
        if bucket != n:
            x = np.concatenate([x, np.zeros((bucket - n,) + x.shape[1:], x.dtype)])
        return self._run(self._interpreter(bucket), x, n)

    def _run(self, interpreter, x: np.ndarray, n: int) -> List[np.ndarray]:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        return [interpreter.get_tensor(i)[:n] for i in self._output_indices]


class _KerasBackend:
    """A Keras model behind one compiled forward function."""

    def __init__(self, path: Path) -> None:
        try:
            import keras
            import tensorflow as tf
        except ImportError:
            raise ModelLoadError(f"{path}: loading .keras models needs TensorFlow "
                                 "(`pip install tensorflow-cpu`)") from None
        try:
            model = keras.models.load_model(path, compile=False)
        except Exception as error:  # keras raises many types for bad files
            raise ModelLoadError(f"{path}: not a valid Keras model ({error})") from None
        self.model = inference_model(model)
        self._forward = tf.function(
            lambda x: self.model(x, training=False),
            input_signature=[tf.TensorSpec([None, FACE_SIZE, FACE_SIZE, 1], tf.float32)])
        outputs = self.model.outputs
        self.num_outputs = len(outputs)
        self.output_sizes = [int(o.shape[-1]) for o in outputs]

    def __call__(self, x: np.ndarray) -> List[np.ndarray]:
        result = self._forward(x)
        if not isinstance(result, (list, tuple)):
            result = [result]
        return [np.asarray(r) for r in result]


def _output_position(detail: Dict[str, Any]) -> int:
    """Output position from a TFLite tensor name such as ``"...:1"``."""
    tail = str(detail["name"]).rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def inference_model(model):
    """Wrap a trained classifier so it outputs ``[probabilities, features]``.

    The features are the global average of the ``features`` layer (the last
    convolutional block), the vector the CNN-LSTM consumes.

    :param model: a model built by :mod:`training.models`.
    :return: a two-output ``keras.Model`` (or the model itself if it has no
        ``features`` layer).
    """
    import keras

    if len(model.outputs) > 1:
        return model
    try:
        feature_map = model.get_layer(FEATURES_LAYER).output
    except ValueError:
        return model
    pooled = keras.layers.GlobalAveragePooling2D(name="face_features")(feature_map)
    return keras.Model(model.inputs, [model.outputs[0], pooled], name=model.name)


def read_model_info(model_path: Path, num_classes: int) -> ModelInfo:
    """Read the JSON sidecar of a model, or infer labels from its class count.

    :param model_path: the model file; the sidecar is ``<stem>.json``.
    :param num_classes: size of the model's probability output.
    :raises ModelLoadError: when the sidecar is unreadable or disagrees.
    """
    sidecar = model_path.with_suffix(".json")
    if sidecar.is_file():
        try:
            raw = json.loads(sidecar.read_text())
            labels = tuple(raw.pop("labels"))
            tta = TtaViews.from_sidecar(raw)
        except (ValueError, KeyError, TypeError) as error:
            raise ModelLoadError(f"{sidecar}: unreadable model sidecar ({error})") \
                from None
        if len(labels) != num_classes:
            raise ModelLoadError(f"{sidecar}: {len(labels)} labels for a model with "
                                 f"{num_classes} outputs")
        return ModelInfo(labels, tta, int(raw.pop("feature_size", 0)), raw)
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
        if path.suffix == ".tflite":
            backend: Any = _LiteRTBackend(path, max(1, int(threads)))
        elif path.suffix in (".keras", ".h5", ".hdf5"):
            backend = _KerasBackend(path)
        else:
            raise ModelLoadError(f"{path}: unknown model format (use .tflite or .keras)")
        info = read_model_info(path, backend.output_sizes[0])
        if (tta_flip, tta_zooms, tta_shifts) != (None, None, None):
            try:
                tta = TtaViews(info.tta.flip if tta_flip is None else bool(tta_flip),
                               info.tta.zooms if tta_zooms is None else tuple(tta_zooms),
                               info.tta.shifts if tta_shifts is None else tta_shifts)
            except ValueError as error:
                raise ModelLoadError(f"{path}: {error}") from None
            info = dataclasses.replace(info, tta=tta)
        return cls(backend, info, str(path))

    def predict(self, faces: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Class probabilities and feature vectors for a batch of faces.

        :param faces: uint8 [N,48,48] (or [N,48,48,1]) gray crops.
        :return: ``(probabilities float32 [N, len(labels)], features float32
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
        return probs, features

    def predict_proba(self, faces: np.ndarray) -> np.ndarray:
        """Class probabilities, float32 [N, len(labels)], rows summing to 1."""
        return self.predict(faces)[0]

    def features(self, faces: np.ndarray) -> np.ndarray:
        """Per-face feature vectors, float32 [N, feature_size]."""
        return self.predict(faces)[1]


#: How :func:`export_tflite` stores weights: ``float32``; ``float16`` (half
#: the size, computed in float32 after loading); ``int8`` (dynamic-range
#: quantisation: a quarter of the size, and LiteRT's int8 kernels, which are
#: faster on CPU; activations stay floating point).
WEIGHT_FORMATS = ("float32", "float16", "int8")


def ensemble_model(members: Sequence[Any]):
    """Combine trained classifiers into one model: ``[mean probabilities, features]``.

    Each member is wrapped by :func:`inference_model`; the ensemble outputs
    the average of the members' class probabilities and the concatenation of
    their feature vectors (the members' feature spaces differ, so they are
    not averaged).  Exported as one LiteRT graph, it costs one interpreter
    call per batch.

    :param members: two or more single-output models with the same classes.
    :return: a two-output ``keras.Model`` named after its members.
    :raises ValueError: for fewer than two members or differing class counts.
    """
    import keras

    if len(members) < 2:
        raise ValueError("an ensemble needs at least two models")
    classes = {int(m.outputs[0].shape[-1]) for m in members}
    if len(classes) != 1:
        raise ValueError(f"ensemble members disagree on the class count: {sorted(classes)}")
    faces = keras.Input((FACE_SIZE, FACE_SIZE, 1), name="faces")
    probabilities, features = [], []
    for index, member in enumerate(members):
        wrapped = inference_model(member)
        # A fresh name per member: nested models must be uniquely named.
        renamed = keras.Model(wrapped.inputs, wrapped.outputs, name=f"member_{index}")
        outputs = renamed(faces)
        probabilities.append(outputs[0])
        if len(outputs) > 1:
            features.append(outputs[1])
    mean = keras.layers.Average(name="probabilities")(probabilities)
    outputs = [mean]
    if len(features) == len(members):
        outputs.append(keras.layers.Concatenate(name="face_features")(features))
    # TensorFlow scope names allow [A-Za-z0-9_.\\/>-] only.
    distinct = "__".join(dict.fromkeys(m.name for m in members))
    return keras.Model(faces, outputs, name=f"ensemble{len(members)}_{distinct}")


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
    wrapped = inference_model(model)
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


def file_fingerprint(path: str | Path) -> str:
    """SHA-256 of a file's bytes, first 16 hex digits (identifies a model)."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
