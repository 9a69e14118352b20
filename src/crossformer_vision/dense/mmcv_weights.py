"""Official mmdetection / mmsegmentation checkpoints -> torchvision and smp modules.

The released CrossFormer detection and segmentation checkpoints are mmdet 2.x / mmseg 0.x training
states: ``{"meta": {...}, "state_dict": {"backbone.<official key>": ..., "neck.<...>": ..., "<head>.<...>":
...}}``. :func:`load_dense_checkpoint` maps every tensor whose computation is the same in the torchvision /
smp module built by :mod:`crossformer_vision.dense`:

==========================================  ================================================================
mmdet / mmseg                               here
==========================================  ================================================================
``backbone.*``                              the CrossFormer (``crossformer_vision.convert_official_state_dict``)
``neck.lateral_convs.i`` / ``fpn_convs.i``  torchvision FPN ``inner_blocks.i`` / ``layer_blocks.i``;
                                            RetinaNet's ``fpn_convs.3`` / ``.4`` -> ``extra_blocks.p6`` / ``p7``
``bbox_head.{cls,reg}_convs.i``             RetinaNet ``head.{classification,regression}_head.conv.i``
``bbox_head.retina_cls`` / ``retina_reg``   ``cls_logits`` (+ background output 0 per anchor) / ``bbox_reg``
``rpn_head.rpn_conv`` / ``rpn_cls`` / ``rpn_reg``   ``rpn.head.conv`` / ``cls_logits`` / ``bbox_pred``
``roi_head.bbox_head.shared_fcs.0`` / ``.1``  ``roi_heads.box_head.fc6`` / ``fc7``
``roi_head.bbox_head.fc_cls`` / ``fc_reg``  ``box_predictor.cls_score`` (background moved from last to 0) /
                                            ``bbox_pred`` (rows of background prepended; class-agnostic
                                            regression repeated per class)
``roi_head.mask_head.convs.i`` / ``upsample`` / ``conv_logits``   ``roi_heads.mask_head.i`` /
                                            ``mask_predictor.conv5_mask`` / ``mask_fcn_logits`` (+ background)
``decode_head.*`` (UPerHead), ``auxiliary_head.*`` (FCNHead)   smp UPerNet decoder (``layout="mmseg"``),
                                            ``segmentation_head``, the auxiliary head
``neck.*`` + ``decode_head.*`` (FPN + FPNHead)   smp FPN decoder (``layout="mmseg"``, BatchNorm)
==========================================  ================================================================

What cannot be mapped because the computation differs (RoIAlign alignment, anchor rounding, losses...)
is listed in docs/dense.md.
"""
import logging
import re
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ..models.official import CheckpointError, convert_official_state_dict, load_checkpoint_file, unwrap_state_dict
from ..utils.files import PathLike
from .backbone import find_crossformer

__all__ = ["DenseLoadReport", "convert_mmcv_state_dict", "load_dense_checkpoint"]

_logger = logging.getLogger(__name__)

_HEAD_PREFIXES = ("neck.", "bbox_head.", "rpn_head.", "roi_head.", "decode_head.", "auxiliary_head.")


class DenseLoadReport(NamedTuple):
    """What :func:`load_dense_checkpoint` did.

    Attributes:
        source: ``"mmdet"``, ``"mmseg"`` or ``"own"`` (a state dict of a model built by this package).
        loaded: Model keys that received a tensor.
        missing: Model keys left as they were.
        unused: Checkpoint keys not used (nothing here computes what they compute).
        class_names: Class names from the checkpoint's ``meta["CLASSES"]`` (empty if absent), in the
            order of labels 1, 2, ... of the model.
    """

    source: str
    loaded: List[str]
    missing: List[str]
    unused: List[str]
    class_names: List[str]


