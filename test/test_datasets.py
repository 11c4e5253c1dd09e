"""Dataset loaders (on small generated files), relabelling and class weights."""

import csv

import cv2
import numpy as np
import pytest

from fer_ros.datasets import (DatasetError, FaceDataset, class_weights, concatenate,
                              find_junk, load_any, load_ckplus, load_fer2013, load_folder,
                              subject_split)
from fer_ros.labels import FER2013_LABELS, THREE_CLASS_LABELS, relabel, valence_of


def faces(n, rng):
    return rng.integers(0, 256, size=(n, 48, 48)).astype(np.uint8)


def test_relabel_seven_to_three():
    names = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt"]
    assert relabel(names, THREE_CLASS_LABELS).tolist() == [0, 0, 0, 2, 0, -1, 1, 0]


def test_relabel_to_seven_drops_contempt_and_accepts_synonyms():
    names = ["Anger", "happiness", "sadness", "contempt", "Neutral"]
    assert relabel(names, FER2013_LABELS).tolist() == [0, 3, 4, -1, 6]


def test_unknown_label_raises():
    with pytest.raises(ValueError, match="unknown emotion label"):
        relabel(["bored"], THREE_CLASS_LABELS)


def test_valence_of_probabilities():
    probs = np.array([[1, 0, 0], [0, 1, 0], [0.25, 0.25, 0.5]], np.float32)
    assert valence_of(probs, THREE_CLASS_LABELS).tolist() == pytest.approx([-1, 0, 0.25])


def test_class_weights_balance_counts():
    y = np.array([0] * 6 + [1] * 3 + [2] * 1)
    weights = class_weights(y, 4)
    assert weights[0] == pytest.approx(10 / (4 * 6))
    assert weights[2] == pytest.approx(10 / (4 * 1))
    assert weights[3] == 0.0
    # Weighted class totals are equal for the present classes.
    totals = {c: weights[c] * (y == c).sum() for c in range(3)}
    assert len({round(t, 6) for t in totals.values()}) == 1


