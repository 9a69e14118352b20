"""Metrics: perfect predictions score 1, hand-computed cases give their known values, bad input is refused."""
import math

import numpy as np
import pytest
import torch

from crossformer_vision.data import detection as det_data
from crossformer_vision import metrics
from crossformer_vision.data import synthetic as synthetic_data
from dense_helpers import box_ann, write_coco

IMAGE = {"id": 1, "file_name": "a.png", "width": 200, "height": 150}


def prediction(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels, dtype=torch.int64)}


def evaluate(tmp_path, annotations, pred, images=(IMAGE,)):
    dataset = det_data.CocoInstances(tmp_path / "images", write_coco(tmp_path, list(images), annotations))
    evaluator = metrics.CocoEvaluator.from_dataset(dataset)
    evaluator.update([images[0]["id"]], [pred])
    return evaluator.compute()["bbox"], evaluator


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return synthetic_data.make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), num_train=2, num_val=8)


def test_perfect_boxes_and_masks_score_one(synthetic):
    dataset = synthetic.coco("val", masks=True)
    evaluator = metrics.CocoEvaluator.from_dataset(dataset)
    for i in range(len(dataset)):
        _, target = dataset[i]
        n = len(target["labels"])
        evaluator.update([target["image_id"]], [{"boxes": target["boxes"], "labels": target["labels"],
                                                 "scores": torch.linspace(1.0, 0.5, n),
                                                 "masks": target["masks"].float()[:, None] * 0.9}])
    result = evaluator.compute()
    for iou_type in ("bbox", "segm"):
        for name in ("AP", "AP50", "AP75", "AR100"):
            assert result[iou_type][name] == 1.0
    assert "IoU metric: segm" in evaluator.summary


def test_hand_computed_ap_one_hit_one_false_positive_one_miss(tmp_path):
    # two ground-truth boxes; detections: an exact hit (0.9) then a false positive (0.8); the second box is missed.
    # precision/recall: (1.0, 0.5) then (0.5, 0.5). COCO interpolates precision at 101 recall points: 1.0 for the
    # 51 points 0.00..0.50 and 0 above, so AP = 51/101 at every IoU threshold.
    anns = [box_ann(1, 1, 3, [10, 10, 60, 40]), box_ann(2, 1, 3, [120, 80, 50, 50])]
    result, _ = evaluate(tmp_path, anns, prediction([[10, 10, 70, 50], [150, 0, 190, 30]], [0.9, 0.8], [1, 1]))
    for name in ("AP", "AP50", "AP75"):
        assert result[name] == pytest.approx(51 / 101)
    assert result["AR100"] == pytest.approx(0.5)


def test_hand_computed_ap_for_an_iou_of_0_72(tmp_path):
    # one box of 100x100 and one detection covering 100x72 of it: IoU 0.72 is a hit at the thresholds
    # 0.50, 0.55, 0.60, 0.65, 0.70 and a miss at 0.75 ... 0.95, so AP (mean over the 10) = 0.5
    result, _ = evaluate(tmp_path, [box_ann(1, 1, 7, [50, 20, 100, 100])], prediction([[50, 20, 150, 92]], [0.7], [2]))
    assert result["AP"] == pytest.approx(0.5)
    assert result["AP50"] == 1.0 and result["AP75"] == 0.0


def test_area_ranges_and_undefined_values(tmp_path):
    # a small box (20x20 = 400 < 32**2) found, a medium one (50x50) missed, no large ones: APl is undefined
    anns = [box_ann(1, 1, 3, [0, 0, 20, 20]), box_ann(2, 1, 3, [100, 50, 50, 50])]
    result, _ = evaluate(tmp_path, anns, prediction([[0, 0, 20, 20]], [0.9], [1]))
    assert result["APs"] == 1.0 and result["APm"] == 0.0
    assert math.isnan(result["APl"]) and math.isnan(result["ARl"])


def test_no_detections_score_zero_and_wrong_class_confusion_scores_zero(tmp_path):
    anns = [box_ann(1, 1, 3, [10, 10, 60, 40])]
    result, _ = evaluate(tmp_path, anns, prediction([], [], []))
    assert result["AP"] == 0.0 and result["AR100"] == 0.0
    result, _ = evaluate(tmp_path, anns, prediction([[10, 10, 70, 50]], [0.9], [2]))  # right box, wrong class
    assert result["AP"] == 0.0


