"""The model card: calibration tools (evaluation.py) and its generator (training/model_card.py)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import footage, shared_data
from fer_ros.evaluation import (expected_calibration_error, fit_temperature,
                                negative_log_likelihood, reliability_curve, scale_temperature)


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def sample_labels(rng, probabilities):
    """Draw one label per row from its probabilities."""
    cumulative = probabilities.cumsum(axis=1)
    draws = rng.random((len(probabilities), 1))
    return np.minimum((draws > cumulative).sum(axis=1), probabilities.shape[1] - 1)


def test_ece_is_near_zero_when_calibrated_and_large_when_overconfident(rng):
    logits = rng.normal(0.0, 2.0, (20000, 5))
    truth = softmax(logits)
    y = sample_labels(rng, truth)
    # Labels drawn from the probabilities themselves: calibrated up to sampling noise.
    assert expected_calibration_error(truth, y) < 0.015
    # The same labels, probabilities sharpened threefold: overconfident.
    overconfident = softmax(3.0 * logits)
    assert expected_calibration_error(overconfident, y) > 0.1
    assert negative_log_likelihood(overconfident, y) > negative_log_likelihood(truth, y)


def test_reliability_curve_puts_each_face_into_the_bin_of_its_top_probability():
    probabilities = np.array([[0.95, 0.05], [0.96, 0.04], [0.4, 0.6], [0.55, 0.45]])
    y = np.array([0, 1, 1, 1])
    curve = reliability_curve(probabilities, y, bins=10)
    assert curve["count"].tolist() == [0, 0, 0, 0, 0, 2, 0, 0, 0, 2]
    assert curve["accuracy"][9] == 0.5 and curve["accuracy"][5] == 0.5
    assert np.isclose(curve["confidence"][9], 0.955)
    assert np.isnan(curve["accuracy"][0])
    # Top probability exactly on an edge belongs to the bin below it.
    assert reliability_curve(np.array([[0.5, 0.5]]), np.array([0]), 10)["count"][4] == 1
    # ECE: bin 5 (mean confidence 0.575, accuracy 0.5), bin 9 (0.955, 0.5).
    expected = (2 * abs(0.5 - 0.575) + 2 * abs(0.5 - 0.955)) / 4
    assert np.isclose(expected_calibration_error(probabilities, y, bins=10), expected)
    assert expected_calibration_error(np.zeros((0, 3)), np.zeros(0, int)) == 0.0


@pytest.mark.parametrize("temperature", [0.5, 2.0, 4.0])
def test_temperature_fit_recovers_a_known_temperature(rng, temperature):
    logits = rng.normal(0.0, 2.5, (20000, 4))
    # The true probabilities are the logits at temperature T; the model reports them
    # at temperature 1, so it needs T to be calibrated.
    y = sample_labels(rng, softmax(logits / temperature))
    fitted = fit_temperature(softmax(logits), y)
    assert abs(fitted - temperature) / temperature < 0.06
    scaled = scale_temperature(softmax(logits), fitted)
    assert expected_calibration_error(scaled, y) < expected_calibration_error(softmax(logits), y)
    assert expected_calibration_error(scaled, y) < 0.02


def test_temperature_scaling_never_changes_the_top_class(rng):
    probabilities = softmax(rng.normal(0.0, 3.0, (500, 7)))
    probabilities[0] = [1.0, 0, 0, 0, 0, 0, 0]  # zeros: logs are clipped, not -inf
    for temperature in (0.1, 0.7, 1.0, 3.0, 15.0):
        scaled = scale_temperature(probabilities, temperature)
        assert (scaled.argmax(axis=1) == probabilities.argmax(axis=1)).all()
        assert np.allclose(scaled.sum(axis=1), 1.0)
    assert np.allclose(scale_temperature(probabilities[1:], 1.0), probabilities[1:])
    # T > 1 softens: the top probability falls.
    assert (scale_temperature(probabilities, 2.0).max(axis=1)
            <= probabilities.max(axis=1) + 1e-12).all()
    with pytest.raises(ValueError, match="temperature"):
        scale_temperature(probabilities, 0.0)


def test_cross_fitted_calibration_study_finds_overconfidence(rng):
    from training.model_card import calibration_study

    logits = rng.normal(0.0, 2.0, (4000, 3))
    y = sample_labels(rng, softmax(logits / 2.0))
    probabilities = softmax(logits)
    result, scaled = calibration_study(probabilities, y)
    assert 1.7 < result["temperature"] < 2.3
    assert len(result["folds"]) == 2 and sum(f["faces"] for f in result["folds"]) == 4000
    assert result["ece_after"] < result["ece_before"] - 0.05
    assert result["nll_after"] < result["nll_before"]
    assert result["argmax_unchanged"]
    assert (scaled.argmax(axis=1) == probabilities.argmax(axis=1)).all()
    assert result["mean_confidence_after"] < result["mean_confidence_before"]


def footage_run(label_sequence, stamps, labels=("negative", "neutral", "positive")):
    k = len(labels)
    one_hot = np.eye(k)[label_sequence]
    return {"labels": labels, "frame_rate": 10.0, "frames": len(stamps),
            "tracks": {"face_1": {"stamps": np.asarray(stamps, float), "raw": one_hot,
                                  "smoothed": one_hot, "label": np.asarray(label_sequence)}}}


def test_label_changes_count_per_second_of_tracked_face():
    from training.model_card import label_changes

    run = footage_run([0, 0, 1, 0, 0, 0, 2, 2, 2, 2], np.arange(10) / 10.0)
    stats = label_changes(run)
    assert stats["changes"] == 3
    assert stats["face_seconds"] == 1.0  # 10 frames at 10 fps
    assert stats["changes_per_second"] == 3.0
    assert stats["median_label_run_s"] == 0.25  # runs 0.2, 0.1, 0.3, 0.4 s


def test_published_changes_are_timed_from_the_latest_raw_switch():
    from training.model_card import filter_delays, published_delays

    stamps = np.arange(10) / 10.0
    raw = footage_run([0, 0, 2, 0, 2, 2, 2, 2, 1, 1], stamps)
    smoothed = footage_run([0, 0, 0, 0, 0, 0, 2, 2, 2, 2], stamps)
    # The smoothed label becomes 2 at 0.6 s; raw last switched to 2 at 0.4 s.
    assert np.allclose(published_delays(raw, smoothed), [0.2])
    assert published_delays(raw, footage_run([1] * 10, stamps)) == []
    delays = filter_delays(0.3, 24.0)
    # Continuous-time limits: half of a step after tau ln 2, mean delay about tau.
    assert abs(delays["half_step_s"] - 0.3 * np.log(2)) < 1 / 24
    assert 0.25 < delays["mean_delay_s"] < 0.3
    assert filter_delays(0.0, 24.0) == {"mean_delay_s": 0.0, "half_step_s": 0.0}


def test_exact_duplicates_within_and_across_splits():
    from training.model_card import exact_duplicates

    rng = np.random.default_rng(5)
    faces = rng.integers(0, 256, (6, 48, 48), dtype=np.uint8)
    blank = np.zeros((2, 48, 48), np.uint8)
    train = np.concatenate([faces[:4], faces[:2], blank])  # faces 0, 1 twice
    train_y = np.array([0, 1, 2, 3, 0, 4, 6, 6])  # face 1 copies disagree
    test = np.concatenate([faces[3:6], faces[5:6]])  # face 3 in Training, 5 twice
    test_y = np.array([5, 1, 2, 2])
    counts, in_training = exact_duplicates(train, train_y, test, test_y)
    assert counts == {"training_repeats": 2, "training_conflicting": 1,
                      "publictest_repeats": 1, "publictest_conflicting": 0,
                      "publictest_in_training": 1, "publictest_in_training_other_label": 1}
    assert in_training.tolist() == [True, False, False, False]


@pytest.mark.slow
def test_the_generator_writes_a_card_whose_links_and_figures_exist(tmp_path):
    from training.model_card import main

    output = tmp_path / "card"
    assert main(["--data", str(shared_data("fer2013.npz")),
                 "--video", str(footage("single_face.mp4")), "--limit", "200",
                 "--max-frames", "36", "--output", str(output)]) == 0
    card = (output / "MODEL_CARD.md").read_text()
    links = re.findall(r"\]\(([^)#\s]+)\)", card)
    local = [link for link in links if not link.startswith("http")]
    assert all((output / link).is_file() for link in local), local
    figures = sorted((output / "model_card").glob("*.png"))
    assert len(figures) == 6
    # Every figure the command draws is in the card, and small enough to commit.
    assert {f"model_card/{path.name}" for path in figures} <= set(local)
    assert all(path.stat().st_size < 300_000 for path in figures)
    assert all(path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in figures)
    # In-page links point at headings that exist.
    anchors = {re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
               for heading in re.findall(r"^#+ (.+)$", card, re.M)}
    assert set(re.findall(r"\]\(#([^)]+)\)", card)) <= anchors
    numbers = json.loads((output / "model_card" / "model_card.json").read_text())
    assert numbers["publictest_faces"] == 200
    three = numbers["models"]["3class"]
    assert three["faces"] + three["left_out"] == 200
    assert f"{100 * three['metrics']['accuracy']:.1f}%" in card
    assert "15 equal-width bins" in card
    calibration = three["calibration"][numbers["smoothing"]["views"]]
    assert calibration["argmax_unchanged"]
    assert f"{calibration['ece_before']:.3f}" in card
    assert numbers["smoothing"]["frames"] == 36
    assert "--limit 200" in card and "python -m training.model_card" in card


def test_a_model_trained_on_publictest_is_measured_through_its_held_out_twin(
        tmp_path, monkeypatch, tiny_model_paths):
    import fer_ros.classification as classification
    from training import model_card

    weights = tmp_path / "weights"
    weights.mkdir()
    data = Path("../shared/data/fer2013.npz")

    def ship(name, folder, **sidecar_entries):
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{name}.tflite"
        target.write_bytes(tiny_model_paths["tflite"].read_bytes())
        sidecar = json.loads(tiny_model_paths["tflite"].with_suffix(".json").read_text())
        target.with_suffix(".json").write_text(json.dumps({**sidecar, **sidecar_entries}))
        return target

    final = {"trained_on": [f"{data}:Training+PublicTest"]}
    for model in model_card.MODELS:
        ship(classification.SHIPPED_MODELS[model], weights, **final)
    monkeypatch.setattr(classification, "WEIGHTS_DIR", weights)
    with pytest.raises(ValueError, match="trained on the fer2013.npz PublicTest faces; "
                                         "give its held-out twin: --twin 3class=FILE"):
        model_card.measured_files(data)
    twin = ship("twin", tmp_path / "twins", trained_on=[f"{data}:Training"])
    measured = model_card.measured_files(data, {m: str(twin) for m in model_card.MODELS})
    assert measured == {m: str(twin) for m in model_card.MODELS}
    with pytest.raises(ValueError, match="and so was its twin"):
        model_card.measured_files(data, {"3class": str(weights / "fer2013_3class.tflite")})
    with pytest.raises(ValueError, match="the card describes"):
        model_card.measured_files(data, {"5class": str(twin)})

    members = {"trained_on": final["trained_on"] * 3}  # an ensemble: one entry per member
    lines = model_card._twin_lines({"3class": {
        "model": "3class", "file": "fer2013_3class.tflite", "sidecar": members,
        "held_out_twin": {"file": "twin.tflite", "sha256": "0123", "trained_on": ["x:Training"]}}})
    assert "of its held-out twin `twin.tflite`" in lines[0]
    assert lines[0].count("Training+PublicTest") == 1
