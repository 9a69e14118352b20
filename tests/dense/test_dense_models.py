"""Dense models: parameter counts against the papers, paper wiring of the FPNs, any input size, rebuilding."""
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from crossformer_vision import dense

MICRO = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), drop_path_rate=0.0)
# narrow heads and few proposals keep the forward/backward tests fast; the wiring is the same as the paper's
FAST_DETECTOR = dict(fpn_channels=64, min_size=96, max_size=160)
FAST_RCNN = dict(rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=300,
                 rpn_post_nms_top_n_test=50, box_batch_size_per_image=64, box_detections_per_img=5)
FAST_SEGMENTER = {"upernet": dict(decoder_channels=64, aux_channels=32),
                  "semantic_fpn": dict(pyramid_channels=64, segmentation_channels=32)}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------- parameter counts
# exact counts with 80 (COCO) / 150 (ADE20K) classes; the paper rounds to 0.1M.
# torchvision keeps a background output that mmdetection does not have (RetinaNet: 9 anchors x (256*9 + 1);
# Mask R-CNN: 4 box deltas x (1024 + 1) and one mask logit channel 256 + 1); without it the counts round
# to the paper's exactly.
TORCHVISION_BACKGROUND = {"retinanet": 9 * (256 * 9 + 1), "maskrcnn": 4 * (1024 + 1) + 256 + 1}
EXPECTED = [
    ("retinanet", "crossformer_small", 40_845_703, dense.PAPER_DETECTION["retinanet_crossformer_small"]["params_m"]),
    ("retinanet", "crossformer_base", 62_159_863, dense.PAPER_DETECTION["retinanet_crossformer_base"]["params_m"]),
    ("maskrcnn", "crossformer_small", 50_165_119, dense.PAPER_DETECTION["maskrcnn_crossformer_small"]["params_m"]),
    ("maskrcnn", "crossformer_base", 71_479_279, dense.PAPER_DETECTION["maskrcnn_crossformer_base"]["params_m"]),
    ("upernet", "crossformer_small", 62_308_022, dense.PAPER_SEGMENTATION["upernet_crossformer_small"]["params_m"]),
    ("upernet", "crossformer_base", 83_622_182, dense.PAPER_SEGMENTATION["upernet_crossformer_base"]["params_m"]),
    ("semantic_fpn", "crossformer_small", 34_260_000, dense.PAPER_SEGMENTATION["semantic_fpn_crossformer_small"]["params_m"]),
    ("semantic_fpn", "crossformer_base", 55_574_160, dense.PAPER_SEGMENTATION["semantic_fpn_crossformer_base"]["params_m"]),
]


@pytest.mark.parametrize("arch,backbone,exact,paper_m", EXPECTED, ids=[f"{a}-{b}" for a, b, _, _ in EXPECTED])
def test_parameter_counts_match_the_paper(arch, backbone, exact, paper_m):
    num_classes = 80 if dense.TASKS[arch] == "detection" else 150
    with torch.device("meta"):
        model = dense.ARCHITECTURES[arch](backbone, num_classes)
    count = n_params(model)
    assert count == exact
    assert abs(count / 1e6 - paper_m) / paper_m < 0.02
    assert round((count - TORCHVISION_BACKGROUND.get(arch, 0)) / 1e6, 1) == paper_m


def test_smp_layouts_differ_from_the_paper_by_exactly_the_known_modules():
    with torch.device("meta"):
        fpn_paper, fpn_smp = dense.semantic_fpn(layout="mmseg"), dense.semantic_fpn(layout="smp")
        uper_paper, uper_smp = dense.upernet(layout="mmseg"), dense.upernet(layout="smp")
        uper_256 = dense.upernet(decoder_channels=256, aux_head=False, layout="smp")
    # smp's FPN has no 3x3 output convs on the pyramid: 4 x (256 * 256 * 9 + 256)
    assert n_params(fpn_paper) - n_params(fpn_smp) == 4 * (256 * 256 * 9 + 256)
    # smp's UPerNet LayerNorms its four inputs (2 x (96 + 192 + 384 + 768)); mmseg's UPerHead does not
    assert n_params(uper_smp) - n_params(uper_paper) == 2 * (96 + 192 + 384 + 768)
    assert n_params(uper_256) < 0.8 * n_params(uper_paper)  # smp's default width is far from the paper's


