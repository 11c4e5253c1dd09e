"""What the benchmark scripts share: the machine they ran on, and their README sections.

Each script writes its figures between its own markers in README.md, so a
rerun replaces them and nothing else.
"""

from __future__ import annotations

import platform
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    """Return the CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def replace_readme_section(start: str, end: str, content: str) -> None:
    """Put ``content`` between the README's ``start`` and ``end`` marker lines.

    :raises ValueError: when the README lacks the markers.
    """
    readme = REPO / "README.md"
    text = readme.read_text()
    if start not in text or end not in text:
        raise ValueError(f"README.md has no section between {start!r} and {end!r}")
    head, rest = text.split(start, 1)
    readme.write_text(head + start + content + end + rest.split(end, 1)[1])
