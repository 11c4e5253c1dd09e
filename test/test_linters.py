"""Style and static checks (as ament_flake8 / ament_pep257 would run them)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.linter


def test_flake8_and_pep257():
    if shutil.which("flake8") is None and not (Path(sys.executable).parent / "flake8").exists():
        pytest.skip("flake8 not installed (tools/setup.sh --dev installs it)")
    completed = subprocess.run([sys.executable, "-m", "flake8"], cwd=REPO,
                               capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_copyright_and_license_declared():
    assert "<license>Apache-2.0</license>" in (REPO / "package.xml").read_text()
    assert (REPO / "LICENSE").is_file()


def test_mypy():
    pytest.importorskip("mypy")
    completed = subprocess.run([sys.executable, "-m", "mypy", "fer_ros",
                                "--ignore-missing-imports", "--no-strict-optional"],
                               cwd=REPO, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout
