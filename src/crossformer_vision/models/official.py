"""Official CrossFormer weights: reading checkpoint files safely, converting their keys, safetensors I/O.

Official checkpoints come in several layouts; :func:`convert_official_state_dict` takes any of them:

* released classification checkpoints (original branch ``crossformer``): ``layers.{i}...`` keys plus the
  DPB index buffers ``attn.biases`` / ``attn.relative_position_index`` (recomputed here, so dropped);
* the current (``main``) code's layout, CrossFormer++ included (``ex_conv`` / ``ex_ln``: the ACL);
* training states ``{"model": ..., "optimizer": ..., "config": ...}``, ``{"state_dict": ...}`` wrappers,
  DistributedDataParallel's ``module.`` prefix;
* mmdetection / mmsegmentation checkpoints: ``state_dict`` with ``backbone.`` keys; neck and head keys
  are dropped (see :mod:`crossformer_vision.dense` for mapping those).

:meth:`crossformer_vision.CrossFormer.load_pretrained` (timm's ``pretrained=True`` with a file) and
:func:`load_official_checkpoint` both go through here.

Files are never unpickled freely: ``torch.load(weights_only=True)`` first; training states that also
pickle their config (yacs ``CfgNode``, ``argparse.Namespace``) are read with the same allowlist plus inert
stand-ins for those two containers. Anything else (functions, code, arbitrary classes) is refused.
Whatever a file holds, :func:`load_checkpoint_file` returns its data or raises one :class:`CheckpointError`
whose message is a single line naming the file and saying what is wrong: not a checkpoint at all,
truncated or corrupt, or refused as unsafe. Files cannot make the readers allocate gigabytes: zip
archives that would inflate hugely are refused, and pickles that could ask for zero-filled memory by
number (``bytearray(n)``, the unpickler's memo) go to a reader that does not allocate it.
"""
import _compat_pickle
import json
import math
import mmap
import os
import pickle
import re
import struct
import sys
import tarfile
import types
import zipfile
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn

from ..utils.files import PathLike, printable_path

__all__ = [
    "CheckpointError",
    "LoadReport",
    "PathLike",
    "TensorEntry",
    "convert_official_state_dict",
    "describe_architecture",
    "load_checkpoint_file",
    "load_official_checkpoint",
    "load_state_dict_checked",
    "load_weights",
    "read_safetensors",
    "read_safetensors_header",
    "save_weights",
    "stage_depths",
    "unwrap_state_dict",
]

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


class _RefusedGlobal(pickle.UnpicklingError):
    """The restricted reader refused a (well-formed) class or function name that the file asks for."""


class _OpcodeTable(dict):
    """Opcode dispatch table whose unknown entries raise an unpickling error, not a bare ``KeyError``."""

    def __missing__(self, code: int) -> Any:
        raise pickle.UnpicklingError(f"invalid pickle opcode {bytes([code])!r}")


_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*", re.ASCII)
# A bytearray built from a number is zero-filled at once: never from a real pickled bytearray (those carry
# their content), but a 30-byte file could ask for gigabytes.
_MAX_BYTEARRAY_FROM_NUMBER = 1 << 20


def _bounded_bytearray(*args: Any) -> bytearray:
    if args and isinstance(args[0], int) and args[0] > _MAX_BYTEARRAY_FROM_NUMBER:
        raise pickle.UnpicklingError(f"the file asks for a zero-filled bytearray of {args[0]} bytes")
    return bytearray(*args)


