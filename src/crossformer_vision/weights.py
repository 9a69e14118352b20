"""Reading checkpoints safely, converting official CrossFormer weights, and safetensors I/O.

Official checkpoints come in several layouts; :func:`convert_official_state_dict` takes any of them:

* released classification checkpoints (original branch ``crossformer``): ``layers.{i}...`` keys plus the
  DPB index buffers ``attn.biases`` / ``attn.relative_position_index`` (recomputed here, so dropped);
* the current (``main``) code's layout, CrossFormer++ included (``ex_conv`` / ``ex_ln``: the ACL);
* training states ``{"model": ..., "optimizer": ..., "config": ...}``, ``{"state_dict": ...}`` wrappers,
  DistributedDataParallel's ``module.`` prefix;
* mmdetection / mmsegmentation checkpoints: ``state_dict`` with ``backbone.`` keys; neck and head keys
  are dropped (see :mod:`crossformer_vision.dense` for mapping those).

Files are never unpickled freely: ``torch.load(weights_only=True)`` first; training states that also
pickle their config (yacs ``CfgNode``, ``argparse.Namespace``) are read with the same allowlist plus inert
stand-ins for those two containers. Anything else (functions, code, arbitrary classes) is refused.
"""
import _compat_pickle
import os
import pickle
import re
import types
import zipfile
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor, nn

__all__ = [
    "CheckpointError",
    "LoadReport",
    "convert_official_state_dict",
    "load_checkpoint_file",
    "load_official_checkpoint",
    "load_weights",
    "save_weights",
]

PathLike = Union[str, "os.PathLike[str]"]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, is unsafe, or does not fit the model."""


class LoadReport(NamedTuple):
    """What :func:`load_official_checkpoint` did: keys the model lacked in the file and vice versa."""

    missing_keys: List[str]
    unexpected_keys: List[str]
    dropped_keys: List[str]


# ---------------------------------------------------------------------------------------------- safe reading
class ConfigNodeData(dict):
    """Inert stand-in for ``yacs.config.CfgNode`` found in official training checkpoints (data only)."""


class NamespaceData:
    """Inert stand-in for ``argparse.Namespace`` found in DeiT/ConvNeXt-style checkpoints (data only)."""

    def __repr__(self) -> str:
        return f"NamespaceData({vars(self)})"


_INERT_STANDINS = {"yacs.config.CfgNode": ConfigNodeData, "argparse.Namespace": NamespaceData}


def _allowed_globals() -> Dict[str, Any]:
    from torch import _weights_only_unpickler

    allowed = dict(_weights_only_unpickler._get_allowed_globals())
    user = getattr(_weights_only_unpickler, "_get_user_allowed_globals", None)
    if user is not None:
        allowed.update(user())
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only torch's weights-only allowlist and the inert stand-ins above."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:  # protocol-2 pickles use Python 2 names
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = f"{module}.{name}"
        if key in _INERT_STANDINS:
            return _INERT_STANDINS[key]
        allowed = _allowed_globals()
        if key in allowed:
            return allowed[key]
        raise pickle.UnpicklingError(f"the file wants to load the Python object {key!r}, which is not data")


_restricted_pickle = types.SimpleNamespace(
    __name__="crossformer_vision_restricted_pickle",
    Unpickler=_RestrictedUnpickler,
    load=lambda file, **kwargs: _RestrictedUnpickler(file, **kwargs).load(),
)


def _unsafe_error(path: str, detail: str) -> CheckpointError:
    return CheckpointError(
        f"refusing to load {path}: it contains pickled Python objects other than tensors and plain containers "
        f"({detail}). Unpickling them could run arbitrary code. If you trust the file, extract its weights once "
        f"in a trusted environment, e.g. torch.save(torch.load(path, weights_only=False)['model'], 'weights.pth'), "
        f"or convert it to safetensors."
    )


def load_checkpoint_file(path: PathLike) -> Dict[str, Any]:
    """Read a ``.pth``/``.pt``/``.bin`` or ``.safetensors`` file without executing pickled code.

    Raises:
        CheckpointError: missing, truncated or corrupt file, or one that pickles code or classes.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file not found: {path}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint file is empty: {path}")
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"could not read safetensors file {path}: {err}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first_error = str(err)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"could not read checkpoint {path}: the file is truncated or corrupt ({err})") from None
    # Not plain weights: allow only data containers known to occur in official training states.
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle)
    except pickle.UnpicklingError as err:
        raise _unsafe_error(path, str(err)) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, AttributeError, TypeError) as err:
        raise CheckpointError(f"could not read checkpoint {path}: {err} (weights-only reader said: {first_error[:200]})") from None


# ---------------------------------------------------------------------------------------------- conversion
_WRAPPER_KEYS = ("state_dict", "model", "module", "state_dict_ema", "model_ema")
_DENSE_HEAD_PREFIXES = ("neck.", "bbox_head.", "rpn_head.", "roi_head.", "decode_head.", "auxiliary_head.", "mask_head.")
# Buffers the official code stores but this implementation derives from the input size in forward().
_DERIVED_BUFFERS = ("attn.biases", "attn.relative_position_index", "attn_mask")


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, Tensor) for v in obj.values())


def unwrap_state_dict(checkpoint: Mapping[str, Any]) -> Dict[str, Tensor]:
    """Find the weights inside ``{"model": ...}``, ``{"state_dict": ...}`` and similar wrappers."""
    if _is_tensor_dict(checkpoint):
        return dict(checkpoint)
    if isinstance(checkpoint, Mapping):
        for key in _WRAPPER_KEYS:
            if key in checkpoint and isinstance(checkpoint[key], Mapping):
                return unwrap_state_dict(checkpoint[key])
    keys = list(checkpoint.keys())[:10] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
    raise CheckpointError(
        f"no model weights found in the checkpoint (looked for a dict of tensors, or one under {_WRAPPER_KEYS}); "
        f"top-level entries: {keys}"
    )


def _convert_key(key: str) -> Optional[str]:
    """Official key -> ours; None for keys deliberately dropped."""
    if key.endswith(_DERIVED_BUFFERS):
        return None
    if key == "absolute_pos_embed":
        return "absolute_pos_embed.pos_embed"
    if key in ("head.weight", "head.bias"):
        return "head.fc." + key.split(".")[-1]
    m = re.match(r"layers\.(\d+)\.downsample\.(.*)", key)
    if m:
        rest = m.group(2).replace("reductions.", "projs.")
        return f"stages.{int(m.group(1)) + 1}.downsample.{rest}"
    m = re.match(r"layers\.(\d+)\.blocks\.(\d+)\.(.*)", key)
    if m:
        rest = m.group(3).replace("ex_conv.", "acl.conv.").replace("ex_ln.", "acl.norm.")
        return f"stages.{m.group(1)}.blocks.{m.group(2)}.{rest}"
    return key


