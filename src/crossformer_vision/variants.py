"""The published CrossFormer / CrossFormer++ variants, their timm registration and pretrained configs.

Configurations are the official ones (configs/*.yaml of github.com/cheerss/CrossFormer); with 1000
classes their parameter counts equal the official models' exactly (tests/test_variants.py).
"""
import difflib
import logging
from typing import Any, Dict, List, Optional

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from .model import CrossFormer
from .weights import (
    CheckpointError,
    checkpoint_filter_fn,
    convert_official_state_dict,
    load_checkpoint_file,
    load_state_dict_checked,
    unwrap_state_dict,
)

__all__ = ["MODELS", "PAPER", "PAPER_ABLATION_S", "SMALL_VARIANTS", "VARIANTS", "create_model", "list_models"]

_logger = logging.getLogger(__name__)

_CROSSFORMER = dict(group_size=(7, 7, 7, 7), crs_interval=(8, 4, 2, 1))
_CROSSFORMER_PP = dict(group_size=(4, 4, 14, 7), crs_interval=(4, 2, 1, 1), use_acl=True)

#: Architecture of each registered variant (CrossFormer constructor arguments).
VARIANTS: Dict[str, Dict[str, Any]] = {
    "crossformer_tiny": dict(embed_dim=64, depths=(1, 1, 8, 6), num_heads=(2, 4, 8, 16), drop_path_rate=0.1, **_CROSSFORMER),
    "crossformer_small": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2, **_CROSSFORMER),
    "crossformer_base": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.3, **_CROSSFORMER),
    "crossformer_large": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.5, **_CROSSFORMER),
    "crossformerpp_small": dict(embed_dim=64, depths=(2, 2, 18, 2), num_heads=(2, 4, 8, 16), drop_path_rate=0.2, **_CROSSFORMER_PP),
    "crossformerpp_base": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.3, **_CROSSFORMER_PP),
    "crossformerpp_large": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.5, **_CROSSFORMER_PP),
    "crossformerpp_huge": dict(embed_dim=128, depths=(6, 6, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.5, **_CROSSFORMER_PP),
}

#: Small configurations of the same architecture that no paper trained, registered like the variants (for the
#: demo, tests and laptops). ``crossformer_micro``: the stem's stride 4 turns a 32x32 image into an 8x8 token map,
#: the four stages see 8x8, 4x4, 2x2 and 1x1 maps; SDA groups are the whole map in stages 1-2 and LDA uses
#: interval 2 in stage 1 (1.7M parameters, 8.6M multiply-accumulates at 32x32).
SMALL_VARIANTS: Dict[str, Dict[str, Any]] = {
    "crossformer_micro": dict(
        patch_size=(4, 8, 16, 32),
        embed_dim=32,
        depths=(1, 1, 2, 1),
        num_heads=(1, 2, 4, 8),
        group_size=(4, 4, 2, 1),
        crs_interval=(2, 1, 1, 1),
        merge_size=((2, 4), (2, 4), (2, 4)),
    ),
}

#: Every registered model: the published variants, then the small ones.
MODELS: Dict[str, Dict[str, Any]] = {**VARIANTS, **SMALL_VARIANTS}

#: The papers' ImageNet-1K figures at 224x224: parameters, GFLOPs (multiply-accumulates), top-1 accuracy,
#: the exact parameter count of the official code with 1000 classes, and fvcore's count on the official code.
PAPER: Dict[str, Dict[str, float]] = {
    "crossformer_tiny": dict(params_m=27.8, gflops=2.9, top1=81.5, exact_params=27_776_794, official_fvcore_gflops=2.870),
    "crossformer_small": dict(params_m=30.7, gflops=4.9, top1=82.5, exact_params=30_657_394, official_fvcore_gflops=4.925),
    "crossformer_base": dict(params_m=52.0, gflops=9.2, top1=83.4, exact_params=51_971_554, official_fvcore_gflops=9.188),
    "crossformer_large": dict(params_m=92.0, gflops=16.1, top1=84.0, exact_params=91_971_184, official_fvcore_gflops=16.146),
    "crossformerpp_small": dict(params_m=23.3, gflops=4.9, top1=83.2, exact_params=23_325_340, official_fvcore_gflops=4.451),
    "crossformerpp_base": dict(params_m=52.0, gflops=9.5, top1=84.2, exact_params=51_994_594, official_fvcore_gflops=9.626),
    "crossformerpp_large": dict(params_m=92.0, gflops=16.6, top1=84.7, exact_params=92_001_904, official_fvcore_gflops=16.768),
    "crossformerpp_huge": dict(params_m=96.0, gflops=21.8, top1=84.9, exact_params=95_962_944, official_fvcore_gflops=22.073),
}