class _RestrictedUnpickler(pickle._Unpickler):
    """Unpickler that resolves only torch's weights-only allowlist and the inert stand-ins above.

    Built on the pure-Python unpickler on purpose: its memo is a dict, whereas the C unpickler allocates and
    zeroes a memo array as long as the largest index a file names (gigabytes for a 9-byte file).
    """

    dispatch = _OpcodeTable(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:  # protocol-2 pickles use Python 2 names
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = f"{module}.{name}"
        if key in _INERT_STANDINS:
            return _INERT_STANDINS[key]
        if key == "builtins.bytearray":
            return _bounded_bytearray
        allowed = _allowed_globals()
        if key in allowed:
            return allowed[key]
        if not (_DOTTED_NAME.fullmatch(module) and _DOTTED_NAME.fullmatch(name)):
            raise pickle.UnpicklingError(f"invalid global name {key[:60]!r}")
        raise _RefusedGlobal(f"the file wants to load the Python object {key!r}, which is not data")

    def _line(self) -> str:
        line = self.readline()
        if not line.endswith(b"\n"):  # the base class would take a cut-off "torch\nFloa" for a global's name
            raise pickle.UnpicklingError("pickle data was truncated")
        return line[:-1].decode("utf-8")

    def _load_global(self) -> None:
        module = self._line()
        self.append(self.find_class(module, self._line()))

    def _load_inst(self) -> None:
        module = self._line()
        self._instantiate(self.find_class(module, self._line()), self.pop_mark())

    def _load_bytearray8(self) -> None:
        (size,) = struct.unpack("<Q", self.read(8))
        if size > sys.maxsize:
            raise pickle.UnpicklingError(f"BYTEARRAY8 of {size} bytes")
        data = self.read(size)  # reads what is there; the base class would zero-fill `size` bytes first
        if len(data) < size:
            raise pickle.UnpicklingError("pickle data was truncated")
        self.append(bytearray(data))

    dispatch[pickle.GLOBAL[0]] = _load_global
    dispatch[pickle.INST[0]] = _load_inst
    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8


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


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format
# torch.save(..., _use_new_zipfile_serialization=False) pickles this magic number first, with protocol 2
# (b"\x80\x02...") unless another pickle_protocol was asked for (protocol 0 and 1 write it as text).
_LEGACY_TEXT_MAGIC = b"L119547037146038801333356L\n"
_HEADER_BYTES = 32
# torch.save never compresses; a zip whose members inflate to more than this is refused before reading.
_MAX_INFLATION = 100
# torch's weights-only reader refused a global: "Unsupported global: GLOBAL x.y was not an allowed global by
# default" or "Trying to load unsupported GLOBAL x.y whose module x is blocked" (torch/_weights_only_unpickler.py).
_TORCH_REFUSED_GLOBAL = re.compile(r"GLOBAL \S+ was not an allowed global|GLOBAL \S+ whose module \S+ is blocked")


def _one_line(text: Any, limit: Optional[int] = 200) -> str:
    """``text`` with all whitespace runs (newlines included) collapsed to one space, cut to ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if limit is None or len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _describe(err: BaseException) -> str:
    """Short one-line ``Type: message`` of an exception; torch's advice around its reader's error is dropped."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation of torch.load", 1)[0]
    name = type(err).__name__.lstrip("_")
    if name == "error":  # struct.error, zlib.error...
        name = f"{type(err).__module__}.error"
    text = _one_line(text)
    return f"{name}: {text}" if text else name


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    """safetensors: an 8-byte little-endian header length, then a JSON header."""
    return len(head) > 8 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= size - 8


def _unreadable(path: str, head: bytes, err: BaseException) -> CheckpointError:
    """The error for a file that no reader could load (not for unsafe ones): what is wrong, what to do."""
    if head.startswith((_ZIP_MAGIC, b"\x80", _LEGACY_TEXT_MAGIC)):
        return CheckpointError(f"could not read checkpoint {path}: the file is truncated or corrupt ({_describe(err)}). "
                               "Download or save it again")
    return CheckpointError(
        f"could not read checkpoint {path}: it is not a PyTorch or safetensors checkpoint (it starts with bytes "
        f"{head[:8]!r}; torch.save files start with b'PK\\x03\\x04' or b'\\x80'). Check that the path points at the "
        "weights file and not, e.g., at an HTML page saved by a failed download"
    )


def _is_tar(path: str) -> bool:
    try:
        with tarfile.open(path, mode="r:", format=tarfile.PAX_FORMAT) as tar:
            return tar.firstmember is not None  # (zero-filled files open as empty archives)
    except Exception:
        return False