def convert_official_state_dict(
    checkpoint: Mapping[str, Any], model: Optional[nn.Module] = None
) -> Dict[str, Tensor]:
    """Convert an official CrossFormer/CrossFormer++ checkpoint (any layout) to this package's keys.

    Args:
        checkpoint: A state dict, or a checkpoint that wraps one (``{"model": ...}``, ``{"state_dict": ...}``,
            mmdet/mmseg files). Checkpoints already in this package's layout pass through unchanged.
        model: Optional target model; if given, an official absolute position embedding is reshaped to its grid.

    Returns:
        A state dict for :class:`~crossformer_vision.CrossFormer` (``load_state_dict(strict=True)`` fits when
        the architecture matches; dense checkpoints have no classifier head or final norm).
    """
    state_dict = unwrap_state_dict(checkpoint)
    if any(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    if any(k.startswith("backbone.") for k in state_dict):  # detection / segmentation checkpoint
        state_dict = {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    out: Dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(_DENSE_HEAD_PREFIXES):
            continue
        new_key = _convert_key(key)
        if new_key is None:
            continue
        if new_key == "absolute_pos_embed.pos_embed" and value.dim() == 3:
            # official APE is (1, H*W, C) for a square grid
            side = int(round(value.shape[1] ** 0.5))
            value = value.reshape(1, side, side, value.shape[2])
        out[new_key] = value
    if model is not None and "absolute_pos_embed.pos_embed" in out:
        target = dict(model.named_parameters()).get("absolute_pos_embed.pos_embed")
        if target is not None and target.shape != out["absolute_pos_embed.pos_embed"].shape:
            from timm.layers import resample_abs_pos_embed

            pos = out["absolute_pos_embed.pos_embed"]
            new_hw = (target.shape[1], target.shape[2])
            pos = resample_abs_pos_embed(pos.flatten(1, 2), new_hw, (pos.shape[1], pos.shape[2]), num_prefix_tokens=0)
            out["absolute_pos_embed.pos_embed"] = pos.reshape(target.shape)
    return out


def checkpoint_filter_fn(state_dict: Dict[str, Tensor], model: nn.Module) -> Dict[str, Tensor]:
    """timm ``pretrained_filter_fn``: official or own layout -> ours."""
    return convert_official_state_dict(state_dict, model)


# ---------------------------------------------------------------------------------------------- loading into a model
def _describe_variant(state_dict: Mapping[str, Tensor]) -> str:
    """Short description of the architecture a state dict belongs to (for error messages)."""
    stem = [v for k, v in state_dict.items() if k.startswith("patch_embed.norm.weight")]
    depths = []
    for i in range(8):
        blocks = {int(m.group(1)) for k in state_dict if (m := re.match(rf"stages\.{i}\.blocks\.(\d+)\.", k))}
        if not blocks:
            break
        depths.append(max(blocks) + 1)
    embed = stem[0].shape[0] if stem else "?"
    acl = any(".acl." in k for k in state_dict)
    return f"embed_dim={embed}, depths={depths}{', with ACL (CrossFormer++)' if acl else ''}"


def load_state_dict_checked(
    model: nn.Module, state_dict: Mapping[str, Tensor], strict: bool = True
) -> Tuple[List[str], List[str]]:
    """``model.load_state_dict`` with shape checks and readable errors.

    Missing keys of a classifier head the checkpoint lacks, or a head of a different size, are reported,
    not fatal, when ``strict`` is False. With ``strict=True`` any mismatch raises :class:`CheckpointError`.
    """
    own = model.state_dict()
    mismatched = [
        (k, tuple(v.shape), tuple(own[k].shape)) for k, v in state_dict.items() if k in own and v.shape != own[k].shape
    ]
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if mismatched and strict:
        k, got, want = mismatched[0]
        raise CheckpointError(
            f"checkpoint does not fit this model: {len(mismatched)} tensors differ in shape, e.g. {k}: checkpoint "
            f"{list(got)} vs model {list(want)}. The checkpoint looks like {_describe_variant(state_dict)}; the model "
            f"is {_describe_variant(own)}. Build the matching variant (crossformer_vision.list_models())."
        )
    if strict and missing and not unexpected and all(k.startswith(("norm.", "head.")) for k in missing):
        raise CheckpointError(
            f"checkpoint has no classifier head or final norm ({len(missing)} missing keys {missing}): it looks like a "
            f"detection/segmentation backbone. Load it into a features_only model, or pass strict=False."
        )
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"checkpoint does not fit this model: {len(missing)} missing keys {missing[:5]}, {len(unexpected)} "
            f"unexpected keys {unexpected[:5]}. The checkpoint looks like {_describe_variant(state_dict)}; the model "
            f"is {_describe_variant(own)}. Pass strict=False to load what fits."
        )
    usable = {k: v for k, v in state_dict.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(usable, strict=False)
    missing = missing + [k for k, _, _ in mismatched]
    return missing, unexpected


def load_official_checkpoint(model: nn.Module, path: PathLike, strict: bool = True) -> LoadReport:
    """Load an official (or this package's) checkpoint file into ``model``.

    Args:
        model: A :class:`~crossformer_vision.CrossFormer`.
        path: ``.pth`` / ``.pt`` / ``.safetensors`` file, in any layout :func:`convert_official_state_dict` takes.
        strict: Raise :class:`CheckpointError` on any missing, unexpected or mis-shaped key. With False, load
            what fits and report the rest.

    Returns:
        :class:`LoadReport` with the missing and unexpected keys and the official keys deliberately dropped.
    """
    raw = unwrap_state_dict(load_checkpoint_file(path))
    converted = convert_official_state_dict(raw, model)
    dropped = [k for k in raw if _convert_key(k) is None or k.startswith(_DENSE_HEAD_PREFIXES)]
    try:
        missing, unexpected = load_state_dict_checked(model, converted, strict=strict)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    return LoadReport(missing, unexpected, dropped)


# ---------------------------------------------------------------------------------------------- safetensors
def save_weights(model: nn.Module, path: PathLike, metadata: Optional[Dict[str, str]] = None) -> None:
    """Save ``model``'s weights as safetensors, atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    path = os.fspath(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = f"{path}.tmp-{os.getpid()}"
    save_file(tensors, tmp, metadata={"format": "pt", **(metadata or {})})
    os.replace(tmp, path)


def load_weights(model: nn.Module, path: PathLike, strict: bool = True) -> LoadReport:
    """Load safetensors (or any checkpoint :func:`load_official_checkpoint` reads) into ``model``."""
    return load_official_checkpoint(model, path, strict=strict)
