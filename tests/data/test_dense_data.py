"""Datasets: COCO and label-PNG validation (errors or counted skips), the synthetic generator's exact truth,
transforms, collate functions and drawings."""
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from crossformer_vision import dense
from crossformer_vision.data import detection as det_data
from crossformer_vision.data import segmentation as seg_data
from crossformer_vision.data import synthetic as synthetic_data
from crossformer_vision.train import visualize
from dense_helpers import box_ann, write_coco, write_label_folder

IMAGES = [{"id": 1, "file_name": "a.png", "width": 64, "height": 48},
          {"id": 2, "file_name": "b.png", "width": 80, "height": 60}]


def coco(tmp_path, annotations, images=IMAGES, **kwargs):
    return det_data.CocoInstances(tmp_path / "images", write_coco(tmp_path, images, annotations), **kwargs)


# ---------------------------------------------------------------------------------------------- COCO
def test_coco_labels_boxes_and_masks(tmp_path):
    ds = coco(tmp_path, [box_ann(1, 1, 7, [10, 5, 20, 10]), box_ann(2, 2, 3, [0, 0, 40, 30])], masks=True)
    assert ds.num_classes == 2 and ds.class_names == ["cat", "dog"]
    assert ds.label_to_category_id == {1: 3, 2: 7}  # categories sorted by id get labels 1, 2
    image, target = ds[0]
    assert image.shape == (3, 48, 64) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    assert target["boxes"].tolist() == [[10.0, 5.0, 30.0, 15.0]] and target["labels"].tolist() == [2]
    assert target["image_id"] == 1
    assert target["masks"].shape == (1, 48, 64) and int(target["masks"].sum()) == 200
    ds.check_num_classes(2)
    with pytest.raises(ValueError, match="build the model with num_classes=2"):
        ds.check_num_classes(80)


def test_unusable_annotations_are_dropped_with_counts_and_logged(tmp_path, caplog):
    anns = [
        box_ann(1, 1, 3, [10, 5, 20, 10]),
        box_ann(2, 1, 3, [10, 5, 0, 10]),          # zero width
        box_ann(3, 1, 7, [100, 5, 20, 10]),        # entirely right of the 64-pixel-wide image
        box_ann(4, 1, 7, [50, 40, 30, 30]),        # partly outside: clipped to [50, 40, 14, 8]
        box_ann(5, 2, 3, [5, 5, 10, 10], iscrowd=1),
        {**box_ann(6, 2, 7, [20, 20, 10, 10]), "segmentation": []},  # no mask
    ]
    with caplog.at_level(logging.WARNING, logger="crossformer_vision.dense.datasets"):
        ds = coco(tmp_path, anns, masks=True)
    assert ds.issues["zero_area_box"] == [2] and ds.issues["box_outside_image"] == [3]
    assert ds.issues["clipped_box"] == [4] and ds.issues["crowd"] == [5] and ds.issues["empty_mask"] == [6]
    assert ds.issues["empty_image"] == [2]  # only a crowd region and an unusable annotation left
    assert "1 zero area box, 1 box outside image, 1 empty mask" in caplog.text
    assert sorted(ds.coco.anns) == [1, 4, 5]  # the evaluation ground truth is the cleaned one
    assert ds.coco.anns[4]["bbox"] == [50.0, 40.0, 14.0, 8.0]
    _, target = ds[0]
    assert target["boxes"].tolist() == [[10.0, 5.0, 30.0, 15.0], [50.0, 40.0, 64.0, 48.0]]
    _, target = ds[1]
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 60, 80)  # crowd is not a target
    assert len(coco(tmp_path, anns, masks=True, skip_empty_images=True)) == 1