# ---------------------------------------------------------------------------------------------- helpers
# A mapper returns (checkpoint key, model key) pairs for tensors copied as they are, and writes tensors that
# need a transformation (class reordering, background rows) into ``out`` itself, returning their checkpoint
# keys with an empty model key so they count as used.
def _conv_module(src: str, dst: str, norm_dst: Optional[str] = None) -> List[Tuple[str, str]]:
    """mmcv ``ConvModule`` ``{src}.conv.*`` / ``{src}.bn.*`` -> ``{dst}.*`` / ``{norm_dst}.*`` key pairs."""
    pairs = [(f"{src}.conv.weight", f"{dst}.weight"), (f"{src}.conv.bias", f"{dst}.bias")]
    if norm_dst is not None:
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            pairs.append((f"{src}.bn.{name}", f"{norm_dst}.{name}"))
    return pairs


def _plain(src: str, dst: str) -> List[Tuple[str, str]]:
    return [(f"{src}.weight", f"{dst}.weight"), (f"{src}.bias", f"{dst}.bias")]


def _count(state_dict: Mapping[str, Tensor], pattern: str) -> int:
    return len({m.group(1) for k in state_dict if (m := re.match(pattern, k))})


def _insert_background(tensor: Tensor, groups: int, classes: int, fill: float) -> Tensor:
    """``(groups * classes, ...)`` -> ``(groups * (classes + 1), ...)`` with a new entry 0 in each group."""
    shaped = tensor.reshape(groups, classes, *tensor.shape[1:])
    pad = torch.full((groups, 1, *tensor.shape[1:]), fill, dtype=tensor.dtype)
    return torch.cat([pad, shaped], dim=1).reshape(groups * (classes + 1), *tensor.shape[1:])


def _class_error(what: str, file_classes: int, model_classes: int) -> CheckpointError:
    return CheckpointError(
        f"the checkpoint's {what} has {file_classes} object classes but the model was built with "
        f"num_classes={model_classes}; build it with num_classes={file_classes} to load these weights "
        f"(or load the backbone only with backbone_weights=...)"
    )


# ---------------------------------------------------------------------------------------------- detection
def _fpn_pairs(sd: Mapping[str, Tensor], model: nn.Module) -> List[Tuple[str, str]]:
    fpn = model.backbone.fpn
    levels = len(fpn.inner_blocks)
    file_levels = _count(sd, r"neck\.lateral_convs\.(\d+)\.")
    if file_levels != levels:
        raise CheckpointError(
            f"the checkpoint's FPN has {file_levels} input levels, the model's {levels} "
            "(RetinaNet uses stages 2-4, Mask/Faster R-CNN all four): build the matching detector"
        )
    pairs = []
    for i in range(levels):
        pairs += _conv_module(f"neck.lateral_convs.{i}", f"backbone.fpn.inner_blocks.{i}.0")
        pairs += _conv_module(f"neck.fpn_convs.{i}", f"backbone.fpn.layer_blocks.{i}.0")
    extra = _count(sd, r"neck\.fpn_convs\.(\d+)\.") - levels
    if extra:
        if not hasattr(fpn.extra_blocks, "p6"):
            raise CheckpointError(
                f"the checkpoint's FPN has {extra} extra conv levels but the model's FPN has none (max-pool); "
                "a RetinaNet checkpoint needs crossformer_vision.dense.retinanet"
            )
        pairs += _conv_module(f"neck.fpn_convs.{levels}", "backbone.fpn.extra_blocks.p6")
        pairs += _conv_module(f"neck.fpn_convs.{levels + 1}", "backbone.fpn.extra_blocks.p7")
    return pairs


