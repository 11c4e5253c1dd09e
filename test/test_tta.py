"""Test-time augmentation: view layout, zoom geometry, sidecar and classifier wiring."""

import json

import cv2
import numpy as np
import pytest

from fer_ros.classification import EmotionClassifier
from fer_ros.model_files import ModelLoadError
from fer_ros.evaluate_cli import main as evaluate_main
from fer_ros.test_time_augmentation import TtaViews, zoom_faces


def test_views_are_view_major_and_average_inverts_them(rng):
    faces = rng.integers(0, 256, (5, 48, 48)).astype(np.uint8)
    tta = TtaViews(flip=True, zooms=(1.0, 1.2))
    views = tta.views(faces)
    assert tta.num_views == 4 and views.shape == (20, 48, 48, 1)
    assert np.array_equal(views[:5, ..., 0], faces)
    assert np.array_equal(views[5:10, ..., 0], faces[:, :, ::-1])
    assert np.allclose(views[15:20, ..., 0], views[10:15, :, ::-1, 0])
    per_view = np.arange(4, dtype=np.float32).repeat(5)[:, None] * np.ones((1, 3))
    assert np.allclose(tta.average(per_view, 5), 1.5)


def test_zoom_enlarges_a_centred_square_and_one_is_identity():
    face = np.zeros((1, 48, 48), np.float32)
    face[0, 16:32, 16:32] = 255.0
    bigger = zoom_faces(face, 1.5)
    smaller = zoom_faces(face, 0.75)
    assert (bigger > 127).sum() > 1.5 * (face > 127).sum() > 1.5 * (smaller > 127).sum()
    assert np.allclose(zoom_faces(face, 1.0), face, atol=1e-3)


def test_batched_zoom_matches_per_face_warp(rng):
    faces = rng.random((600, 48, 48)).astype(np.float32) * 255  # > 512: two chunks
    matrix = cv2.getRotationMatrix2D((23.5, 23.5), 0.0, 1.1)
    expected = np.stack([cv2.warpAffine(f, matrix, (48, 48), borderMode=cv2.BORDER_REFLECT)
                         for f in faces])
    assert np.allclose(zoom_faces(faces, 1.1), expected, atol=1e-3)


def test_sidecar_round_trip_and_old_sidecars():
    tta = TtaViews(True, (1.0, 1.1))
    assert TtaViews.from_sidecar(dict(tta.to_sidecar())) == tta
    assert TtaViews.from_sidecar({"tta_flip": True}) == TtaViews(True, (1.0,))


@pytest.mark.parametrize("zooms", [(), (0.1,), (1.0, 3.0)])
def test_bad_zooms_are_rejected(zooms):
    with pytest.raises(ValueError, match="zooms"):
        TtaViews(False, zooms)


def test_classifier_averages_views_in_batches_of_any_size(tiny_model_paths, rng):
    classifier = EmotionClassifier.load(tiny_model_paths["tflite"], tta_flip=True,
                                        tta_zooms=[1.0, 1.1, 0.9])
    assert classifier.info.tta.num_views == 6
    faces = rng.integers(0, 256, (40, 48, 48)).astype(np.uint8)  # 240 views: chunked
    probs, features = classifier.predict(faces)
    assert probs.shape == (40, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    single = np.concatenate([classifier.predict_proba(f[None]) for f in faces[:3]])
    assert np.allclose(probs[:3], single, atol=1e-5)
    plain = EmotionClassifier.load(tiny_model_paths["tflite"]).predict_proba(faces)
    assert not np.allclose(plain, probs, atol=1e-4)


def test_sidecar_zooms_are_used_and_bad_ones_refused(tiny_model_paths, tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(tiny_model_paths["tflite"].read_bytes())
    sidecar = json.loads(tiny_model_paths["tflite"].with_suffix(".json").read_text())
    model.with_suffix(".json").write_text(json.dumps(dict(sidecar, tta_zooms=[1.0, 1.1])))
    assert EmotionClassifier.load(model).info.tta.zooms == (1.0, 1.1)
    model.with_suffix(".json").write_text(json.dumps(dict(sidecar, tta_zooms="big")))
    with pytest.raises(ModelLoadError, match="tta_zooms"):
        EmotionClassifier.load(model)
    with pytest.raises(ModelLoadError, match="zooms"):
        EmotionClassifier.load(tiny_model_paths["tflite"], tta_zooms=[9.0])


def test_evaluate_cli_rejects_bad_zooms_in_one_line(tiny_model_paths, tmp_path, capsys):
    data = tmp_path / "faces"
    for label in ("happy", "sad"):
        (data / label).mkdir(parents=True)
        cv2.imwrite(str(data / label / "a.png"), np.full((48, 48), 100, np.uint8))
    assert evaluate_main(["--model", str(tiny_model_paths["tflite"]), "--data", str(data),
                          "--tta-zooms", "1,7"]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    assert evaluate_main(["--model", str(tiny_model_paths["tflite"]), "--data", str(data),
                          "--tta-zooms", "1,1.1"]) == 0


@pytest.mark.parametrize("choice, views", [("none", 1), ("flip", 2)])
def test_node_parameter_overrides_the_model_views(choice, views):
    from fer_ros.pipeline import build_pipeline

    pipeline, _ = build_pipeline({"test_time_views": choice, "dynamic_model": "none"})
    assert pipeline.classifier.info.tta.num_views == views


def test_shifted_views_move_the_face_by_whole_pixels(rng):
    faces = rng.integers(0, 256, (3, 48, 48)).astype(np.uint8)
    tta = TtaViews(False, (1.0,), ((0, 0), (4, -4)))
    views = tta.views(faces)[..., 0]
    assert tta.num_views == 2
    # Down 4, left 4: the interior moves, the borders are reflected.
    assert np.allclose(views[3:, 4:, :44], faces[:, :44, 4:], atol=1e-3)


def test_shifts_round_trip_through_the_sidecar_and_bad_ones_are_rejected():
    tta = TtaViews(True, (1.0,), ((0, 0), (-4, 4)))
    sidecar = tta.to_sidecar()
    assert sidecar["tta_shifts"] == [[0, 0], [-4, 4]]
    assert TtaViews.from_sidecar(dict(sidecar)) == tta
    for bad in ([], [[0]], [[0.5, 0]], [[40, 0]], "far"):
        with pytest.raises(ValueError, match="tta_shifts"):
            TtaViews(False, (1.0,), bad)


def test_classifier_shift_override_matches_the_views(tiny_model_paths, rng):
    shifts = [[0, 0], [2, 2], [-2, -2]]
    classifier = EmotionClassifier.load(tiny_model_paths["tflite"], tta_flip=False,
                                        tta_shifts=shifts)
    assert classifier.info.tta.num_views == 3
    faces = rng.integers(0, 256, (4, 48, 48)).astype(np.uint8)
    single = EmotionClassifier.load(tiny_model_paths["tflite"], tta_flip=False,
                                    tta_zooms=[1.0], tta_shifts=[[0, 0]])
    views = classifier.info.tta.views(faces)[..., 0].round().astype(np.uint8)
    expected = single.predict_proba(views).reshape(3, 4, -1).mean(axis=0)
    assert np.allclose(classifier.predict_proba(faces), expected, atol=1e-2)
