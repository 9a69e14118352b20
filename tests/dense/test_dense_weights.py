"""Official mmdetection / mmsegmentation checkpoints: every mapped tensor lands where it computes the same.

The checkpoints are fabricated in the official layouts: the backbone from a CrossFormer-T classifier in the
official key layout (conftest.to_official_layout), necks and heads as random tensors under mmdet/mmseg's key
names and shapes. References below restate what mmdet/mmseg compute with those tensors (FPN with nearest
top-down and extra convs on C5, RetinaHead, RPNHead, Shared2FCBBoxHead with background last, FCNMaskHead,
UPerHead, FPNHead, FCNHead) and are compared with the torchvision / smp modules after loading.
"""
import logging

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

import crossformer_vision as cv
from conftest import to_official_layout
from crossformer_vision import dense

FPN = 64  # neck width used here (the paper's is 256; the mapping does not depend on it)
K = 3  # object classes
TINY = (64, 128, 256, 512)  # CrossFormer-T stage channels


# a small backbone for the error cases (checked before or instead of loading; cheaper to build)
MICRO = dict(embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))
# the released dense checkpoints were trained with this grouping rule
FIXED_INTERVAL = dict(lda_mode="fixed_interval", backbone_kwargs=dict(drop_path_rate=0.0))


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return timm.create_model("crossformer_tiny", drop_path_rate=0.0, lda_mode="fixed_interval").eval()


@pytest.fixture(scope="module")
def backbone_sd(classifier):
    """Official-layout dense backbone weights (dense checkpoints have no classifier head or final norm)."""
    official = to_official_layout(classifier, "crossformer_tiny")
    return {"backbone." + k: v for k, v in official.items() if not k.startswith(("head.", "norm."))}


def _normalise(x):
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _rand(*shape, scale=0.05):
    return torch.randn(*shape) * scale


def _conv(sd, prefix, out_c, in_c, k, bias=True, bn=False):
    sd[f"{prefix}.conv.weight"] = _rand(out_c, in_c, k, k, scale=(2.0 / (in_c * k * k)) ** 0.5)
    if bias:
        sd[f"{prefix}.conv.bias"] = _rand(out_c, scale=0.1)
    if bn:
        sd[f"{prefix}.bn.weight"] = torch.rand(out_c) + 0.5
        sd[f"{prefix}.bn.bias"] = _rand(out_c, scale=0.1)
        sd[f"{prefix}.bn.running_mean"] = _rand(out_c, scale=0.1)
        sd[f"{prefix}.bn.running_var"] = torch.rand(out_c) + 0.5
        sd[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(1000)


def _plain(sd, prefix, *shape):
    sd[f"{prefix}.weight"] = _rand(*shape, scale=0.05)
    sd[f"{prefix}.bias"] = _rand(shape[1] if prefix.endswith("upsample") else shape[0], scale=0.1)


def _fpn_neck(sd, in_channels, extra_in=None):
    for i, c in enumerate(in_channels):
        _conv(sd, f"neck.lateral_convs.{i}", FPN, c, 1)
        _conv(sd, f"neck.fpn_convs.{i}", FPN, FPN, 3)
    if extra_in is not None:
        _conv(sd, f"neck.fpn_convs.{len(in_channels)}", FPN, extra_in, 3)
        _conv(sd, f"neck.fpn_convs.{len(in_channels) + 1}", FPN, FPN, 3)


def _save(tmp_path, name, state_dict, classes):
    path = tmp_path / name
    torch.save({"meta": {"mmdet_version": "2.8.0", "CLASSES": classes}, "state_dict": state_dict}, path)
    return path


# ---------------------------------------------------------------------------------------------- references
def ref_conv(x, sd, prefix, stride=1, padding=0, bn=False, relu=False):
    y = F.conv2d(x, sd[f"{prefix}.conv.weight"], sd.get(f"{prefix}.conv.bias"), stride=stride, padding=padding)
    if bn:
        y = F.batch_norm(y, sd[f"{prefix}.bn.running_mean"], sd[f"{prefix}.bn.running_var"], sd[f"{prefix}.bn.weight"],
                         sd[f"{prefix}.bn.bias"], training=False, eps=1e-5)
    return F.relu(y) if relu else y


def ref_fpn(feats, sd, extra):
    """mmdet/mmseg FPN: 1x1 laterals, nearest top-down sums, 3x3 outputs, then the extra levels."""
    laterals = [ref_conv(f, sd, f"neck.lateral_convs.{i}") for i, f in enumerate(feats)]
    for i in range(len(laterals) - 1, 0, -1):
        laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[2:], mode="nearest")
    outs = [ref_conv(lat, sd, f"neck.fpn_convs.{i}", padding=1) for i, lat in enumerate(laterals)]
    n = len(outs)
    if extra == "on_input":  # mmdet add_extra_convs='on_input', relu_before_extra_convs=False
        outs.append(ref_conv(feats[-1], sd, f"neck.fpn_convs.{n}", stride=2, padding=1))
        outs.append(ref_conv(outs[-1], sd, f"neck.fpn_convs.{n + 1}", stride=2, padding=1))
    elif extra == "maxpool":
        outs.append(F.max_pool2d(outs[-1], 1, stride=2))
    return outs


