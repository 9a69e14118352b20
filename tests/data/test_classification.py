"""Datasets of the training command: the fixed digits split, ImageFolder trees with bad files, timm transforms."""
import numpy as np
import pytest
import torch
from PIL import Image

from crossformer_vision.data import (
    DigitsDataset,
    ImageFolderDataset,
    build_dataset,
    build_transform,
    collate_skipped,
    digits_split,
    find_images,
)
from crossformer_vision.train.config import resolve_recipe
from train_helpers import CLASSES, make_image_folder


def test_digits_split_is_fixed_stratified_and_disjoint():
    from sklearn.datasets import load_digits

    split = digits_split()
    assert {k: len(v) for k, v in split.items()} == {"train": 1257, "val": 180, "test": 360}
    everything = np.concatenate(list(split.values()))
    assert len(np.unique(everything)) == 1797  # disjoint and complete
    again = digits_split()
    assert all(np.array_equal(split[k], again[k]) for k in split)
    target = load_digits().target
    for name, n in (("test", 360), ("val", 180)):
        counts = np.bincount(target[split[name]], minlength=10)
        expected = np.bincount(target, minlength=10) * n / 1797
        assert np.all(np.abs(counts - expected) <= 1), (name, counts)  # stratified
    assert split["test"][:5].tolist() == [21, 24, 28, 34, 35]  # the documented split, pinned


def test_digits_dataset_is_32px_normalised_and_eval_is_deterministic():
    cfg = resolve_recipe("classification", "digits")
    train = build_dataset(cfg, "train", is_training=True)
    test = build_dataset(cfg, "test")
    image, target, skipped = train[0]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32 and skipped == 0
    assert -1.0 <= image.min() and image.max() <= 1.0 and image.max() > 0.5  # (x - 0.5) / 0.5 of 0..1
    assert 0 <= target < 10 and train.classes == [str(i) for i in range(10)]
    assert torch.equal(test[3][0], test[3][0])
    raw = DigitsDataset("test")[3][0]
    assert raw.size == (8, 8) and raw.mode == "L"
    # the eval transform only upsamples: the 8x8 scan's mean brightness survives
    assert abs(float(test[3][0].mean()) - (np.asarray(raw, np.float32).mean() / 255 - 0.5) / 0.5) < 0.05


def test_image_folder_reads_mixed_sizes_and_modes(tmp_path):
    root = make_image_folder(tmp_path / "data", {"train": 5})
    sizes = {Image.open(p).size for p in (root / "train").rglob("*.png")}
    modes = {Image.open(p).mode for p in (root / "train").rglob("*.png")}
    assert len(sizes) > 3 and {"RGB", "L", "P", "RGBA"} <= modes
    cfg = resolve_recipe("classification", "folder", {"data.path": str(root), "data.img_size": 40})
    dataset = build_dataset(cfg, "train", is_training=True)
    assert dataset.classes == list(CLASSES) and len(dataset) == 15
    images, targets, skipped = collate_skipped([dataset[i] for i in range(len(dataset))])
    assert images.shape == (15, 3, 40, 40) and skipped == 0
    assert targets.tolist() == [0] * 5 + [1] * 5 + [2] * 5


def _write_bad_files(folder):
    (folder / "garbage.jpg").write_bytes(b"this is not an image at all")
    (folder / "empty.png").write_bytes(b"")
    good = folder / "train_000.png"
    (folder / "truncated.png").write_bytes(good.read_bytes()[:60])  # header intact, pixel data cut
    (folder / "notes.txt").write_text("not an image extension: ignored, not counted")


