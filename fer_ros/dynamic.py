"""The CNN-LSTM over per-face feature sequences (dynamic FER).

:class:`SequenceClassifier` loads a ``.tflite`` (shipped) or ``.keras``
sequence model whose input is [N, l, F]: F-dimensional features of the
static CNN (its ``features`` layer, averaged over space), l frames after
resampling (:func:`fer_ros.sequence.resample`).  The JSON sidecar names the
labels, l, and the static model the features came from; a sequence model
only makes sense with that static model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple

import numpy as np

from fer_ros.classification import ModelLoadError
from fer_ros.native_logs import quiet_native_stderr
from fer_ros.sequence import resample


class SequenceClassifier:
    """Classify feature sequences with a CNN-LSTM.

    Use :meth:`load`.
    """

    def __init__(self, forward: Any, labels: Tuple[str, ...], sequence_length: int,
                 feature_size: int, info: Dict[str, Any], source: str) -> None:
        self._forward = forward
        self.labels = labels
        self.sequence_length = sequence_length
        self.feature_size = feature_size
        self.info = info
        self.source = source

    @classmethod
    def load(cls, path: str | Path, threads: int = 1) -> "SequenceClassifier":
        """Load a sequence model and its sidecar.

        :param path: ``.tflite`` or ``.keras`` file with ``<stem>.json``.
        :param threads: CPU threads for LiteRT.
        :raises ModelLoadError: when the model or sidecar is missing or bad.
        """
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"{path}: sequence model file not found")
        sidecar = path.with_suffix(".json")
        try:
            info = json.loads(sidecar.read_text())
            labels = tuple(info["labels"])
            length = int(info["sequence_length"])
            features = int(info["feature_size"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ModelLoadError(f"{sidecar}: missing or unreadable sequence model "
                                 f"sidecar ({error})") from None
        if path.suffix == ".tflite":
            forward = _litert_forward(path, threads, length, features)
        elif path.suffix == ".keras":
            forward = _keras_forward(path)
        else:
            raise ModelLoadError(f"{path}: unknown model format (use .tflite or .keras)")
        return cls(forward, labels, length, features, info, str(path))

    def predict_sequences(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities for feature sequences of any lengths.

        :param sequences: each float [n_i, feature_size], n_i >= 1.
        :return: float32 [len(sequences), len(labels)].
        """
        if not len(sequences):
            return np.zeros((0, len(self.labels)), np.float32)
        batch = np.stack([resample(np.asarray(s, np.float32), self.sequence_length)
                          for s in sequences])
        if batch.shape[2] != self.feature_size:
            raise ValueError(f"features have {batch.shape[2]} values, the sequence model "
                             f"expects {self.feature_size}")
        return np.asarray(self._forward(batch), np.float32)


def _litert_forward(path: Path, threads: int, length: int, features: int):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ModelLoadError("LiteRT is not installed: `pip install ai-edge-litert`") from None
    content = path.read_bytes()
    interpreters: Dict[int, Any] = {}

    def interpreter_for(batch: int):
        if batch not in interpreters:
            try:
                interpreter = Interpreter(model_content=content, num_threads=threads)
                index = interpreter.get_input_details()[0]["index"]
                interpreter.resize_tensor_input(index, [batch, length, features])
                with quiet_native_stderr():
                    interpreter.allocate_tensors()
            except (ValueError, RuntimeError) as error:
                raise ModelLoadError(f"{path}: not a valid TFLite model ({error})") from None
            interpreters[batch] = interpreter
        return interpreters[batch]

    interpreter_for(1)

    def forward(batch: np.ndarray) -> np.ndarray:
        interpreter = interpreter_for(len(batch))
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    return forward


def _keras_forward(path: Path):
    try:
        import keras
    except ImportError:
        raise ModelLoadError(f"{path}: .keras models need TensorFlow") from None
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:  # keras raises many types for bad files
        raise ModelLoadError(f"{path}: not a valid Keras model ({error})") from None
    return lambda batch: np.asarray(model(batch, training=False))


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
