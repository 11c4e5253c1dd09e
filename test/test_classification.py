"""EmotionClassifier: loading, predict_proba contract, errors."""

import json

import numpy as np
import pytest

from fer_ros.classification import EmotionClassifier
from fer_ros.model_files import ModelLoadError


@pytest.fixture(params=["keras", "tflite"])
def tiny_classifier(request, tiny_model_paths):
    return EmotionClassifier.load(tiny_model_paths[request.param])


def test_predict_proba_contract(tiny_classifier, rng):
    faces = rng.integers(0, 256, (5, 48, 48)).astype(np.uint8)
    probs = tiny_classifier.predict_proba(faces)
    assert probs.shape == (5, 3) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert tiny_classifier.labels == ("negative", "neutral", "positive")


def test_batch_sizes_including_empty_and_odd(tiny_classifier, rng):
    for n in (0, 1, 3, 17, 70):
        probs, features = tiny_classifier.predict(
            rng.integers(0, 256, (n, 48, 48)).astype(np.uint8))
        assert probs.shape == (n, 3) and features.shape == (n, tiny_classifier.feature_size)


def test_batch_result_equals_single_results(tiny_classifier, rng):
    faces = rng.integers(0, 256, (6, 48, 48)).astype(np.uint8)
    batch = tiny_classifier.predict_proba(faces)
    single = np.concatenate([tiny_classifier.predict_proba(f[None]) for f in faces])
    assert np.allclose(batch, single, atol=1e-5)


def test_keras_and_tflite_agree(tiny_model_paths, rng):
    faces = rng.integers(0, 256, (4, 48, 48)).astype(np.uint8)
    a = EmotionClassifier.load(tiny_model_paths["keras"]).predict(faces)
    b = EmotionClassifier.load(tiny_model_paths["tflite"]).predict(faces)
    assert np.allclose(a[0], b[0], atol=1e-5) and np.allclose(a[1], b[1], atol=1e-4)


def test_tta_flip_is_symmetric(tiny_model_paths, rng):
    classifier = EmotionClassifier.load(tiny_model_paths["tflite"], tta_flip=True)
    face = rng.integers(0, 256, (1, 48, 48)).astype(np.uint8)
    assert np.allclose(classifier.predict_proba(face),
                       classifier.predict_proba(face[:, :, ::-1]), atol=1e-6)


def test_wrong_shape_is_rejected(tiny_classifier):
    with pytest.raises(ValueError, match="faces must be"):
        tiny_classifier.predict_proba(np.zeros((2, 64, 64), np.uint8))


@pytest.mark.parametrize("name", ["3class", "7class"])
def test_shipped_models(name, rng):
    classifier = EmotionClassifier.load(name)
    expected = 3 if name == "3class" else 7
    assert len(classifier.labels) == expected
    probs = classifier.predict_proba(rng.integers(0, 256, (2, 48, 48)).astype(np.uint8))
    assert probs.shape == (2, expected)


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelLoadError, match="model file not found"):
        EmotionClassifier.load(tmp_path / "nothing.tflite")


@pytest.mark.parametrize("suffix", [".tflite", ".keras"])
def test_corrupt_model_file(tmp_path, suffix):
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelLoadError, match="not a valid"):
        EmotionClassifier.load(path)


def test_unknown_model_format(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="unknown model format"):
        EmotionClassifier.load(path)


def test_sidecar_with_wrong_label_count(tiny_model_paths, tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(tiny_model_paths["tflite"].read_bytes())
    (tmp_path / "m.json").write_text(json.dumps({"labels": ["a", "b"]}))
    with pytest.raises(ModelLoadError, match="2 labels for a model with 3 outputs"):
        EmotionClassifier.load(model)


@pytest.mark.parametrize("suffix", [".tflite", ".keras"])
def test_empty_model_file_says_it_is_empty(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"empty \(0 bytes\)"):
        EmotionClassifier.load(path)


def test_non_zip_keras_file_is_named_as_such(tmp_path):
    path = tmp_path / "text.keras"
    path.write_text("this is not a model")
    with pytest.raises(ModelLoadError, match="not a .keras zip archive"):
        EmotionClassifier.load(path)


def test_a_refused_keras_file_is_one_line_without_tensorflow_logs(tmp_path):
    """Refuse a bad .keras in one line (TensorFlow's start-up lines used to precede it)."""
    import subprocess
    import sys
    import zipfile

    bad = tmp_path / "bad.keras"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("config.json", "{}")
    completed = subprocess.run(
        [sys.executable, "-m", "fer_ros.evaluate_cli", "--model", str(bad), "--data",
         str(tmp_path / "none.npz")], capture_output=True, text=True, timeout=300)
    assert completed.returncode != 0
    assert completed.stderr.strip().splitlines() == [
        f"fer-evaluate: error: {bad}: not a valid Keras model (Expected a model.weights.h5 "
        f"or model.weights.npz file.)"]