def test_structural_problems_raise_with_ids_and_fix(tmp_path):
    good = box_ann(1, 1, 3, [10, 5, 20, 10])
    with pytest.raises(ValueError, match=r"annotations 9 .*use category ids 42 .*not in 'categories'"):
        coco(tmp_path, [good, box_ann(9, 1, 42, [0, 0, 5, 5])])
    with pytest.raises(ValueError, match=r"annotations 9 .*refer to image ids 5 .*add those images"):
        coco(tmp_path, [good, box_ann(9, 5, 3, [0, 0, 5, 5])])
    with pytest.raises(ValueError, match=r"duplicate image ids 1"):
        coco(tmp_path, [good], images=[IMAGES[0], {**IMAGES[1], "id": 1}])
    with pytest.raises(ValueError, match=r"duplicate annotation ids 1"):
        coco(tmp_path, [good, box_ann(1, 2, 3, [0, 0, 5, 5])])
    with pytest.raises(ValueError, match="no usable annotations .* 1 zero area box"):
        coco(tmp_path, [box_ann(1, 1, 3, [10, 5, 20, 0])])
    with pytest.raises(ValueError, match="no usable annotations"):
        coco(tmp_path, [])
    with pytest.raises(ValueError, match=r"bbox \[1, 2\]; expected \[x, y, width, height\]"):
        coco(tmp_path, [{**good, "bbox": [1, 2]}])
    with pytest.raises(ValueError, match="RLE mask of size"):
        rle = mask_utils.encode(np.asfortranarray(np.ones((10, 10), np.uint8)))
        rle["counts"] = rle["counts"].decode()
        coco(tmp_path, [{**good, "segmentation": rle}], masks=True)
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        det_data.CocoInstances(tmp_path, path)
    path.write_text(json.dumps({"images": IMAGES, "categories": []}))
    with pytest.raises(ValueError, match=r"lacks the list\(s\) \['annotations'\]"):
        det_data.CocoInstances(tmp_path, path)


def test_missing_image_files_raise_or_are_skipped(tmp_path):
    anns = [box_ann(1, 1, 3, [10, 5, 20, 10]), box_ann(2, 2, 3, [0, 0, 40, 30])]
    ann_file = write_coco(tmp_path, IMAGES, anns)
    (tmp_path / "images" / "b.png").unlink()
    with pytest.raises(ValueError, match=r"1 of the 2 images .* b.png .*skip_missing_images=True"):
        det_data.CocoInstances(tmp_path / "images", ann_file)
    ds = det_data.CocoInstances(tmp_path / "images", ann_file, skip_missing_images=True)
    assert ds.issues["missing_image"] == [2] and len(ds) == 1
    assert sorted(ds.coco.imgs) == [1] and sorted(ds.coco.anns) == [1]  # nor evaluated


def test_declared_size_must_match_the_file(tmp_path):
    ds = coco(tmp_path, [box_ann(1, 1, 3, [10, 5, 20, 10])])
    Image.new("RGB", (50, 48)).save(tmp_path / "images" / "a.png")
    with pytest.raises(ValueError, match=r"a.png is 50x48 pixels but .* says 64x48"):
        ds[0]


# ---------------------------------------------------------------------------------------------- label PNGs
def test_segmentation_folder_and_reduce_zero_label(tmp_path):
    write_label_folder(tmp_path, {"x": np.array([[0, 1, 2], [3, 255, 1]])})
    plain = seg_data.SegmentationFolder(tmp_path / "images", tmp_path / "labels", 4)
    image, label = plain[0]
    assert image.shape == (3, 2, 3) and label.dtype == torch.int64
    assert label.tolist() == [[0, 1, 2], [3, 255, 1]]
    reduced = seg_data.SegmentationFolder(tmp_path / "images", tmp_path / "labels", 3, reduce_zero_label=True)
    assert reduced[0][1].tolist() == [[255, 0, 1], [2, 255, 0]]


def test_label_problems_raise_naming_files_and_fix(tmp_path):
    write_label_folder(tmp_path, {"ok": np.zeros((4, 4)), "big": np.zeros((4, 4))}, image_sizes={"big": (5, 4)})
    with pytest.raises(ValueError, match=r"big.jpg 4x5 vs big.png 4x4 .*nearest-neighbour"):
        seg_data.SegmentationFolder(tmp_path / "images", tmp_path / "labels", 2)
    unchecked = seg_data.SegmentationFolder(tmp_path / "images", tmp_path / "labels", 2, check_sizes=False)
    with pytest.raises(ValueError, match="labels must have their image's size"):
        unchecked[0]  # "big" sorts first

    other = tmp_path / "other"
    write_label_folder(other, {"a": np.array([[0, 1], [5, 9]])})
    ds = seg_data.SegmentationFolder(other / "images", other / "labels", 3)
    with pytest.raises(ValueError, match=r"a.png contains class ids \[5, 9\] outside \[0, 3\).*num_classes=10"):
        ds[0]
    Image.new("RGB", (2, 2)).save(other / "labels" / "a.png")
    with pytest.raises(ValueError, match="is a RGB image; label PNGs must hold one class index"):
        ds[0]
    (other / "labels" / "a.png").unlink()
    with pytest.raises(ValueError, match=r"1 images .* have no label PNG .* a.jpg"):
        seg_data.SegmentationFolder(other / "images", other / "labels", 3)
    with pytest.raises(ValueError, match="is a class id"):
        seg_data.SegmentationFolder(other / "images", other / "labels", 3, ignore_index=1)


