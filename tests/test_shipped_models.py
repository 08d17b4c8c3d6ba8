"""The checkpoints shipped under models/: small, safe to load, and self-describing."""

import json
from pathlib import Path

import pytest
import torch

from neurodeploy.checkpoint import load_checkpoint
from neurodeploy.train import KNOWN_METHODS

MODELS = Path(__file__).resolve().parents[1] / "models"
METHOD_DIRS = sorted(p.parent for p in MODELS.glob("*/model.pt") if p.parent.name != "default")


def test_every_method_has_a_checkpoint():
    assert sorted(d.name for d in METHOD_DIRS) == sorted(KNOWN_METHODS)


@pytest.mark.parametrize("folder", METHOD_DIRS, ids=lambda p: p.name)
def test_method_checkpoint_is_small_weights_only_and_records_its_data(folder):
    path = folder / "model.pt"
    assert path.stat().st_size < 2 * 1024 * 1024
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == "neurodeploy-checkpoint"
    model, info = load_checkpoint(path)
    extra = info["extra"]
    assert extra["method"] == folder.name and extra["dataset"] == "digits"
    assert extra["input_mode"] in ("repeat", "first", "signed_poisson")
    log = json.loads((folder / "train_log.json").read_text())
    assert log["command"].split()[1:] == ["tools/train.py", "--method", folder.name, "--out",
                                          f"models/{folder.name}"]
    assert log["seed"] == extra["seed"] == 0
    assert log["float_test_accuracy"] == extra["float_test_accuracy"] > 0.85
    assert log["seconds"] > 0