def _preflight(path: str, head: bytes, size: int, shown: str) -> bool:
    """Look at a file before unpickling it; True if torch's weights-only reader may read it first.

    That reader runs only on protocol-2 pickles (what torch.save writes; it warns about others and cannot
    read their opcodes anyway) that never mention ``bytearray``, which it would build from any number
    (zero-filled: a tiny file could exhaust memory); everything else goes to the restricted reader. Refused
    here: files torch.load would not unpickle with ``pickle_module`` at all (TorchScript archives, which it
    hands to torch.jit.load, and the legacy .tar format), zip archives without a pickle or that would
    inflate to far more than their size (torch.save never compresses), and zips Python cannot read.
    """
    if not head.startswith(_ZIP_MAGIC):
        if _is_tar(path):
            raise CheckpointError(f"could not read checkpoint {shown}: it is in PyTorch's legacy .tar format (before "
                                  "version 0.4), which cannot be read safely. Re-save it with torch.save in a trusted environment")
        if not head.startswith(b"\x80\x02"):
            return False
        try:
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return data.find(b"bytearray") < 0
        except (OSError, ValueError):
            return False
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            names = [m.filename.lower().rsplit("/", 1)[-1] for m in members]  # torch's zip reader ignores case
            if "constants.pkl" in names:
                raise CheckpointError(f"could not read checkpoint {shown}: it is a TorchScript archive, not a checkpoint. "
                                      "Load it with torch.jit.load in a trusted environment and torch.save its state_dict()")
            if "data.pkl" not in names:
                raise CheckpointError(f"could not read checkpoint {shown}: it is a zip archive but not a PyTorch "
                                      f"checkpoint (no data.pkl in it; it holds e.g. {_one_line(names[:3], 80)}). Check "
                                      "that the path points at the weights file")
            inflated = sum(m.file_size for m in members if m.compress_type != zipfile.ZIP_STORED)
            if inflated > _MAX_INFLATION * size + (64 << 20):
                raise CheckpointError(
                    f"could not read checkpoint {shown}: it is a zip archive whose compressed members would inflate "
                    f"to {inflated} bytes, {inflated // size} times the file's size (torch.save does not compress). "
                    "Refusing to read it; re-save the weights with torch.save"
                )
            torch_reader = True
            for member, name in zip(members, names):
                if name != "data.pkl":
                    continue
                with archive.open(member) as stream:
                    chunk = stream.read(1 << 20)
                    torch_reader &= chunk[:1] != b"\x80" or chunk[:2] == b"\x80\x02"
                    tail = b""
                    while chunk and torch_reader:
                        torch_reader = b"bytearray" not in tail + chunk
                        tail, chunk = chunk[-8:], stream.read(1 << 20)
            return torch_reader
    except CheckpointError:
        raise
    except Exception as err:  # BadZipFile, zlib.error, EOFError...: torch's zip reader would not do better
        raise _unreadable(shown, head, err) from None


def load_checkpoint_file(path: PathLike) -> Dict[str, Any]:
    """Read a ``.pth``/``.pt``/``.bin`` or ``.safetensors`` file without executing pickled code.

    Raises:
        CheckpointError: for every file it cannot return, with a one-line message naming the file: missing,
            empty, not a checkpoint at all, truncated or corrupt, or pickling code or classes (refused).
    """
    path = os.fspath(path)
    shown = printable_path(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file not found: {shown}")
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(_HEADER_BYTES)
    except OSError as err:
        raise CheckpointError(f"could not read checkpoint {shown}: {_describe(err)}") from None
    if size == 0:
        raise CheckpointError(f"checkpoint file is empty: {shown} (0 bytes: an interrupted download or save?)")
    if path.endswith(".safetensors") or (
        not head.startswith((_ZIP_MAGIC, b"\x80")) and _looks_like_safetensors(head, size)
    ):
        return read_safetensors(path)
    torch_reader = _preflight(path, head, size, shown)
    torch_error: Optional[BaseException] = None
    if torch_reader:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:  # not plain weights (or not a pickle torch's reader can read)
            torch_error = err
        except Exception as err:  # RuntimeError, EOFError, MemoryError, KeyError, struct.error...
            raise _unreadable(shown, head, err) from None
    # Allow only data containers known to occur in official training states (and torch's allowlist).
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle)
    except _RefusedGlobal as err:
        if torch_error is None or _TORCH_REFUSED_GLOBAL.search(str(torch_error)):
            raise _unsafe_error(shown, _one_line(err)) from None
        raise _unreadable(shown, head, err) from None
    except Exception as err:
        raise _unreadable(shown, head, err) from None