def ref_resize(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------------------------- detection
@pytest.fixture(scope="module")
def retinanet_ckpt(backbone_sd, tmp_path_factory):
    torch.manual_seed(1)
    sd = dict(backbone_sd)
    _fpn_neck(sd, TINY[1:], extra_in=TINY[-1])  # start_level=1, add_extra_convs='on_input'
    for i in range(4):
        _conv(sd, f"bbox_head.cls_convs.{i}", FPN, FPN, 3)
        _conv(sd, f"bbox_head.reg_convs.{i}", FPN, FPN, 3)
    _plain(sd, "bbox_head.retina_cls", 9 * K, FPN, 3, 3)
    _plain(sd, "bbox_head.retina_reg", 9 * 4, FPN, 3, 3)
    return sd, _save(tmp_path_factory.mktemp("ckpt"), "retinanet.pth", sd, ["a", "b", "c"])


def test_mmdet_retinanet_maps_backbone_fpn_and_head(classifier, retinanet_ckpt):
    sd, path = retinanet_ckpt
    model = dense.retinanet("crossformer_tiny", K, weights=path, fpn_channels=FPN, min_size=128, max_size=128,
                            **FIXED_INTERVAL).eval()
    assert model.class_names == ["a", "b", "c"]
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        feats = dense.find_crossformer(model).forward_intermediates(x, intermediates_only=True)
        for a, b in zip(feats, classifier.forward_intermediates(x, intermediates_only=True)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        pyramid = list(model.backbone(x).values())
        reference = ref_fpn(feats[1:], sd, "on_input")
    assert len(pyramid) == len(reference) == 5
    for ours, ref in zip(pyramid, reference):
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)

    head = model.head
    with torch.no_grad():
        for level in pyramid:
            n, _, h, w = level.shape
            cls_ref, reg_ref = level, level
            for i in range(4):
                cls_ref = ref_conv(cls_ref, sd, f"bbox_head.cls_convs.{i}", padding=1, relu=True)
                reg_ref = ref_conv(reg_ref, sd, f"bbox_head.reg_convs.{i}", padding=1, relu=True)
            cls_ref = F.conv2d(cls_ref, sd["bbox_head.retina_cls.weight"], sd["bbox_head.retina_cls.bias"], padding=1)
            reg_ref = F.conv2d(reg_ref, sd["bbox_head.retina_reg.weight"], sd["bbox_head.retina_reg.bias"], padding=1)
            cls = head.classification_head.cls_logits(head.classification_head.conv(level))
            reg = head.regression_head.bbox_reg(head.regression_head.conv(level))
            # torchvision: output 0 of each anchor is the unused background; classes follow, in mmdet's order
            torch.testing.assert_close(cls.view(n, 9, K + 1, h, w)[:, :, 1:], cls_ref.view(n, 9, K, h, w), rtol=1e-5, atol=1e-5)
            assert (cls.view(n, 9, K + 1, h, w)[:, :, 0] < -4).all()
            torch.testing.assert_close(reg, reg_ref, rtol=1e-5, atol=1e-5)
        detections = model([torch.rand(3, 100, 140)])[0]
    assert (detections["labels"] >= 1).all()


@pytest.fixture(scope="module")
def maskrcnn_ckpt(backbone_sd, tmp_path_factory):
    torch.manual_seed(2)
    sd = dict(backbone_sd)
    _fpn_neck(sd, TINY)
    sd["rpn_head.rpn_conv.weight"], sd["rpn_head.rpn_conv.bias"] = _rand(FPN, FPN, 3, 3), _rand(FPN)
    _plain(sd, "rpn_head.rpn_cls", 3, FPN, 1, 1)
    _plain(sd, "rpn_head.rpn_reg", 12, FPN, 1, 1)
    _plain(sd, "roi_head.bbox_head.shared_fcs.0", 1024, FPN * 49)
    _plain(sd, "roi_head.bbox_head.shared_fcs.1", 1024, 1024)
    _plain(sd, "roi_head.bbox_head.fc_cls", K + 1, 1024)
    _plain(sd, "roi_head.bbox_head.fc_reg", 4 * K, 1024)
    for i in range(4):
        _conv(sd, f"roi_head.mask_head.convs.{i}", 256, FPN if i == 0 else 256, 3)
    _plain(sd, "roi_head.mask_head.upsample", 256, 256, 2, 2)
    _plain(sd, "roi_head.mask_head.conv_logits", K, 256, 1, 1)
    return sd, _save(tmp_path_factory.mktemp("ckpt"), "mask_rcnn.pth", sd, ["a", "b", "c"])


def _ref_box_head(x, sd):
    y = F.relu(F.linear(x.flatten(1), sd["roi_head.bbox_head.shared_fcs.0.weight"], sd["roi_head.bbox_head.shared_fcs.0.bias"]))
    y = F.relu(F.linear(y, sd["roi_head.bbox_head.shared_fcs.1.weight"], sd["roi_head.bbox_head.shared_fcs.1.bias"]))
    return (F.linear(y, sd["roi_head.bbox_head.fc_cls.weight"], sd["roi_head.bbox_head.fc_cls.bias"]),
            F.linear(y, sd["roi_head.bbox_head.fc_reg.weight"], sd["roi_head.bbox_head.fc_reg.bias"]))


def test_mmdet_mask_rcnn_maps_fpn_rpn_box_and_mask_heads(maskrcnn_ckpt):
    sd, path = maskrcnn_ckpt
    model = dense.maskrcnn("crossformer_tiny", K, weights=path, fpn_channels=FPN, min_size=96, max_size=96,
                           box_detections_per_img=10, **FIXED_INTERVAL).eval()
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        feats = dense.find_crossformer(model).forward_intermediates(x, intermediates_only=True)
        pyramid = list(model.backbone(x).values())
        reference = ref_fpn(feats, sd, "maxpool")
        for ours, ref in zip(pyramid, reference):
            torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
        objectness, deltas = model.rpn.head(pyramid)
        for level, obj, delta in zip(pyramid, objectness, deltas):
            t = F.relu(F.conv2d(level, sd["rpn_head.rpn_conv.weight"], sd["rpn_head.rpn_conv.bias"], padding=1))
            torch.testing.assert_close(obj, F.conv2d(t, sd["rpn_head.rpn_cls.weight"], sd["rpn_head.rpn_cls.bias"]), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(delta, F.conv2d(t, sd["rpn_head.rpn_reg.weight"], sd["rpn_head.rpn_reg.bias"]), rtol=1e-5, atol=1e-5)

        rois = torch.randn(5, FPN, 7, 7)
        scores, box_deltas = model.roi_heads.box_predictor(model.roi_heads.box_head(rois))
        ref_scores, ref_deltas = _ref_box_head(rois, sd)
        torch.testing.assert_close(scores[:, 0], ref_scores[:, K], rtol=1e-5, atol=1e-5)  # background: last -> first
        torch.testing.assert_close(scores[:, 1:], ref_scores[:, :K], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(box_deltas[:, 4:], ref_deltas, rtol=1e-5, atol=1e-5)
        # same class probabilities, hence the same detections, as mmdet's softmax with background last
        torch.testing.assert_close(scores.softmax(-1)[:, 1:], ref_scores.softmax(-1)[:, :K], rtol=1e-5, atol=1e-6)

        mask_in = torch.randn(4, FPN, 14, 14)
        logits = model.roi_heads.mask_predictor(model.roi_heads.mask_head(mask_in))
        y = mask_in
        for i in range(4):
            y = ref_conv(y, sd, f"roi_head.mask_head.convs.{i}", padding=1, relu=True)
        y = F.relu(F.conv_transpose2d(y, sd["roi_head.mask_head.upsample.weight"], sd["roi_head.mask_head.upsample.bias"], stride=2))
        y = F.conv2d(y, sd["roi_head.mask_head.conv_logits.weight"], sd["roi_head.mask_head.conv_logits.bias"])
        assert logits.shape == (4, K + 1, 28, 28)
        torch.testing.assert_close(logits[:, 1:], y, rtol=1e-5, atol=1e-5)
        out = model([torch.rand(3, 90, 120)])[0]
    assert out["masks"].shape[1:] == (1, 90, 120)


def test_class_agnostic_box_regression_is_repeated_per_class(maskrcnn_ckpt):
    sd, _ = maskrcnn_ckpt
    sd = dict(sd)
    sd["roi_head.bbox_head.fc_reg.weight"], sd["roi_head.bbox_head.fc_reg.bias"] = _rand(4, 1024), _rand(4)
    model = dense.fasterrcnn("crossformer_tiny", K, fpn_channels=FPN, **FIXED_INTERVAL)
    report = dense.load_dense_checkpoint(model, {"state_dict": sd}, strict=False)
    assert report.source == "mmdet" and all(k.startswith("roi_head.mask_head.") for k in report.unused)
    assert report.missing == []
    weight = model.roi_heads.box_predictor.bbox_pred.weight
    for c in range(1, K + 1):
        torch.testing.assert_close(weight[4 * c : 4 * c + 4], sd["roi_head.bbox_head.fc_reg.weight"])
    with pytest.raises(cv.CheckpointError, match="unused"):
        dense.load_dense_checkpoint(model, {"state_dict": sd})  # the mask head has nowhere to go


def test_wrong_class_count_or_detector_type_is_a_clear_error(retinanet_ckpt, maskrcnn_ckpt):
    _, retina_path = retinanet_ckpt
    _, mask_path = maskrcnn_ckpt
    with pytest.raises(cv.CheckpointError, match="build it with num_classes=3"):
        dense.retinanet("crossformer_tiny", 80, fpn_channels=FPN, weights=retina_path, backbone_kwargs=MICRO)
    with pytest.raises(cv.CheckpointError, match="RetinaNet uses stages 2-4"):
        dense.maskrcnn("crossformer_tiny", K, fpn_channels=FPN, weights=retina_path, backbone_kwargs=MICRO)
    with pytest.raises(cv.CheckpointError, match="differ in shape"):
        dense.maskrcnn("crossformer_tiny", K, fpn_channels=FPN, weights=mask_path, backbone_kwargs=MICRO)


def test_released_checkpoints_warn_about_lda_mode(retinanet_ckpt, caplog):
    _, path = retinanet_ckpt
    with caplog.at_level(logging.WARNING, logger="crossformer_vision.dense.mmcv_weights"):
        dense.retinanet("crossformer_tiny", K, fpn_channels=FPN, weights=path)
    assert "lda_mode='fixed_interval'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="crossformer_vision.dense.mmcv_weights"):
        dense.retinanet("crossformer_tiny", K, fpn_channels=FPN, weights=path, **FIXED_INTERVAL)
    assert caplog.text == ""


def test_backbone_weights_from_classification_and_detection_files(classifier, retinanet_ckpt, tmp_path):
    path = tmp_path / "crossformer-t.pth"
    torch.save({"model": to_official_layout(classifier, "crossformer_tiny", "v1")}, path)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        expected = classifier.forward_intermediates(x, intermediates_only=True)
        classification = dense.upernet("crossformer_tiny", 2, backbone_weights=path, decoder_channels=UPER,
                                       aux_channels=AUX, **FIXED_INTERVAL)
        detection = dense.build_backbone("crossformer_tiny", weights=retinanet_ckpt[1], lda_mode="fixed_interval")
        for model in (classification.eval(), detection.eval()):
            got = dense.find_crossformer(model).forward_intermediates(x, intermediates_only=True)
            for a, b in zip(got, expected):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(cv.CheckpointError, match="differ in shape"):
        dense.retinanet("crossformer_tiny", 2, backbone_weights=path, backbone_kwargs=MICRO)
    with pytest.raises(cv.CheckpointError, match="backbone_weights"):
        dense.load_dense_checkpoint(detection, path)


# ---------------------------------------------------------------------------------------------- segmentation
UPER, AUX, SEG = 64, 32, 32  # decoder widths used here (paper: 512, 256, 128)


@pytest.fixture(scope="module")
def upernet_ckpt(backbone_sd):
    torch.manual_seed(3)
    sd = dict(backbone_sd)
    for i in range(4):
        _conv(sd, f"decode_head.psp_modules.{i}.1", UPER, TINY[3], 1, bias=False, bn=True)
    _conv(sd, "decode_head.bottleneck", UPER, TINY[3] + 4 * UPER, 3, bias=False, bn=True)
    for i in range(3):
        _conv(sd, f"decode_head.lateral_convs.{i}", UPER, TINY[i], 1, bias=False, bn=True)
        _conv(sd, f"decode_head.fpn_convs.{i}", UPER, UPER, 3, bias=False, bn=True)
    _conv(sd, "decode_head.fpn_bottleneck", UPER, 4 * UPER, 3, bias=False, bn=True)
    _plain(sd, "decode_head.conv_seg", K, UPER, 1, 1)
    _conv(sd, "auxiliary_head.convs.0", AUX, TINY[2], 3, bias=False, bn=True)
    _plain(sd, "auxiliary_head.conv_seg", K, AUX, 1, 1)
    return sd


def ref_uperhead(feats, sd, size):
    x = feats[3]
    psp = [x] + [ref_resize(ref_conv(F.adaptive_avg_pool2d(x, s), sd, f"decode_head.psp_modules.{i}.1", bn=True, relu=True),
                            x.shape[2:]) for i, s in enumerate((1, 2, 3, 6))]
    laterals = [ref_conv(feats[i], sd, f"decode_head.lateral_convs.{i}", bn=True, relu=True) for i in range(3)]
    laterals.append(ref_conv(torch.cat(psp, 1), sd, "decode_head.bottleneck", padding=1, bn=True, relu=True))
    for i in range(3, 0, -1):
        laterals[i - 1] = laterals[i - 1] + ref_resize(laterals[i], laterals[i - 1].shape[2:])
    outs = [ref_conv(laterals[i], sd, f"decode_head.fpn_convs.{i}", padding=1, bn=True, relu=True) for i in range(3)]
    outs.append(laterals[3])
    outs = [outs[0]] + [ref_resize(o, outs[0].shape[2:]) for o in outs[1:]]
    y = ref_conv(torch.cat(outs, 1), sd, "decode_head.fpn_bottleneck", padding=1, bn=True, relu=True)
    y = F.conv2d(y, sd["decode_head.conv_seg.weight"], sd["decode_head.conv_seg.bias"])
    aux = ref_conv(feats[2], sd, "auxiliary_head.convs.0", padding=1, bn=True, relu=True)
    aux = F.conv2d(aux, sd["auxiliary_head.conv_seg.weight"], sd["auxiliary_head.conv_seg.bias"])
    return ref_resize(y, size), ref_resize(aux, size)


def test_mmseg_upernet_and_aux_head_give_mmseg_outputs(upernet_ckpt):
    sd = upernet_ckpt
    model = dense.upernet("crossformer_tiny", K, decoder_channels=UPER, aux_channels=AUX, **FIXED_INTERVAL).eval()
    report = dense.load_dense_checkpoint(model, {"state_dict": sd})
    assert report.source == "mmseg" and report.missing == [] and report.unused == []
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        out = model(x)
        feats = dense.find_crossformer(model).forward_intermediates(_normalise(x), intermediates_only=True)
        ref_out, ref_aux = ref_uperhead(feats, sd, x.shape[2:])
    torch.testing.assert_close(out["out"], ref_out, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["aux"], ref_aux, rtol=1e-4, atol=1e-4)

    no_aux = dense.upernet("crossformer_tiny", K, decoder_channels=UPER, aux_head=False)
    with pytest.raises(cv.CheckpointError, match="aux_head="):
        dense.load_dense_checkpoint(no_aux, {"state_dict": sd})
    report = dense.load_dense_checkpoint(no_aux, {"state_dict": sd}, strict=False)
    assert sorted(report.unused) == sorted(k for k in sd if k.startswith("auxiliary_head."))
    with pytest.raises(cv.CheckpointError, match="layout='mmseg'"):
        dense.load_dense_checkpoint(dense.upernet("crossformer_tiny", K, decoder_channels=UPER, aux_channels=AUX,
                                                  layout="smp", backbone_kwargs=MICRO), {"state_dict": sd})


@pytest.fixture(scope="module")
def fpn_ckpt(backbone_sd):
    torch.manual_seed(4)
    sd = dict(backbone_sd)
    _fpn_neck(sd, TINY)
    for i in range(4):
        for k in range(max(1, i)):
            _conv(sd, f"decode_head.scale_heads.{i}.{2 * k}", SEG, FPN if k == 0 else SEG, 3, bias=False, bn=True)
    _plain(sd, "decode_head.conv_seg", K, SEG, 1, 1)
    return sd


def ref_fpn_head(pyramid, sd, size):
    output = None
    for i, level in enumerate(pyramid):
        y = level
        for k in range(max(1, i)):
            y = ref_conv(y, sd, f"decode_head.scale_heads.{i}.{2 * k}", padding=1, bn=True, relu=True)
            if i > 0:
                y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        output = y if output is None else output + ref_resize(y, output.shape[2:])
    y = F.conv2d(output, sd["decode_head.conv_seg.weight"], sd["decode_head.conv_seg.bias"])
    return ref_resize(y, size)


def test_mmseg_semantic_fpn_gives_mmseg_outputs(fpn_ckpt):
    sd = fpn_ckpt
    model = dense.semantic_fpn("crossformer_tiny", K, pyramid_channels=FPN, segmentation_channels=SEG,
                               **FIXED_INTERVAL).eval()
    report = dense.load_dense_checkpoint(model, {"state_dict": sd})
    assert report.missing == [] and report.unused == []
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        out = model(x)["out"]
        feats = dense.find_crossformer(model).forward_intermediates(_normalise(x), intermediates_only=True)
        expected = ref_fpn_head(ref_fpn(feats, sd, None), sd, x.shape[2:])
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    group_norm = dense.semantic_fpn("crossformer_tiny", K, pyramid_channels=FPN, segmentation_channels=SEG,
                                    norm="groupnorm", backbone_kwargs=MICRO)
    with pytest.raises(cv.CheckpointError, match="norm='batchnorm'"):
        dense.load_dense_checkpoint(group_norm, {"state_dict": sd})