def test_smp_upernet_with_the_timm_encoder_still_works():
    model = smp.UPerNet(encoder_name="tu-crossformer_small", encoder_weights=None, classes=3).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert out.shape == (1, 3, 64, 96)


# ---------------------------------------------------------------------------------------------- wiring
def test_retinanet_pyramid_is_stages_2_to_4_plus_p6_from_c5():
    model = dense.retinanet("crossformer_tiny", 3, backbone_kwargs=MICRO, fpn_channels=64).eval()
    backbone = model.backbone
    assert backbone.in_channels_list == [64, 128, 256] and backbone.strides == [8, 16, 32]
    x = torch.randn(1, 3, 128, 192)
    with torch.no_grad():
        pyramid = backbone(x)
        c5 = dense.find_crossformer(model).forward_intermediates(x, intermediates_only=True)[-1]
    assert list(pyramid) == ["0", "1", "2", "p6", "p7"]
    assert [tuple(v.shape[2:]) for v in pyramid.values()] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    extra = backbone.fpn.extra_blocks
    torch.testing.assert_close(pyramid["p6"], extra.p6(c5))  # P6 from the last stage's output, not P5
    torch.testing.assert_close(pyramid["p7"], extra.p7(pyramid["p6"]))  # no ReLU (mmdetection)
    extra.relu_before_p7 = True
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)["p7"], extra.p7(F.relu(pyramid["p6"])))
    assert model.anchor_generator.num_anchors_per_location() == [9] * 5
    assert model.head.classification_head.num_classes == 4  # 3 classes + torchvision's background output


def test_rcnn_pyramid_is_all_stages_plus_maxpool():
    model = dense.maskrcnn("crossformer_tiny", 2, backbone_kwargs=MICRO, fpn_channels=64).eval()
    assert model.backbone.strides == [4, 8, 16, 32]
    with torch.no_grad():
        pyramid = model.backbone(torch.randn(1, 3, 96, 160))
    assert list(pyramid) == ["0", "1", "2", "3", "pool"]
    assert [tuple(v.shape[2:]) for v in pyramid.values()] == [(24, 40), (12, 20), (6, 10), (3, 5), (2, 3)]
    assert model.rpn.anchor_generator.num_anchors_per_location() == [3] * 5
    assert model.roi_heads.box_predictor.cls_score.out_features == 3
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 3


def test_backbone_options_reach_the_crossformer():
    model = dense.fasterrcnn("crossformer_tiny", 2, high_resolution=True, lda_mode="fixed_interval",
                             backbone_kwargs=MICRO)
    backbone = dense.find_crossformer(model)
    assert backbone.lda_mode == "fixed_interval"
    lda = [b.attn for stage in backbone.stages for b in stage.blocks if b.attn.long_distance]
    assert [(a.group_size, a.interval) for a in lda] == list(zip((14, 14, 7, 7), (16, 8, 2, 1)))
    seg = dense.upernet("crossformer_tiny", 4, high_resolution=True, backbone_kwargs=MICRO, **FAST_SEGMENTER["upernet"])
    assert dense.find_crossformer(seg).stages[0].blocks[1].attn.interval == 16


@pytest.mark.parametrize("arch", ["retinanet", "fasterrcnn", "maskrcnn"])
def test_detectors_train_and_predict_on_any_size(arch):
    torch.manual_seed(0)
    fast = dict(FAST_DETECTOR, **(FAST_RCNN if arch != "retinanet" else dict(topk_candidates=100, detections_per_img=5)))
    model = dense.ARCHITECTURES[arch]("crossformer_tiny", 3, backbone_kwargs=MICRO, **fast)
    images = [torch.rand(3, 90, 130), torch.rand(3, 70, 61)]
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 60.0, 50.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.tensor([[5.0, 5.0, 40.0, 30.0], [30.0, 20.0, 60.0, 69.0]]), "labels": torch.tensor([1, 3])},
    ]
    if arch == "maskrcnn":
        for image, target in zip(images, targets):
            masks = torch.zeros(len(target["boxes"]), *image.shape[1:], dtype=torch.uint8)
            for mask, (x0, y0, x1, y1) in zip(masks, target["boxes"].int().tolist()):
                mask[y0:y1, x0:x1] = 1
            target["masks"] = masks
    model.train()
    losses = model(images, targets)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert dense.find_crossformer(model).patch_embed.projs[0].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    for image, output in zip(images, outputs):
        assert output["boxes"].shape[1] == 4 and len(output["boxes"]) <= 5
        if len(output["boxes"]):
            assert output["boxes"][:, 2].max() <= image.shape[2] and output["boxes"][:, 3].max() <= image.shape[1]
        if arch == "maskrcnn":
            assert output["masks"].shape[1:] == (1, *image.shape[1:])