# ---------------------------------------------------------------------------------------------- conversion
_WRAPPER_KEYS = ("state_dict", "model", "module", "state_dict_ema", "model_ema")
_DENSE_HEAD_PREFIXES = ("neck.", "bbox_head.", "rpn_head.", "roi_head.", "decode_head.", "auxiliary_head.", "mask_head.")
# Buffers the official code stores but this implementation derives from the input size in forward().
_DERIVED_BUFFERS = ("attn.biases", "attn.relative_position_index", "attn_mask")


def _is_tensor_dict(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()))


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
        f"no model weights found in the checkpoint (looked for a dict of named tensors, or one under {_WRAPPER_KEYS}); "
        f"top-level entries: {_one_line(keys)}"
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


# ---------------------------------------------------------------------------------------------- loading into a model
def stage_depths(keys: Iterable[str]) -> List[int]:
    """Blocks per stage of a state dict in this package's layout (``stages.I.blocks.J.*`` keys)."""
    keys = list(keys)
    depths = []
    for i in range(16):
        blocks = {int(m.group(1)) for k in keys if (m := re.match(rf"stages\.{i}\.blocks\.(\d+)\.", k))}
        if not blocks:
            break
        depths.append(max(blocks) + 1)
    return depths


def describe_architecture(state_dict: Mapping[str, Tensor]) -> str:
    """What a state dict in this package's layout looks like, e.g. ``embed_dim=96, depths=[2, 2, 6, 2]`` (for
    messages; the tensors may be on the meta device)."""
    stem = state_dict.get("patch_embed.norm.weight")
    embed = stem.shape[0] if stem is not None else "?"
    acl = any(".acl." in k for k in state_dict)
    return f"embed_dim={embed}, depths={stage_depths(state_dict)}{', with ACL (CrossFormer++)' if acl else ''}"


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
            f"{list(got)} vs model {list(want)}. The checkpoint looks like {describe_architecture(state_dict)}; the model "
            f"is {describe_architecture(own)}. Build the matching variant (crossformer_vision.list_models())."
        )
    if strict and missing and not unexpected and all(k.startswith(("norm.", "head.")) for k in missing):
        raise CheckpointError(
            f"checkpoint has no classifier head or final norm ({len(missing)} missing keys {missing}): it looks like a "
            f"detection/segmentation backbone. Load it into a features_only model, or pass strict=False."
        )
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"checkpoint does not fit this model: {len(missing)} missing keys {missing[:5]}, {len(unexpected)} "
            f"unexpected keys {unexpected[:5]}. The checkpoint looks like {describe_architecture(state_dict)}; the model "
            f"is {describe_architecture(own)}. Pass strict=False to load what fits."
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

    Raises:
        CheckpointError: unreadable or unsafe file, no weights in it, or weights that do not fit ``model``;
            the message is one line and names the file.
    """
    checkpoint = load_checkpoint_file(path)  # its errors name the file
    shown = printable_path(path)
    try:
        raw = unwrap_state_dict(checkpoint)
        converted = convert_official_state_dict(raw, model)
        dropped = [k for k in raw if _convert_key(k) is None or k.startswith(_DENSE_HEAD_PREFIXES)]
        missing, unexpected = load_state_dict_checked(model, converted, strict=strict)
    except CheckpointError as err:
        raise CheckpointError(f"{shown}: {_one_line(err, limit=None)}") from None
    except Exception as err:  # the file's content decides what fails here: odd keys, dtypes, meta tensors...
        raise CheckpointError(f"{shown}: the checkpoint holds something other than model weights this model can "
                              f"load ({_describe(err)})") from None
    return LoadReport(missing, unexpected, dropped)


# ---------------------------------------------------------------------------------------------- safetensors
#: A safetensors header larger than this is refused (the safetensors library's own limit).
MAX_HEADER_BYTES = 100 << 20
_DTYPES: Dict[str, Tuple[torch.dtype, int]] = {  # safetensors' name -> (torch dtype, bytes per element)
    "F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8), "I32": (torch.int32, 4), "I16": (torch.int16, 2), "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1), "BOOL": (torch.bool, 1),
}


class TensorEntry(NamedTuple):
    """One tensor of a safetensors header."""

    dtype: str  # safetensors' name: "F32", "BF16", "I64"...
    shape: Tuple[int, ...]
    start: int  # byte offsets into the data after the header
    end: int

    @property
    def is_floating_point(self) -> bool:
        return _DTYPES[self.dtype][0].is_floating_point


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_safetensors_header(path: PathLike) -> Tuple[Dict[str, TensorEntry], Dict[str, str]]:
    """The tensors a safetensors file describes, and its metadata, checked without reading any tensor.

    Checked: the header's length against the file's size, the header is a JSON object, every tensor has a known
    dtype, a shape of non-negative ints and data offsets whose length is exactly that shape's bytes, and the
    tensors tile the data area exactly (no overlap, no gap, nothing missing or left over).

    Raises:
        CheckpointError: one line naming the file and what is wrong.
    """
    shown = printable_path(path)

    def bad(problem: str) -> CheckpointError:  # every message starts the same way (callers match on it)
        return CheckpointError(f"could not read safetensors file {shown}: {problem}")

    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else -1
            if length < 2 or length > min(MAX_HEADER_BYTES, size - 8):
                what = f"{size} bytes long" if len(head) < 8 else f"its header claims {length} bytes and the file has {size}"
                raise bad(f"it is not a complete safetensors file ({what}): truncated or not safetensors; download or "
                          f"write it again")
            raw = f.read(length)
    except OSError as err:
        raise bad(err.strerror or str(err)) from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise bad("its header is not JSON: the file is corrupt; download or write it again") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object: the file is corrupt")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise bad("its metadata is not a mapping of strings: the file is corrupt")
    entries: Dict[str, TensorEntry] = {}
    for name, item in header.items():
        if not isinstance(item, dict) or not {"dtype", "shape", "data_offsets"} <= set(item):
            raise bad(f"entry {name[:80]!r} lacks dtype, shape or data_offsets: the file is corrupt")
        dtype, shape, offsets = item["dtype"], item["shape"], item["data_offsets"]
        if dtype not in _DTYPES:
            raise bad(f"tensor {name[:80]!r} has dtype {str(dtype)[:20]!r}, which model weights do not use (known: "
                      f"{', '.join(_DTYPES)})")
        if not isinstance(shape, list) or len(shape) > 16 or not all(_int(d) and d >= 0 for d in shape):
            raise bad(f"tensor {name[:80]!r} has an invalid shape {str(shape)[:60]}: the file is corrupt")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_int(o) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise bad(f"tensor {name[:80]!r} has invalid data offsets {str(offsets)[:60]}: the file is corrupt")
        needed = math.prod(shape) * _DTYPES[dtype][1]
        if offsets[1] - offsets[0] != needed:
            raise bad(f"tensor {name[:80]!r} of shape {shape} ({dtype}) needs {needed} bytes but its data span "
                      f"{offsets[1] - offsets[0]}: the file is corrupt")
        entries[name] = TensorEntry(dtype, tuple(shape), offsets[0], offsets[1])
    data_bytes, position = size - 8 - length, 0
    for entry in sorted(entries.values(), key=lambda e: (e.start, e.end)):
        if entry.start != position:
            raise bad(f"its tensors {'overlap' if entry.start < position else 'leave gaps'} in the data area: the file "
                      f"is corrupt")
        position = entry.end
    if position != data_bytes:
        raise bad(f"its header describes {position} bytes of tensors but the file holds {data_bytes}: it is truncated "
                  f"or corrupt; download or write it again")
    return entries, metadata


def read_safetensors(path: PathLike, names: Optional[Iterable[str]] = None) -> Dict[str, Tensor]:
    """Tensors ``names`` (default: all) of a safetensors file, after :func:`read_safetensors_header` checked it."""
    entries, _ = read_safetensors_header(path)
    names = list(entries) if names is None else list(names)
    try:
        from safetensors import safe_open

        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            return {name: f.get_tensor(name) for name in names}
    except Exception as err:  # SafetensorError, OSError, MemoryError
        raise CheckpointError(f"could not read safetensors file {printable_path(path)}: {_describe(err)}. The file is "
                              f"truncated or corrupt: download or write it again") from None


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
