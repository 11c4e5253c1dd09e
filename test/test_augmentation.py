"""Training augmentation: the recipe's extras (erasing, jitter, mixup) and the crop model."""

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from training.augmentation import AugmentationConfig, build_augmenter, mix_batch  # noqa: E402


def test_random_erasing_hits_about_its_probability_of_faces(rng):
    faces = rng.integers(0, 256, (400, 48, 48, 1)).astype(np.float32)
    config = AugmentationConfig(0, 0, 0, False, random_erasing=0.5)
    out = build_augmenter(config, seed=3)(faces, training=True).numpy()
    erased = (np.abs(out - faces).max(axis=(1, 2, 3)) > 0).mean()
    assert 0.4 < erased < 0.6
    assert out.min() >= 0 and out.max() <= 255


def test_brightness_and_contrast_change_each_face_differently(rng):
    faces = np.full((64, 48, 48, 1), 128.0, np.float32)
    faces[:, :24] = 60.0
    config = AugmentationConfig(0, 0, 0, False, brightness=0.3, contrast=0.3)
    out = build_augmenter(config, seed=5)(faces, training=True).numpy()
    assert out.mean(axis=(1, 2, 3)).std() > 5
    assert np.allclose(build_augmenter(AugmentationConfig(0, 0, 0, False), 1)(faces), faces)


@pytest.mark.parametrize("field", ["brightness", "contrast", "random_erasing"])
def test_out_of_range_augmentation_is_rejected(field):
    with pytest.raises(ValueError, match=field):
        AugmentationConfig(**{field: 1.5})


def test_mixup_blends_faces_and_targets_and_respects_masked_targets(rng):
    import tensorflow as tf

    faces = np.stack([np.full((8, 8, 1), v, np.float32) for v in range(0, 256, 16)])
    labels = np.eye(3, dtype=np.float32)[np.arange(16) % 3]
    weights = np.where(np.arange(16) % 4 == 0, 0.0, 1.0).astype(np.float32)
    tf.random.set_seed(7)
    x, targets, sample_weights = mix_batch(
        tf.constant(faces), {"head": tf.constant(labels)}, {"head": tf.constant(weights)}, 0.4)
    x, y, w = x.numpy(), targets["head"].numpy(), sample_weights["head"].numpy()
    # Each face is a blend of two constants, mostly itself.
    assert np.allclose(x.std(axis=(1, 2, 3)), 0, atol=1e-4)
    assert np.all(np.abs(x[:, 0, 0, 0] - faces[:, 0, 0, 0]) <= 0.5 * 255)
    assert np.allclose(y[w > 0].sum(axis=1), 1.0, atol=1e-5)
    assert np.all((w >= 0) & (w <= 1)) and not np.allclose(x, faces)
    # A face with a masked target keeps weight only through its partner.
    assert np.all(w[weights == 0] <= 0.5 + 1e-6)


def test_crop_model_sees_only_the_centre(rng):
    from training.models import build_vgg_residual

    model = build_vgg_residual(3, (4, 8), 1, crop=40)
    faces = rng.integers(0, 256, (2, 48, 48, 1)).astype(np.float32)
    border = faces.copy()
    border[:, :4] = 0
    border[:, :, -4:] = 255
    assert np.allclose(model(faces, training=False), model(border, training=False), atol=1e-5)
    with pytest.raises(ValueError, match="crop"):
        build_vgg_residual(3, (4, 8), 1, crop=60)


def _tiny_fer(tmp_path, rng):
    data = tmp_path / "fer.npz"
    np.savez(data, images=rng.integers(0, 256, (64, 48, 48)).astype(np.uint8),
             labels=np.tile(np.arange(7), 10)[:64],
             usage=np.array(["Training"] * 48 + ["PublicTest"] * 16))
    return data


RECIPE = dict(optimizer="sgd", mixup_alpha=0.2, label_smoothing=0.1,
              tta_shifts=[[0, 0], [4, 4]],
              augmentation={"brightness": 0.3, "contrast": 0.3, "random_erasing": 0.5})


def test_recipe_settings_train_both_trainers_and_export_the_crop_views(tmp_path, rng):
    import json

    from fer_ros.classification import EmotionClassifier
    from training.augmentation import AugmentationConfig
    from training.export import export_runs
    from training.common import TrainConfig
    from training.train_static import train, train_multitask

    data = _tiny_fer(tmp_path, rng)
    settings = dict(RECIPE, augmentation=AugmentationConfig(**RECIPE["augmentation"]))
    common = dict(train_data=[str(data)], val_data=str(data), epochs=1, batch_size=16,
                  output_root=str(tmp_path / "runs"),
                  model={"stage_filters": [8, 32], "crop": 40}, **settings)
    run = train_multitask(TrainConfig(name="mt", multitask=True, **common))
    single = train(TrainConfig(name="single", **common))
    for folder in (run / "3class", single):
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["tta_shifts"] == [[0, 0], [4, 4]] and metrics["tta_flip"]
    log = (run / "training_log.csv").read_text()
    assert "emotion_3class_loss" in log and "nan" not in log.lower()
    exported = export_runs([run / "3class"], "tiny_3class", out_dir=tmp_path / "weights")
    assert EmotionClassifier.load(exported).info.tta.num_views == 4


@pytest.mark.parametrize("key, value", [("optimizer", "adagrad"), ("mixup_alpha", -1),
                                        ("tta_shifts", [[0, 100]])])
def test_bad_recipe_settings_are_rejected_before_training(key, value):
    from training.common import TrainConfig

    with pytest.raises(ValueError, match=key.split("_")[0]):
        TrainConfig(name="bad", **{key: value})


def test_training_can_leave_out_faces_that_are_also_validation_faces(tmp_path, rng):
    from training.common import TrainConfig, duplicates_of, load_train_and_validation

    images = rng.integers(0, 256, (64, 48, 48)).astype(np.uint8)
    images[5] = images[50]   # a Training face that is also a PublicTest face
    images[7] = images[60]
    data = tmp_path / "fer.npz"
    np.savez(data, images=images, labels=np.tile(np.arange(7), 10)[:64],
             usage=np.array(["Training"] * 48 + ["PublicTest"] * 16))
    assert duplicates_of(images[:48], images[48:]).nonzero()[0].tolist() == [5, 7]
    config = TrainConfig(name="dedup", train_data=[str(data)], val_data=str(data),
                         label_set="7class", drop_validation_duplicates=True)
    x_train, _, x_val, _, facts = load_train_and_validation(config, "7class")
    assert facts["validation_duplicates_dropped"] == 2 and len(x_train) == 46
    assert not duplicates_of(x_train, x_val).any()
