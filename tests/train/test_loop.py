"""Training runs end to end: the demo recipe, accumulation and EMA, kill and resume, 2-process DDP, divergence."""
import csv
import json
import os
import platform
import signal
import subprocess
import sys

import pytest
import torch
import yaml

from crossformer_vision.train import train
from crossformer_vision.train.inference import evaluate_classifier
from crossformer_vision.cli import main
from train_helpers import fast_overrides, make_image_folder


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("shapes"), {"train": 16, "val": 4})


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def _max_diff(a, b):
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_digits_recipe_trains_and_writes_a_complete_run_folder(tmp_path, capsys):
    summary = train("classification", "digits", ["train.epochs=1", "sched.warmup_epochs=0", f"log.output={tmp_path}",
                                       "log.name=demo"])
    out = capsys.readouterr().out
    run = tmp_path / "demo"
    assert "1257 train / 180 val / 360 test images, 10 classes" in out
    assert "epoch 1/1: 19/19 steps" in out and "img/s=" in out and "val_top1=" in out
    assert "best.pth is epoch 1 (highest val top-1" in out and "test (360 images): top-1" in out
    assert sorted(p.name for p in run.iterdir()) == ["best.pth", "config.yaml", "curves.png", "last.pth", "metrics.csv",
                                                     "summary.json"]
    # one epoch of the real recipe already classifies most digits
    assert summary["test_images"] == 360 and summary["test_top1"] > 75 and summary["best_epoch"] == 1
    assert json.loads((run / "summary.json").read_text()) == summary
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["arch"]["depths"] == [1, 1, 2, 1] and config["train"]["epochs"] == 1
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert len(rows) == 1 and {"epoch", "train_loss", "val_loss", "val_top1", "val_top5", "lr", "images_per_s"} <= set(rows[0])
    assert float(rows[0]["val_top1"]) == pytest.approx(summary["best_val_top1"], abs=1e-3)
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    last = torch.load(run / "last.pth", weights_only=True)  # no pickled code: plain data and tensors only
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "history", "epoch", "config", "classes"} <= set(last)
    assert last["epoch"] == 1 and last["classes"] == [str(i) for i in range(10)] and len(last["rng"]) == 1
    best = torch.load(run / "best.pth", weights_only=True)
    assert "optimizer" not in best and _max_diff(best["model"], last["model"]) == 0
    evaluated = evaluate_classifier(run)  # a digits run is evaluated on its test split by default
    assert evaluated["data"] == "digits/test" and evaluated["top1"] == pytest.approx(summary["test_top1"])


def test_the_papers_augmentation_runs_mixup_cutmix_randaugment_erasing(tmp_path, folder_data, monkeypatch):
    import timm.data

    calls = []
    real = timm.data.Mixup.__call__
    monkeypatch.setattr(timm.data.Mixup, "__call__", lambda self, x, y: calls.append(len(x)) or real(self, x, y))
    paper = {"aug.scale": [0.08, 1.0], "aug.ratio": [0.75, 1.3333333], "aug.hflip": 0.5, "aug.color_jitter": 0.4,
             "aug.auto_augment": "rand-m9-mstd0.5-inc1", "aug.reprob": 0.25, "aug.mixup": 0.8, "aug.cutmix": 1.0,
             "aug.smoothing": 0.1, "model.drop_path_rate": 0.1}
    overrides = fast_overrides(tmp_path, data__path=str(folder_data), train__epochs=1, sched__warmup_epochs=0)
    summary = train("classification", "folder", overrides + [f"{k}={v}" for k, v in paper.items()] + ["log.name=paper"])
    assert calls == [16, 16, 16]  # every batch mixed (soft targets, SoftTargetCrossEntropy)
    history = torch.load(tmp_path / "paper" / "last.pth", weights_only=True)["history"]
    assert summary["status"] == "finished" and 0 < history[0]["train_loss"] < 5


