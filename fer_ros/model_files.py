"""Model files: the one place that opens LiteRT and Keras models and their sidecars.

Every network fer_ros runs (the BlazeFace detector, the emotion CNNs, the
CNN-LSTM) is a file loaded here, so every model fails the same way: a
:class:`ModelLoadError` whose message is one line naming the file.

- :class:`LiteRTModel` runs a ``.tflite`` file with the LiteRT interpreter,
  one interpreter per batch size, allocated once (a batch is padded up to
  the next allocated size, so no tensor is re-allocated per frame).
- :class:`KerasModel` runs a ``.keras`` file (training's format; needs
  TensorFlow, which robots do not install) through one compiled function.
- :func:`read_sidecar` reads the JSON file beside a model
  (``<stem>.json``: labels, test-time views, validation metrics...).
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from fer_ros.native_logs import quiet_native_stderr

#: Batch sizes the interpreters of a resizable model are allocated for.
#: Dense at small sizes (faces x test-time views), to waste little padding.
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
#: Name of the layer whose output is a classifier's per-face feature map
#: (its last convolutional block; see ``training.models``).
FEATURES_LAYER = "features"


class ModelLoadError(RuntimeError):
    """A model file is missing, corrupt or does not look like the expected model."""


def read_model_bytes(path: Path, kind: str = "model") -> bytes:
    """Return a model file's bytes.

    :param path: the file.
    :param kind: what it is, for the error message (e.g. ``"sequence model"``).
    :raises ModelLoadError: when it is missing, unreadable or empty.
    """
    try:
        content = Path(path).read_bytes()
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: {kind} file not found") from None
    except OSError as error:
        raise ModelLoadError(f"{path}: cannot read {kind} file ({error.strerror})") from None
    if not content:
        raise ModelLoadError(f"{path}: {kind} file is empty (0 bytes)")
    return content


class LiteRTModel:
    """A ``.tflite`` model run by LiteRT.

    :param path: the ``.tflite`` file.
    :param threads: CPU threads of each interpreter (>= 1).
    :param sample_shape: shape of one input sample without the batch axis;
        the model is then run on any batch size (padded to
        :data:`BATCH_BUCKETS`, chunked above the largest).  None keeps the
        file's fixed input shape (e.g. a detector's ``[1, 128, 128, 3]``).
    :param kind: what the model is, for error messages.
    :raises ModelLoadError: when LiteRT is missing or the file is not a valid model.
    """

    def __init__(self, path: Path, threads: int = 1,
                 sample_shape: Optional[Sequence[int]] = None, kind: str = "model") -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ModelLoadError("LiteRT is not installed: `pip install ai-edge-litert`") \
                from None
        self.path = Path(path)
        self._interpreter_cls = Interpreter
        self._content = read_model_bytes(self.path, kind)
        self._threads = max(1, int(threads))
        self._sample_shape = None if sample_shape is None else tuple(sample_shape)
        self._interpreters: Dict[int, Any] = {}
        try:
            probe = self._interpreter(1)
        except (ValueError, RuntimeError) as error:
            raise ModelLoadError(f"{self.path}: not a valid TFLite {kind} "
                                 f"({' '.join(str(error).split())})") from None
        self.input_shape: Tuple[int, ...] = tuple(
            int(v) for v in probe.get_input_details()[0]["shape"])
        # TFLite lists outputs in no fixed order; names ending in the exported
        # function's output position (":0", ":1") restore it.
        details = sorted(probe.get_output_details(), key=_output_position)
        self._output_indices = [d["index"] for d in details]
        self.output_shapes: List[Tuple[int, ...]] = [tuple(int(v) for v in d["shape"])
                                                     for d in details]

    @property
    def num_outputs(self) -> int:
        """Number of output tensors."""
        return len(self._output_indices)

    @property
    def output_sizes(self) -> List[int]:
        """Last dimension of each output, in output order."""
        return [shape[-1] for shape in self.output_shapes]

    def _interpreter(self, batch: int) -> Any:
        interpreter = self._interpreters.get(batch)
        if interpreter is None:
            interpreter = self._interpreter_cls(model_content=self._content,
                                                num_threads=self._threads)
            if self._sample_shape is not None:
                index = interpreter.get_input_details()[0]["index"]
                interpreter.resize_tensor_input(index, [batch, *self._sample_shape])
            with quiet_native_stderr():
                interpreter.allocate_tensors()
            self._interpreters[batch] = interpreter
        return interpreter

    def __call__(self, x: np.ndarray) -> List[np.ndarray]:
        """Run a batch; return every output (first axis = the batch's)."""
        if self._sample_shape is None:
            return self._run(self._interpreter(1), x, len(x))
        n = len(x)
        largest = BATCH_BUCKETS[-1]
        if n > largest:  # bounded tensors: big batches in chunks
            chunks = [self(x[i:i + largest]) for i in range(0, n, largest)]
            return [np.concatenate(parts) for parts in zip(*chunks)]
        bucket = next(b for b in BATCH_BUCKETS if b >= n)
        if bucket != n:
            x = np.concatenate([x, np.zeros((bucket - n,) + x.shape[1:], x.dtype)])
        return self._run(self._interpreter(bucket), x, n)

    def _run(self, interpreter: Any, x: np.ndarray, n: int) -> List[np.ndarray]:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        return [interpreter.get_tensor(i)[:n] for i in self._output_indices]


def _output_position(detail: Dict[str, Any]) -> int:
    """Output position from a TFLite tensor name such as ``"...:1"``."""
    tail = str(detail["name"]).rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def load_keras_model(path: Path, kind: str = "model") -> Any:
    """Load a ``.keras`` file for inference (TensorFlow's start-up logs silenced).

    :raises ModelLoadError: when TensorFlow is missing or the file is not a
        Keras archive.
    """
    path = Path(path)
    read_model_bytes(path, kind)
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path}: not a valid Keras {kind} (not a .keras zip archive)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with quiet_native_stderr():
            import keras
    except ImportError:
        raise ModelLoadError(f"{path}: loading .keras models needs TensorFlow "
                             "(`pip install tensorflow-cpu`)") from None
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # keras raises many types for bad files
        raise ModelLoadError(f"{path}: not a valid Keras {kind} "
                             f"({' '.join(str(error).split())})") from None