#: CrossFormer-S position-encoding ablation (paper Table 5): parameters in millions.
PAPER_ABLATION_S: Dict[str, float] = {"ape": 30.9342, "rpb": 30.6159, "dpb": 30.6573, "dpb_residual": 30.6573}

_OFFICIAL_WEIGHTS = "https://github.com/cheerss/CrossFormer#model-zoo"


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "fixed_input_size": False,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": ("patch_embed.projs.0", "patch_embed.projs.1", "patch_embed.projs.2", "patch_embed.projs.3"),
        "classifier": "head.fc",
        # official weights are published outside any hub: download them from the official model zoo and pass
        # pretrained_cfg_overlay=dict(file=PATH); CrossFormer.load_pretrained reads them (custom_load)
        "custom_load": True,
        "origin_url": _OFFICIAL_WEIGHTS,
        "license": "mit",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "crossformer_tiny.in1k": _cfg(paper_ids="arXiv:2108.00154"),
        "crossformer_small.in1k": _cfg(paper_ids="arXiv:2108.00154"),
        "crossformer_base.in1k": _cfg(paper_ids="arXiv:2108.00154"),
        "crossformer_large.in1k": _cfg(paper_ids="arXiv:2108.00154"),
        "crossformerpp_small.in1k": _cfg(paper_ids="arXiv:2303.06908"),
        "crossformerpp_base.in1k": _cfg(paper_ids="arXiv:2303.06908"),
        "crossformerpp_large.in1k": _cfg(paper_ids="arXiv:2303.06908"),
        "crossformerpp_huge.in1k": _cfg(paper_ids="arXiv:2303.06908"),
        # no weights anywhere: a configuration for 32x32 inputs (the digits demo trains it in a minute on a CPU)
        "crossformer_micro.untrained": _cfg(input_size=(3, 32, 32), pool_size=(1, 1), crop_pct=1.0,
                                           origin_url=None, custom_load=False),
    }
)


def _load_pretrained(model: CrossFormer, path: str) -> None:
    """``custom_load`` hook for timm: read an official or own checkpoint safely and adapt it to ``model``.

    A classifier of another size (``num_classes`` changed, or 0 for features) is left freshly initialised;
    stem convolutions are adapted when ``in_chans`` differs (timm's ``adapt_input_conv``).
    """
    from timm.models import adapt_input_conv

    state_dict = convert_official_state_dict(unwrap_state_dict(load_checkpoint_file(path)), model)
    own = model.state_dict()
    for key in [k for k in state_dict if k.startswith("head.")]:
        if key not in own or own[key].shape != state_dict[key].shape:
            del state_dict[key]
    for key in [k for k in state_dict if k.startswith("patch_embed.projs.") and k.endswith(".weight")]:
        if key in own and state_dict[key].shape[1] != own[key].shape[1]:
            state_dict[key] = adapt_input_conv(own[key].shape[1], state_dict[key])
    missing, unexpected = load_state_dict_checked(model, state_dict, strict=False)
    missing = [k for k in missing if not k.startswith("head.")]
    if missing and all(k.startswith("norm.") for k in missing):
        # detection/segmentation checkpoints have no final norm; features_only models drop it anyway
        _logger.warning("%s has no final norm (a dense backbone checkpoint?); norm keeps its initial values", path)
        missing = []
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit {type(model).__name__}: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)})"
        )


CrossFormer.load_pretrained = _load_pretrained  # type: ignore[attr-defined]


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> CrossFormer:
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    overlay = kwargs.get("pretrained_cfg_overlay")
    if overlay and overlay.get("file"):
        # files go through CrossFormer.load_pretrained (safe reader, official layouts, head/in_chans adaptation);
        # recent timm resets custom_load when an overlay names a source unless it is set explicitly
        kwargs["pretrained_cfg_overlay"] = {"custom_load": True, **overlay}
    model_args = {**MODELS[variant], **kwargs}
    return build_model_with_cfg(
        CrossFormer,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **model_args,
    )


