"""Model folders: ``config.json`` + ``model.safetensors`` (+ a ``README.md`` model card), the layout of timm and the
Hugging Face Hub.

A classifier's folder is what timm's ``save_for_hf`` writes: ``config.json`` holds ``architecture`` (a registered
name), ``num_classes``, ``model_args`` (every constructor argument, so the folder rebuilds the same network
whatever later versions register under that name), ``label_names`` and ``pretrained_cfg`` (input size, crop,
interpolation, mean, std); our own facts (what the folder is, where its weights came from) sit under a
``crossformer_vision`` entry that timm ignores. ``timm.create_model("local-dir:DIR")`` (after ``import
crossformer_vision``) builds it with its weights and label names, as does :func:`load_model_folder`.
Detection and segmentation models use the same files with their task's own ``config.json`` (no timm entry
point; :func:`crossformer_vision.train.load_dense_model` reads them).

Safety: only JSON and safetensors are read from a folder. A folder whose weights exist only as a pickle
(``pytorch_model.bin``, ``*.pth``) is refused unless that file is named explicitly (``weights=``, or timm's
``pretrained_cfg_overlay=dict(file=...)``), and then it goes through the restricted reader of :mod:`.official`;
a pickle beside ``model.safetensors`` is never opened. ``config.json`` is size-limited; a safetensors header is
read and checked (dtypes, shapes, offsets that tile the file exactly, and, given a model, names and shapes
against it) before any tensor is allocated.

:func:`infer_variant` names the registered variant whose tensor shapes a state dict has (models are built on the
meta device, nothing is allocated); :func:`convert_checkpoint` turns any official checkpoint into a folder.
"""
import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..utils.files import atomic_write_bytes, atomic_write_text, json_ready, printable_path
from .crossformer import MODELS, CrossFormer
from .official import (CheckpointError, PathLike, TensorEntry, convert_official_state_dict, describe_architecture,
                       load_checkpoint_file, read_safetensors, read_safetensors_header, stage_depths, unwrap_state_dict)

__all__ = [
    "CARD_NAME",
    "CITATION",
    "CONFIG_NAME",
    "FOLDER_FORMAT",
    "WEIGHTS_NAME",
    "classifier_config",
    "convert_checkpoint",
    "find_weights",
    "imagenet_labels",
    "infer_variant",
    "is_model_folder",
    "load_model_folder",
    "local_dir_cfg",
    "model_card",
    "per_channel",
    "read_config",
    "read_folder_weights",
    "write_model_folder",
]

_logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
#: ``format`` of the ``crossformer_vision`` entry of our folders' ``config.json``.
FOLDER_FORMAT = "crossformer-vision/model-folder"
FOLDER_VERSION = 1

#: ``config.json`` larger than this is refused (ImageNet-21k's label names and descriptions take ~2 MB).
MAX_CONFIG_BYTES = 32 << 20
#: Weight files that are pickles: never read from a folder unless named explicitly.
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt", ".pkl", ".pickle", ".tar")

# timm's PretrainedCfg entries that say where weights come from: never written into a folder's config
_SOURCE_FIELDS = ("url", "file", "state_dict", "hf_hub_id", "hf_hub_filename", "source", "architecture")

CITATION = """\
@inproceedings{wang2022crossformer,
  title     = {CrossFormer: A Versatile Vision Transformer Hinging on Cross-scale Attention},
  author    = {Wang, Wenxiao and Yao, Lu and Chen, Long and Lin, Binbin and Cai, Deng and He, Xiaofei and Liu, Wei},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2022},
  note      = {arXiv:2108.00154}
}

@article{wang2023crossformerpp,
  title   = {CrossFormer++: A Versatile Vision Transformer Hinging on Cross-scale Attention},
  author  = {Wang, Wenxiao and Chen, Wei and Qiu, Qibo and Chen, Long and Wu, Boxi and Lin, Binbin and He, Xiaofei and Liu, Wei},
  journal = {IEEE Transactions on Pattern Analysis and Machine Intelligence},
  year    = {2023},
  note    = {arXiv:2303.06908}
}"""


# ---------------------------------------------------------------------------------------------- reading
def is_model_folder(path: PathLike) -> bool:
    """Whether ``path`` is a folder (read as a model folder), not a checkpoint file."""
    return os.path.isdir(os.fspath(path))