def test_ade20k_layout(tmp_path):
    for split in ("training", "validation"):
        folder = tmp_path / "images" / split
        folder.mkdir(parents=True)
        (tmp_path / "annotations" / split).mkdir(parents=True)
        Image.new("RGB", (3, 2)).save(folder / "ADE_0001.jpg")
        Image.fromarray(np.array([[0, 1, 150], [150, 2, 0]], np.uint8)).save(tmp_path / "annotations" / split / "ADE_0001.png")
    ds = seg_data.ade20k(tmp_path, "validation")
    assert ds.num_classes == 150 and ds.reduce_zero_label
    assert ds[0][1].tolist() == [[255, 0, 149], [149, 1, 255]]
    with pytest.raises(ValueError, match="split must be"):
        seg_data.ade20k(tmp_path, "val")


# ---------------------------------------------------------------------------------------------- synthetic
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return synthetic_data.make_synthetic_dataset(tmp_path_factory.mktemp("a"), num_train=6, num_val=6, seed=3)


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synthetic_is_deterministic_and_labelled_synthetic(synthetic, tmp_path):
    again = synthetic_data.make_synthetic_dataset(tmp_path / "b", num_train=6, num_val=6, seed=3)
    assert _files(synthetic.root) == _files(again.root)
    other = synthetic_data.make_synthetic_dataset(tmp_path / "c", num_train=6, num_val=6, seed=4)
    assert _files(other.root) != _files(synthetic.root)
    info = json.loads((synthetic.root / "dataset_info.json").read_text())
    assert info["synthetic"] is True
    assert "SYNTHETIC" in (synthetic.root / "README.md").read_text()
    assert "SYNTHETIC" in json.loads(synthetic.ann_file("train").read_text())["info"]["description"]


def test_synthetic_is_reused_not_overwritten(synthetic, tmp_path):
    before = (synthetic.root / "images" / "train" / "00000.png").stat().st_mtime_ns
    synthetic_data.make_synthetic_dataset(synthetic.root, num_train=6, num_val=6, seed=3)
    assert (synthetic.root / "images" / "train" / "00000.png").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="overwrite=True"):
        synthetic_data.make_synthetic_dataset(synthetic.root, num_train=7, num_val=6, seed=3)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="not empty"):
        synthetic_data.make_synthetic_dataset(tmp_path / "mine")


def test_synthetic_ground_truth_is_exact(synthetic):
    for split in ("train", "val"):
        ds = synthetic.coco(split, masks=True)
        assert not any(v for k, v in ds.issues.items() if k != "empty_image")
        semantic = synthetic.semantic(split)
        for i in range(len(ds)):
            image, target = ds[i]
            label = semantic[i][1]
            assert image.shape[1:] == label.shape and 128 <= label.shape[0] <= 192 and 128 <= label.shape[1] <= 192
            masks = target["masks"].bool()
            assert len(masks) >= 1 and (masks.sum(0) <= 1).all()  # visible masks do not overlap
            covered = torch.zeros_like(label, dtype=torch.bool)
            for mask, box, cls, ann in zip(masks, target["boxes"], target["labels"],
                                           ds.coco.imgToAnns[target["image_id"]]):
                ys, xs = torch.nonzero(mask, as_tuple=True)
                assert box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
                assert ann["area"] == int(mask.sum())
                assert (label[mask] == cls).all()  # semantic label = shape class (1..4)
                covered |= mask
            assert (label[~covered] == 0).all()
            assert set(label.unique().tolist()) <= {0, 1, 2, 3, 4}


def test_colour_by_class_gives_each_class_its_hue(tmp_path):
    import colorsys

    from crossformer_vision.data.synthetic import class_hue

    data = synthetic_data.make_synthetic_dataset(tmp_path, num_train=4, num_val=1, colour_by_class=True)
    assert json.loads((tmp_path / "dataset_info.json").read_text())["parameters"]["colour_by_class"] is True
    ds = data.coco("train", masks=True)
    for i in range(len(ds)):
        image, target = ds[i]
        for mask, label in zip(target["masks"].bool(), target["labels"]):
            # the brightest pixels of a shape (shading only darkens) carry its colour
            pixels = image[:, mask].T
            colour = pixels[pixels.sum(1) >= pixels.sum(1).quantile(0.9)].mean(0)
            hue = colorsys.rgb_to_hsv(*colour.tolist())[0]
            distance = abs((hue - class_hue(int(label) - 1) + 0.5) % 1.0 - 0.5)
            assert distance < 0.05