@register_model
def crossformer_tiny(pretrained: bool = False, **kwargs: Any) -> CrossFormer:
    """CrossFormer-T (27.8M params, 2.9 GFLOPs, 81.5% ImageNet top-1)."""
    return _create("crossformer_tiny", pretrained, **kwargs)


@register_model
def crossformer_small(pretrained: bool = False, **kwargs: Any) -> CrossFormer:
    """CrossFormer-S (30.7M params, 4.9 GFLOPs, 82.5% ImageNet top-1)."""
    return _create("crossformer_small", pretrained, **kwargs)


@register_model
def crossformer_base(pretrained: bool = False, **kwargs: Any) -> CrossFormer:
    """CrossFormer-B (52.0M params, 9.2 GFLOPs, 83.4% ImageNet top-1)."""
    return _create("crossformer_base", pretrained, **kwargs)


@register_model
def crossformer_large(pretrained: bool = False, **kwargs: Any) -> CrossFormer:
    """CrossFormer-L (92.0M params, 16.1 GFLOPs, 84.0% ImageNet top-1)."""
    return _create("crossformer_large", pretrained, **kwargs)


@register_model
def crossformerpp_small(pretrained: bool = False, **kwargs: Any) -> CrossFormer:
    """CrossFormer++-S (23.3M params, 4.9 GFLOPs, 83.2% ImageNet top-1)."""
    return _create("crossformerpp_small", pretrained, **kwargs)


@register_model
def crossformerpp_base(pretrained: bool = False, **kwargs: Any) -> CrossFormer:
    """CrossFormer++-B (52.0M params, 9.5 GFLOPs, 84.2% ImageNet top-1)."""
    return _create("crossformerpp_base", pretrained, **kwargs)


@register_model
def crossformerpp_large(pretrained: bool = False, **kwargs: Any) -> CrossFormer:
    """CrossFormer++-L (92.0M params, 16.6 GFLOPs, 84.7% ImageNet top-1)."""
    return _create("crossformerpp_large", pretrained, **kwargs)


@register_model
def crossformerpp_huge(pretrained: bool = False, **kwargs: Any) -> CrossFormer:
    """CrossFormer++-H (96.0M params, 21.8 GFLOPs, 84.9% ImageNet top-1)."""
    return _create("crossformerpp_huge", pretrained, **kwargs)


@register_model
def crossformer_micro(pretrained: bool = False, **kwargs: Any) -> CrossFormer:
    """CrossFormer-micro: a 1.7M-parameter configuration for 32x32 inputs (no published weights)."""
    return _create("crossformer_micro", pretrained, **kwargs)


def list_models(small: bool = False) -> List[str]:
    """Names of the published variants, CrossFormer first; with ``small``, also :data:`SMALL_VARIANTS`."""
    return list(MODELS if small else VARIANTS)


def create_model(name: str, pretrained: bool = False, checkpoint_path: Optional[str] = None, **kwargs: Any) -> CrossFormer:
    """Build a registered variant (``timm.create_model`` with a clear error for unknown names).

    Args:
        name: A name from :func:`list_models`, optionally with a timm tag (``crossformer_small.in1k``).
        pretrained: Load official weights from ``checkpoint_path`` (no network access is attempted).
        checkpoint_path: Official or own checkpoint file (``.pth``/``.safetensors``).
        **kwargs: Passed to :class:`~crossformer_vision.CrossFormer` or timm (``num_classes``, ``in_chans``,
            ``features_only``, ``lda_mode``, ``drop_path_rate``...).
    """
    import timm

    if not isinstance(name, str):
        raise TypeError(f"the model name must be a string such as 'crossformer_small', got {name!r}")
    base = name.split(".")[0]
    if base not in MODELS:
        close = difflib.get_close_matches(base, list(MODELS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} Available: {', '.join(MODELS)}")
    if pretrained and checkpoint_path is None:
        raise ValueError(
            f"pretrained=True needs checkpoint_path: official weights are not downloadable here; get them from "
            f"{_OFFICIAL_WEIGHTS} and pass the file"
        )
    if checkpoint_path is not None:
        kwargs.setdefault("pretrained_cfg_overlay", {})["file"] = str(checkpoint_path)
        pretrained = True
    return timm.create_model(name, pretrained=pretrained, **kwargs)
