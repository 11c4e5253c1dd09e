"""CNN-LSTM model, sequence classifier loading and its use in the pipeline."""

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from fer_ros.sequence import SequenceClassifier  # noqa: E402
from fer_ros.model_files import ModelLoadError  # noqa: E402
from training.export import export_sequence_tflite  # noqa: E402
from training.models import build_cnn_lstm  # noqa: E402

LABELS = ["negative", "neutral", "positive"]


def test_cnn_lstm_shape_and_layers():
    model = build_cnn_lstm(108, 3)
    assert model.input_shape == (None, 40, 108) and model.output_shape == (None, 3)
    kinds = [type(layer).__name__ for layer in model.layers[1:]]
    assert kinds == ["LSTM", "Dropout", "Dense", "Dropout", "Dense"]
    assert model.get_layer("dense").units == 256
    assert model.get_layer("lstm_dropout").rate == 0.25


@pytest.fixture(scope="module")
def tiny_lstm(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = build_cnn_lstm(16, 3, sequence_length=8, lstm_units=4, dense_units=8)
    folder = tmp_path_factory.mktemp("lstm")
    model.save(folder / "tiny_lstm.keras")
    (folder / "tiny_lstm.json").write_text(json.dumps(
        {"labels": LABELS, "sequence_length": 8, "feature_size": 16}))
    export_sequence_tflite(model, folder / "tiny_lstm.tflite", {"labels": LABELS})
    return folder


def test_keras_and_tflite_sequence_models_agree(tiny_lstm, rng):
    sequences = [rng.normal(size=(n, 16)).astype(np.float32) for n in (1, 5, 40)]
    a = SequenceClassifier.load(tiny_lstm / "tiny_lstm.keras").predict_sequences(sequences)
    b = SequenceClassifier.load(tiny_lstm / "tiny_lstm.tflite").predict_sequences(sequences)
    assert a.shape == (3, 3) and np.allclose(a.sum(axis=1), 1, atol=1e-5)
    assert np.allclose(a, b, atol=1e-5)


def test_wrong_feature_size_and_missing_sidecar(tiny_lstm, tmp_path):
    model = SequenceClassifier.load(tiny_lstm / "tiny_lstm.tflite")
    with pytest.raises(ValueError, match="expects 16"):
        model.predict_sequences([np.zeros((3, 5), np.float32)])
    lone = tmp_path / "lone.tflite"
    lone.write_bytes((tiny_lstm / "tiny_lstm.tflite").read_bytes())
    with pytest.raises(ModelLoadError, match="sidecar"):
        SequenceClassifier.load(lone)


def test_sequence_model_of_another_static_model_is_refused(tiny_lstm, tiny_model_paths):
    from fer_ros.classification import EmotionClassifier
    from fer_ros.model_files import file_fingerprint
    from fer_ros.pipeline import check_dynamic_matches

    classifier = EmotionClassifier.load(tiny_model_paths["tflite"])
    dynamic = SequenceClassifier.load(tiny_lstm / "tiny_lstm.tflite")
    dynamic.info["static_model_sha256"] = file_fingerprint(tiny_model_paths["tflite"])
    check_dynamic_matches(dynamic, classifier)
    dynamic.info["static_model_sha256"] = "0" * 16
    with pytest.raises(ModelLoadError, match="another static model"):
        check_dynamic_matches(dynamic, classifier)


def test_shipped_sequence_models_match_the_shipped_static_models():
    from fer_ros.pipeline import build_pipeline, shipped_dynamic_path

    for name in ("3class", "7class"):
        if shipped_dynamic_path(name) is None:
            continue
        pipeline, _ = build_pipeline({"model": name})
        assert pipeline.dynamic is not None
        assert pipeline.dynamic.feature_size == pipeline.classifier.feature_size
