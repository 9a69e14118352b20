"""Real folders never crash a run: the shipped folder recipe on camera-like files, worker errors as one line that
keeps the run resumable, changed augmentation on resume, short schedules, SIGTERM, stale temporary files, file
system errors."""
import errno
import json
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from crossformer_vision.data import augment
from crossformer_vision.train import loop
from crossformer_vision.utils.files import remove_stale_temp_files
from crossformer_vision.cli import main
from crossformer_vision.train.config import resolve_recipe
from crossformer_vision.train.tasks.classification import build_optimizer, build_scheduler, lr_scale, warmup_epochs
from train_helpers import fast_overrides, make_camera_folder, make_image_folder


@pytest.fixture(scope="module")
def camera(tmp_path_factory):
    """A few hundred images of the modes and sizes a camera or a scanner gives (1x1 to 400 pixels, 16-bit, float,
    CMYK, palette, alpha; JPEG, PNG, TIFF, WebP, GIF, BMP)."""
    return make_camera_folder(tmp_path_factory.mktemp("camera") / "data", {"train": 100, "val": 10})


def _one_line(capsys, code, *needles):
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.count("\n") == 0 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def test_the_folder_recipe_as_shipped_trains_on_a_camera_folder(camera, tmp_path, capsys):
    """RandAugment (rand-m9-mstd0.5-inc1), random erasing and worker processes on, as configs/folder.yaml ships."""
    recipe = resolve_recipe("classification", "folder", {"data.path": str(camera)})
    assert recipe["aug"]["auto_augment"] == "rand-m9-mstd0.5-inc1" and recipe["aug"]["reprob"] > 0
    assert recipe["data"]["workers"] > 1 and recipe["sched"]["warmup_epochs"] == 3
    code = main(["train", "--data", str(camera), "--epochs", "1", "--output", str(tmp_path), "--name", "cam",
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "300 train / 30 val images, 3 classes" in out
    assert "the recipe's 3-epoch warm-up capped at 10% of this 1-epoch run" in out
    summary = json.loads((tmp_path / "cam" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs"] == 1 and math.isfinite(summary["best_val_loss"])


def _poison_posterize(monkeypatch, flag):
    """Posterize at 0 bits fails as on Pillow 13 without the fix, but only once ``flag`` exists (after epoch 1)."""
    fixed = augment.posterize

    def posterize(image, bits, **kwargs):
        if bits <= 0 and flag.exists():
            raise ValueError("bits must be between or equal to 1 and 8")
        return fixed(image, bits, **kwargs)

    monkeypatch.setattr(augment, "posterize", posterize)
    save = loop.atomic_save

    def save_then_poison(obj, path):
        save(obj, path)
        if str(path).endswith("last.pth"):
            flag.touch()

    monkeypatch.setattr(loop, "atomic_save", save_then_poison)


def test_a_worker_error_is_one_line_keeps_the_checkpoint_and_the_run_resumes_with_another_augmentation(
        tmp_path, capsys, monkeypatch):
    folder = make_image_folder(tmp_path / "data", {"train": 40, "val": 4})
    _poison_posterize(monkeypatch, tmp_path / "poison")
    args = ["train", "--data", str(folder), *fast_overrides(tmp_path, train__epochs=3, data__workers=2,
                                                            aug__auto_augment="rand-m10-n5-mstd0-inc1"), "log.name=run"]
    err = _one_line(capsys, main(args), "crossformer train: error: cannot use image", str(folder),
                    "step RandAugment failed (ValueError: bits must be between or equal to 1 and 8)",
                    "this step is set by aug.auto_augment (null turns it off)",
                    "the run folder keeps its last good checkpoint", "(epoch 1)", f"--resume {tmp_path / 'run'}")
    assert "DataLoader worker" not in err
    run = tmp_path / "run"
    assert torch.load(run / "last.pth", weights_only=True)["epoch"] == 1
    # the same settings would fail again: change the augmentation and finish
    assert main(["train", "--resume", str(run), "aug.auto_augment=null", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "resuming at epoch 2 of" in out
    assert "changed on resume: aug.auto_augment: rand-m10-n5-mstd0-inc1 -> null (recorded in config.yaml)" in out
    text = (run / "config.yaml").read_text()
    assert text.startswith("# resumed at epoch 2 with changes: aug.auto_augment: rand-m10-n5-mstd0-inc1 -> null")
    assert yaml.safe_load(text)["aug"]["auto_augment"] is None
    last = torch.load(run / "last.pth", weights_only=True)
    assert last["epoch"] == 3 and last["resumes"] == [{"epoch": 1, "changes": ["aug.auto_augment: rand-m10-n5-mstd0-inc1 -> null"]}]
    # the model, optimizer and schedule still cannot change on resume
    assert main(["train", "--resume", str(run), "optim.lr=0.5"]) == 2
    assert "optim.lr cannot change" in capsys.readouterr().err


def test_a_new_seed_on_resume_reseeds(tmp_path, capsys, monkeypatch):
    folder = make_image_folder(tmp_path / "data", {"train": 8, "val": 2})
    common = fast_overrides(tmp_path, data__path=str(folder), data__dataset="folder", train__epochs=2)
    real_round = loop.Trainer.train_round

    def stop_in_epoch_2(self, index):
        if index == 1:
            raise KeyboardInterrupt  # Ctrl-C during the second epoch
        return real_round(self, index)

    monkeypatch.setattr(loop.Trainer, "train_round", stop_in_epoch_2)
    assert main(["train", "--config", "folder", *common, "log.name=a"]) == 130
    monkeypatch.undo()
    run = tmp_path / "a"
    assert torch.load(run / "last.pth", weights_only=True)["epoch"] == 1
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "train.seed=7"]) == 0
    assert "changed on resume: train.seed: 0 -> 7" in capsys.readouterr().out
    assert torch.load(run / "last.pth", weights_only=True)["epoch"] == 2


def test_stale_temporary_files_of_killed_writers_go_on_resume(tmp_path):
    folder = make_image_folder(tmp_path / "data", {"train": 8, "val": 2})
    common = fast_overrides(tmp_path, data__path=str(folder), data__dataset="folder", train__epochs=1)
    assert main(["train", "--config", "folder", *common, "log.name=a"]) == 0
    run = tmp_path / "a"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = run / f".last.pth.tmp-{dead.pid}"  # a writer SIGKILLed mid-write left this
    stale.write_bytes(b"\0" * 1000)
    alive = run / f".notes.txt.tmp-{os.getpid()}"  # a writer that is still running: not touched
    alive.write_bytes(b"x")
    assert remove_stale_temp_files(run) == [stale]
    stale.write_bytes(b"\0" * 1000)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert not stale.exists() and alive.exists()


def test_short_runs_warm_up_monotonically_to_the_peak_then_follow_the_cosine():
    for epochs in (1, 2, 5, 50):
        cfg = resolve_recipe("classification", "folder", {"data.path": "x", "train.epochs": epochs})
        warmup, note = warmup_epochs(cfg)
        assert warmup == (min(3, 0.1 * epochs)) and bool(note) == (epochs < 30)
        updates = 40
        optimizer = build_optimizer(cfg, torch.nn.Linear(2, 2))
        scheduler, total = build_scheduler(cfg, optimizer, updates)
        assert total == epochs
        lrs = []
        for step in range(1, epochs * updates + 1):
            scheduler.step_update(step)
            lrs.append(optimizer.param_groups[0]["lr"])
        peak = cfg["optim"]["lr"] * lr_scale(cfg)
        top = int(np.argmax(lrs))
        assert lrs[top] >= 0.97 * peak  # reaches the peak (the cosine counts the warm-up: 2.4% below at most)
        assert all(a < b for a, b in zip(lrs[:top], lrs[1:top + 1]))  # strictly rising warm-up
        assert all(a >= b for a, b in zip(lrs[top:], lrs[top + 1:]))  # never rising again
        first = math.ceil(warmup * updates)  # the first step after the warm-up: the peak is there or just before
        assert top + 1 in (first - 1, first)
        t = np.arange(first, epochs * updates + 1)  # from there: the cosine of the whole run, as the official code
        minimum = cfg["optim"]["min_lr"] * lr_scale(cfg)
        cosine = minimum + 0.5 * (peak - minimum) * (1 + np.cos(np.pi * t / (epochs * updates)))
        assert np.allclose(lrs[first - 1:], cosine, rtol=1e-6)
    with pytest.raises(ValueError, match="sched.max_warmup_fraction is null"):  # no cap asked for: refused as before
        resolve_recipe("classification", "folder", {"data.path": "x", "train.epochs": 1, "sched.max_warmup_fraction": None})


def test_sigterm_before_the_first_epoch_leaves_no_run_folder(tmp_path):
    out = tmp_path / "runs"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "crossformer_vision.cli", "train", "train.epochs=3",
                             f"log.output={out}", "log.progress=false", "log.name=t"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:
        if line.strip().startswith("run folder:"):
            assert (out / "t" / "config.yaml").exists()
            proc.send_signal(signal.SIGTERM)
            break
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert stderr.strip() == "crossformer train: terminated"
    assert not (out / "t").exists()


def test_file_system_errors_are_one_line(tmp_path, capsys, monkeypatch):
    folder = make_image_folder(tmp_path / "data", {"train": 8, "val": 2})
    common = fast_overrides(tmp_path, data__path=str(folder), data__dataset="folder", train__epochs=2)
    taken = tmp_path / "a_file"
    taken.write_text("x")
    _one_line(capsys, main(["train", "--config", "folder", *common, f"log.output={taken}"]),
              "the output folder", "is a file, not a folder")
    real_mkdir = type(tmp_path).mkdir

    def read_only(self, *args, **kwargs):
        if self.parent == tmp_path / "ro":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(type(tmp_path), "mkdir", read_only)
    _one_line(capsys, main(["train", "--config", "folder", *common, f"log.output={tmp_path / 'ro'}"]),
              "cannot create a run folder in", "Permission denied", "--output")
    monkeypatch.undo()
    saves = []
    real_save = loop.atomic_save

    def disk_fills(obj, path):
        saves.append(path)
        if len(saves) > 2:  # epoch 1's last.pth and best.pth fit; epoch 2's do not
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_save(obj, path)

    monkeypatch.setattr(loop, "atomic_save", disk_fills)
    _one_line(capsys, main(["train", "--config", "folder", *common, "log.name=full"]),
              "the run stopped: No space left on device", "free some disk space",
              "keeps its last good checkpoint", "(epoch 1)", "--resume")
    assert torch.load(tmp_path / "full" / "last.pth", weights_only=True)["epoch"] == 1


def test_overrides_may_come_after_flags(tmp_path, capsys):
    code = main(["train", "optim.lr=1e-3", "--data", str(tmp_path / "missing"), "aug.mixup=0", "--epochs", "1",
                 "train.epochz=2"])
    _one_line(capsys, code, "unknown config key 'train.epochz'")  # every override reached the recipe
    _one_line(capsys, main(["train", "--epochs", "1", "stray"]), "override 'stray' must look like section.field=value")
    with pytest.raises(SystemExit):  # a command without recipe overrides: argparse's usual error
        main(["info", "crossformer_tiny", "optim.lr=1"])
    assert "unrecognized arguments: optim.lr=1" in capsys.readouterr().err
