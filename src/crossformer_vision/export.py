"""Export CrossFormer models as one graph for every input size: ``torch.export`` and ONNX.

>>> from crossformer_vision import create_model
>>> from crossformer_vision.export import export_program, export_onnx
>>> program = export_program(create_model("crossformer_tiny").eval())      # torch.export.ExportedProgram
>>> export_onnx(create_model("crossformer_tiny").eval(), "crossformer_tiny.onnx")   # batch, height, width dynamic

How one graph covers every size: while exporting, :class:`~crossformer_vision.layers.LSDAttention` switches
to a path that gathers tokens into groups with computed indices, pads and masks unconditionally, and turns
the small-map rule (a map no larger than the group is one group) into ``torch.cond`` (an ONNX ``If``) when
the exported size range allows both outcomes. Sizes are traced with ``backed_size_oblivious`` so that no
fact of the example input (a batch of 2, a 224x224 map) is baked into the graph. The eager path is untouched.
"""
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .engine import atomic_write_bytes

__all__ = ["DYNAMIC_AXES", "export_program", "export_onnx", "onnx_session", "quantize_onnx", "save_program", "size_range",
           "verify_onnx"]

PathLike = Union[str, Path]

#: Names of the dynamic input axes, as they appear in the ONNX file.
DYNAMIC_AXES = ("batch", "channels", "height", "width")


def size_range(model: nn.Module, min_size: Optional[int] = None, max_size: int = 2048) -> Tuple[int, int]:
    """The input side lengths an export will accept: ``(min_size, max_size)``, checked.

    The smallest is twice the model's smallest eager input (64 for the stride-32 models): an exported graph
    needs every stage's map to be at least 2x2, as a size of 1 would be a special case baked into the graph.
    """
    smallest = 2 * int(getattr(model, "min_input_size", 32))
    low = smallest if min_size is None else int(min_size)
    if low < smallest:
        raise ValueError(f"min_size {low} is below the smallest input an export of this model takes "
                         f"({smallest}x{smallest}: every stage map at least 2x2); use min_size >= {smallest}")
    if max_size < low:
        raise ValueError(f"max_size {max_size} is below min_size {low}; give a range with max_size >= min_size")
    return low, int(max_size)


def _check_fixed_size(model: nn.Module, fixed_size: Tuple[int, int]) -> Tuple[int, int]:
    """``(height, width)`` of a fixed-size export, checked against the model's smallest input."""
    height, width = (int(v) for v in fixed_size)
    smallest = int(getattr(model, "min_input_size", 32))
    if min(height, width) < smallest:
        raise ValueError(f"fixed size {height}x{width} is below this model's smallest input ({smallest}x{smallest}, "
                         f"its total stride); give a size of at least {smallest}")
    return height, width


def _example(model: nn.Module, low: int, high: int, fixed_size: Optional[Tuple[int, int]] = None) -> Tensor:
    """A batch of 2 at ``fixed_size`` or the model's nominal size (clamped into the range), on its device."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    chans, side = int(getattr(model, "in_chans", 3)), int(cfg.get("input_size", (3, 224, 224))[-1])
    side = min(max(side, low), high)
    height, width = fixed_size or (side, side)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    return torch.randn(2, chans, height, width, device=device)


def export_program(
    model: nn.Module, min_size: Optional[int] = None, max_size: int = 2048, max_batch: int = 1024,
    example: Optional[Tensor] = None, fixed_size: Optional[Tuple[int, int]] = None,
) -> "torch.export.ExportedProgram":
    """``torch.export`` the model with dynamic batch, height and width.

    Args:
        model: A CrossFormer (classifier, ``features_only`` or backbone); put it in ``eval()`` mode first.
        min_size, max_size: Range of heights and widths the program accepts (default: the model's smallest
            input to 2048). Outside it the program raises; inside it every size and aspect ratio works.
        max_batch: Largest batch.
        example: Example input (default: a random batch of 2 at the model's nominal size).
        fixed_size: ``(height, width)``: a program for that size only (the batch stays dynamic), e.g. for
            models trained on inputs smaller than a dynamic export allows (32x32 digits); ``min_size`` and
            ``max_size`` are then ignored.

    Returns:
        The ``ExportedProgram``; ``program.module()`` runs it.
    """
    from torch.export import Dim
    import torch.fx.experimental._config as fx_config

    if model.training:
        raise ValueError("export the model in eval mode: call model.eval() first (dropout and drop-path would be traced)")
    if fixed_size is not None:
        fixed_size = _check_fixed_size(model, fixed_size)
        low = high = 0
    else:
        low, high = size_range(model, min_size, max_size)
    x = _example(model, low, high, fixed_size) if example is None else example
    if x.dim() != 4:
        raise ValueError(f"example input must be (batch, channels, height, width), got shape {tuple(x.shape)}")
    if fixed_size is not None and tuple(x.shape[2:]) != fixed_size:
        raise ValueError(f"example input is {x.shape[2]}x{x.shape[3]}, not the fixed size {fixed_size[0]}x{fixed_size[1]}")
    dims: Dict[int, Any] = {0: Dim("batch", min=1, max=max_batch)}
    if fixed_size is None:
        dims.update({2: Dim("height", min=low, max=high), 3: Dim("width", min=low, max=high)})
    with fx_config.patch(backed_size_oblivious=True):
        return torch.export.export(model, (x,), dynamic_shapes=(dims,))


def save_program(program: "torch.export.ExportedProgram", path: PathLike) -> Path:
    """``torch.export.save`` atomically; read it back with ``torch.export.load(path).module()``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, lambda f: torch.export.save(program, f))
    return path


