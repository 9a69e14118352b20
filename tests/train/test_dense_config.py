"""configs/dense: the paper's detection and segmentation recipes as data, buildable and faithful."""
from pathlib import Path

import pytest
import torch
import yaml

from crossformer_vision import dense

# the paper's recipes; *_demo.yaml are the CPU demos (tests/test_dense_cli.py)
CONFIGS = sorted(p for p in (Path(__file__).parents[2] / "configs" / "dense").glob("*.yaml") if not p.stem.endswith("_demo"))


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)


def test_all_paper_models_have_a_recipe():
    names = {p.stem for p in CONFIGS}
    assert {"retinanet_crossformer_small_coco_1x", "retinanet_crossformer_base_coco_1x",
            "maskrcnn_crossformer_small_coco_1x", "maskrcnn_crossformer_base_coco_1x",
            "upernet_crossformer_small_ade20k_160k", "semantic_fpn_crossformer_small_ade20k_80k"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_recipe_builds_the_paper_sized_model(path):
    cfg = load(path)
    assert cfg["task"] == dense.TASKS[cfg["model"]["arch"]]
    with torch.device("meta"):
        model = dense.build_model(cfg["model"])
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(params_m - cfg["paper"]["params_m"]) / cfg["paper"]["params_m"] < 0.02
    assert model.build_config["arch"] == cfg["model"]["arch"]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_recipe_numbers_are_the_papers(path):
    cfg = load(path)
    optim, sched, train = cfg["optim"], cfg["sched"], cfg["train"]
    assert optim["opt"] == "adamw" and train["batch_size"] == 16
    arch = cfg["model"]["arch"]
    if cfg["task"] == "detection":
        assert (optim["lr"], optim["weight_decay"]) == (1e-4, 1e-4)
        assert (train["epochs"], sched["milestones"], sched["warmup_iters"]) == (12, [8, 11], 500)
        assert cfg["model"]["kwargs"] == {"min_size": 800, "max_size": 1333}
        assert cfg["data"]["masks"] == (arch == "maskrcnn")
    elif arch == "upernet":
        assert (optim["lr"], optim["weight_decay"], optim["no_weight_decay"]) == (6e-5, 0.01, ["norm"])
        assert (sched["name"], sched["power"], sched["warmup_iters"], train["iterations"]) == ("poly", 1.0, 1500, 160_000)
        assert cfg["model"]["aux_head"] and cfg["loss"]["aux_weight"] == 0.4
    else:
        assert (optim["lr"], sched["name"], sched["power"], train["iterations"]) == (1e-4, "poly", 0.9, 80_000)
        assert cfg["model"]["high_resolution"] is True
