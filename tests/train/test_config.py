"""Recipes as data: the papers' eight ImageNet recipes, the demo recipe, overrides, and what they build."""
import math

import pytest
import torch

import crossformer_vision as cv
from crossformer_vision.train.config import CLASSIFICATION_DEFAULTS as DEFAULTS
from crossformer_vision.train.config import SCHEMAS, apply_overrides, list_recipes, resolve_recipe
from crossformer_vision.train.tasks.classification import build_classifier as build_model
from crossformer_vision.train.tasks.classification import build_criterion, build_optimizer, build_scheduler

DROP_PATH = {"crossformer_tiny": 0.1, "crossformer_small": 0.2, "crossformer_base": 0.3, "crossformer_large": 0.5,
             "crossformerpp_small": 0.2, "crossformerpp_base": 0.3, "crossformerpp_large": 0.5, "crossformerpp_huge": 0.5}


def test_the_eight_imagenet_recipes_are_the_papers():
    assert set(DROP_PATH) <= set(list_recipes()) and {"digits", "folder"} <= set(list_recipes())
    for name, drop_path in DROP_PATH.items():
        cfg = resolve_recipe("classification", name, {"data.path": "/data/imagenet"})
        assert cfg["model"]["name"] == name and cfg["model"]["drop_path_rate"] == drop_path
        o, s, t, a, d = cfg["optim"], cfg["sched"], cfg["train"], cfg["aug"], cfg["data"]
        assert (o["opt"], o["betas"], o["eps"], o["weight_decay"], o["clip_grad"]) == ("adamw", [0.9, 0.999], 1e-8, 0.05, 5.0)
        assert (o["lr"], o["warmup_lr"], o["min_lr"], o["lr_base_batch"]) == (5e-4, 5e-7, 5e-6, 512)
        assert (s["name"], s["warmup_epochs"], s["per_iteration"], t["epochs"]) == ("cosine", 20, True, 300)
        assert (a["auto_augment"], a["color_jitter"], a["mixup"], a["cutmix"], a["mixup_switch_prob"]) == (
            "rand-m9-mstd0.5-inc1", 0.4, 0.8, 1.0, 0.5)
        assert (a["smoothing"], a["reprob"], a["remode"]) == (0.1, 0.25, "pixel")
        assert (d["interpolation"], d["img_size"], d["crop_pct"]) == ("bicubic", 224, 0.875)
        assert round(d["img_size"] / d["crop_pct"]) == 256  # test: resize 256, centre crop 224
        assert (t["ema"], t["amp"], t["batch_size"]) == (False, "fp16", 1024)


def test_recipe_builds_adamw_without_decay_on_norms_and_biases_and_scaled_cosine_schedule():
    cfg = resolve_recipe("classification", "crossformer_tiny", {"data.path": "x"})
    model = build_model(cfg, 1000)
    assert cv.count_params(model) == 27_776_794
    assert model.stages[3].blocks[5].drop_path1.drop_prob == pytest.approx(0.1)
    optimizer = build_optimizer(cfg, model)
    assert type(optimizer).__name__ == "AdamW"
    decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.05 for p in g["params"]}
    for name, p in model.named_parameters():
        expected_decay = p.ndim > 1 and not name.endswith("relative_position_bias_table")
        assert (id(p) in decay) == expected_decay, name
    assert all(g["betas"] == (0.9, 0.999) and g["eps"] == 1e-8 for g in optimizer.param_groups)
    scheduler, epochs = build_scheduler(cfg, optimizer, updates_per_epoch=10)
    assert epochs == 300
    lr = lambda: optimizer.param_groups[0]["lr"]  # noqa: E731
    scale = 1024 / 512
    assert lr() == pytest.approx(5e-7 * scale)  # warmup starts at the scaled warmup lr
    scheduler.step_update(100)
    assert lr() == pytest.approx(5e-7 * scale + (5e-4 - 5e-7) * scale * 100 / 200)  # linear warmup, per iteration
    scheduler.step_update(200 + 1400)
    assert lr() == pytest.approx(5e-6 * scale + 0.5 * (5e-4 - 5e-6) * scale * (1 + math.cos(math.pi * 1600 / 3000)))
    scheduler.step_update(3000)
    assert lr() == pytest.approx(5e-6 * scale)


def test_criterion_follows_mixup_and_smoothing():
    aug = resolve_recipe("classification", "crossformer_small", {"data.path": "x"})["aug"]
    assert type(build_criterion(aug, mixup=True)).__name__ == "SoftTargetCrossEntropy"
    assert type(build_criterion(aug, mixup=False)).__name__ == "LabelSmoothingCrossEntropy"
    assert isinstance(build_criterion({**aug, "smoothing": 0.0}, mixup=False), torch.nn.CrossEntropyLoss)


def test_demo_recipe_resolves_to_the_named_32px_configuration():
    cfg = resolve_recipe("classification")
    assert cfg["data"]["dataset"] == "digits" and cfg["data"]["img_size"] == 32 and cfg["model"]["name"] == "crossformer_micro"
    model = build_model(cfg, 10)
    assert model.min_input_size == 32 and model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    assert cv.count_params(model) == 1_690_481


def test_overrides_parse_yaml_values_and_reject_unknown_keys():
    cfg = resolve_recipe("classification", "digits", ["optim.lr=1e-3", "aug.scale=[0.5, 1.0]", "model.pretrained=null", "train.ema=true"])
    assert cfg["optim"]["lr"] == 1e-3 and cfg["aug"]["scale"] == [0.5, 1.0] and cfg["train"]["ema"] is True
    assert apply_overrides(DEFAULTS, {"train.epochs": 7}, SCHEMAS["classification"])["train"]["epochs"] == 7
    bad = [
        (["optim.lrr=1"], "unknown config key 'optim.lrr'; did you mean optim.lr"),
        (["epochs=3"], "must look like section.field=value"),
        (["train.epochs=ten"], "train.epochs must be int like 300, got 'ten'"),
        (["train.amp=fp8"], r"train.amp must be one of \['none', 'fp16', 'bf16'\]"),
        (["train.batch_size=0"], "train.batch_size must be positive"),
        (["model.name=crossformer_smal"], "unknown model 'crossformer_smal'; did you mean crossformer_small"),
        (["data.mean=[0.5, 0.5]"], r"data.mean needs 1 values \(data.in_chans\)"),
        (["train.batch_size=10", "train.accum_steps=4"], "must be a multiple of train.accum_steps"),
    ]
    for overrides, message in bad:
        with pytest.raises(ValueError, match=message):
            resolve_recipe("classification", "digits", overrides)
    with pytest.raises(ValueError, match="no dataset: give --data PATH"):
        resolve_recipe("classification", "folder")
    with pytest.raises(FileNotFoundError, match="recipe 'crossformer_smal' not found; did you mean crossformer_small"):
        resolve_recipe("classification", "crossformer_smal")


def test_model_arch_builds_any_configuration():
    arch = {"embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2], "group_size": [4, 4], "crs_interval": [2, 1],
            "patch_size": [4, 8], "merge_size": [[2, 4]]}
    cfg = resolve_recipe("classification", "digits", {"model.name": "two_stage", "model.arch": arch})
    model = build_model(cfg, 10)
    assert len(model.stages) == 2 and model(torch.randn(1, 1, 32, 32)).shape == (1, 10)
    cfg = resolve_recipe("classification", "digits", {"model.name": "oops", "model.arch": {"embed_dims": 16}})
    with pytest.raises(ValueError, match="model.arch of 'oops' is not a CrossFormer configuration"):
        build_model(cfg, 10)
