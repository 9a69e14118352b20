"""Detection and segmentation on damaged real folders: unreadable images and labels are skipped and counted (never
repeated in an evaluation), sizes that contradict the json fail before a run folder exists, 16-bit images keep
their brightness."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from crossformer_vision.cli import main
from crossformer_vision.data.detection import CocoInstances
from crossformer_vision.data.images import load_image_tensor as load_image
from crossformer_vision.data.segmentation import SegmentationFolder
from crossformer_vision.data.synthetic import make_synthetic_dataset
from crossformer_vision.train.inference import evaluate_dense
from dense_helpers import DETECT, SEGMENT, rows, runs_in, tiny


@pytest.fixture()
def shapes(tmp_path):
    """The synthetic shapes written as a user's COCO folder (images/<split>/, annotations/) and label folder."""
    make_synthetic_dataset(tmp_path / "data", num_train=8, num_val=4, image_size=(64, 96), max_objects=2, seed=0)
    return tmp_path / "data"


def _damage(folder, names, how):
    for name in names:
        path = folder / name
        data = path.read_bytes()
        path.write_bytes(b"not an image" if how == "garbage" else data[: len(data) // 3])


def test_detection_skips_and_counts_unreadable_images(shapes, tmp_path, capsys):
    _damage(shapes / "images" / "train", ["00000.png"], "garbage")  # header unreadable: dropped before training
    _damage(shapes / "images" / "train", ["00003.png"], "truncated")  # decodes badly: skipped while training
    _damage(shapes / "images" / "val", ["00001.png"], "truncated")  # skipped in evaluation, never counted twice
    dataset = CocoInstances(shapes / "images" / "train", shapes / "annotations" / "instances_train.json")
    assert len(dataset) == 7 and len(dataset.issues["unreadable_image"]) == 1 and len(dataset.skipped) == 1
    code = main(["detect", "train", "--data", str(shapes), "--name", "det", *tiny(tmp_path, *DETECT, synthetic=False)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "skipped 1 unreadable train files (e.g." in out and "00000.png" in out
    assert "unreadable images skipped in this epoch: " in out
    history = rows(tmp_path / "runs" / "det")
    assert len(history) == 2 and sum(int(r["skipped"]) for r in history) >= 1
    result = evaluate_dense("detection", tmp_path / "runs" / "det")
    assert result["images"] == 3  # 4 validation images, one unreadable: evaluated once each, the bad one left out


def test_a_coco_size_that_contradicts_the_image_fails_before_a_run_folder(shapes, tmp_path, capsys):
    ann = shapes / "annotations" / "instances_train.json"
    coco = json.loads(ann.read_text())
    image = coco["images"][2]
    real = f"{image['file_name']} is {image['width']}x{image['height']}, json {image['width'] + 10}x{image['height']}"
    image["width"] += 10
    ann.write_text(json.dumps(coco))
    code = main(["detect", "train", "--data", str(shapes), *tiny(tmp_path, *DETECT, synthetic=False)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert "differ in size from what" in err and real in err
    assert runs_in(tmp_path / "runs") == []


def test_segmentation_skips_unreadable_images_and_labels(shapes, tmp_path, capsys):
    _damage(shapes / "labels" / "train", ["00001.png"], "garbage")
    _damage(shapes / "images" / "train", ["00004.png"], "truncated")
    dataset = SegmentationFolder(shapes / "images" / "train", shapes / "labels" / "train", 5)
    assert len(dataset) == 7 and dataset.skipped[0][0].endswith("labels/train/00001.png")
    code = main(["segment", "train", "--data", str(shapes), "--num-classes", "5", "--name", "seg",
                 *tiny(tmp_path, *SEGMENT, synthetic=False), "data.check_labels=false"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "skipped 1 unreadable train files" in out


def test_16_bit_images_keep_their_brightness(tmp_path):
    grey = np.tile(np.linspace(0, 255, 64), (32, 1)).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "eight.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    eight, sixteen = load_image(tmp_path / "eight.png"), load_image(tmp_path / "sixteen.png")
    assert sixteen.shape == (3, 32, 64) and torch.allclose(eight, sixteen, atol=1 / 255)


def test_a_failing_transform_in_a_worker_is_one_line_naming_the_file(shapes, tmp_path, capsys, monkeypatch):
    from crossformer_vision.train.tasks import dense as datasets

    def flip_that_fails(train, flip_prob=0.5):
        def fail(image, target):
            raise RuntimeError("flip\nbroke")
        return fail

    monkeypatch.setattr(datasets, "detection_transforms", flip_that_fails)
    code = main(["detect", "train", "--data", str(shapes), *tiny(tmp_path, *DETECT, "data.workers=2", synthetic=False)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert "crossformer detect: error: cannot use image" in err and "/images/train/" in err
    assert "its transform failed (RuntimeError: flip broke)" in err and "no epoch had finished" in err
    assert runs_in(tmp_path / "runs") == []