def _name_axes(onnx_model: Any, num_inputs: int = 1) -> None:
    """Give the dynamic input axes readable names (the exporter writes its internal symbols)."""
    for value in list(onnx_model.graph.input)[:num_inputs]:
        for dim, name in zip(value.type.tensor_type.shape.dim, DYNAMIC_AXES):
            if dim.dim_param:
                dim.dim_param = name


def _metadata(model: nn.Module) -> Dict[str, str]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    meta = {"producer": "crossformer-vision", "model": str(cfg.get("architecture", type(model).__name__))}
    for key in ("mean", "std", "input_size", "crop_pct", "interpolation"):
        if cfg.get(key) is not None:
            value = cfg[key]
            meta[key] = ",".join(str(v) for v in value) if isinstance(value, (tuple, list)) else str(value)
    return meta


def export_onnx(
    model: nn.Module, path: PathLike, min_size: Optional[int] = None, max_size: int = 2048, max_batch: int = 1024,
    opset: Optional[int] = None, verify: bool = True, metadata: Optional[Dict[str, str]] = None,
    fixed_size: Optional[Tuple[int, int]] = None,
) -> Path:
    """Write ``model`` as an ONNX file with dynamic batch, height and width (or one ``fixed_size``).

    The file is written atomically (a temporary file renamed into place). Input ``images`` is
    ``(batch, channels, height, width)``; outputs are ``logits`` for a classifier, else ``features_<i>``.
    The model's preprocessing (mean, std, input size, crop fraction) is stored as metadata.

    Args:
        verify: Run the file in onnxruntime (when installed) at two sizes, one of them not a multiple of 32,
            and check it against PyTorch (``ValueError`` if it differs by more than 1e-4).
        metadata: Extra key/value strings to store.
        fixed_size: ``(height, width)``: see :func:`export_program`.
    """
    import onnx

    path = Path(path)
    program = export_program(model, min_size, max_size, max_batch, fixed_size=fixed_size)
    fixed_size = program.example_inputs[0][0].shape[2:] if fixed_size is not None else None
    with torch.no_grad():
        sample_out = program.module()(program.example_inputs[0][0])
    outputs = ["logits"] if isinstance(sample_out, Tensor) else [f"features_{i}" for i in range(len(sample_out))]
    kwargs: Dict[str, Any] = {} if opset is None else {"opset_version": opset}
    onnx_program = torch.onnx.export(program, dynamo=True, input_names=["images"], output_names=outputs,
                                     verbose=False, **kwargs)
    proto = onnx_program.model_proto
    _name_axes(proto)
    for key, value in {**_metadata(model), **(metadata or {})}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, lambda f: onnx.save_model(proto, f))
    if verify:
        if fixed_size is not None:
            sizes = [(1, *fixed_size), (3, *fixed_size)]
        else:
            low, high = size_range(model, min_size, max_size)
            sizes = [(1, min(max(224, low), high), min(max(224, low), high)), (2, low + (high - low) // 3, low + 5)]
        verify_onnx(model, path, sizes)
    return path


def quantize_onnx(source: PathLike, path: PathLike, per_channel: bool = False) -> Path:
    """An int8 copy of an exported ONNX file, with onnxruntime's dynamic quantization.

    The weights of every ``MatMul``/``Gemm`` (the linear layers: most of the model's time) are stored as int8
    and their inputs quantized on the fly at run time; convolutions, attention and normalisation stay fp32.
    Dynamic batch/height/width and the metadata carry over. Written atomically.

    Args:
        source: An fp32 file from :func:`export_onnx`.
        path: Where to write the int8 file.
        per_channel: One scale per output channel instead of one per weight matrix.
    """
    import os
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, path = Path(source), Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"ONNX file not found: {source}")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        quantize_dynamic(source, tmp, op_types_to_quantize=["MatMul", "Gemm"], per_channel=per_channel,
                         weight_type=QuantType.QInt8)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def onnx_session(path: PathLike, threads: Optional[int] = None) -> Any:
    """An onnxruntime CPU ``InferenceSession`` for ``path``, with ``threads`` intra-op threads (default: ORT's)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def verify_onnx(model: nn.Module, path: PathLike, sizes: Sequence[Tuple[int, int, int]], atol: float = 1e-4) -> float:
    """Largest absolute difference between onnxruntime and PyTorch over inputs of ``(batch, height, width)``.

    Raises ``ValueError`` above ``atol``; returns ``nan`` (and checks nothing) without onnxruntime.
    """
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return float("nan")
    session = onnx_session(path)
    chans = int(getattr(model, "in_chans", 3))
    worst = 0.0
    for batch, height, width in sizes:
        x = torch.randn(batch, chans, height, width)
        with torch.no_grad():
            expected = model(x.to(next(model.parameters()).device))
        expected = [expected] if isinstance(expected, Tensor) else list(expected)
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        for e, g in zip(expected, got):
            if tuple(e.shape) != tuple(g.shape):
                raise ValueError(f"{path}: ONNX output shape {tuple(g.shape)} != PyTorch {tuple(e.shape)} "
                                 f"at {height}x{width}")
            worst = max(worst, float((e.cpu() - torch.from_numpy(g)).abs().max()))
        if worst > atol:
            raise ValueError(f"{path}: ONNX output differs from PyTorch by {worst:.3g} (> {atol}) at {height}x{width}")
    return worst
