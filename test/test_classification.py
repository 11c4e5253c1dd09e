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


def _copy_model(tiny_model_paths, folder, **sidecar_entries):
    """Copy the tiny .tflite with its sidecar, adding ``sidecar_entries``."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.tflite"
    path.write_bytes(tiny_model_paths["tflite"].read_bytes())
    sidecar = json.loads(tiny_model_paths["tflite"].with_suffix(".json").read_text())
    sidecar.update(sidecar_entries)
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


def test_sidecar_temperature_scales_the_views_it_was_fitted_for(tiny_model_paths,
                                                                tmp_path, rng):
    from fer_ros.evaluation import scale_temperature

    faces = rng.integers(0, 256, (6, 48, 48)).astype(np.uint8)
    plain = EmotionClassifier.load(tiny_model_paths["tflite"]).predict_proba(faces)
    one_pass = {"tta_flip": False, "tta_zooms": [1.0], "tta_shifts": [[0, 0]]}
    path = _copy_model(tiny_model_paths, tmp_path / "calibrated",
                       temperature=[{**one_pass, "temperature": 0.5},
                                    {**one_pass, "tta_flip": True, "temperature": 2.0}])
    calibrated = EmotionClassifier.load(path)
    assert calibrated.info.temperature() == 0.5
    scaled = calibrated.predict_proba(faces)
    np.testing.assert_allclose(scaled, scale_temperature(plain, 0.5), atol=1e-5)
    assert (scaled.argmax(1) == plain.argmax(1)).all()
    assert EmotionClassifier.load(path, tta_flip=True).info.temperature() == 2.0
    # Views it was not fitted for are left unscaled.
    assert EmotionClassifier.load(path, tta_zooms=[1.0, 1.1]).info.temperature() == 1.0


@pytest.mark.parametrize("entries", [[{"tta_flip": False, "temperature": 0}],
                                     [{"tta_flip": False}], {"temperature": 1.0}, ["x"]])
def test_unusable_sidecar_temperature_is_a_load_error(tiny_model_paths, tmp_path, entries):
    from fer_ros.model_files import ModelLoadError

    path = _copy_model(tiny_model_paths, tmp_path / "bad", temperature=entries)
    with pytest.raises(ModelLoadError, match="unreadable model sidecar"):
        EmotionClassifier.load(path)


def test_calibrate_writes_a_temperature_per_view_set(tiny_model_paths, tmp_path, capsys):
    import json

    from training.calibrate import main

    rng = np.random.default_rng(5)
    data = tmp_path / "fer.npz"
    np.savez(data, images=rng.integers(0, 256, (30, 48, 48)).astype(np.uint8),
             labels=np.tile(np.arange(7), 5)[:30], usage=np.array(["PublicTest"] * 30))
    path = _copy_model(tiny_model_paths, tmp_path / "model")
    assert main([str(path), "--data", str(data)]) == 0
    entries = json.loads(path.with_suffix(".json").read_text())["temperature"]
    # The tiny model's own views are one pass: "model" and "flip" remain.
    assert [e["view_set"] for e in entries] == ["model", "flip"]
    assert all(e["temperature"] > 0 and e["faces"] == 30 - 4 for e in entries)  # no surprise
    calibrated = EmotionClassifier.load(path)
    assert calibrated.info.temperature() == entries[0]["temperature"]
    assert "wrote the temperatures" in capsys.readouterr().out
    assert main([str(tmp_path / "missing.tflite"), "--data", str(data)]) == 1


def test_a_model_trained_on_the_split_takes_its_twins_temperatures(tiny_model_paths,
                                                                   tmp_path, capsys):
    import json

    from training.calibrate import main

    rng = np.random.default_rng(6)
    data = tmp_path / "fer.npz"
    np.savez(data, images=rng.integers(0, 256, (30, 48, 48)).astype(np.uint8),
             labels=np.tile(np.arange(7), 5)[:30], usage=np.array(["PublicTest"] * 30))
    final = _copy_model(tiny_model_paths, tmp_path / "final",
                        trained_on=[f"../shared/{data.name}:Training+PublicTest"])
    assert main([str(final), "--data", str(data)]) == 1
    assert "was trained on the fer.npz PublicTest faces" in capsys.readouterr().err
    assert "temperature" not in json.loads(final.with_suffix(".json").read_text())

    twin = _copy_model(tiny_model_paths, tmp_path / "twin",
                       trained_on=[f"../shared/{data.name}:Training"])
    assert main([str(final), "--data", str(data), "--twin", f"{final}={twin}"]) == 0
    entries = json.loads(final.with_suffix(".json").read_text())["temperature"]
    twin_alone = tmp_path / "twin_alone"
    _copy_model(tiny_model_paths, twin_alone)
    assert main([str(twin_alone / "tiny.tflite"), "--data", str(data)]) == 0
    alone = json.loads((twin_alone / "tiny.json").read_text())["temperature"]
    assert [e["temperature"] for e in entries] == [e["temperature"] for e in alone]
    assert all(e["fitted_with"].startswith("held-out twin tiny.tflite") for e in entries)

    # A twin has the model's classes and views, and is itself held out.
    other_views = _copy_model(tiny_model_paths, tmp_path / "flip", tta_flip=True)
    assert main([str(final), "--data", str(data), "--twin", f"{final}={other_views}"]) == 1
    assert "not a twin" in capsys.readouterr().err
    assert main([str(final), "--data", str(data), "--twin", f"{final}={final}"]) == 1
    assert main([str(final), "--data", str(data), "--twin", "7class=x.tflite"]) == 1