def _retinanet(sd: Mapping[str, Tensor], model: nn.Module, out: Dict[str, Tensor]) -> List[Tuple[str, str]]:
    pairs = _fpn_pairs(sd, model)
    for i in range(_count(sd, r"bbox_head\.cls_convs\.(\d+)\.")):
        pairs += _conv_module(f"bbox_head.cls_convs.{i}", f"head.classification_head.conv.{i}.0")
        pairs += _conv_module(f"bbox_head.reg_convs.{i}", f"head.regression_head.conv.{i}.0")
    pairs += _plain("bbox_head.retina_reg", "head.regression_head.bbox_reg")
    head = model.head.classification_head
    anchors, classes = head.num_anchors, head.num_classes - 1
    weight, bias = sd["bbox_head.retina_cls.weight"], sd["bbox_head.retina_cls.bias"]
    if weight.shape[0] != anchors * classes:
        raise _class_error("retina_cls", weight.shape[0] // anchors, classes)
    # output 0 of every anchor is torchvision's unused background; it gets torchvision's prior bias
    prior = float(head.cls_logits.bias.detach().reshape(anchors, classes + 1)[:, 0].mean())
    out["head.classification_head.cls_logits.weight"] = _insert_background(weight, anchors, classes, 0.0)
    out["head.classification_head.cls_logits.bias"] = _insert_background(bias, anchors, classes, prior)
    return pairs + [("bbox_head.retina_cls.weight", ""), ("bbox_head.retina_cls.bias", "")]


def _rcnn(sd: Mapping[str, Tensor], model: nn.Module, out: Dict[str, Tensor]) -> List[Tuple[str, str]]:
    pairs = _fpn_pairs(sd, model)
    pairs += _plain("rpn_head.rpn_conv", "rpn.head.conv.0.0")
    pairs += _plain("rpn_head.rpn_cls", "rpn.head.cls_logits")
    pairs += _plain("rpn_head.rpn_reg", "rpn.head.bbox_pred")
    if sd["rpn_head.rpn_cls.weight"].shape[0] != model.rpn.head.cls_logits.out_channels:
        raise CheckpointError(
            f"the checkpoint's RPN has {sd['rpn_head.rpn_cls.weight'].shape[0]} classification outputs, torchvision's "
            f"{model.rpn.head.cls_logits.out_channels} (one sigmoid score per anchor): softmax RPNs cannot be mapped"
        )
    pairs += _plain("roi_head.bbox_head.shared_fcs.0", "roi_heads.box_head.fc6")
    pairs += _plain("roi_head.bbox_head.shared_fcs.1", "roi_heads.box_head.fc7")
    classes = model.roi_heads.box_predictor.cls_score.out_features - 1
    fc_cls_w, fc_cls_b = sd["roi_head.bbox_head.fc_cls.weight"], sd["roi_head.bbox_head.fc_cls.bias"]
    if fc_cls_w.shape[0] != classes + 1:
        raise _class_error("fc_cls", fc_cls_w.shape[0] - 1, classes)
    # mmdet 2.x puts background last, torchvision first
    order = torch.cat([torch.tensor([classes]), torch.arange(classes)])
    out["roi_heads.box_predictor.cls_score.weight"] = fc_cls_w[order]
    out["roi_heads.box_predictor.cls_score.bias"] = fc_cls_b[order]
    fc_reg_w, fc_reg_b = sd["roi_head.bbox_head.fc_reg.weight"], sd["roi_head.bbox_head.fc_reg.bias"]
    if fc_reg_w.shape[0] == 4:  # class-agnostic regression: the same deltas for every class
        fc_reg_w, fc_reg_b = fc_reg_w.repeat(classes, 1), fc_reg_b.repeat(classes)
    if fc_reg_w.shape[0] != 4 * classes:
        raise _class_error("fc_reg", fc_reg_w.shape[0] // 4, classes)
    out["roi_heads.box_predictor.bbox_pred.weight"] = torch.cat([torch.zeros_like(fc_reg_w[:4]), fc_reg_w])
    out["roi_heads.box_predictor.bbox_pred.bias"] = torch.cat([torch.zeros_like(fc_reg_b[:4]), fc_reg_b])
    used = [(f"roi_head.bbox_head.{n}.{p}", "") for n in ("fc_cls", "fc_reg") for p in ("weight", "bias")]
    if getattr(model.roi_heads, "mask_head", None) is not None and any(k.startswith("roi_head.mask_head.") for k in sd):
        for i in range(_count(sd, r"roi_head\.mask_head\.convs\.(\d+)\.")):
            pairs += _conv_module(f"roi_head.mask_head.convs.{i}", f"roi_heads.mask_head.{i}.0")
        pairs += _plain("roi_head.mask_head.upsample", "roi_heads.mask_predictor.conv5_mask")
        logits_w, logits_b = sd["roi_head.mask_head.conv_logits.weight"], sd["roi_head.mask_head.conv_logits.bias"]
        if logits_w.shape[0] != classes:
            raise _class_error("mask conv_logits", logits_w.shape[0], classes)
        out["roi_heads.mask_predictor.mask_fcn_logits.weight"] = _insert_background(logits_w, 1, classes, 0.0)
        out["roi_heads.mask_predictor.mask_fcn_logits.bias"] = _insert_background(logits_b, 1, classes, 0.0)
        used += [(f"roi_head.mask_head.conv_logits.{p}", "") for p in ("weight", "bias")]
    return pairs + used


# ---------------------------------------------------------------------------------------------- segmentation
def _require_mmseg_layout(model: nn.Module, what: str) -> None:
    config = getattr(model, "build_config", {})
    if config.get("layout", "mmseg") != "mmseg" or config.get("norm", "batchnorm") != "batchnorm":
        raise CheckpointError(
            f"an mmsegmentation {what} maps only onto layout='mmseg' with norm='batchnorm' (the paper's head); "
            f"this model was built with layout={config.get('layout')!r}, norm={config.get('norm', 'batchnorm')!r}"
        )


def _aux_pairs(sd: Mapping[str, Tensor], model: nn.Module) -> List[Tuple[str, str]]:
    if model.aux_head is None or not any(k.startswith("auxiliary_head.") for k in sd):
        return []
    if _count(sd, r"auxiliary_head\.convs\.(\d+)\.") != 1 or any(k.startswith("auxiliary_head.conv_cat.") for k in sd):
        raise CheckpointError(
            "the checkpoint's auxiliary FCNHead has more than one conv or concat_input=True; only the paper's "
            "(num_convs=1, concat_input=False) maps onto the auxiliary head"
        )
    return _conv_module("auxiliary_head.convs.0", "aux_head.0.0", "aux_head.0.1") + _plain(
        "auxiliary_head.conv_seg", "aux_head.2"
    )


def _upernet(sd: Mapping[str, Tensor], model: nn.Module, out: Dict[str, Tensor]) -> List[Tuple[str, str]]:
    _require_mmseg_layout(model, "UPerHead")
    pairs = []
    for i in range(_count(sd, r"decode_head\.psp_modules\.(\d+)\.")):
        pairs += _conv_module(f"decode_head.psp_modules.{i}.1", f"net.decoder.psp.blocks.{i}.1.0", f"net.decoder.psp.blocks.{i}.1.1")
    pairs += _conv_module("decode_head.bottleneck", "net.decoder.psp.out_conv.0", "net.decoder.psp.out_conv.1")
    laterals = _count(sd, r"decode_head\.lateral_convs\.(\d+)\.")
    for i in range(laterals):  # mmseg lists the levels fine to coarse, smp coarse to fine
        j = laterals - 1 - i
        pairs += _conv_module(f"decode_head.lateral_convs.{i}", f"net.decoder.fpn_lateral_blocks.{j}.conv_norm_relu.0",
                              f"net.decoder.fpn_lateral_blocks.{j}.conv_norm_relu.1")
        pairs += _conv_module(f"decode_head.fpn_convs.{i}", f"net.decoder.fpn_conv_blocks.{j}.0", f"net.decoder.fpn_conv_blocks.{j}.1")
    pairs += _conv_module("decode_head.fpn_bottleneck", "net.decoder.fusion_block.0", "net.decoder.fusion_block.1")
    pairs += _plain("decode_head.conv_seg", "net.segmentation_head.0")
    return pairs + _aux_pairs(sd, model)


def _semantic_fpn(sd: Mapping[str, Tensor], model: nn.Module, out: Dict[str, Tensor]) -> List[Tuple[str, str]]:
    _require_mmseg_layout(model, "FPN + FPNHead")
    lateral_targets = ["net.decoder.p2.skip_conv", "net.decoder.p3.skip_conv", "net.decoder.p4.skip_conv", "net.decoder.p5"]
    if _count(sd, r"neck\.lateral_convs\.(\d+)\.") != 4 or _count(sd, r"decode_head\.scale_heads\.(\d+)\.") != 4:
        raise CheckpointError("the checkpoint's FPN / FPNHead does not have 4 levels (strides 4-32); it cannot be mapped")
    pairs = []
    for i in range(4):  # mmseg level i (stride 4 * 2**i) = smp seg_blocks[3 - i]
        pairs += _conv_module(f"neck.lateral_convs.{i}", lateral_targets[i])
        pairs += _conv_module(f"neck.fpn_convs.{i}", f"net.decoder.seg_blocks.{3 - i}.0")
        for j in sorted({int(m.group(1)) for k in sd if (m := re.match(rf"decode_head\.scale_heads\.{i}\.(\d+)\.conv\.", k))}):
            block = f"net.decoder.seg_blocks.{3 - i}.1.block.{j}.block"
            pairs += _conv_module(f"decode_head.scale_heads.{i}.{j}", f"{block}.0", f"{block}.1")
    pairs += _plain("decode_head.conv_seg", "net.segmentation_head.0")
    return pairs + _aux_pairs(sd, model)


# ---------------------------------------------------------------------------------------------- entry points
def _mapper(model: nn.Module) -> Tuple[str, Callable[..., List[Tuple[str, str]]]]:
    from torchvision.models.detection import FasterRCNN, RetinaNet

    from .segmentation import Segmenter

    if isinstance(model, RetinaNet):
        return "mmdet", _retinanet
    if isinstance(model, FasterRCNN):  # MaskRCNN is a FasterRCNN
        return "mmdet", _rcnn
    if isinstance(model, Segmenter):
        import segmentation_models_pytorch as smp

        if isinstance(model.net, smp.UPerNet):
            return "mmseg", _upernet
        if isinstance(model.net, smp.FPN):
            return "mmseg", _semantic_fpn
    raise ValueError(
        f"no mmdet/mmseg mapping for {type(model).__name__}; build the model with crossformer_vision.dense "
        "(retinanet, fasterrcnn, maskrcnn, upernet, semantic_fpn)"
    )


def convert_mmcv_state_dict(state_dict: Mapping[str, Tensor], model: nn.Module) -> Tuple[Dict[str, Tensor], List[str]]:
    """Map an mmdet/mmseg state dict onto ``model``'s keys.

    Args:
        state_dict: The checkpoint's ``state_dict`` (``backbone.*``, ``neck.*``, head keys).
        model: A model built by :mod:`crossformer_vision.dense`; used for key names, class counts and shapes.

    Returns:
        ``(converted, unused)``: tensors under ``model``'s keys, and the checkpoint keys that were not used.

    Raises:
        CheckpointError: class counts, levels or head types that do not fit the model, with the fix.
    """
    _, mapper = _mapper(model)
    backbone = find_crossformer(model)
    prefix = next(name for name, module in model.named_modules() if module is backbone) + "."
    converted = {prefix + k: v for k, v in convert_official_state_dict(
        {k: v for k, v in state_dict.items() if k.startswith("backbone.")}
    ).items()}
    used = {k for k in state_dict if k.startswith("backbone.")}
    special: Dict[str, Tensor] = {}
    try:
        pairs = mapper(state_dict, model, special)
    except KeyError as err:
        raise CheckpointError(f"the checkpoint lacks {err.args[0]!r}, which this head needs; is it the right model type?") from None
    for src, dst in pairs:
        if src not in state_dict:
            if src.endswith((".bias", ".num_batches_tracked")) and dst:
                continue  # convs without bias; BN stats of old files
            raise CheckpointError(f"the checkpoint lacks {src!r}, which this head needs; is it the right model type?")
        used.add(src)
        if dst:
            converted[dst] = state_dict[src]
    converted.update(special)
    unused = [k for k in state_dict if k not in used]
    return converted, unused


def load_dense_checkpoint(
    model: nn.Module, checkpoint: Union[PathLike, Mapping[str, Any]], strict: bool = True
) -> DenseLoadReport:
    """Load a complete detector/segmenter checkpoint: an official mmdet/mmseg file or this package's own.

    Args:
        model: A model from :mod:`crossformer_vision.dense` of the checkpoint's type, variant and class count.
        checkpoint: File path (read safely) or an already loaded checkpoint / state dict.
        strict: Raise unless every model tensor is set and every checkpoint tensor used. With False, load
            what maps and report the rest.

    Returns:
        :class:`DenseLoadReport`.

    Raises:
        CheckpointError: unreadable file, wrong model type/variant/class count, or (strict) leftovers.
    """
    name = str(checkpoint) if not isinstance(checkpoint, Mapping) else "checkpoint"
    raw = load_checkpoint_file(checkpoint) if not isinstance(checkpoint, Mapping) else checkpoint
    meta = raw.get("meta", {}) if isinstance(raw, Mapping) else {}
    class_names = list(meta.get("CLASSES") or []) if isinstance(meta, Mapping) else []
    state_dict = unwrap_state_dict(raw)
    own = model.state_dict()
    if all(k in own for k in state_dict):
        source, converted, unused = "own", dict(state_dict), []
    elif any(k.startswith(_HEAD_PREFIXES) for k in state_dict):
        source = _mapper(model)[0]
        converted, unused = convert_mmcv_state_dict(state_dict, model)
        lda_mode = getattr(find_crossformer(model), "lda_mode", None)
        if lda_mode != "fixed_interval":
            _logger.warning(
                "%s: the released CrossFormer dense checkpoints were trained with lda_mode='fixed_interval'; this "
                "model uses %r, so its outputs will differ from the official ones", name, lda_mode
            )
    else:
        raise CheckpointError(
            f"{name} is neither an mmdet/mmseg checkpoint (no neck/head keys) nor a state dict of this model "
            f"(e.g. {[k for k in state_dict if k not in own][:3]}); for backbone weights use backbone_weights=... "
            "or crossformer_vision.dense.load_backbone_weights"
        )
    mismatched = [(k, list(v.shape), list(own[k].shape)) for k, v in converted.items() if k in own and v.shape != own[k].shape]
    if mismatched:
        k, got, want = mismatched[0]
        raise CheckpointError(
            f"{name} does not fit the model: {len(mismatched)} tensors differ in shape, e.g. {k}: checkpoint {got} vs "
            f"model {want}. Build the variant and head sizes the checkpoint was trained with."
        )
    missing = [k for k in own if k not in converted]
    if strict and (missing or unused):
        raise CheckpointError(
            f"{name} does not fully fit the model: {len(missing)} model tensors not in the checkpoint {missing[:5]}, "
            f"{len(unused)} checkpoint tensors unused {unused[:5]}. Build the matching model (e.g. aux_head=, "
            "num_classes=, detector type) or pass strict=False to load what maps."
        )
    model.load_state_dict(converted, strict=False)
    if source != "own" and class_names:
        model.class_names = class_names
    return DenseLoadReport(source, sorted(converted), missing, unused, class_names)


def finish_dense_model(model: nn.Module, config: Dict[str, Any], weights: Optional[PathLike] = None,
                       backbone_weights: Optional[PathLike] = None) -> nn.Module:
    """The last step of every dense builder: record how ``model`` was built (``model.build_config``: a saved
    checkpoint rebuilds it from that) and load its starting weights: a backbone checkpoint, then complete-model
    weights (an official mmdet/mmseg file or one of ours)."""
    from .backbone import load_backbone_weights

    model.build_config = config
    model.num_classes = config["num_classes"]
    if backbone_weights is not None:
        load_backbone_weights(model, backbone_weights)
    if weights is not None:
        load_dense_checkpoint(model, weights)
    return model