def test_evaluator_refuses_bad_predictions_and_drops_background(tmp_path):
    anns = [box_ann(1, 1, 3, [10, 10, 60, 40])]
    dataset = det_data.CocoInstances(tmp_path / "images", write_coco(tmp_path, [IMAGE], anns), masks=True)
    evaluator = metrics.CocoEvaluator.from_dataset(dataset)
    assert evaluator.iou_types == ("bbox", "segm")
    with pytest.raises(ValueError, match=r"labels \[5\] are not in 1..2"):
        evaluator.update([1], [prediction([[0, 0, 5, 5]], [0.5], [5])])
    evaluator.reset()
    with pytest.raises(ValueError, match="image id 99 is not in the ground truth"):
        evaluator.update([99], [prediction([], [], [])])
    with pytest.raises(ValueError, match="needs predictions with 'masks'"):
        evaluator.update([1], [prediction([[0, 0, 5, 5]], [0.5], [1])])
    evaluator.reset()
    with pytest.raises(ValueError, match="original image size"):
        evaluator.update([1], [{**prediction([[0, 0, 5, 5]], [0.5], [1]), "masks": torch.zeros(1, 1, 10, 10)}])
    evaluator.reset()
    with pytest.raises(ValueError, match="no predictions"):
        evaluator.compute()
    box_only = metrics.CocoEvaluator.from_dataset(dataset, iou_types=("bbox",))
    box_only.update([1], [prediction([[10, 10, 70, 50], [0, 0, 9, 9]], [0.9, 0.95], [1, 0])])
    assert box_only.num_background_predictions == 1
    assert box_only.compute()["bbox"]["AP"] == 1.0
    with pytest.raises(ValueError, match="already evaluated"):
        box_only.update([1], [prediction([], [], [])])


# ---------------------------------------------------------------------------------------------- semantic
def test_hand_computed_miou_two_classes_with_ignore():
    target = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 1, 0, 0]])
    # class 0: TP 2 (pixels (0,0), (1,0)), FP 1 ((1,2)), FN 1 ((0,1)) -> IoU 2/4
    # class 1: TP 3, FP 1 ((0,1)), FN 1 ((1,2)) -> IoU 3/5; the ignored pixel (1,3) does not count
    evaluator = metrics.SegmentationEvaluator(2, class_names=["sky", "road"])
    evaluator.update(pred, target)
    result = evaluator.compute()
    assert result["per_class_iou"] == {"sky": pytest.approx(0.5), "road": pytest.approx(0.6)}
    assert result["mIoU"] == pytest.approx(0.55)
    assert result["pixel_accuracy"] == pytest.approx(5 / 7)
    assert result["mean_accuracy"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert result["num_pixels"] == 7
    evaluator.update(pred, target)  # accumulating the same batch twice changes nothing relative
    assert evaluator.compute()["mIoU"] == pytest.approx(0.55)


def test_perfect_masks_miou_one_and_absent_classes_are_nan(synthetic):
    dataset = synthetic.semantic("val")
    evaluator = metrics.SegmentationEvaluator(7)  # two classes more than the data has: never seen, never predicted
    for i in range(len(dataset)):
        _, label = dataset[i]
        logits = torch.nn.functional.one_hot(label.long(), 7).permute(2, 0, 1)[None].float()
        evaluator.update(logits, label[None])
    result = evaluator.compute()
    assert result["mIoU"] == 1.0 and result["pixel_accuracy"] == 1.0
    assert math.isnan(result["per_class_iou"]["5"]) and math.isnan(result["per_class_iou"]["6"])


def test_segmentation_evaluator_refuses_bad_input():
    evaluator = metrics.SegmentationEvaluator(3)
    with pytest.raises(ValueError, match=r"class ids \[3, 7\] outside \[0, 3\)"):
        evaluator.update(torch.zeros(2, 2, dtype=torch.long), torch.tensor([[0, 3], [7, 255]]))
    with pytest.raises(ValueError, match="predicts more classes"):
        evaluator.update(torch.tensor([[0, 4]]), torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="differ in shape"):
        evaluator.update(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 5, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="no labelled pixels"):
        evaluator.update(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 255))
        evaluator.compute()
    with pytest.raises(ValueError, match="is a class id"):
        metrics.SegmentationEvaluator(300, ignore_index=255)


def test_predictions_that_ignore_nothing_count_every_pixel():
    evaluator = metrics.SegmentationEvaluator(2, ignore_index=-1)
    target = torch.from_numpy(np.array([[0, 1], [1, 1]]))
    evaluator.update(torch.ones(2, 2, dtype=torch.long), target)
    result = evaluator.compute()
    assert result["per_class_iou"]["0"] == 0.0 and result["per_class_iou"]["1"] == pytest.approx(0.75)