@pytest.mark.parametrize("arch", ["upernet", "semantic_fpn"])
@pytest.mark.parametrize("layout", ["mmseg", "smp"])
def test_segmenters_any_size_aux_head_and_loss(arch, layout):
    torch.manual_seed(0)
    model = dense.ARCHITECTURES[arch]("crossformer_tiny", 5, layout=layout, backbone_kwargs=MICRO, **FAST_SEGMENTER[arch])
    x = torch.rand(2, 3, 70, 100)  # not a multiple of 32: padded inside, cropped back
    out = model(x)
    assert out["out"].shape == (2, 5, 70, 100)
    assert ("aux" in out) == (arch == "upernet")
    labels = torch.randint(0, 5, (2, 70, 100))
    labels[:, :10] = 255
    losses = dense.segmentation_loss(out, labels)
    expected = F.cross_entropy(out["out"], labels, ignore_index=255)
    if arch == "upernet":
        expected = expected + 0.4 * F.cross_entropy(out["aux"], labels, ignore_index=255)
    torch.testing.assert_close(losses["loss"], expected)
    losses["loss"].backward()
    model.eval()
    with torch.no_grad():
        # inside, the input is padded bottom/right to 96x128 with zeros after normalisation, i.e. the mean
        # colour, and the logits are cropped back: the same as padding the image with the mean colour first
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        padded = mean.expand(2, 3, 96, 128).clone()
        padded[:, :, :70, :100] = x
        torch.testing.assert_close(model(x)["out"], model(padded)["out"][:, :, :70, :100], rtol=1e-4, atol=1e-4)
    pred = model.predict(x, short_side=48)
    assert pred.shape == (2, 70, 100) and pred.dtype == torch.int64 and pred.max() < 5
    with pytest.raises(ValueError, match="labels .* do not match"):
        dense.segmentation_loss(out, labels[:, :10])


def test_segmenter_rejects_unnormalised_integer_images():
    model = dense.semantic_fpn("crossformer_tiny", 2, backbone_kwargs=MICRO, **FAST_SEGMENTER["semantic_fpn"])
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        model(torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8))


@pytest.mark.parametrize("arch", ["maskrcnn", "upernet"])
def test_rebuild_from_build_config_and_reload_own_weights(arch, tmp_path):
    torch.manual_seed(0)
    extra = dict(FAST_DETECTOR, **FAST_RCNN) if arch == "maskrcnn" else FAST_SEGMENTER[arch]
    model = dense.ARCHITECTURES[arch]("crossformer_tiny", 3, backbone_kwargs=MICRO, **extra).eval()
    path = tmp_path / "model.pth"
    torch.save({"model": model.state_dict(), "config": model.build_config}, path)
    saved = torch.load(path, weights_only=True)
    torch.manual_seed(1)
    again = dense.build_model(saved["config"], weights=path).eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        if arch == "maskrcnn":
            torch.testing.assert_close(again.backbone(x), model.backbone(x), rtol=0, atol=0)
        else:
            torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)


def test_builder_errors_are_clear():
    with pytest.raises(ValueError, match="number of object classes"):
        dense.retinanet(num_classes=0)
    with pytest.raises(ValueError, match="layout must be one of"):
        dense.upernet(layout="mmdet")
    with pytest.raises(ValueError, match="did you mean crossformer_small"):
        dense.maskrcnn("crossformer_smal")
    with pytest.raises(ValueError, match="'arch' must be one of"):
        dense.build_model({"arch": "yolo"})
    with pytest.raises(ValueError, match="no CrossFormer backbone"):
        dense.find_crossformer(torch.nn.Linear(2, 2))
