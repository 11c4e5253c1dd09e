"""Shared fixtures: paths to project footage, tiny random-weight models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
TEST_DATA = Path(__file__).resolve().parent / "data"
#: Real footage beside the checkout (development and CI only).
SHARED_MEDIA = REPO.parent / "shared" / "media"
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_media(name: str) -> Path:
    """Path of a ../shared/media file; skip the test when it is absent."""
    path = SHARED_MEDIA / name
    if not path.is_file():
        pytest.skip(f"{path} not available")
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
