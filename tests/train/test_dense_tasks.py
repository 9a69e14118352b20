"""crossformer detect|segment train/eval/predict end to end on a tiny synthetic dataset, resume, DDP, bad input."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from crossformer_vision.cli import main
from crossformer_vision.data.samplers import StepSampler
from crossformer_vision.data.synthetic import make_synthetic_dataset
from crossformer_vision.train import loop
from crossformer_vision.train.config import resolve_recipe

from dense_helpers import DETECT, SEGMENT, TINY_BACKBONE, TINY_DATA, box_ann, rows, runs_in, tiny, write_coco, write_label_folder

@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the synthetic data's default home


# ---------------------------------------------------------------------------------------------- recipes, sampler
def test_recipes_resolve_and_overrides_reach_nested_fields():
    cfg = resolve_recipe("detection", None, ["model.kwargs.min_size=96", "optim.lr=2e-4", "train.epochs=3"])
    assert cfg["model"]["arch"] == "maskrcnn" and cfg["model"]["kwargs"]["min_size"] == 96
    assert cfg["model"]["kwargs"]["max_size"] == 192 and cfg["optim"]["lr"] == 2e-4
    paper = resolve_recipe("segmentation", "upernet_crossformer_small_ade20k_160k", ["data.root=/x"])
    assert (paper["optim"]["lr"], paper["sched"]["warmup_iters"], paper["train"]["iterations"]) == (6e-5, 1500, 160_000)
    with pytest.raises(ValueError, match="did you mean optim.lr"):
        resolve_recipe("detection", None, ["optim.lrr=1"])
    with pytest.raises(ValueError, match="segmentation recipe"):
        resolve_recipe("detection", "segmentation_demo")
    with pytest.raises(ValueError, match="exactly one of train.epochs and train.iterations"):
        resolve_recipe("detection", None, ["train.iterations=10"])


def test_step_sampler_is_the_same_stream_from_any_start_and_splits_steps_between_ranks():
    def take(sampler, start, steps):
        sampler.start_step = start
        it = iter(sampler)
        return [[next(it) for _ in range(sampler.micro_batch)] for _ in range(steps)]

    whole = take(StepSampler(10, 4), 0, 10)  # 40 samples: 4 passes over 10
    assert take(StepSampler(10, 4), 3, 7) == whole[3:]
    stream = [i for step in whole for i in step]
    for p in range(4):
        assert sorted(stream[10 * p: 10 * (p + 1)]) == list(range(10))  # every pass sees every sample once
    assert stream[:10] != stream[10:20]  # a new order per pass
    ranks = [take(StepSampler(10, 2, rank, 2), 0, 10) for rank in (0, 1)]
    assert [a + b for a, b in zip(*ranks)] == whole  # two processes x 2 = one process x 4


# ---------------------------------------------------------------------------------------------- end to end
def test_detect_train_eval_predict(tmp_path, capsys):
    assert main(["detect", "train", "--name", "det", *tiny(tmp_path, *DETECT)]) == 0
    run = tmp_path / "runs" / "det"
    assert {"config.yaml", "metrics.csv", "curves.png", "last.pth", "best.pth", "summary.json"} <= set(runs_in(run))
    history = rows(run)
    assert [r["epoch"] for r in history] == ["1", "2"] and [r["iteration"] for r in history] == ["2", "4"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "detection" and summary["iterations"] == 4 and summary["best_metric"] == "bbox_AP"
    assert {"bbox_AP", "bbox_AP50", "segm_AP", "segm_APl"} <= set(summary["best"])
    best = torch.load(run / "best.pth", weights_only=True)
    assert best["build_config"]["arch"] == "maskrcnn" and best["class_names"] == ["circle", "square", "triangle", "cross"]
    assert "optimizer" in torch.load(run / "last.pth", weights_only=True) and "optimizer" not in best
    capsys.readouterr()

    # eval of best.pth on the run's own validation split reproduces the number recorded during training
    assert main(["detect", "eval", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    recorded = history[best["round"] - 1]
    assert result["images"] == 4
    for key in ("bbox_AP", "bbox_AP50", "segm_AP"):
        assert result[key] == pytest.approx(float(recorded[key]), abs=1e-5)
    assert main(["detect", "eval", str(run / "last.pth"), TINY_DATA, "--data", "synthetic"]) == 0
    text = capsys.readouterr().out
    assert "SYNTHETIC" in text and "box " in text and "mask " in text and "AP50" in text
    # the same data read as a COCO folder, and the weights as a bare state dict built from --config
    torch.save(best["model"], tmp_path / "state.pth")
    assert main(["detect", "eval", str(tmp_path / "state.pth"), TINY_BACKBONE, "model.num_classes=4",
                 "model.fpn_channels=32", "model.kwargs.min_size=64", "model.kwargs.max_size=96",
                 "--config", "detection_demo", "--data", str(tmp_path / "shapes"), "--split", "val", "--json"]) == 0
    as_coco = json.loads(capsys.readouterr().out)
    assert as_coco["data"].endswith("instances_val.json") and as_coco["bbox_AP"] == pytest.approx(result["bbox_AP"])

    # predict: one PNG per image, at the image's size, and JSON detections in the image's coordinates
    shapes = make_synthetic_dataset(tmp_path / "shapes", num_train=8, num_val=4, image_size=(64, 96), max_objects=2,
                                    colour_by_class=True)
    images = sorted(shapes.image_dir("val").glob("*.png"))[:2]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert main(["detect", "predict", *map(str, images), str(tmp_path / "broken.png"), "-k", str(run), "-o",
                 str(tmp_path / "drawn"), "--score-threshold", "0.0", "--json"]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert "skipped 1 unreadable" in out.err and len(result["predictions"]) == 2
    for item, source in zip(result["predictions"], images):
        drawn = Image.open(item["output"])
        assert drawn.size == Image.open(source).size and drawn.mode == "RGB"
        for det in item["detections"]:
            assert det["class"] in best["class_names"] and 0.0 <= det["score"] <= 1.0
            x0, y0, x1, y1 = det["box"]
            assert 0 <= x0 <= x1 <= drawn.size[0] and 0 <= y0 <= y1 <= drawn.size[1]


def test_segment_train_resume_eval_predict(tmp_path, capsys, monkeypatch):
    # the straight run
    assert main(["segment", "train", "--name", "whole", *tiny(tmp_path, *SEGMENT)]) == 0
    whole = tmp_path / "runs" / "whole"
    assert [r["round"] for r in rows(whole)] == ["1", "2"] and rows(whole)[-1]["iteration"] == "6"

    # the same run stopped after its first evaluation, then resumed: the same weights and metrics
    original = loop.Trainer.train_round

    def stop_in_round_2(self, index):
        if index == 1:
            raise KeyboardInterrupt
        return original(self, index)

    monkeypatch.setattr(loop.Trainer, "train_round", stop_in_round_2)
    assert main(["segment", "train", "--name", "cut", *tiny(tmp_path, *SEGMENT)]) == 130
    monkeypatch.undo()
    cut = tmp_path / "runs" / "cut"
    assert torch.load(cut / "last.pth", weights_only=True)["num_updates"] == 3 and not (cut / "summary.json").exists()
    capsys.readouterr()
    assert main(["segment", "train", "--resume", str(cut)]) == 0
    assert "resuming at round 2 of" in capsys.readouterr().out
    a, b = (torch.load(run / "last.pth", weights_only=True) for run in (whole, cut))
    assert b["num_updates"] == 6 and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [r["mIoU"] for r in rows(whole)] == [r["mIoU"] for r in rows(cut)]
    assert main(["segment", "train", "--resume", str(cut), "optim.lr=0.1"]) == 2
    assert "optim.lr cannot change" in capsys.readouterr().err

    # eval: mIoU, per-class IoU, pixel accuracy; the same mIoU as recorded for best.pth
    assert main(["segment", "eval", str(cut), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    best = torch.load(cut / "best.pth", weights_only=True)
    assert result["mIoU"] == pytest.approx(float(rows(cut)[best["round"] - 1]["mIoU"]), abs=1e-6)
    assert set(result["per_class_iou"]) == {"background", "circle", "square", "triangle", "cross"}
    assert 0.0 <= result["pixel_accuracy"] <= 1.0
    assert main(["segment", "eval", str(cut)]) == 0
    assert "mIoU" in (text := capsys.readouterr().out) and "background" in text

    # predict: a colour-coded PNG per image, class shares summing to 1
    image = next((tmp_path / "shapes" / "images" / "val").glob("*.png"))
    assert main(["segment", "predict", str(image), "-k", str(cut), "-o", str(tmp_path / "drawn"), "--json"]) == 0
    item = json.loads(capsys.readouterr().out)["predictions"][0]
    assert Image.open(item["output"]).size == Image.open(image).size
    assert sum(item["classes"].values()) == pytest.approx(1.0, abs=1e-3)


def test_two_process_gloo_detection_training(tmp_path, capsys):
    overrides = tiny(tmp_path, "model.arch=retinanet", "data.masks=false", "model.kwargs={min_size: 64, max_size: 96}",
                     "model.fpn_channels=32", "train.epochs=1", "log.name=ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "crossformer_vision.cli", "detect", "train", "--device", "cpu", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run folder:") == 1  # only rank 0 prints (and writes)
    run = tmp_path / "runs" / "ddp"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["iterations"] == 2
    assert runs_in(tmp_path / "runs") == ["ddp"]
    # the evaluation gathered both processes' images: the same AP as one process evaluating the saved weights
    capsys.readouterr()
    assert main(["detect", "eval", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 4
    assert result["bbox_AP50"] == pytest.approx(float(rows(run)[0]["bbox_AP50"]), abs=1e-6)


# ---------------------------------------------------------------------------------------------- bad input
def _fails(capsys, argv, *words):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


def test_bad_input_is_one_line_exit_2_and_leaves_no_run_folder(tmp_path, capsys):
    runs = tmp_path / "runs"
    common = tiny(tmp_path, *DETECT, synthetic=False)
    _fails(capsys, ["detect", "train", "--data", str(tmp_path / "nowhere"), *common], "not found", "nowhere")
    # COCO json whose images are missing
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        ann = write_coco(tmp_path / f"raw_{split}", [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}],
                         [box_ann(1, 1, 3, (4, 4, 20, 20))], files=False)
        ann.rename(coco / "annotations" / f"instances_{split}.json")
        (coco / split).mkdir()
    _fails(capsys, ["detect", "train", "--data", str(coco), *common], "a.png", "missing")
    # class ids beyond num_classes: detection categories vs the recipe, segmentation label ids
    _fails(capsys, ["detect", "train", *tiny(tmp_path, *DETECT), "--num-classes", "2"], "4 categories", "2 classes")
    _fails(capsys, ["detect", "train", *tiny(tmp_path, *DETECT), "eval.best_metric=mIoU"], "not a detection metric")
    write_label_folder(tmp_path / "seg", {"x": np.full((64, 64), 7, np.uint8)})
    split = "{images: %s, labels: %s}" % (tmp_path / "seg" / "images", tmp_path / "seg" / "labels")
    _fails(capsys, ["segment", "train", "--num-classes", "3", *tiny(tmp_path, *SEGMENT, synthetic=False), "data.format=folder",
                    f"data.train={split}", f"data.val={split}"], "class ids [7]", "num_classes=3")
    assert runs_in(runs) == []

    # corrupt checkpoints, and checkpoints of another architecture
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x80\x02garbage")
    _fails(capsys, ["detect", "eval", str(bad)], "bad.pth")
    _fails(capsys, ["segment", "predict", str(tmp_path), "-k", str(bad)], "bad.pth")
    assert main(["segment", "train", "--name", "seg", *tiny(tmp_path, *SEGMENT[:-2], "train.iterations=1")]) == 0
    seg = runs / "seg"
    _fails(capsys, ["detect", "eval", str(seg)], "segmentation run", "crossformer segment")
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "last.pth").write_bytes((seg / "last.pth").read_bytes()[:5000])
    _fails(capsys, ["segment", "train", "--resume", str(truncated)], "truncated or corrupt")
    state = torch.load(seg / "best.pth", weights_only=True)["model"]
    torch.save(state, tmp_path / "segmenter_state.pth")
    _fails(capsys, ["detect", "eval", str(tmp_path / "segmenter_state.pth"), "model.num_classes=4", TINY_DATA,
                    f"data.root={tmp_path / 'shapes'}", "--config", "detection_demo", "--data", "synthetic"],
           "segmenter_state.pth")
    assert runs_in(runs) == ["seg"]
