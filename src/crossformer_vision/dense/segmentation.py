"""UPerNet and Semantic FPN with CrossFormer encoders, built from segmentation_models_pytorch.

:func:`upernet` and :func:`semantic_fpn` build smp's ``UPerNet`` / ``FPN`` with the ``tu-<variant>`` timm
encoder and wrap them in :class:`Segmenter`, which adds what the paper's models have and smp's lack: an
auxiliary FCN head on stage 3, input normalisation and padding to multiples of 32 (so any image size
works), and outputs cropped back to the input size.

Two decoder layouts:

* ``layout="mmseg"`` (default): smp's decoder adjusted to compute exactly what mmsegmentation's heads
  (the paper's) compute, so released checkpoints map tensor for tensor
  (:func:`~crossformer_vision.dense.load_dense_checkpoint`). UPerNet: no LayerNorm on the encoder
  features, dropout 0.1 before the classifier, bilinear upsampling with ``align_corners=False``. Semantic
  FPN: the FPN neck's 3x3 output convs (absent in smp), BatchNorm instead of GroupNorm in the scale heads,
  ``align_corners=False`` upsampling, dropout 0.1.
* ``layout="smp"``: smp's stock decoder (plus the auxiliary head if requested).

The differences are listed in docs/dense.md.
"""
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn

from ..utils.files import PathLike
from .backbone import backbone_kwargs_for
from .mmcv_weights import finish_dense_model

__all__ = ["LAYOUTS", "PAPER_SEGMENTATION", "TEST_MODES", "Segmenter", "pad_to_multiple", "segment", "segmentation_loss",
           "semantic_fpn", "upernet"]

LAYOUTS = ("mmseg", "smp")

#: ADE20K (150 classes), single-scale mIoU (official segmentation README; paper Table 6). Parameters in
#: millions; UPerNet's include the auxiliary FCN head.
PAPER_SEGMENTATION: Dict[str, Dict[str, float]] = {
    "semantic_fpn_crossformer_small": dict(params_m=34.3, miou=46.4, iterations=80_000),
    "semantic_fpn_crossformer_base": dict(params_m=55.6, miou=48.0, iterations=80_000),
    "upernet_crossformer_small": dict(params_m=62.3, miou=47.6, ms_miou=48.4, iterations=160_000),
    "upernet_crossformer_base": dict(params_m=83.6, miou=49.7, ms_miou=50.6, iterations=160_000),
}


def pad_to_multiple(tensor: Tensor, multiple: int = 32, value: float = 0.0) -> Tensor:
    """Pad the last two dimensions (bottom and right) up to multiples of ``multiple``.

    smp models need inputs whose height and width are multiples of 32; use ``value=255`` (the ignore index)
    for label maps and crop predictions back to the original size afterwards. ``(..., H, W)`` -> ``(..., H', W')``.
    """
    pad_h, pad_w = -tensor.shape[-2] % multiple, -tensor.shape[-1] % multiple
    if not (pad_h or pad_w):
        return tensor
    return F.pad(tensor, (0, pad_w, 0, pad_h), value=value)


