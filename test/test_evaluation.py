"""Training curves, history files and accuracy statistics (fer_ros/evaluation.py)."""

import numpy as np
import pytest

from fer_ros.evaluation import curve_series, plot_curves, read_history_csv


def test_single_head_curves_are_train_and_validation():
    history = {"loss": [1.0, 0.8], "val_loss": [1.1, 0.9],
               "accuracy": [0.5, 0.6], "val_accuracy": [0.4, 0.55]}
    assert curve_series(history, "accuracy") == [
        ("train accuracy", [0.5, 0.6]), ("validation accuracy", [0.4, 0.55])]
    assert [label for label, _ in curve_series(history, "loss")] == [
        "train loss", "validation loss"]


def test_multitask_curves_have_one_accuracy_per_head_and_the_overall_loss():
    history = {"loss": [2.0], "val_loss": [2.1],
               "emotion_3class_loss": [0.5], "val_emotion_3class_loss": [0.6],
               "emotion_3class_accuracy": [0.7], "val_emotion_3class_accuracy": [0.65],
               "emotion_7class_accuracy": [0.5], "val_emotion_7class_accuracy": [0.45]}
    assert [label for label, _ in curve_series(history, "accuracy")] == [
        "train emotion_3class accuracy", "validation emotion_3class accuracy",
        "train emotion_7class accuracy", "validation emotion_7class accuracy"]
    assert [label for label, _ in curve_series(history, "loss")] == [
        "train loss", "validation loss"]


def test_curves_plot_from_a_keras_csv_log(tmp_path):
    log = tmp_path / "training_log.csv"
    log.write_text("epoch,emotion_3class_accuracy,loss,val_emotion_3class_accuracy,val_loss\n"
                   "0,0.5,1.2,0.45,1.3\n1,0.6,1.0,0.55,1.1\n")
    history = read_history_csv(log)
    assert history["val_emotion_3class_accuracy"] == [0.45, 0.55]
    plot_curves(history, tmp_path / "curves.png", "mt")
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert read_history_csv(tmp_path / "missing.csv") == {}


def test_accuracy_interval_matches_the_wilson_formula_and_narrows_with_more_faces():
    from fer_ros.evaluation import accuracy_interval

    low, high = accuracy_interval(83, 100)
    # The Wilson bounds are the accuracies p whose normal test accepts 83/100:
    # the roots of (1 + z^2/n) p^2 - (2 q + z^2/n) p + q^2 = 0, q = 0.83.
    z2n = 1.96 ** 2 / 100
    roots = np.sort(np.roots([1 + z2n, -(2 * 0.83 + z2n), 0.83 ** 2]))
    assert np.allclose((low, high), roots)
    low_big, high_big = accuracy_interval(2648, 3174)  # 83.4% of PublicTest
    assert low < low_big < 0.834 < high_big < high
    assert 0.012 < (high_big - low_big) / 2 < 0.014
    assert accuracy_interval(0, 10)[0] == 0.0 and accuracy_interval(10, 10)[1] == 1.0
    assert accuracy_interval(0, 0) == (0.0, 1.0)


def test_metrics_and_report_line_carry_the_interval():
    from fer_ros.evaluation import classification_metrics, report_line

    metrics = classification_metrics(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]),
                                     ["a", "b"])
    assert metrics["accuracy"] == 0.75
    low, high = metrics["accuracy_ci95"]
    assert low < 0.75 < high
    assert f"(95% CI {low:.4f}-{high:.4f})" in report_line("m", metrics)


def test_paired_comparison_counts_disagreements_and_gives_the_exact_p_value():
    from fer_ros.evaluation import paired_comparison

    a = np.array([True] * 10 + [False] * 2 + [True] * 88)
    b = np.array([False] * 10 + [True] * 2 + [True] * 88)
    result = paired_comparison(a, b)
    assert (result["only_a"], result["only_b"]) == (10, 2)
    assert result["difference"] == 0.08
    # Two-sided exact binomial: 2 * P(X <= 2), X ~ B(12, 1/2) = 2 * 79 / 4096.
    assert result["p_value"] == round(2 * 79 / 4096, 4)
    same = paired_comparison(a, a)
    assert same["p_value"] == 1.0 and same["difference"] == 0.0
    with pytest.raises(ValueError, match="same faces"):
        paired_comparison(a, b[:50])


