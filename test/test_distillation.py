"""Knowledge distillation: soft targets from teacher runs (training/distillation.py)."""

import numpy as np
import pytest

from training.distillation import CACHE_NAME, blend_targets, teacher_model_path


def _fer_file(path, rows=64):
    rng = np.random.default_rng(0)
    np.savez(path, images=rng.integers(0, 256, (rows, 48, 48)).astype(np.uint8),
             labels=np.tile(np.arange(7), 10)[:rows],
             usage=np.array(["Training"] * (rows - 16) + ["PublicTest"] * 16))
    return path


def test_blend_targets_mixes_labels_and_teacher_probabilities():
    one_hot = np.eye(3, dtype=np.float32)[[0, 2]]
    soft = np.array([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]], np.float32)
    blended = blend_targets(one_hot, soft, 0.25)
    np.testing.assert_allclose(blended[0], [0.8, 0.125, 0.075])
    np.testing.assert_allclose(blended.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(blend_targets(one_hot, soft, 0.0), one_hot)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        blend_targets(one_hot, soft, 1.5)
    with pytest.raises(ValueError, match="do not match"):
        blend_targets(one_hot, soft[:, :2], 0.5)


def test_teacher_model_path_finds_each_head_or_says_what_is_missing(tmp_path):
    (tmp_path / "mt" / "3class").mkdir(parents=True)
    (tmp_path / "mt" / "3class" / "best.keras").write_bytes(b"")
    assert teacher_model_path(tmp_path / "mt", "3class") == tmp_path / "mt/3class/best.keras"
    with pytest.raises(OSError, match="no finished 7class model"):
        teacher_model_path(tmp_path / "mt", "7class")
    single = tmp_path / "single"
    single.mkdir()
    (single / "best.keras").write_bytes(b"")
    (single / "config.yaml").write_text("label_set: 7class\n")
    assert teacher_model_path(single, "7class") == single / "best.keras"


def test_bad_distillation_weight_is_rejected_before_training():
    from training.common import TrainConfig

    with pytest.raises(ValueError, match="distillation_weight"):
        TrainConfig(name="x", teachers=["runs/a"], distillation_weight=-0.1)


def test_multitask_student_learns_from_a_teacher_run_and_caches_its_targets(tmp_path, capsys):
    import dataclasses

    from training.common import TrainConfig
    from training.train_static import train_multitask

    data = _fer_file(tmp_path / "fer.npz")
    common = dict(multitask=True, train_data=[str(data)], val_data=str(data),
                  model={"stage_filters": [4, 8]}, epochs=1, batch_size=32,
                  output_root=str(tmp_path / "runs"))
    teacher = train_multitask(TrainConfig(name="teacher", **common))
    student_config = TrainConfig(name="student", teachers=[str(teacher)],
                                 distillation_weight=0.7, seed=2, **common)
    student = train_multitask(student_config)

    with np.load(student / CACHE_NAME) as cache:
        assert cache["7class"].shape == (48, 7) and cache["3class"].shape == (48, 3)
        np.testing.assert_allclose(cache["7class"].sum(axis=1), 1.0, atol=1e-5)
    for head in ("3class", "7class"):
        assert (student / head / "best.keras").is_file()
    assert "teacher targets from" not in capsys.readouterr().out
    # A resumed run (an interrupted one keeps its backup folder) reuses the
    # cached targets ...
    (student / "backup").mkdir()
    train_multitask(dataclasses.replace(student_config, epochs=2))
    assert f"teacher targets from {student / CACHE_NAME}" in capsys.readouterr().out
    # ... but not for other teachers.
    other = train_multitask(TrainConfig(name="other", seed=3, **common))
    (student / "backup").mkdir()
    train_multitask(dataclasses.replace(student_config, teachers=[str(teacher), str(other)]))
    assert "teacher targets from" not in capsys.readouterr().out


def test_single_head_student_and_a_teacher_without_that_head(tmp_path):
    from training.common import TrainConfig
    from training.train_static import train

    data = _fer_file(tmp_path / "fer.npz")
    common = dict(train_data=[str(data)], val_data=str(data), epochs=1, batch_size=32,
                  model={"stage_filters": [4, 8]}, output_root=str(tmp_path / "runs"))
    teacher = train(TrainConfig(name="teacher", label_set="3class", **common))
    student = train(TrainConfig(name="student", label_set="3class",
                                teachers=[str(teacher)], **common))
    with np.load(student / CACHE_NAME) as cache:
        assert cache["3class"].shape == (41, 3)  # 48 Training rows, 7 surprise
    with pytest.raises(OSError, match="no finished 7class model"):
        train(TrainConfig(name="student7", label_set="7class",
                          teachers=[str(teacher)], **common))