def read_config(folder: PathLike) -> Dict[str, Any]:
    """``folder/config.json`` as a dict, its size checked before it is read.

    Raises:
        CheckpointError: no folder, no or an oversized ``config.json``, or one that is not a JSON object.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"model folder not found: {printable_path(folder)}")
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{printable_path(folder)} has no {CONFIG_NAME}: it is not a model folder (give a folder written by "
                              f"`crossformer export --format hf`, `crossformer convert` or timm's save_for_hf)")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise CheckpointError(f"{printable_path(path)} is {size} bytes, more than a model configuration takes "
                              f"({MAX_CONFIG_BYTES} at most): refusing to read it")
    try:
        config = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{printable_path(path)} is not valid JSON ({' '.join(str(err).split())}): write the folder "
                              f"again") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{printable_path(path)} holds a JSON {type(config).__name__}, not an object: write the folder again")
    return config


def find_weights(folder: PathLike) -> Path:
    """The weights file of a model folder: ``model.safetensors``, else its only ``*.safetensors``.

    Raises:
        CheckpointError: no safetensors file (a folder whose weights are only a pickle is refused, saying how
            to read it anyway), or several without a ``model.safetensors``.
    """
    folder = Path(folder)
    if (folder / WEIGHTS_NAME).is_file():
        return folder / WEIGHTS_NAME
    found = sorted(p for p in folder.glob("*.safetensors") if p.is_file())
    if len(found) == 1:
        return found[0]
    if found:
        raise CheckpointError(f"{printable_path(folder)} has several safetensors files ({', '.join(p.name for p in found[:4])}) "
                              f"and no {WEIGHTS_NAME}: name the weights file explicitly")
    pickles = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(PICKLE_SUFFIXES))
    if pickles:
        raise CheckpointError(
            f"{printable_path(folder)} has its weights only as a pickle ({', '.join(pickles[:3])}); model folders are read from "
            f"{WEIGHTS_NAME} only. If you trust the file, name it explicitly (crossformer: -k {printable_path(folder / pickles[0])}; "
            f"timm: pretrained_cfg_overlay=dict(file=...)): it is then read without running code; or save the folder "
            f"with safetensors (timm's save_for_hf(..., safe_serialization=True))")
    raise CheckpointError(f"{printable_path(folder)} has no {WEIGHTS_NAME}: it is not a complete model folder")


def _fits(entry: TensorEntry, own: Tensor) -> bool:
    return entry.shape == tuple(own.shape) and entry.is_floating_point == own.is_floating_point()


def _adaptable(key: str, entry: TensorEntry, own: Tensor) -> bool:
    """Whether :meth:`CrossFormer.load_pretrained` adapts this tensor: a classifier of another size, or a stem
    convolution with other input channels."""
    if key.startswith("head."):
        return True
    return _stem_key(key) and entry.shape[:1] + entry.shape[2:] == tuple(own.shape[:1] + own.shape[2:])


def read_folder_weights(folder: PathLike, model: Optional[nn.Module] = None, strict: bool = False,
                        weights: Optional[PathLike] = None) -> Dict[str, Tensor]:
    """The weights of a model folder, checked against ``model`` (names, shapes, dtype kinds) before loading.

    Args:
        folder: The model folder.
        model: The model they go into. Without ``strict``, a classifier of another size is left out and stem
            convolutions may differ in their input channels (:meth:`CrossFormer.load_pretrained` adapts them).
        strict: Every tensor of ``model`` must be there, with its exact shape.
        weights: An explicitly named weights file (a pickle is read by the restricted reader of :mod:`.official`).

    Raises:
        CheckpointError: unreadable, corrupt or unsafe files, or weights that do not fit ``model``.
    """
    if weights is not None:
        path = Path(weights)
        if not path.name.endswith(".safetensors"):
            return unwrap_state_dict(load_checkpoint_file(path))
    else:
        path = find_weights(folder)
    entries, _ = read_safetensors_header(path)
    names = list(entries)
    if model is not None:
        own = model.state_dict()
        unexpected = [k for k in entries if k not in own]
        adaptable = [k for k in entries if k in own and not _fits(entries[k], own[k]) and not strict
                     and _adaptable(k, entries[k], own[k])]
        wrong = [k for k in entries if k in own and not _fits(entries[k], own[k]) and k not in adaptable]
        missing = [k for k in own if k not in entries] if strict else []
        if unexpected or wrong or missing:
            detail = (f"{len(wrong)} tensors of another shape or kind, e.g. {wrong[0]}: file {list(entries[wrong[0]].shape)} "
                      f"{entries[wrong[0]].dtype} vs model {list(own[wrong[0]].shape)} {own[wrong[0]].dtype}" if wrong else
                      f"{len(unexpected)} tensors the model lacks, e.g. {unexpected[:3]}" if unexpected else
                      f"{len(missing)} tensors missing, e.g. {missing[:3]}")
            looks = describe_architecture({k: torch.empty(e.shape, device="meta") for k, e in entries.items()})
            raise CheckpointError(f"{printable_path(path)} does not fit this model: {detail}. The file looks like {looks}; the model "
                                  f"is {describe_architecture(own)}. Check the folder's config.json")
        names = [k for k in entries if not (k.startswith("head.") and k in adaptable)]
    return read_safetensors(path, names)


def local_dir_cfg(pretrained_cfg: Any) -> Optional[Dict[str, Any]]:
    """For the model factory: when ``pretrained_cfg`` comes from timm's ``local-dir:`` source (a model folder),
    the pretrained config that loads the folder through :meth:`CrossFormer.load_pretrained` instead (safetensors
    only, checked), else None."""
    if pretrained_cfg is None or isinstance(pretrained_cfg, str):
        return None
    cfg = pretrained_cfg.to_dict() if hasattr(pretrained_cfg, "to_dict") else pretrained_cfg
    if not isinstance(cfg, Mapping) or cfg.get("source") != "local-dir" or not cfg.get("file"):
        return None
    return {**cfg, "source": None, "custom_load": True}  # file stays the folder: load_from "file" -> load_pretrained


def load_model_folder(folder: PathLike, weights: Optional[PathLike] = None, **kwargs: Any) -> nn.Module:
    """A classifier (or backbone) from a model folder: ``timm.create_model("local-dir:FOLDER", **kwargs)``, checked
    first (a clear error for folders of other tasks or models, or without usable weights).

    Args:
        folder: Written by ``crossformer export --format hf``, ``crossformer convert`` or timm's ``save_for_hf``.
        weights: An explicitly named weights file, e.g. the folder's ``pytorch_model.bin`` (read without running code).
        **kwargs: timm's: ``features_only``, ``num_classes``, ``in_chans``...

    Raises:
        CheckpointError: not a classifier folder, or unusable weights.
    """
    import timm

    config = read_config(folder)
    task = (config.get("crossformer_vision") or {}).get("task", "classification")
    if task not in ("classification", "backbone"):
        raise CheckpointError(f"{printable_path(folder)} holds a {task} model: load it with crossformer_vision.train."
                              f"load_dense_model({task!r}, ...) or `crossformer {'detect' if task == 'detection' else 'segment'} "
                              f"predict -k {printable_path(folder)}`")
    architecture = config.get("architecture")
    if architecture not in MODELS:
        raise CheckpointError(f"{printable_path(folder)} holds a {str(architecture)[:60]!r} model, not a CrossFormer "
                              f"({', '.join(MODELS)})")
    if weights is not None:
        kwargs["pretrained_cfg_overlay"] = {**(kwargs.get("pretrained_cfg_overlay") or {}), "file": os.fspath(weights)}
    else:
        find_weights(folder)  # the clear error before timm builds anything
    return timm.create_model(f"local-dir:{os.fspath(folder)}", **kwargs)


# ---------------------------------------------------------------------------------------------- writing
def _plain_tensors(tensors: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Contiguous CPU tensors, each with its own memory (safetensors refuses tensors that share it)."""
    out: Dict[str, Tensor] = {}
    seen = set()
    for name, value in tensors.items():
        value = value.detach().cpu().contiguous()
        key = (value.untyped_storage().data_ptr(), value.storage_offset()) if value.numel() else None
        if key is not None and key in seen:
            value = value.clone()
        elif key is not None:
            seen.add(key)
        out[name] = value
    return out


