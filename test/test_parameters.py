"""Parameter validation and agreement of config/fer.yaml with the table."""

from pathlib import Path

import pytest
import yaml

from fer_ros.parameters import FER_NODE_PARAMETERS, defaults, validate

CONFIG = Path(__file__).resolve().parent.parent / "config" / "fer.yaml"


def test_config_yaml_matches_the_parameter_table():
    values = yaml.safe_load(CONFIG.read_text())["/**/fer"]["ros__parameters"]
    assert values == defaults()


def test_config_yaml_applies_to_the_fer_node_in_any_namespace():
    # rclpy matches a 'fer:' section against the full node name, so with
    # namespace:=robot1 (/robot1/fer) the file would be silently ignored.
    assert list(yaml.safe_load(CONFIG.read_text())) == ["/**/fer"]


def test_config_yaml_comments_every_parameter():
    lines = CONFIG.read_text().splitlines()
    for spec in FER_NODE_PARAMETERS:
        index = next(i for i, line in enumerate(lines)
                     if line.strip().startswith(f"{spec.name}:"))
        assert lines[index - 1].strip().startswith("#"), spec.name


def test_every_parameter_has_a_description_and_numbers_have_ranges():
    for spec in FER_NODE_PARAMETERS:
        assert len(spec.description) > 10
        if isinstance(spec.default, (int, float)) and not isinstance(spec.default, bool):
            assert spec.value_range is not None, spec.name
            assert spec.value_range[0] <= spec.default <= spec.value_range[1]


def test_defaults_are_valid():
    assert validate(defaults()) == []


@pytest.mark.parametrize("name, value, message", [
    ("min_detection_score", 1.5, "outside"),
    ("max_faces", 0, "outside"),
    ("max_faces", 2.5, "must be int"),
    ("detector_model", "huge", "not one of"),
    ("image_transport", "theora", "not one of"),
    ("publish_overlay", "yes", "must be bool"),
    ("model", "", "must not be empty"),
    ("no_such_parameter", 1, "unknown parameter"),
])
def test_invalid_values_are_rejected_with_the_parameter_name(name, value, message):
    problems = validate({name: value})
    assert len(problems) == 1
    assert name in problems[0] and message in problems[0]


def test_integers_are_accepted_for_float_parameters():
    assert validate({"stability_window_s": 10}) == []


def test_readme_parameter_table_is_current():
    import sys

    sys.path.insert(0, str(CONFIG.parent.parent / "tools"))
    from write_config import update_readme

    readme = (CONFIG.parent.parent / "README.md").read_text()
    assert update_readme(readme) == readme, "run tools/write_config.py"


def test_detector_choices_are_the_detectors_models():
    from fer_ros.detection import BLAZEFACE_MODELS
    from fer_ros.parameters import DETECTOR_MODELS

    assert set(DETECTOR_MODELS) == set(BLAZEFACE_MODELS)


def test_code_defaults_come_from_the_table():
    import inspect

    from fer_ros.detection import BlazeFaceDetector, create_detector
    from fer_ros.pipeline import PipelineConfig
    from fer_ros.preprocessing import DEFAULT_CROP_MARGIN

    table = defaults()
    config = PipelineConfig()
    for name in ("crop_margin", "max_faces", "tracker_min_iou", "track_max_age_s",
                 "smoothing_time_constant_s", "stability_window_s", "dynamic_min_frames",
                 "dynamic_stride"):
        assert getattr(config, name) == table[name], name
    for function in (BlazeFaceDetector.__init__, create_detector):
        signature = inspect.signature(function).parameters
        assert signature["min_face_size"].default == table["min_face_size_px"]
        assert signature["min_score"].default == table["min_detection_score"]
        assert signature["verify_min_score"].default == table["verify_min_score"]
        assert signature["model"].default == table["detector_model"]
    assert DEFAULT_CROP_MARGIN == table["crop_margin"]


def test_pipeline_config_takes_parameter_values_with_their_types():
    from fer_ros.pipeline import PipelineConfig

    config = PipelineConfig.from_values({"max_faces": 3, "stability_window_s": 10,
                                         "model": "7class"})
    assert config.max_faces == 3 and config.stability_window_s == 10.0
    assert isinstance(config.stability_window_s, float)


def test_every_node_table_is_complete_and_its_defaults_valid():
    from fer_ros.parameters import NODE_PARAMETERS

    assert set(NODE_PARAMETERS) >= {"fer", "video_source", "emotion_recorder"}
    for node, table in NODE_PARAMETERS.items():
        names = [spec.name for spec in table]
        assert len(names) == len(set(names)), node
        for spec in table:
            assert len(spec.description) > 10, spec.name
            if isinstance(spec.default, (int, float)) and not isinstance(spec.default, bool):
                assert spec.value_range is not None, spec.name
        problems = validate(defaults(table), table)
        # video_source needs a source: its only invalid default.
        assert problems == (["parameter 'source' must not be empty"]
                            if node == "video_source" else []), node


@pytest.mark.parametrize("key", ["fer", "/fer", "/**/fer", "/robot1/fer", "/**"])
def test_params_file_sections_match_as_rclpy_matches_them(tmp_path, key):
    from fer_ros.parameters import read_params_file

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({
        key: {"ros__parameters": {"detector_model": "short_range", "use_sim_time": False,
                                  "qos_overrides./image.subscription.depth": 3}},
        "video_source": {"ros__parameters": {"source": "x.mp4"}}}))
    assert read_params_file(path) == {"detector_model": "short_range"}
    assert read_params_file(path, "video_source") == {
        "source": "x.mp4", **({"detector_model": "short_range"} if key == "/**" else {})}


def test_params_file_specific_section_wins_over_the_wildcard(tmp_path):
    from fer_ros.parameters import read_params_file

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({
        "/robot1/fer": {"ros__parameters": {"max_faces": 2}},
        "/**": {"ros__parameters": {"max_faces": 5, "threads": 1}}}))
    assert read_params_file(path) == {"max_faces": 2, "threads": 1}


@pytest.mark.parametrize("content, message", [
    (None, "no such file"), (":\n  - [", "not a readable YAML"),
    ("other_node:\n  ros__parameters: {a: 1}\nthird: {}\n", "no '/\\*\\*/fer"),
])
def test_bad_params_files_give_one_line(tmp_path, content, message):
    from fer_ros.parameters import ParamsFileError, read_params_file

    path = tmp_path / "params.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ParamsFileError, match=message) as raised:
        read_params_file(path)
    assert "\n" not in str(raised.value)