class KerasModel:
    """A Keras model behind one compiled forward function (never ``predict`` per call).

    :param model: a loaded ``keras.Model`` (see :func:`load_keras_model`).
    :param sample_shape: shape of one input sample without the batch axis.
    """

    def __init__(self, model: Any, sample_shape: Sequence[int]) -> None:
        import tensorflow as tf

        self.model = model
        self._forward = tf.function(
            lambda x: self.model(x, training=False),
            input_signature=[tf.TensorSpec([None, *sample_shape], tf.float32)])
        self.output_shapes = [tuple(o.shape) for o in model.outputs]

    @property
    def num_outputs(self) -> int:
        """Number of outputs."""
        return len(self.output_shapes)

    @property
    def output_sizes(self) -> List[int]:
        """Last dimension of each output, in output order."""
        return [int(shape[-1]) for shape in self.output_shapes]

    def __call__(self, x: np.ndarray) -> List[np.ndarray]:
        """Run a batch; return every output as numpy."""
        result = self._forward(np.asarray(x, np.float32))
        if not isinstance(result, (list, tuple)):
            result = [result]
        return [np.asarray(r) for r in result]


def with_features_output(model: Any) -> Any:
    """Wrap a trained classifier so it outputs ``[probabilities, features]``.

    The features are the global average of the :data:`FEATURES_LAYER` map
    (the last convolutional block), the vector the CNN-LSTM consumes.

    :param model: a classifier built by ``training.models``.
    :return: a two-output ``keras.Model`` (or the model itself if it already
        has several outputs or no features layer).
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


def read_sidecar(model_path: Path, required: bool = False,
                 kind: str = "model") -> Optional[Dict[str, Any]]:
    """Read the JSON sidecar ``<stem>.json`` of a model file.

    :param model_path: the model file.
    :param required: raise when the sidecar is absent (else return None).
    :param kind: what the model is, for error messages.
    :return: the sidecar's object, or None when absent and not required.
    :raises ModelLoadError: when it is unreadable, not JSON, not an object,
        or required and absent.
    """
    sidecar = Path(model_path).with_suffix(".json")
    try:
        text = sidecar.read_text()
    except FileNotFoundError:
        if required:
            raise ModelLoadError(f"{sidecar}: missing {kind} sidecar") from None
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise ModelLoadError(f"{sidecar}: unreadable {kind} sidecar ({error})") from None
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise ModelLoadError(f"{sidecar}: unreadable {kind} sidecar ({error})") from None
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{sidecar}: unreadable {kind} sidecar (not a JSON object)")
    return raw


def file_fingerprint(path: str | Path) -> str:
    """SHA-256 of a file's bytes, first 16 hex digits (identifies a model)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


#: Suffixes :func:`open_model` accepts.
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def open_model(path: Path, sample_shape: Sequence[int], threads: int = 1,
               kind: str = "model", keras_wrapper: Any = None) -> Any:
    """Open a ``.tflite`` (LiteRT) or ``.keras`` model that takes batches of ``sample_shape``.

    :param path: the model file.
    :param sample_shape: shape of one input sample without the batch axis.
    :param threads: CPU threads for LiteRT.
    :param kind: what the model is, for error messages.
    :param keras_wrapper: applied to a loaded Keras model before it is
        compiled (e.g. :func:`with_features_output`).
    :return: a :class:`LiteRTModel` or :class:`KerasModel`.
    :raises ModelLoadError: for a missing, unknown or invalid file.
    """
    path = Path(path)
    if path.suffix == ".tflite":
        return LiteRTModel(path, threads, sample_shape, kind)
    if path.suffix in KERAS_SUFFIXES:
        model = load_keras_model(path, kind)
        return KerasModel(keras_wrapper(model) if keras_wrapper else model, sample_shape)
    read_model_bytes(path, kind)  # a missing file is reported as missing
    raise ModelLoadError(f"{path}: unknown {kind} format (use .tflite or .keras)")