class Segmenter(nn.Module):
    """An smp segmentation model with an optional auxiliary head; takes images in [0, 1] of any size.

    Args:
        net: smp ``SegmentationModel`` with a ``tu-crossformer_*`` encoder.
        num_classes: Output classes.
        aux_head: Optional module mapping encoder stage ``aux_stage`` to ``num_classes`` logits.
        aux_stage: Encoder stage (0-3) feeding ``aux_head``.
        size_divisor: Inputs are padded (bottom/right) to multiples of this before the network.
        mean: Per-channel mean subtracted from the input (ImageNet's).
        std: Per-channel standard deviation the input is divided by.

    Shapes:
        ``forward``: ``(B, 3, H, W)`` floats in [0, 1], any H, W >= 1 -> ``{"out": (B, K, H, W)}`` plus
        ``"aux": (B, K, H, W)`` when there is an auxiliary head (torchvision's segmentation convention).
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        aux_head: Optional[nn.Module] = None,
        aux_stage: int = 2,
        size_divisor: int = 32,
        mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        std: Sequence[float] = IMAGENET_DEFAULT_STD,
    ) -> None:
        super().__init__()
        self.net = net
        self.aux_head = aux_head
        self.aux_stage = aux_stage
        self.num_classes = num_classes
        self.size_divisor = size_divisor
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Dict[str, Tensor]:
        if images.dim() != 4 or images.shape[1] != self.mean.shape[1] or not images.is_floating_point():
            raise ValueError(
                f"expected a float image batch (batch, {self.mean.shape[1]}, height, width) with values in [0, 1], "
                f"got {images.dtype} {list(images.shape)}"
            )
        height, width = images.shape[-2:]
        # zeros after normalisation (the mean colour), like mmseg's Pad
        x = pad_to_multiple((images - self.mean) / self.std, self.size_divisor)
        features = self.net.encoder(x)
        out = self.net.segmentation_head(self.net.decoder(features))
        result = {"out": out[..., :height, :width]}
        if self.aux_head is not None:
            # smp's encoder list is [input, (empty stride-2 map), stage 1, stage 2, stage 3, stage 4]
            aux = self.aux_head(features[self.aux_stage + 2])
            aux = F.interpolate(aux, size=x.shape[-2:], mode="bilinear", align_corners=False)
            result["aux"] = aux[..., :height, :width]
        return result

    @torch.no_grad()
    def predict(self, images: Tensor, short_side: Optional[int] = None, max_long_side: Optional[int] = None,
                scales: Sequence[float] = (1.0,), flip: bool = False, mode: str = "whole",
                window: Optional[Sequence[int]] = None, stride: Optional[Sequence[int]] = None) -> Tensor:
        """Class index per pixel, at the input's resolution (:func:`segment` with this model's logits).

        Returns:
            ``(B, H, W)`` int64 labels.
        """
        return self.predict_probabilities(images, short_side, max_long_side, scales, flip, mode, window, stride).argmax(1)

    @torch.no_grad()
    def predict_probabilities(self, images: Tensor, short_side: Optional[int] = None,
                              max_long_side: Optional[int] = None, scales: Sequence[float] = (1.0,), flip: bool = False,
                              mode: str = "whole", window: Optional[Sequence[int]] = None,
                              stride: Optional[Sequence[int]] = None) -> Tensor:
        """Class probabilities ``(B, K, H, W)`` at the input's resolution; see :func:`segment`."""
        was_training = self.training
        self.eval()
        try:
            return segment(lambda x: self(x)["out"], images, short_side, max_long_side, scales, flip, mode, window, stride)
        finally:
            self.train(was_training)


#: How :func:`segment` runs the network on an image: on the whole image, or on overlapping windows.
TEST_MODES = ("whole", "slide")


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def _slide(logits_of: Callable[[Tensor], Tensor], images: Tensor, window: Sequence[int], stride: Sequence[int]) -> Tensor:
    """Logits averaged over ``window``-sized crops every ``stride`` pixels (the last ones flush with the image's
    bottom/right edges), as mmsegmentation's sliding-window test; one window when it covers the image."""
    height, width = images.shape[-2:]
    (wh, ww), (sh, sw) = window, stride
    rows = max(height - wh + sh - 1, 0) // sh + 1
    cols = max(width - ww + sw - 1, 0) // sw + 1
    total, count = None, images.new_zeros(1, 1, height, width)
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * sh + wh, height), min(c * sw + ww, width)
            y1, x1 = max(y2 - wh, 0), max(x2 - ww, 0)
            logits = logits_of(images[..., y1:y2, x1:x2])
            if total is None:
                total = images.new_zeros(images.shape[0], logits.shape[1], height, width)
            total[..., y1:y2, x1:x2] += logits
            count[..., y1:y2, x1:x2] += 1
    return total / count