# ---------------------------------------------------------------------------------------------- transforms, collate, drawing
def test_detection_flip_moves_boxes_and_masks_together(synthetic):
    ds = synthetic.coco("train", masks=True, transforms=det_data.detection_transforms(train=True, flip_prob=1.0))
    plain = synthetic.coco("train", masks=True)
    (image, target), (orig_image, orig) = ds[0], plain[0]
    width = image.shape[-1]
    torch.testing.assert_close(image, orig_image.flip(-1))
    assert torch.equal(target["masks"], orig["masks"].flip(-1))
    expected = orig["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor([width, 0, width, 0])
    torch.testing.assert_close(target["boxes"].as_subclass(torch.Tensor), expected.as_subclass(torch.Tensor))
    images, targets = det_data.collate_detection([ds[0], ds[1]])
    assert type(images[0]) is torch.Tensor and type(targets[0]["boxes"]) is torch.Tensor
    assert det_data.detection_transforms(train=False) is None


def test_segmentation_transforms_and_collate(synthetic):
    torch.manual_seed(0)
    transform = seg_data.segmentation_transforms(crop_size=(160, 200), short_side_range=(100, 120))
    ds = synthetic.semantic("train", transforms=transform)
    image, label = ds[0]
    assert image.shape == (3, 160, 200) and label.shape == (160, 200)
    # the rescaled image is at most 120 x 180 (short side 100-120, aspect at most 1.5), so the crop is padded
    # with ignore labels and black pixels
    padded = label == 255
    assert padded.sum() >= 160 * 200 - 120 * 180 and (image[:, padded] == 0).all()
    assert set(label.unique().tolist()) <= {0, 1, 2, 3, 4, 255}
    plain = synthetic.semantic("val")
    images, labels = seg_data.collate_segmentation([plain[0], plain[1]])
    h = max(plain[0][0].shape[1], plain[1][0].shape[1])
    w = max(plain[0][0].shape[2], plain[1][0].shape[2])
    assert images.shape == (2, 3, h, w) and labels.shape == (2, h, w)
    h0, w0 = plain[0][1].shape
    assert torch.equal(labels[0, :h0, :w0], plain[0][1])
    assert (labels[0, h0:] == 255).all() and (images[0, :, h0:] == 0).all()


def test_pad_to_multiple_for_smp_models():
    x = torch.rand(2, 3, 70, 100)
    padded = dense.pad_to_multiple(x)
    assert padded.shape == (2, 3, 96, 128) and torch.equal(padded[..., :70, :100], x)
    assert (padded[..., 70:, :] == 0).all() and (padded[..., :, 100:] == 0).all()
    labels = dense.pad_to_multiple(torch.zeros(70, 100, dtype=torch.long), value=255)
    assert labels.shape == (96, 128) and (labels[70:] == 255).all() and (labels[:70, :100] == 0).all()
    assert dense.pad_to_multiple(torch.zeros(1, 64, 32)).shape == (1, 64, 32)


def test_drawings(tmp_path):
    image = torch.zeros(3, 60, 80)
    pred = {"boxes": torch.tensor([[10.0, 10.0, 50.0, 40.0], [0.0, 0.0, 5.0, 5.0], [60.0, 40.0, 70.0, 50.0]]),
            "labels": torch.tensor([1, 2, 0]), "scores": torch.tensor([0.9, 0.2, 0.99]),
            "masks": torch.zeros(3, 1, 60, 80)}
    pred["masks"][0, 0, 20:30, 20:30] = 1.0
    drawn = np.asarray(visualize.draw_detections(image, pred, class_names=["circle", "square"]))
    assert drawn.shape == (60, 80, 3)
    assert drawn[10, 30].any() and drawn[25, 25].any()  # box edge and mask of the kept detection
    assert not drawn[2, 2].any() and not drawn[45, 65].any()  # low score, and background label 0: not drawn
    label_map = torch.zeros(60, 80, dtype=torch.long)
    label_map[:30] = 1
    label_map[:, :10] = 255
    seg = np.asarray(visualize.draw_segmentation(image, label_map, 2, background=0))
    assert seg[5, 40].any() and not seg[40, 40].any() and not seg[5, 5].any()
    path = visualize.save_png(visualize.side_by_side(Image.fromarray(drawn), Image.fromarray(seg)), tmp_path / "out" / "x.png")
    with Image.open(path) as saved:
        assert saved.format == "PNG" and saved.size == (80 * 2 + 4, 60)
    with pytest.raises(ValueError, match=".png"):
        visualize.save_png(Image.fromarray(seg), tmp_path / "x.jpg")
