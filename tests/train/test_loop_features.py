"""Every task gets every loop feature: EMA, gradient accumulation, step-exact resume, compile, the same options."""
import csv

import pytest
import torch

from crossformer_vision.cli import main
from crossformer_vision.train import loop
from crossformer_vision.train.config import resolve_recipe
from crossformer_vision.train.tasks import TASKS
from crossformer_vision.utils.distributed import init_distributed
from dense_helpers import DETECT, SEGMENT, tiny


def _rows(run):
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _stop_after_first_round(monkeypatch):
    real = loop.Trainer.train_round

    def stop(self, index):
        if index == 1:
            raise KeyboardInterrupt
        return real(self, index)

    monkeypatch.setattr(loop.Trainer, "train_round", stop)


def test_segmentation_with_ema_and_accumulation_resumes_exactly(tmp_path, monkeypatch, capsys):
    common = ["segment", "train", *tiny(tmp_path, *SEGMENT, "train.iterations=4", "eval.interval=2"), "--ema",
              "--accum-steps", "2", "eval.best_metric=mIoU_ema"]
    assert main([*common, "--name", "whole"]) == 0
    out = capsys.readouterr().out
    assert "(1 process x 2 x 2 accumulation)" in out and ", EMA" in out
    whole = tmp_path / "runs" / "whole"
    rows = _rows(whole)
    assert len(rows) == 2 and {"mIoU", "mIoU_ema", "pixel_accuracy_ema"} <= set(rows[0])
    last = torch.load(whole / "last.pth", weights_only=True)
    assert last["model_ema"] is not None and last["best"]["metric"] == "mIoU_ema" and last["num_updates"] == 4
    _stop_after_first_round(monkeypatch)
    assert main([*common, "--name", "cut"]) == 130
    monkeypatch.undo()
    cut = tmp_path / "runs" / "cut"
    assert torch.load(cut / "last.pth", weights_only=True)["num_updates"] == 2
    assert main(["segment", "train", "--resume", str(cut)]) == 0
    done = torch.load(cut / "last.pth", weights_only=True)
    for key in ("model", "model_ema"):
        assert max(float((last[key][k].float() - done[key][k].float()).abs().max()) for k in last[key]) < 1e-6, key
    assert [r["mIoU_ema"] for r in _rows(cut)] == [r["mIoU_ema"] for r in rows]


def test_detection_accumulates_and_keeps_an_ema(tmp_path, capsys):
    assert main(["detect", "train", *tiny(tmp_path, *DETECT), "--ema", "--accum-steps", "2", "--name", "det"]) == 0
    rows = _rows(tmp_path / "runs" / "det")
    assert "bbox_AP_ema" in rows[0] and "(1 process x 2 x 2 accumulation)" in capsys.readouterr().out


@pytest.mark.parametrize("task", ["classification", "detection", "segmentation"])
def test_every_task_takes_compile_and_the_same_loop_options(task, tmp_path):
    from crossformer_vision.cli import build_parser

    command = {"classification": ["train"], "detection": ["detect", "train"], "segmentation": ["segment", "train"]}[task]
    args = build_parser().parse_args([*command, "--amp", "bf16", "--accum-steps", "2", "--ema", "--compile", "--epochs",
                                      "1", "--resume", "x", "--iterations", "3", "--batch-size", "8", "--seed", "3"])
    assert (args.amp, args.accum_steps, args.ema, args.compile, args.epochs, args.iterations) == ("bf16", 2, True, True, 1, 3)
    if task == "classification":
        from train_helpers import fast_overrides, make_image_folder

        data = make_image_folder(tmp_path / "data", {"train": 6, "val": 1})
        overrides = fast_overrides(tmp_path, data__path=str(data), data__dataset="folder")
    else:
        overrides = tiny(tmp_path, *(DETECT if task == "detection" else SEGMENT))
    cfg = TASKS[task].complete_config(resolve_recipe(task, None if task != "classification" else "folder",
                                                     [*overrides, "train.compile=true"]))
    trainer = loop.Trainer(TASKS[task](cfg), init_distributed("cpu"))
    assert isinstance(trainer.train_model, torch._dynamo.eval_frame.OptimizedModule)
    assert trainer.train_model._orig_mod is trainer.model