def test_gradient_accumulation_matches_the_full_batch_and_ema_is_kept(tmp_path, folder_data, capsys):
    common = fast_overrides(tmp_path, data__path=str(folder_data), data__dataset="folder", train__epochs=2)
    full = train("classification", "folder", common + ["log.name=full"])
    accum = train("classification", "folder", common + ["log.name=accum", "train.accum_steps=2", "train.ema=true",
                                              "train.ema_decay=0.5", "train.best_metric=val_loss",
                                              "train.reuse_memory=false"])
    a, b = [torch.load(tmp_path / n / "last.pth", weights_only=True) for n in ("full", "accum")]
    for ra, rb in zip(a["history"], b["history"]):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], abs=1e-5)
        assert rb["val_loss"] == pytest.approx(ra["val_loss"], abs=1e-5)
    assert _max_diff(a["model"], b["model"]) < 1e-4  # Adam steps are ~lr (2e-3): float sums differ in order only
    assert a["model_ema"] is None and b["model_ema"] is not None and _max_diff(b["model"], b["model_ema"]) > 1e-4
    assert "val_top1_ema" in b["history"][-1] and "val_top1_ema" in open(tmp_path / "accum" / "metrics.csv").readline()
    # best.pth: the last epoch with the highest val top-1 (default), or the lowest val loss
    top1 = [r["val_top1"] for r in a["history"]]
    assert full["best_epoch"] == len(top1) - top1[::-1].index(max(top1)) and full["best_metric"] == "val_top1"
    losses = [r["val_loss"] for r in b["history"]]
    assert accum["best_epoch"] == len(losses) - losses[::-1].index(min(losses)) and accum["best_val_loss"] == min(losses)
    best = torch.load(tmp_path / "accum" / "best.pth", weights_only=True)
    assert best["epoch"] == accum["best_epoch"] and best["model_ema"] is not None
    out = capsys.readouterr().out
    assert "1 process x 8 x 2 accumulation" in out
    # the CPU allocator setting (runtime.cpu.reuse_freed_memory): said in the header, off with train.reuse_memory=false
    assert out.count("thread, freed memory reused)") + out.count("threads, freed memory reused)") == (
        1 if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc" else 0)


def _train_cmd(*args):
    return [sys.executable, "-m", "crossformer_vision.cli", "train", *args]


def test_a_run_killed_part_way_resumes_to_the_same_result(tmp_path, folder_data):
    common = fast_overrides(tmp_path, data__path=str(folder_data), data__dataset="folder", train__epochs=4,
                            model__drop_path_rate=0.1, aug__scale=[0.6, 1.0], aug__hflip=0.5)  # randomness to restore
    reference = train("classification", "folder", common + ["log.name=whole"])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_train_cmd("--config", "folder", *common, "log.name=killed"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("epoch 1/4:"):  # printed once epoch 1's checkpoint is on disk
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(lines)
    run = tmp_path / "killed"
    interrupted = torch.load(run / "last.pth", weights_only=True)
    assert 1 <= interrupted["epoch"] < 4 and not (run / "summary.json").exists()
    resumed = subprocess.run(_train_cmd("--resume", str(run)), capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at epoch {interrupted['epoch'] + 1} of" in resumed.stdout
    whole, done = (torch.load(tmp_path / n / "last.pth", weights_only=True) for n in ("whole", "killed"))
    assert done["epoch"] == 4 and _max_diff(whole["model"], done["model"]) < 1e-6
    for a, b in zip(whole["history"], done["history"]):
        assert (a["train_loss"], a["val_loss"], a["val_top1"]) == pytest.approx((b["train_loss"], b["val_loss"], b["val_top1"]), abs=1e-6)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_val_top1"] == pytest.approx(reference["best_val_top1"])
    assert len(list(csv.DictReader(open(run / "metrics.csv")))) == 4
    # a finished run resumes to nothing new; a changed recipe is refused
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert main(["train", "--resume", str(run), "optim.lr=0.1"]) == 2


def test_two_processes_with_gloo_match_one_process_with_the_same_global_batch(tmp_path):
    square = make_image_folder(tmp_path / "square", {"train": 16, "val": 4}, square=True)  # no random crops
    common = fast_overrides(tmp_path, data__path=str(square), data__dataset="folder", train__epochs=3)
    single = train("classification", "folder", common + ["log.name=one"])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "crossformer_vision.cli", "train", "--config", "folder", *common, "log.name=two"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("epoch 3/3:") == 1  # only rank 0 prints
    assert "(2 processes x 8 x 1 accumulation)" in proc.stdout
    one, two = (torch.load(tmp_path / n / "last.pth", weights_only=True) for n in ("one", "two"))
    assert two["world_size"] == 2 and len(two["rng"]) == 2
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    for a, b in zip(one["history"], two["history"]):  # metrics reduced over both ranks (measured: 5e-8)
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-6)
        assert b["val_loss"] == pytest.approx(a["val_loss"], abs=1e-6)
        assert b["val_top1"] == pytest.approx(a["val_top1"], abs=1e-6)
    # gradients are averaged in another order; Adam turns tiny gradient differences into differences of a fraction
    # of its step (lr 2e-3) for near-zero gradients (measured: 4.5e-5)
    assert _max_diff(one["model"], two["model"]) < 2e-4
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["best_val_top1"] == pytest.approx(single["best_val_top1"])


def _nan_after(monkeypatch, calls):
    from crossformer_vision.train.tasks import classification

    real = classification.build_criterion
    count = {"n": 0}

    def build(aug, mixup):
        loss = real(aug, mixup)

        def poisoned(logits, target):
            count["n"] += 1
            value = loss(logits, target)
            return value * float("nan") if count["n"] > calls else value

        return poisoned

    monkeypatch.setattr(classification, "build_criterion", build)


def test_a_non_finite_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, folder_data, monkeypatch, capsys):
    common = fast_overrides(tmp_path, data__path=str(folder_data), data__dataset="folder", train__epochs=3)
    _nan_after(monkeypatch, calls=4)  # 3 steps per epoch: NaN at epoch 2, step 2
    assert main(["train", "--config", "folder", *common, "log.name=nan"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the loss became non-finite at epoch 2, step 2" in err
    assert f"the last good checkpoint is {tmp_path / 'nan' / 'last.pth'} (epoch 1)" in err
    last = torch.load(tmp_path / "nan" / "last.pth", weights_only=True)
    assert last["epoch"] == 1 and all(torch.isfinite(v).all() for v in last["model"].values())
    assert json.loads((tmp_path / "nan" / "summary.json").read_text())["status"] == "stopped: non-finite loss"
    _nan_after(monkeypatch, calls=1)  # diverges in the first epoch: nothing worth keeping
    assert main(["train", "--config", "folder", *common, "log.name=early"]) == 1
    assert "no epoch had finished, so no run folder was kept" in capsys.readouterr().err
    assert not (tmp_path / "early").exists()
