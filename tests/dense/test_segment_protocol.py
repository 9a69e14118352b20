"""The papers' segmentation test protocols: multi-scale and flip ("MS IoU", mmseg's aug test) and sliding windows."""
import json

import numpy as np
import pytest
import torch

from crossformer_vision import dense
from crossformer_vision.cli import main
from crossformer_vision.dense.segmentation import segment
from crossformer_vision.metrics import SegmentationEvaluator
from dense_helpers import SEGMENT, tiny

COLOURS = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9]])  # class c is drawn in colour c
SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def perfect(images):
    """Logits that recognise each pixel's class from its colour: right at any size, position or flip."""
    distance = ((images[:, None] - COLOURS[None, :, :, None, None]) ** 2).sum(2)  # (B, K, H, W)
    return -20 * distance


def _scene(height, width, seed):
    """An image of three class regions (blocks of 16 pixels) and its label map."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 3, (height // 16 + 1, width // 16 + 1))
    label = torch.from_numpy(np.kron(blocks, np.ones((16, 16), np.int64))[:height, :width])
    return COLOURS[label].permute(2, 0, 1)[None], label[None]


@pytest.mark.parametrize("scales, flip, mode", [((1.0,), False, "whole"), (SCALES, True, "whole"), (SCALES, False, "slide"),
                                                ((0.5, 1.5), True, "slide")])
def test_a_perfect_model_stays_perfect_under_every_protocol(scales, flip, mode):
    evaluator = SegmentationEvaluator(3, 255)
    for seed, (height, width) in enumerate(((64, 96), (97, 130), (48, 48))):
        images, labels = _scene(height, width, seed)
        prob = segment(perfect, images, scales=scales, flip=flip, mode=mode, window=(32, 40), stride=(20, 24))
        assert prob.shape == (1, 3, height, width) and torch.allclose(prob.sum(1), torch.ones(1, height, width), atol=1e-5)
        evaluator.update(prob.argmax(1), labels)
    result = evaluator.compute()
    assert result["mIoU"] == 1.0 and result["pixel_accuracy"] == 1.0


def test_flip_averaging_changes_nothing_for_a_flip_equivariant_model():
    conv = torch.nn.Conv2d(3, 4, 1)  # pointwise: mirror the input, the output mirrors
    images = torch.rand(2, 3, 40, 56)
    for scales, short_side in (((1.0,), None), ((0.75, 1.25), 48)):
        plain = segment(conv, images, short_side=short_side, scales=scales)
        flipped = segment(conv, images, short_side=short_side, scales=scales, flip=True)
        assert torch.allclose(plain, flipped, atol=1e-6)


@pytest.fixture(scope="module")
def segmenter():
    torch.manual_seed(0)
    model = dense.semantic_fpn("crossformer_tiny", 5, pyramid_channels=32, segmentation_channels=32,
                               backbone_kwargs=dict(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8]))
    return model.eval()


def test_slide_equals_whole_where_the_window_covers_the_image(segmenter):
    images = torch.rand(1, 3, 75, 101)
    whole = segmenter.predict_probabilities(images)
    for window in ((75, 101), (80, 128)):
        assert torch.equal(segmenter.predict_probabilities(images, mode="slide", window=window), whole)
    windows = segmenter.predict_probabilities(images, mode="slide", window=(64, 64), stride=(32, 32))
    assert windows.shape == whole.shape and torch.allclose(windows.sum(1), torch.ones(1, 75, 101), atol=1e-5)
    assert not torch.allclose(windows, whole)  # windows see less context: a different (valid) answer
    # the single-scale test is the old one: argmax of the logits resized back to the image
    logits = torch.nn.functional.interpolate(segmenter(torch.nn.functional.interpolate(
        images, size=(64, 86), mode="bilinear", align_corners=False, antialias=True))["out"], size=(75, 101),
        mode="bilinear", align_corners=False)
    assert torch.equal(segmenter.predict(images, short_side=64), logits.argmax(1))


def test_bad_protocols_are_refused():
    images = torch.rand(1, 3, 32, 32)
    for kwargs, message in ((dict(mode="tiles"), "mode must be one of"), (dict(scales=()), "scales must be positive"),
                            (dict(mode="slide"), "needs window"), (dict(mode="slide", window=(8, 8), stride=(0, 4)), "stride")):
        with pytest.raises(ValueError, match=message):
            segment(perfect, images, **kwargs)


def test_segment_eval_takes_the_multi_scale_flip_and_sliding_protocols(tmp_path, capsys):
    assert main(["segment", "train", *tiny(tmp_path, *SEGMENT[:-2], "train.iterations=2"), "--name", "seg"]) == 0
    run = tmp_path / "runs" / "seg"
    capsys.readouterr()
    results = {}
    for args in ([], ["--scales", "0.5", "1.0", "1.5", "--flip"], ["--mode", "slide", "--window", "48", "64"]):
        assert main(["segment", "eval", str(run), "--json", *args]) == 0
        results[tuple(args)] = json.loads(capsys.readouterr().out)
    protocols = [r["protocol"] for r in results.values()]
    assert protocols == ["single scale (own size)", "multi-scale x0.5, 1, 1.5 (own size) + flip",
                         "single scale (own size), sliding 48x64 windows every 32x42"]
    assert all(0.0 <= r["mIoU"] <= 1.0 and r["images"] == 4 for r in results.values())
    assert main(["segment", "eval", str(run), "--mode", "slide"]) == 2
    assert "data.test_mode=slide needs data.test_window" in capsys.readouterr().err
