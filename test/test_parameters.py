"""Parameter validation and agreement of config/fer.yaml with the table."""

from pathlib import Path

import pytest
import yaml

from fer_ros.parameters import FER_NODE_PARAMETERS, defaults, validate

CONFIG = Path(__file__).resolve().parent.parent / "config" / "fer.yaml"


def test_config_yaml_matches_the_parameter_table():
    values = yaml.safe_load(CONFIG.read_text())["fer"]["ros__parameters"]
    assert values == defaults()


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
