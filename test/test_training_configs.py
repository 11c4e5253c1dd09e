"""Every experiment config in training/configs reads as its trainer's config."""

from pathlib import Path

import pytest

from training.common import TrainConfig

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "training" / "configs")
                 .glob("*.yaml"))
STATIC_CONFIGS = [path for path in CONFIGS if not path.stem.startswith("ckplus_lstm")]


def test_configs_are_found():
    assert len(STATIC_CONFIGS) >= 2 and len(CONFIGS) > len(STATIC_CONFIGS)


@pytest.mark.parametrize("path", STATIC_CONFIGS, ids=lambda path: path.stem)
def test_static_config_reads_and_is_named_after_its_file(path):
    config = TrainConfig.from_yaml(path)
    # The run folder is runs/<name>: a name differing from the file would
    # send two configs' results into one folder or hide where a run came from.
    assert config.name == path.stem
    assert config.epochs > 0 and config.batch_size > 0 and config.learning_rate > 0
    assert config.label_set in ("3class", "7class")
    for run in config.teachers:
        assert run.startswith("runs/"), run
    if config.init_weights:
        assert config.init_weights.startswith("runs/") and \
            config.init_weights.endswith(".keras")


def test_unknown_key_in_a_config_is_rejected(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("name: typo\nlearning_rat: 0.001\n")
    with pytest.raises(ValueError, match="learning_rat"):
        TrainConfig.from_yaml(path)


@pytest.mark.parametrize("path", [p for p in CONFIGS if p not in STATIC_CONFIGS],
                         ids=lambda path: path.stem)
def test_lstm_config_reads_and_is_named_after_its_file(path):
    import yaml

    from training.train_lstm import LstmConfig

    config = LstmConfig(**(yaml.safe_load(path.read_text()) or {}))
    assert config.name == path.stem
    assert config.static_model in ("3class", "7class")
    assert config.sequence_length > 0 and config.folds >= 2


def test_split_names_join_with_plus():
    from training.common import split_names

    assert split_names("Training+PublicTest") == ["Training", "PublicTest"]
    assert split_names("Training") == ["Training"] and split_names("") == []


def test_choosing_the_best_epoch_on_training_faces_is_refused():
    # A final run on Training + PublicTest cannot pick its epoch on PublicTest.
    with pytest.raises(ValueError, match="checkpoint: last"):
        TrainConfig(name="all", train_split="Training+PublicTest")
    config = TrainConfig(name="all", train_split="Training+PublicTest", checkpoint="last")
    assert config.validation_in_training()
    assert not TrainConfig(name="usual").validation_in_training()
    with pytest.raises(ValueError, match="checkpoint must be one of"):
        TrainConfig(name="typo", checkpoint="final")


# The compute precision may differ too: bfloat16 trains these trunks 1.3-1.6x
# faster here with the same accuracy (benchmarks/training_precision.py).
ALL_DATA_KEYS = {"name", "train_split", "checkpoint", "init_weights", "precision"}


@pytest.mark.parametrize("path", [p for p in STATIC_CONFIGS if p.stem.endswith("_all")],
                         ids=lambda path: path.stem)
def test_all_data_config_keeps_the_schedule_fixed_on_publictest(path):
    """A ``*_all`` run is its original run on Training + PublicTest, its schedule unchanged."""
    import yaml

    original_path = path.with_name(path.stem[:-len("_all")] + ".yaml")
    assert original_path.is_file(), f"{path.name}: no original config {original_path.name}"
    final, original = (yaml.safe_load(p.read_text()) for p in (path, original_path))
    assert final["train_split"] == "Training+PublicTest" and final["checkpoint"] == "last"
    if "init_weights" in original:
        # continues from the all-data version of the original's starting run
        run = original["init_weights"].split("/")[1]
        assert final["init_weights"] == original["init_weights"].replace(run, run + "_all")
    differing = {key for key in set(final) | set(original)
                 if final.get(key) != original.get(key)}
    assert differing <= ALL_DATA_KEYS, f"{path.name} changes {differing - ALL_DATA_KEYS}"


def test_session_sized_published_width_run_changes_only_its_schedule_length():
    """``vgg64_recipe35`` is the published-width run on a 35-epoch cosine, nothing else."""
    import yaml

    folder = CONFIGS[0].parent
    short, full = (yaml.safe_load((folder / f"fer2013_multitask_{stem}.yaml").read_text())
                   for stem in ("vgg64_recipe35", "vgg64_recipe"))
    differing = {key for key in set(short) | set(full) if short.get(key) != full.get(key)}
    assert differing == {"name", "epochs", "early_stopping_patience"}
    assert short["epochs"] == 35 and full["epochs"] == 100
