"""Small hand-made COCO / label-PNG datasets for the dense tests."""
import csv
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from PIL import Image


def write_coco(
    root: Path,
    images: List[Dict[str, Any]],
    annotations: List[Dict[str, Any]],
    categories: Optional[List[Dict[str, Any]]] = None,
    files: bool = True,
) -> Path:
    """Write ``root/instances.json`` and (if ``files``) a grey PNG per image of its declared size."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    if files:
        for img in images:
            Image.fromarray(np.full((img["height"], img["width"], 3), 128, np.uint8)).save(root / "images" / img["file_name"])
    categories = categories if categories is not None else [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    path = root / "instances.json"
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return path


def box_ann(ann_id: int, image_id: int, category_id: int, bbox, **extra) -> Dict[str, Any]:
    x, y, w, h = bbox
    polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": list(bbox),
            "area": w * h, "iscrowd": 0, "segmentation": [polygon], **extra}


def write_label_folder(root: Path, labels: Dict[str, np.ndarray], image_sizes: Optional[Dict[str, tuple]] = None) -> None:
    """``root/images/<name>.jpg`` (or the given (h, w)) and ``root/labels/<name>.png`` (mode L)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for name, label in labels.items():
        h, w = (image_sizes or {}).get(name, label.shape)
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(root / "images" / f"{name}.jpg")
        Image.fromarray(label.astype(np.uint8), mode="L").save(root / "labels" / f"{name}.png")


# ---------------------------------------------------------------------------------------------- tiny runs
TINY_BACKBONE = "model.backbone_kwargs={embed_dim: 16, depths: [1, 1, 1, 1], num_heads: [1, 2, 4, 8], drop_path_rate: 0.0}"
TINY_DATA = "data.synthetic={num_train: 8, num_val: 4, image_size: [64, 96], max_objects: 2, colour_by_class: true, seed: 0}"


def tiny(tmp_path, *extra, synthetic=True):
    """Overrides for a run of seconds: 16-dim backbone, 8 train / 4 val images of 64-96 pixels, no bars."""
    data = [TINY_DATA, f"data.root={tmp_path / 'shapes'}"] if synthetic else []
    return [TINY_BACKBONE, *data, f"log.output={tmp_path / 'runs'}",
            "train.batch_size=4", "train.threads=1", "sched.warmup_iters=2", "log.progress=false",
            "log.tensorboard=false", *extra]


DETECT = ("model.fpn_channels=32", "model.kwargs.min_size=64", "model.kwargs.max_size=96", "train.epochs=2")
SEGMENT = ("model.pyramid_channels=32", "model.segmentation_channels=32", "data.crop_size=[64, 64]",
           "data.short_side_range=[64, 96]", "train.iterations=6", "eval.interval=3")


def rows(run):
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def runs_in(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
