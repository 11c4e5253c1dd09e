"""Regenerate config/fer.yaml from fer_ros/parameters.py (run after editing it)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout first
from fer_ros.parameters import FER_NODE_PARAMETERS  # noqa: E402


def render() -> str:
    """The YAML text: one comment line and one value line per parameter."""
    lines = ["# Default parameters of the fer node (fer_ros/parameters.py is the reference;",
             "# test/test_parameters.py checks that the two agree).",
             "fer:", "  ros__parameters:"]
    for spec in FER_NODE_PARAMETERS:
        extra = ""
        if spec.value_range:
            extra = f" [{spec.value_range[0]}..{spec.value_range[1]}]"
        if spec.choices:
            extra = f" ({' | '.join(spec.choices)})"
        if isinstance(spec.default, bool):
            value = str(spec.default).lower()
        elif isinstance(spec.default, str):
            value = json.dumps(spec.default)
        else:
            value = str(spec.default)
        lines += [f"    # {spec.description}{extra}", f"    {spec.name}: {value}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    path = Path(__file__).resolve().parent.parent / "config" / "fer.yaml"
    path.write_text(render())
    print(f"wrote {path}")