def segment(logits_of: Callable[[Tensor], Tensor], images: Tensor, short_side: Optional[int] = None,
            max_long_side: Optional[int] = None, scales: Sequence[float] = (1.0,), flip: bool = False,
            mode: str = "whole", window: Optional[Sequence[int]] = None, stride: Optional[Sequence[int]] = None) -> Tensor:
    """Class probabilities of a segmentation network at the images' resolution, with the paper's test protocols.

    The single-scale test (the defaults) resizes to ``short_side`` (capped by ``max_long_side``) when given,
    runs the network once and resizes its logits back. The multi-scale test ("MS IoU" of the papers, mmseg's
    aug test) does the same at each of ``scales`` times that size (times the image's own size without
    ``short_side``), with ``flip`` also on the horizontally flipped image (its output flipped back), and
    averages the softmax probabilities. ``mode="slide"`` runs the network on ``window``-sized crops every
    ``stride`` pixels instead of the whole (resized) image and averages overlapping logits, for images larger
    than the training crop.

    Args:
        logits_of: ``(B, 3, h, w)`` images -> ``(B, K, h, w)`` logits (e.g. a :class:`Segmenter`'s ``"out"``).
        images: ``(B, 3, H, W)`` in [0, 1].
        short_side, max_long_side: Resize before the network (ADE20K: 512 and 2048), per scale.
        scales: Factors of that size; ``(0.5, 0.75, 1.0, 1.25, 1.5, 1.75)`` is the papers' MS test.
        flip: Also evaluate the mirrored image.
        mode: ``"whole"`` or ``"slide"``.
        window, stride: ``(height, width)`` of the windows and their steps (``mode="slide"``; the stride
            defaults to two thirds of the window, as the paper's 512 / 341).

    Returns:
        ``(B, K, H, W)`` probabilities (summing to 1 over ``K``).
    """
    if mode not in TEST_MODES:
        raise ValueError(f"mode must be one of {TEST_MODES}, got {mode!r}")
    if not scales or any(not s > 0 for s in scales):
        raise ValueError(f"scales must be positive numbers, got {list(scales)}")
    if mode == "slide":
        if window is None or len(window) != 2 or min(window) < 1:
            raise ValueError(f"mode='slide' needs window=(height, width) of at least 1 pixel, got {window!r}")
        stride = stride or [max(1, 2 * w // 3) for w in window]
        if len(stride) != 2 or min(stride) < 1:
            raise ValueError(f"stride must be (height, width) of at least 1 pixel, got {stride!r}")
    height, width = images.shape[-2:]
    base = 1.0
    if short_side is not None:
        base = short_side / min(height, width)
        if max_long_side is not None:
            base = min(base, max_long_side / max(height, width))
    probabilities = None
    views = 0
    for scale in scales:
        factor = base * scale
        size = (max(1, round(height * factor)), max(1, round(width * factor)))
        x = images if size == (height, width) else F.interpolate(
            images, size=size, mode="bilinear", align_corners=False, antialias=factor < 1)
        for mirrored in ((False, True) if flip else (False,)):
            view = x.flip(-1) if mirrored else x
            logits = _slide(logits_of, view, window, stride) if mode == "slide" else logits_of(view)
            logits = logits.flip(-1) if mirrored else logits
            p = _resize(logits, (height, width)).softmax(1)
            probabilities = p if probabilities is None else probabilities + p
            views += 1
    return probabilities / views


def segmentation_loss(
    outputs: Mapping[str, Tensor], labels: Tensor, ignore_index: int = 255, aux_weight: float = 0.4
) -> Dict[str, Tensor]:
    """Cross-entropy of ``outputs["out"]`` (and ``aux_weight`` x that of ``outputs["aux"]``, the paper's 0.4).

    Args:
        outputs: :class:`Segmenter` output, logits ``(B, K, H, W)``.
        labels: ``(B, H, W)`` int64 class indices; ``ignore_index`` pixels do not count.

    Returns:
        ``{"loss": total, "loss_out": ..., "loss_aux": ...}`` (``loss_aux`` only with an auxiliary head).
    """
    if labels.shape != outputs["out"].shape[:1] + outputs["out"].shape[2:]:
        raise ValueError(
            f"labels {list(labels.shape)} do not match the logits {list(outputs['out'].shape)}: labels must be "
            "(batch, height, width) at the images' size"
        )
    losses = {"loss_out": F.cross_entropy(outputs["out"], labels, ignore_index=ignore_index)}
    total = losses["loss_out"]
    if "aux" in outputs:
        losses["loss_aux"] = F.cross_entropy(outputs["aux"], labels, ignore_index=ignore_index)
        total = total + aux_weight * losses["loss_aux"]
    losses["loss"] = total
    return losses


def _aux_fcn_head(in_channels: int, channels: int, num_classes: int, dropout: float) -> nn.Module:
    """mmseg's FCNHead with one conv (``num_convs=1, concat_input=False``): conv3x3-BN-ReLU, dropout, 1x1."""
    from segmentation_models_pytorch.base.modules import Conv2dReLU

    return nn.Sequential(
        Conv2dReLU(in_channels, channels, kernel_size=3, padding=1, use_norm="batchnorm"),
        nn.Dropout2d(dropout),
        nn.Conv2d(channels, num_classes, kernel_size=1),
    )


def _check(num_classes: int, layout: str) -> None:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int (ADE20K: 150), got {num_classes!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def _upsample(scale: int) -> nn.Module:
    return nn.Upsample(scale_factor=scale, mode="bilinear", align_corners=False)


def upernet(
    backbone: str = "crossformer_small",
    num_classes: int = 150,
    *,
    decoder_channels: int = 512,
    aux_head: bool = True,
    aux_channels: int = 256,
    layout: str = "mmseg",
    dropout: float = 0.1,
    backbone_weights: Optional[PathLike] = None,
    weights: Optional[PathLike] = None,
    high_resolution: bool = False,
    lda_mode: str = "fixed_group",
    backbone_kwargs: Optional[Mapping[str, Any]] = None,
) -> Segmenter:
    """UPerNet (smp decoder) with a CrossFormer encoder; paper: UPerNet-S 62.3M parameters on ADE20K.

    Args:
        backbone: CrossFormer variant name.
        num_classes: Classes (ADE20K: 150).
        decoder_channels: UPerNet width; 512 is the paper's (mmseg ``channels=512``), smp's default is 256.
        aux_head: Add the auxiliary FCN head on stage 3 (paper: 256 channels, loss weight 0.4).
        aux_channels: Auxiliary head width.
        layout: ``"mmseg"`` (the paper's head, default) or ``"smp"`` (smp's stock decoder), see the module doc.
        dropout: Dropout before the classifiers (``layout="mmseg"``; mmseg's 0.1).
        backbone_weights: Backbone checkpoint (official classification or mmdet/mmseg file, or ours).
        weights: Complete checkpoint: an official mmsegmentation UPerNet file (``layout="mmseg"``) or a state
            dict saved from a model built by this function with the same arguments.
        high_resolution: Dense variants' group sizes [14, 14, 7, 7] and intervals [16, 8, 2, 1].
        lda_mode: ``"fixed_group"`` or ``"fixed_interval"`` (released checkpoints).
        backbone_kwargs: More CrossFormer options (``drop_path_rate``, ``use_checkpoint``, ...).
    """
    import segmentation_models_pytorch as smp

    _check(num_classes, layout)
    config = dict(arch="upernet", backbone=backbone, num_classes=num_classes, decoder_channels=decoder_channels,
                  aux_head=aux_head, aux_channels=aux_channels, layout=layout, dropout=dropout,
                  high_resolution=high_resolution, lda_mode=lda_mode, backbone_kwargs=dict(backbone_kwargs or {}))
    net = smp.UPerNet(encoder_name=f"tu-{backbone}", encoder_weights=None, decoder_channels=decoder_channels,
                      classes=num_classes, **backbone_kwargs_for(high_resolution, lda_mode, backbone_kwargs))
    if not all(hasattr(net.decoder, name) for name in ("feature_norms", "fpn_conv_blocks", "fusion_block")):
        raise ImportError(
            f"segmentation-models-pytorch {smp.__version__} has an older UPerNet decoder (no FPN output convs); "
            "the paper's UPerNet needs segmentation-models-pytorch>=0.6: pip install -U segmentation-models-pytorch"
        )
    if layout == "mmseg":
        net.decoder.feature_norms = nn.ModuleList(nn.Identity() for _ in net.decoder.feature_norms)
        net.decoder.fusion_block.append(nn.Dropout2d(dropout))
        net.segmentation_head[1] = _upsample(4)
    head = None
    if aux_head:
        head = _aux_fcn_head(net.encoder.out_channels[4], aux_channels, num_classes, dropout)
    return finish_dense_model(Segmenter(net, num_classes, head, aux_stage=2), config, weights, backbone_weights)


def _mmseg_scale_head(block: nn.Module, pyramid_channels: int, norm: str) -> nn.Module:
    """smp ``SegmentationBlock`` -> mmseg FPNHead scale head (3x3 FPN output conv first; BN; align_corners=False)."""
    layers = []
    for conv_norm_relu in block.block:
        if norm == "batchnorm":
            conv_norm_relu.block[1] = nn.BatchNorm2d(conv_norm_relu.block[1].num_channels)
        layers.append(conv_norm_relu)
        if conv_norm_relu.upsample:
            conv_norm_relu.upsample = False  # smp upsamples with align_corners=True; mmseg with False
            layers.append(_upsample(2))
    block.block = nn.Sequential(*layers)
    return nn.Sequential(nn.Conv2d(pyramid_channels, pyramid_channels, kernel_size=3, padding=1), block)


def semantic_fpn(
    backbone: str = "crossformer_small",
    num_classes: int = 150,
    *,
    pyramid_channels: int = 256,
    segmentation_channels: int = 128,
    layout: str = "mmseg",
    norm: str = "batchnorm",
    dropout: float = 0.1,
    backbone_weights: Optional[PathLike] = None,
    weights: Optional[PathLike] = None,
    high_resolution: bool = False,
    lda_mode: str = "fixed_group",
    backbone_kwargs: Optional[Mapping[str, Any]] = None,
) -> Segmenter:
    """Semantic FPN (smp FPN decoder) with a CrossFormer encoder; paper: FPN-S 34.3M parameters on ADE20K.

    Args:
        backbone: CrossFormer variant name.
        num_classes: Classes (ADE20K: 150).
        pyramid_channels: FPN channels (256).
        segmentation_channels: Scale-head channels (128).
        layout: ``"mmseg"`` (the paper's neck and head, default) or ``"smp"`` (smp's FPN: no 3x3 FPN output
            convs, 2.4M fewer parameters, GroupNorm, ``align_corners=True`` upsampling, dropout 0.2).
        norm: Scale-head normalisation for ``layout="mmseg"``: ``"batchnorm"`` (paper, needed to load the
            released checkpoints) or ``"groupnorm"`` (smp's; better for very small batches).
        dropout: Dropout before the classifier (``layout="mmseg"``).
        backbone_weights, weights, high_resolution, lda_mode, backbone_kwargs: as :func:`upernet`. The
            original Semantic FPN configs used ``high_resolution=True``.
    """
    import segmentation_models_pytorch as smp

    _check(num_classes, layout)
    if norm not in ("batchnorm", "groupnorm"):
        raise ValueError(f"norm must be 'batchnorm' or 'groupnorm', got {norm!r}")
    config = dict(arch="semantic_fpn", backbone=backbone, num_classes=num_classes, pyramid_channels=pyramid_channels,
                  segmentation_channels=segmentation_channels, layout=layout, norm=norm, dropout=dropout,
                  high_resolution=high_resolution, lda_mode=lda_mode, backbone_kwargs=dict(backbone_kwargs or {}))
    net = smp.FPN(encoder_name=f"tu-{backbone}", encoder_weights=None, decoder_pyramid_channels=pyramid_channels,
                  decoder_segmentation_channels=segmentation_channels, decoder_merge_policy="add",
                  classes=num_classes, **backbone_kwargs_for(high_resolution, lda_mode, backbone_kwargs))
    if layout == "mmseg":
        net.decoder.seg_blocks = nn.ModuleList(
            _mmseg_scale_head(block, pyramid_channels, norm) for block in net.decoder.seg_blocks
        )
        net.decoder.dropout = nn.Dropout2d(dropout)
        net.segmentation_head[1] = _upsample(4)
    return finish_dense_model(Segmenter(net, num_classes), config, weights, backbone_weights)