def test_unreadable_files_are_skipped_and_counted(tmp_path):
    root = make_image_folder(tmp_path / "data", {"train": 4})
    _write_bad_files(root / "train" / "dot")
    transform = build_transform(resolve_recipe("classification", "folder", {"data.path": "x", "data.img_size": 32})["data"])
    header = ImageFolderDataset(root / "train", transform, verify="header")
    assert len(header) == 13 and {p.split("/")[-1] for p, _ in header.skipped} == {"garbage.jpg", "empty.png"}
    assert all("Error" in reason for _, reason in header.skipped)
    # the truncated file passes the header check; reading it later skips to the next file and counts it
    i = [p for p, _ in header.samples].index(str(root / "train" / "dot" / "truncated.png"))
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        image, target, skipped = header[i]
    assert skipped == 1 and image.shape == (3, 32, 32) and target == header.samples[i + 1][1]
    full = ImageFolderDataset(root / "train", transform, verify="full")
    assert len(full) == 12 and len(full.skipped) == 3


def test_folder_errors_say_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        ImageFolderDataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class subfolders: expected one folder per class"):
        ImageFolderDataset(tmp_path / "empty")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (32, 32)).save(flat / "a.png")
    with pytest.raises(ValueError, match="1 images but no class subfolders"):
        ImageFolderDataset(flat)
    (tmp_path / "hollow" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="no readable images"):
        ImageFolderDataset(tmp_path / "hollow")
    root = make_image_folder(tmp_path / "data", {"train": 1, "val": 1})
    (root / "val" / "zebra").mkdir()
    Image.new("RGB", (32, 32)).save(root / "val" / "zebra" / "z.png")
    with pytest.raises(ValueError, match=r"class folders the model does not know: \['zebra'\]"):
        ImageFolderDataset(root / "val", classes=CLASSES)
    cfg = resolve_recipe("classification", "folder", {"data.path": str(root), "data.val_split": "valid"})
    with pytest.raises(FileNotFoundError, match="no val split: .*valid does not exist"):
        build_dataset(cfg, "val")


def test_find_images_expands_folders(tmp_path):
    root = make_image_folder(tmp_path / "data", {"train": 2})
    files = find_images([root / "train" / "bar", root / "train" / "dot" / "train_000.png"])
    assert [f.name for f in files] == ["train_000.png", "train_001.png", "train_000.png"]
    with pytest.raises(FileNotFoundError, match="no such image file or folder"):
        find_images([tmp_path / "nope.png"])
    (tmp_path / "void").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        find_images([tmp_path / "void"])


def test_each_unreadable_file_is_counted_once_per_pass(tmp_path):
    root = make_image_folder(tmp_path / "data", {"train": 12})
    good = (root / "train" / "bar" / "train_000.png").read_bytes()
    for i in range(10):  # ten truncated files in a row: headers fine, pixels cut
        (root / "train" / "bar" / f"train_{i:03d}.png").write_bytes(good[:80])
    transform = build_transform(resolve_recipe("classification", "folder", {"data.path": "x", "data.img_size": 32})["data"])
    dataset = ImageFolderDataset(root / "train", transform)
    with pytest.warns(UserWarning):
        total = sum(dataset[i][2] for i in range(len(dataset)))
    assert total == 10  # not one count per retry (it was 55 here: sample i retried 10 - i bad files)


def test_empty_class_folders_and_files_given_as_folders_are_refused(tmp_path):
    root = make_image_folder(tmp_path / "data", {"train": 2, "val": 1})
    (root / "train" / "zebra").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*zebra has no readable images: a class without training "
                                         r"images cannot be learned"):
        ImageFolderDataset(root / "train")
    assert len(ImageFolderDataset(root / "val", classes=list(CLASSES) + ["zebra"])) == 3  # fine where it evaluates
    with pytest.raises(FileNotFoundError, match="is a file, not a folder"):
        ImageFolderDataset(root / "val" / "bar" / "val_000.png")
    cfg = resolve_recipe("classification", "folder", {"data.path": str(root / "val" / "bar" / "val_000.png")})
    with pytest.raises(FileNotFoundError, match="data.path .* is a file, not a folder"):
        build_dataset(cfg, "train")