def test_fer2013_npz_and_csv_agree(tmp_path, rng):
    images = faces(5, rng)
    codes = np.array([0, 3, 5, 6, 1])
    usage = np.array(["Training", "Training", "PublicTest", "PublicTest", "Training"])
    np.savez(tmp_path / "fer.npz", images=images, labels=codes, usage=usage)
    with open(tmp_path / "fer.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["emotion", "pixels", "Usage"])
        for image, code, split in zip(images, codes, usage):
            writer.writerow([code, " ".join(map(str, image.ravel())), split])
    from_npz = load_fer2013(tmp_path / "fer.npz")
    from_csv = load_fer2013(tmp_path / "fer.csv")
    assert np.array_equal(from_npz.images, from_csv.images)
    assert from_npz.labels.tolist() == ["angry", "happy", "surprise", "neutral", "disgust"]
    assert from_csv.split.tolist() == usage.tolist()
    x, y = from_npz.targets(THREE_CLASS_LABELS)
    assert y.tolist() == [0, 2, 1, 0] and len(x) == 4
    assert from_npz.fingerprint() == from_csv.fingerprint()


def test_fer2013_csv_with_wrong_pixel_count_names_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("emotion,pixels,Usage\n3,1 2 3,Training\n")
    with pytest.raises(DatasetError, match="bad.csv:2: 3 pixels"):
        load_fer2013(path)


def test_corrupt_npz_is_a_dataset_error(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DatasetError, match="not a readable .npz"):
        load_fer2013(path)
    with pytest.raises(DatasetError, match="no such file"):
        load_fer2013(tmp_path / "missing.npz")


def test_ckplus_npz_maps_contempt_and_keeps_subjects(tmp_path, rng):
    classes = np.array(["anger", "contempt", "disgust", "fear", "happy", "sadness",
                        "surprise"])
    np.savez(tmp_path / "ck.npz", images=faces(4, rng), labels=np.array([1, 4, 5, 6]),
             subject=np.array(["S1", "S1", "S2", "S3"]),
             sequence=np.array(["S1_1", "S1_1", "S2_1", "S3_1"]),
             frame=np.array([1, 2, 1, 1]), classes=classes)
    data = load_any(tmp_path / "ck.npz")
    assert data.labels.tolist() == ["contempt", "happy", "sad", "surprise"]
    assert data.targets(THREE_CLASS_LABELS)[1].tolist() == [0, 2, 0]
    assert data.targets(FER2013_LABELS)[1].tolist() == [3, 4, 5]


def test_ckplus_original_folder_layout(tmp_path, rng):
    root = tmp_path / "CK+"
    for subject, sequence, code in (("S005", "001", 3), ("S010", "002", 5),
                                    ("S011", "001", None)):
        frames = root / "cohn-kanade-images" / subject / sequence
        frames.mkdir(parents=True)
        for i in range(1, 5):
            cv2.imwrite(str(frames / f"{subject}_{sequence}_{i:08d}.png"),
                        rng.integers(0, 256, (64, 80)).astype(np.uint8))
        if code is not None:  # unlabelled sequences are skipped
            labels = root / "Emotion" / subject / sequence
            labels.mkdir(parents=True)
            (labels / f"{subject}_{sequence}_00000004_emotion.txt").write_text(
                f"   {code}.0000000e+00\n")
    data = load_ckplus(root, frames_per_sequence=3)
    assert len(data) == 6
    assert data.labels.tolist() == ["disgust"] * 3 + ["happy"] * 3
    assert data.frame.tolist() == [2, 3, 4, 2, 3, 4]
    assert set(data.sequence.tolist()) == {"S005_001", "S010_002"}
    assert data.images.shape == (6, 48, 48)


def test_folder_per_class_with_and_without_splits(tmp_path, rng):
    for split in ("train", "test"):
        for label in ("happy", "Sadness", "negative"):
            folder = tmp_path / "data" / split / label
            folder.mkdir(parents=True)
            cv2.imwrite(str(folder / "a.png"),
                        rng.integers(0, 256, (60, 60, 3)).astype(np.uint8))
    data = load_folder(tmp_path / "data")
    assert len(data) == 6 and set(data.split.tolist()) == {"train", "test"}
    assert sorted(set(data.labels.tolist())) == ["happy", "negative", "sad"]
    assert data.targets(THREE_CLASS_LABELS)[1].tolist().count(0) == 4


def test_subject_split_never_shares_subjects(rng):
    subjects = np.repeat([f"S{i}" for i in range(10)], 3)
    data = FaceDataset(faces(30, rng), np.array(["happy"] * 30), subject=subjects)
    train, test = subject_split(data, 0.3, seed=0)
    assert not set(subjects[train]) & set(subjects[test])
    assert len(set(subjects[test])) == 3 and len(train) + len(test) == 30


def test_junk_detection_flags_blank_and_text_tiles(rng):
    blank = np.zeros((48, 48), np.uint8)
    text = np.full((48, 48), 255, np.uint8)
    cv2.putText(text, "abc", (2, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 0, 1)
    natural = cv2.GaussianBlur(rng.integers(0, 256, (48, 48)).astype(np.uint8), (5, 5), 2)
    junk = find_junk(np.stack([blank, text, natural]))
    assert junk["blank"].tolist() == [True, False, False]
    assert junk["flat_background"].tolist() == [False, True, False]


def test_concatenate_mixes_sources(rng):
    a = FaceDataset(faces(2, rng), np.array(["happy", "sad"]), source="a")
    b = FaceDataset(faces(1, rng), np.array(["neutral"]), source="b")
    mixed = concatenate([a, b])
    assert len(mixed) == 3 and mixed.source == "a+b"


def test_shared_fer2013_junk_counts_are_reported():
    from conftest import shared_data

    data = load_fer2013(shared_data("fer2013.npz"))
    junk = find_junk(data.images)
    assert 1 <= junk["blank"].sum() < 100


def test_collapse_seven_class_probabilities():
    from fer_ros.labels import collapse_probabilities

    probs = np.array([[0.1, 0.1, 0.1, 0.2, 0.1, 0.2, 0.2]])
    # negative = 0.4, neutral = 0.2, positive = 0.2 (surprise 0.2 dropped) -> / 0.8
    assert collapse_probabilities(probs, FER2013_LABELS)[0].tolist() == \
        pytest.approx([0.5, 0.25, 0.25])


def test_fer_evaluate_on_generated_data(tmp_path, tiny_model_paths, capsys):
    from fer_ros.evaluate_cli import main

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "fer.npz", images=faces(21, rng), labels=np.tile(np.arange(7), 3),
             usage=np.array(["PublicTest"] * 21))
    assert main(["--model", str(tiny_model_paths["tflite"]), "--data",
                 str(tmp_path / "fer.npz"), "--split", "PublicTest", "--output",
                 str(tmp_path / "eval")]) == 0
    assert "n=18" in capsys.readouterr().out    # 3 surprise faces left out
    assert (tmp_path / "eval" / "confusion.png").is_file()
    assert main(["--model", str(tiny_model_paths["tflite"]), "--data",
                 str(tmp_path / "fer.npz"), "--collapse-to-3class"]) == 1