def _prepare_output(folder: Path, overwrite: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{printable_path(folder)} is a file: give a folder for the model (it is created if needed)")
    if folder.is_dir():
        present = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        if present and not overwrite:
            raise ValueError(f"{printable_path(folder)} is not empty ({', '.join(present[:4])}{'...' if len(present) > 4 else ''}): "
                             f"give a new folder, or --overwrite (overwrite=True) to replace its model files")


def write_model_folder(folder: PathLike, tensors: Mapping[str, Tensor], config: Mapping[str, Any],
                       card: Optional[str] = None, overwrite: bool = False) -> Path:
    """Write ``config.json``, ``model.safetensors`` and (given) ``README.md`` into ``folder``, each atomically.

    Raises:
        ValueError: ``folder`` is a file or a non-empty folder (without ``overwrite``), or ``config`` is not JSON data.
    """
    from safetensors.torch import save

    folder = Path(folder)
    _prepare_output(folder, overwrite)
    text = json.dumps(json_ready(config), indent=2, allow_nan=False) + "\n"
    data = _plain_tensors(tensors)
    folder.mkdir(parents=True, exist_ok=True)
    blob = save(data, metadata={"format": "pt"})
    atomic_write_bytes(folder / WEIGHTS_NAME, lambda f: f.write(blob))
    atomic_write_text(folder / CONFIG_NAME, text)
    if card is not None:
        atomic_write_text(folder / CARD_NAME, card)
    return folder


def classifier_config(architecture: str, model_args: Mapping[str, Any], pretrained_cfg: Mapping[str, Any],
                      num_features: int, label_names: Optional[Sequence[str]] = None,
                      label_descriptions: Optional[Mapping[str, str]] = None,
                      info: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """A classifier folder's ``config.json`` in timm's layout (what ``save_for_hf`` writes), plus our ``info``.

    Args:
        architecture: A registered model name (timm's entrypoint).
        model_args: Constructor arguments (``num_classes`` and ``in_chans`` included).
        pretrained_cfg: The preprocessing (``input_size``, ``crop_pct``, ``interpolation``, ``mean``, ``std``...);
            entries saying where weights come from are left out.
        num_features: Channels of the pooled features.
        label_names, label_descriptions: Class names (one per output) and their descriptions by name.
        info: Stored under ``crossformer_vision`` (format, task, source...; timm ignores it).
    """
    num_classes = int(model_args["num_classes"])
    cfg = {k: v for k, v in pretrained_cfg.items()
           if k not in _SOURCE_FIELDS and k not in ("label_names", "label_descriptions") and v is not None}
    in_chans = int(model_args.get("in_chans", cfg.get("input_size", (3,))[0]))
    cfg.update(num_classes=num_classes, custom_load=False)
    if "input_size" in cfg:
        cfg["input_size"] = [in_chans, *list(cfg["input_size"])[1:]]
    for key in [k for k in ("mean", "std") if k in cfg]:
        cfg[key] = per_channel(cfg[key], in_chans)
    if num_classes == 0:
        cfg.pop("classifier", None)
    config: Dict[str, Any] = {"architecture": architecture, "num_classes": num_classes, "num_features": int(num_features),
                              "global_pool": model_args.get("global_pool", "avg"), "model_args": dict(model_args)}
    if label_names:
        if len(label_names) != num_classes:
            raise ValueError(f"got {len(label_names)} label names for {num_classes} classes")
        config["label_names"] = list(label_names)
    if label_descriptions:
        config["label_descriptions"] = dict(label_descriptions)
    config["pretrained_cfg"] = cfg
    config["crossformer_vision"] = {"format": FOLDER_FORMAT, "version": FOLDER_VERSION, **dict(info or {})}
    return config


def per_channel(values: Sequence[float], channels: int) -> List[float]:
    """``values`` (a mean or std) for ``channels`` input channels: as they are when they fit, else their average for
    every channel (timm's rule; e.g. ImageNet's RGB mean for a greyscale model)."""
    values = [float(v) for v in values]
    return values if len(values) == channels else [sum(values) / len(values)] * channels


def model_card(front_matter: Mapping[str, Any], title: str, intro: str, sections: Sequence[Tuple[str, str]]) -> str:
    """A ``README.md`` model card: YAML front matter (the Hub reads ``license``, ``tags``...), a title, an
    introduction, ``## heading`` sections, then the papers' citation."""
    import yaml

    front = yaml.safe_dump(json_ready(dict(front_matter)), sort_keys=False, allow_unicode=True).strip()
    parts = [f"---\n{front}\n---", f"# {title}", intro.strip()]
    for heading, text in sections:
        if text and text.strip():
            parts.append(f"## {heading}\n\n{text.strip()}")
    parts.append("## Citation\n\nCrossFormer and CrossFormer++ (please cite the papers when you use these weights):\n\n"
                 f"```bibtex\n{CITATION}\n```")
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------- variants
def _stem_key(key: str) -> bool:
    return key.startswith("patch_embed.projs.") and key.endswith(".weight")


@functools.lru_cache(maxsize=None)
def _variant_shapes(name: str) -> Tuple[Tuple[str, Tuple[int, ...]], ...]:
    """Backbone tensor shapes of a registered variant (built on the meta device: nothing is allocated)."""
    with torch.device("meta"):
        model = CrossFormer(**{**MODELS[name], "num_classes": 0})
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items() if not k.startswith("norm."))


def _comparable(shapes: Mapping[str, Tuple[int, ...]]) -> Dict[str, Tuple[int, ...]]:
    """Backbone shapes with the stem's input channels left out (in_chans is chosen freely)."""
    return {k: (s[:1] + s[2:] if _stem_key(k) else s) for k, s in shapes.items() if not k.startswith(("head.", "norm."))}


def _embed_dim(shapes: Mapping[str, Tuple[int, ...]]) -> Optional[int]:
    embed = shapes.get("patch_embed.norm.weight")
    return embed[0] if embed else (sum(s[0] for k, s in shapes.items() if _stem_key(k)) or None)


def infer_variant(state_dict: Mapping[str, Tensor]) -> str:
    """The registered variant whose backbone has exactly the tensor shapes of ``state_dict`` (this package's layout:
    :func:`~.official.convert_official_state_dict` first; tensors may be on the meta device). The classifier
    head, the final norm and the stem's input channels do not count.

    Raises:
        CheckpointError: no registered variant has these shapes (an ablation or another architecture).
    """
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    if not any(k.startswith("patch_embed.") for k in shapes):
        raise CheckpointError(f"no CrossFormer weights found (no stem, patch_embed.*; the keys are e.g. "
                              f"{list(shapes)[:4]})")
    wanted = _comparable(shapes)
    dim, depths = _embed_dim(shapes), stage_depths(shapes)
    for name, args in MODELS.items():
        if args["embed_dim"] != dim or list(args["depths"]) != depths:
            continue  # cheap test first: only look-alikes are built
        if _comparable(dict(_variant_shapes(name))) == wanted:
            return name
    raise CheckpointError(f"the weights fit none of the registered variants (they look like "
                          f"{describe_architecture(state_dict)}): name the model with --model NAME (crossformer info "
                          f"lists them), or build CrossFormer(...) with the matching arguments")


def _variant_args(name: str) -> Dict[str, Any]:
    """A variant's architecture as JSON data (every constructor argument it sets, drop rates left out)."""
    return {k: json_ready(v) for k, v in MODELS[name].items() if "drop" not in k}


# ---------------------------------------------------------------------------------------------- official files
def _describe_layout(raw: Any, state: Mapping[str, Tensor]) -> str:
    keys = list(state)
    if any(k.startswith("backbone.") for k in keys):
        kind = "mmdetection/mmsegmentation checkpoint (its backbone)"
    elif any(k.startswith("layers.") for k in keys):
        first = any(k.endswith(("attn.biases", "attn.relative_position_index")) for k in keys)
        plus = any(".ex_conv." in k for k in keys)
        kind = ("official CrossFormer++ checkpoint" if plus else "official classification checkpoint") + (
            " (first release layout)" if first else "")
    else:
        kind = "state dict in this package's layout"
    if isinstance(raw, Mapping) and "optimizer" in raw:
        kind += ", from a training state"
    return kind


def imagenet_labels() -> Tuple[List[str], Dict[str, str]]:
    """ImageNet-1k's class names (WordNet ids, in the order of 1000-class heads) and their descriptions by name
    (timm ships them: no download)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    names = list(info.label_names())
    return names, dict(zip(names, info.label_descriptions()))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_any(path: Path) -> Any:
    """A checkpoint file: safetensors through the checked reader, everything else through the restricted one."""
    with open(path, "rb") as f:
        head = f.read(16)
    if path.name.endswith(".safetensors") or (head[8:9] == b"{" and not head.startswith((b"PK\x03\x04", b"\x80"))):
        return read_safetensors(path)
    return load_checkpoint_file(path)


def convert_checkpoint(path: PathLike, output: PathLike, model_name: Optional[str] = None,
                       lda_mode: Optional[str] = None, overwrite: bool = False) -> Dict[str, Any]:
    """Write a model folder from an official checkpoint of any layout (classification, CrossFormer++, the backbone
    of an mmdetection/mmsegmentation file).

    Args:
        path: The checkpoint (``.pth``/``.pt``/``.bin`` read without running code, or ``.safetensors``).
        output: The folder to write (created; it must be empty unless ``overwrite``).
        model_name: The registered variant; default: inferred from the tensor shapes (:func:`infer_variant`).
        lda_mode: The grouping rule recorded in the folder; default ``"fixed_interval"`` for detection/segmentation
            files (what the released dense checkpoints were trained with), else ``"fixed_group"``.
        overwrite: Replace the model files of a non-empty ``output``.

    Returns:
        ``{"folder", "model", "inferred" (bool), "layout", "num_classes", "in_chans", "labels", "lda_mode"}``.

    Raises:
        CheckpointError: unreadable or unsafe file, no CrossFormer weights in it, or weights that fit no variant
            (or not ``model_name``); one line naming the file.
        ValueError: unknown ``model_name`` or ``lda_mode``, or an unusable ``output``.
    """
    from .crossformer import LDA_MODES

    path = Path(path)
    shown = printable_path(path)
    if model_name is not None and model_name not in MODELS:
        import difflib

        close = difflib.get_close_matches(model_name, list(MODELS), n=3, cutoff=0.5)
        raise ValueError(f"unknown model {model_name!r}{'; did you mean ' + ', '.join(close) + '?' if close else ''} "
                         f"(models: {', '.join(MODELS)})")
    if lda_mode is not None and lda_mode not in LDA_MODES:
        raise ValueError(f"lda_mode must be one of {LDA_MODES}, got {lda_mode!r}")
    _prepare_output(Path(output), overwrite)  # before the (slow) reading
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {shown}")
    raw = _read_any(path)
    if isinstance(raw, Mapping) and str(raw.get("format", "")).startswith("crossformer-vision/"):
        raise CheckpointError(f"{shown} is a checkpoint of a crossformer-vision run: export the run with `crossformer "
                              f"export RUN --format hf -o DIR`")
    try:
        state = unwrap_state_dict(raw)
        layout = _describe_layout(raw, state)
        converted = convert_official_state_dict(state)
        name = model_name or infer_variant(converted)
    except CheckpointError as err:
        raise CheckpointError(f"{shown}: {' '.join(str(err).split())}") from None
    dense = layout.startswith("mmdetection")
    mode = lda_mode or ("fixed_interval" if dense else "fixed_group")
    head = converted.get("head.fc.weight")
    num_classes = int(head.shape[0]) if head is not None and head.dim() == 2 else 0
    stem = converted.get("patch_embed.projs.0.weight")
    in_chans = int(stem.shape[1]) if stem is not None and stem.dim() == 4 else 3
    model_args = {**_variant_args(name), "num_classes": num_classes, "in_chans": in_chans}
    if mode != "fixed_group":
        model_args["lda_mode"] = mode
    with torch.device("meta"):
        target = CrossFormer(**model_args)
    own = target.state_dict()
    filled = []
    for key in ("norm.weight", "norm.bias"):  # dense backbones have no final norm: its initial values (identity)
        if key not in converted and key in own and dense:
            converted[key] = torch.ones(own[key].shape) if key.endswith("weight") else torch.zeros(own[key].shape)
            filled.append(key)
    wrong = [k for k in own if k in converted and tuple(converted[k].shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in converted]
    unexpected = [k for k in converted if k not in own]
    if wrong or missing or unexpected:
        what = (f"{wrong[0]} is {list(converted[wrong[0]].shape)} in the file, {list(own[wrong[0]].shape)} in {name}" if wrong
                else f"{len(missing)} tensors missing, e.g. {missing[:3]}" if missing
                else f"{len(unexpected)} tensors {name} does not have, e.g. {unexpected[:3]}")
        raise CheckpointError(f"{shown} does not fit {name}: {what}. The file looks like "
                              f"{describe_architecture(converted)}; leave out --model to infer the variant")
    tensors = {k: converted[k] for k in own}
    from timm.models import get_pretrained_cfg

    registry = get_pretrained_cfg(name)
    pretrained_cfg = registry.to_dict() if registry is not None else {}
    labels, descriptions = (imagenet_labels() if num_classes == 1000 else (None, None))
    info = {"task": "classification" if num_classes else "backbone", "source": "official",
            "converted_from": {"file": path.name, "sha256": _sha256(path), "layout": layout},
            "variant": {"name": name, "inferred": model_name is None}}
    if filled:
        info["notes"] = ["the checkpoint has no final norm (a detection/segmentation backbone): norm.weight/bias hold "
                         "their initial values (ones, zeros); features_only models do not use it"]
    config = classifier_config(name, model_args, pretrained_cfg, target.num_features, labels, descriptions, info)
    card = _official_card(name, path.name, layout, num_classes, in_chans, mode, bool(filled), Path(output).name,
                          model_name is None, config["pretrained_cfg"])
    write_model_folder(output, tensors, config, card, overwrite=overwrite)
    return {"folder": str(output), "model": name, "inferred": model_name is None, "layout": layout,
            "num_classes": num_classes, "in_chans": in_chans, "labels": "ImageNet" if labels else None, "lda_mode": mode}


def _official_card(name: str, source: str, layout: str, num_classes: int, in_chans: int, lda_mode: str, dense: bool,
                   folder: str, inferred: bool, pretrained_cfg: Mapping[str, Any]) -> str:
    plus = name.startswith("crossformerpp")
    paper = "CrossFormer++ (TPAMI 2023, arXiv:2303.06908)" if plus else "CrossFormer (ICLR 2022, arXiv:2108.00154)"
    what = (f"an ImageNet-1k classifier ({num_classes} classes)" if num_classes == 1000 else
            f"a classifier with {num_classes} outputs" if num_classes else
            "a backbone without classifier (pooled features, or `features_only=True` for the stage outputs)")
    size = pretrained_cfg.get("input_size", [in_chans, 224, 224])
    details = "\n".join([
        f"- Architecture: `{name}` ({paper}), {what}",
        f"- Converted from: `{source}`, an {layout}; variant {'inferred from the tensor shapes' if inferred else 'given'}",
        f"- Input: {size[0]} x {size[1]} x {size[2]} (any size of at least 32 x 32 works), "
        f"{pretrained_cfg.get('interpolation', 'bicubic')} resize, crop {pretrained_cfg.get('crop_pct')}, "
        f"mean {list(pretrained_cfg.get('mean', []))}, std {list(pretrained_cfg.get('std', []))}",
        f"- Grouping rule: `lda_mode={lda_mode}`" + (" (the released detection/segmentation checkpoints' rule)"
                                                    if lda_mode == "fixed_interval" else ""),
    ] + (["- The checkpoint has no final norm: `norm` holds its initial values (identity)"] if dense else []))
    usage = (f"```python\nimport timm\nimport crossformer_vision  # registers CrossFormer with timm\n\n"
             f"model = timm.create_model(\"local-dir:{folder}\").eval()\n"
             f"features = timm.create_model(\"local-dir:{folder}\", features_only=True)   # strides 4, 8, 16, 32\n```\n\n"
             + (f"From the command line: `crossformer predict IMAGE -k {folder}`." if num_classes else ""))
    return model_card(
        {"license": "mit", "library_name": "timm", "pipeline_tag": "image-classification" if num_classes else
         "image-feature-extraction", "tags": ["image-classification" if num_classes else "image-feature-extraction",
                                              "timm", "crossformer", "crossformer-vision"]}
        | ({"datasets": ["imagenet-1k"]} if num_classes == 1000 else {}),
        f"{name}: official weights",
        f"The official {paper} weights, converted by crossformer-vision into a folder that timm and the Hugging Face "
        f"Hub load as it is. Outputs equal the official code's. Official model zoo: "
        f"https://github.com/cheerss/CrossFormer#model-zoo",
        [("Model details", details), ("Usage", usage),
         ("License", "MIT, as the official code and weights (github.com/cheerss/CrossFormer).")])