def _labelled_folder(root):
    import cv2

    for label, value in (("happy", 90), ("sad", 160), ("neutral", 30)):
        (root / label).mkdir(parents=True)
        for i in range(3):
            face = np.full((48, 48), value + 10 * i, np.uint8)
            cv2.imwrite(str(root / label / f"{i}.png"), face)
    return root


def test_evaluate_cli_compares_two_models_on_the_same_faces(tiny_model_paths, tmp_path,
                                                            capsys):
    import json

    from fer_ros.evaluate_cli import main

    data = _labelled_folder(tmp_path / "faces")
    model = str(tiny_model_paths["tflite"])
    assert main(["--model", model, "--data", str(data), "--compare-with", model,
                 "--output", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "95% CI" in out
    assert "vs tiny.tflite on the same faces: +0.00 points" in out
    comparison = json.loads((tmp_path / "eval" / "metrics.json").read_text())["comparison"]
    assert comparison["p_value"] == 1.0 and comparison["model"] == model


def test_evaluate_cli_rejects_a_comparison_model_with_other_classes(tiny_model_paths, tmp_path,
                                                                    capsys):
    import json

    from fer_ros.evaluate_cli import main

    other = tmp_path / "other.tflite"
    other.write_bytes(tiny_model_paths["tflite"].read_bytes())
    other.with_suffix(".json").write_text(json.dumps({"labels": ["calm", "busy", "tired"]}))
    data = _labelled_folder(tmp_path / "faces")
    assert main(["--model", str(tiny_model_paths["tflite"]), "--data", str(data),
                 "--compare-with", str(other)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be scored as" in err


class _FixedClassifier:
    """Stands in for EmotionClassifier: the same probabilities for every batch."""

    def __init__(self, probs, labels=("negative", "neutral", "positive")):
        self.probs, self.labels, self.source = np.asarray(probs, np.float32), labels, "fixed"

    def predict_proba(self, faces):
        return self.probs[:len(faces)]


def test_averaged_models_vote_with_their_mean_probabilities():
    from fer_ros.evaluate_cli import predicted_classes

    faces = np.zeros((2, 48, 48), np.uint8)
    sure = _FixedClassifier([[0.9, 0.1, 0.0], [0.0, 0.6, 0.4]])
    doubtful = _FixedClassifier([[0.0, 0.6, 0.4], [0.0, 0.0, 1.0]])
    labels = sure.labels
    assert predicted_classes([sure], faces, labels).tolist() == [0, 1]
    assert predicted_classes([doubtful], faces, labels).tolist() == [1, 2]
    # mean: [0.45, 0.35, 0.2] and [0, 0.3, 0.7]
    assert predicted_classes([sure, doubtful], faces, labels).tolist() == [0, 2]
    # A 7-class partner is collapsed to the three valence classes first.
    seven = _FixedClassifier([[0, 0, 0, 0, 0, 0, 1.0], [0, 0, 0, 0, 0, 0, 1.0]],
                             ("angry", "disgust", "fear", "happy", "sad", "surprise",
                              "neutral"))
    assert predicted_classes([doubtful, seven], faces, labels).tolist() == [1, 1]


def test_evaluate_cli_scores_the_mean_of_several_models(tiny_model_paths, tmp_path, capsys):
    import json

    from fer_ros.evaluate_cli import main

    data = _labelled_folder(tmp_path / "faces")
    model = str(tiny_model_paths["tflite"])
    assert main(["--model", model, "--data", str(data), "--output", str(tmp_path / "one")]) == 0
    assert main(["--model", model, "--average-with", str(tiny_model_paths["keras"]),
                 "--data", str(data), "--output", str(tmp_path / "mean")]) == 0
    assert "mean of tiny.tflite + tiny.keras on faces" in capsys.readouterr().out
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    mean = json.loads((tmp_path / "mean" / "metrics.json").read_text())
    # The same network in both files: the mean scores what one of them does.
    assert mean["accuracy"] == one["accuracy"]
    assert mean["averaged_with"] == [str(tiny_model_paths["keras"])]


def test_evaluate_cli_says_when_the_model_was_trained_on_the_faces(tiny_model_paths, tmp_path,
                                                                   capsys):
    import json

    from fer_ros.evaluate_cli import main

    folder = tmp_path / "final"
    folder.mkdir()
    model = folder / "final.tflite"
    model.write_bytes(tiny_model_paths["tflite"].read_bytes())
    sidecar = json.loads(tiny_model_paths["tflite"].with_suffix(".json").read_text())
    sidecar["trained_on"] = ["/elsewhere/fer.npz:Training+PublicTest"]
    model.with_suffix(".json").write_text(json.dumps(sidecar))
    data = tmp_path / "fer.npz"
    rng = np.random.default_rng(0)
    for split, trained in (("PublicTest", ["final.tflite"]), ("PrivateTest", [])):
        np.savez(data, images=rng.integers(0, 256, (28, 48, 48)).astype(np.uint8),
                 labels=np.arange(28) % 7, usage=np.array(["Training", split] * 14))
        assert main(["--model", str(model), "--data", str(data), "--split", split,
                     "--output", str(tmp_path / split)]) == 0
        out = capsys.readouterr().out
        assert ("these are training figures" in out) == bool(trained)
        metrics = json.loads((tmp_path / split / "metrics.json").read_text())
        assert metrics["trained_on_these_faces"] == trained


def _noisy_probabilities(y: np.ndarray, right: float, seed: int) -> np.ndarray:
    """Probabilities whose argmax is ``y`` on about ``right`` of the rows, else random."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(3), len(y))
    sure = rng.random(len(y)) < right
    probs[sure] = 0.05
    probs[sure, y[sure]] = 0.9
    return probs


def test_fusion_gain_is_scored_on_faces_the_weight_was_not_chosen_on():
    from fer_ros.evaluation import fusion_gain

    y = np.random.default_rng(0).integers(0, 3, 600)
    base = _noisy_probabilities(y, 0.5, seed=1)
    informative = fusion_gain(base, _noisy_probabilities(y, 0.8, seed=2), y, max_weight=1.0)
    assert informative["median_gain"] > 0.1
    assert max(informative["chosen_weights"]) > 0.5
    # A model that knows nothing (the same probabilities for every face)
    # changes no decision at any weight: no gain, and none made up.
    uniform = fusion_gain(base, np.full_like(base, 1 / 3), y)
    assert uniform["median_gain"] == 0.0 and uniform["mean_gain"] == 0.0
    assert set(uniform["accuracy_by_weight_all_faces"]) == {
        str(w) for w in np.round(np.arange(0, 0.51, 0.05), 2)}
    with pytest.raises(ValueError, match="do not match"):
        fusion_gain(base, base[:, :2], y)
    with pytest.raises(ValueError, match="max_weight"):
        fusion_gain(base, base, y, max_weight=0.0)


def test_evaluate_cli_reports_the_fusion_gain_of_averaged_models(tiny_model_paths, tmp_path,
                                                                 capsys):
    import json

    from fer_ros.evaluate_cli import main

    data = _labelled_folder(tmp_path / "faces")
    model = str(tiny_model_paths["tflite"])
    assert main(["--model", model, "--average-with", str(tiny_model_paths["keras"]),
                 "--fusion-gain", "--data", str(data), "--output", str(tmp_path / "f")]) == 0
    assert "gain on the other half +0.00 points" in capsys.readouterr().out
    fusion = json.loads((tmp_path / "f" / "metrics.json").read_text())["fusion"]
    assert fusion["median_gain"] == 0.0
    # without models to fuse in, one clear line and a non-zero exit
    assert main(["--model", model, "--fusion-gain", "--data", str(data)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--fusion-gain needs --average-with" in err
