"""Export CrossFormer models as one graph for every input size: ``torch.export`` and ONNX.

>>> from crossformer_vision import create_model
>>> from crossformer_vision.tools.export import export_program, export_onnx
>>> program = export_program(create_model("crossformer_tiny").eval())      # torch.export.ExportedProgram
>>> export_onnx(create_model("crossformer_tiny").eval(), "crossformer_tiny.onnx")   # batch, height, width dynamic

How one graph covers every size: while exporting, every :class:`~crossformer_vision.LSDAttention` takes the
export path (:mod:`crossformer_vision.runtime.export`): it gathers tokens into groups with computed indices,
pads and masks unconditionally, and turns the small-map rule (a map no larger than the group is one group)
into ``torch.cond`` (an ONNX ``If``) when the exported size range allows both outcomes. Sizes are traced with ``backed_size_oblivious`` so that no
fact of the example input (a batch of 2, a 224x224 map) is baked into the graph. The eager path is untouched.

Sizes outside the exported range fail instead of giving wrong numbers: ``torch.export`` checks the range in
its own program, and an ONNX file checks it in its graph (see :func:`export_onnx`), which onnxruntime does not
do for a dynamic axis on its own. The accepted range is stored in the ONNX metadata (``min_size``, ``max_size``).

Every function that writes a file writes it atomically and turns a file-system error (read-only folder, full
disk, a folder where the file should go, a file where a folder should be) into one ``ValueError`` that names
the path, the problem and the fix, leaving no partial or temporary file behind.
"""
import contextlib
import errno
import io
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..runtime.tracing import is_exporting
from ..utils.files import atomic_write_bytes

__all__ = ["DYNAMIC_AXES", "check_writable", "export_program", "export_onnx", "onnx_session", "quantize_onnx",
           "save_program", "size_range", "verify_onnx"]

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
    """``torch.export.save`` atomically; read it back with ``torch.export.load(path).module()``.

    The program is serialized in memory first (one extra copy of the file's size), then written. Raises
    ``ValueError`` (naming the path, the problem and the fix) when ``path`` cannot be written; no partial or
    temporary file is left.
    """
    path = Path(path)
    check_writable(path)
    # serialized in memory first: torch's archive writer cannot fail cleanly on a full disk (it aborts the process)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    with _writing(path):
        atomic_write_bytes(path, lambda f: f.write(buffer.getbuffer()))
    return path


def _existing_ancestor(path: Path) -> Path:
    """The nearest of ``path`` and its parents that exists (as a file or a folder)."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(path.anchor or ".")


def _write_error(path: PathLike, err: OSError) -> ValueError:
    """One line for a failed write of ``path``: the path, what went wrong and what to do (raise it ``from err``)."""
    path = Path(path)
    code = getattr(err, "errno", None)
    blocker = _existing_ancestor(path.parent)
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        problem = "no space left on the device" if code == errno.ENOSPC else "disk quota exceeded"
        fix = "free some space or write to another disk"
    elif code == errno.EROFS:
        problem, fix = "the file system is read-only", "choose a folder on a writable disk"
    elif code in (errno.EACCES, errno.EPERM):
        problem = f"permission denied: the folder {blocker} is read-only or not yours"
        fix = "choose a writable folder or change its permissions"
    elif code == errno.EISDIR or path.is_dir():
        problem, fix = "it is an existing folder", "give the path of a file (for example a new name inside that folder)"
    elif code in (errno.ENOTDIR, errno.EEXIST) or not blocker.is_dir():
        problem = f"{blocker} is a file, not a folder"
        fix = "remove or rename that file, or choose another output folder"
    else:
        problem = err.strerror or str(err) or type(err).__name__
        fix = "check the path and the disk, then try again"
    return ValueError(f"cannot write {path}: {problem}; {fix}")


def check_writable(path: PathLike) -> None:
    """Raise ``ValueError`` (path, problem, fix) if ``path`` clearly cannot be written, before any work is done.

    Catches an existing folder at ``path``, a file where one of its folders should be, and a folder that is
    not writable for this user (missing folders are fine: they are created). A full disk shows only when
    writing; the writers here report it the same way.
    """
    path = Path(path)
    if path.is_dir():
        raise _write_error(path, IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path)))
    folder = _existing_ancestor(path.parent)
    if not folder.is_dir():
        raise _write_error(path, NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder)))
    if not os.access(folder, os.W_OK | os.X_OK):
        code = errno.EROFS if _read_only_mount(folder) else errno.EACCES
        raise _write_error(path, OSError(code, os.strerror(code), str(folder)))


def _read_only_mount(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):  # no statvfs (Windows)
        return False


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Create the missing folders of ``path`` for the write in the ``with`` block; an ``OSError`` in it becomes
    :func:`_write_error`'s ``ValueError``, and a failed write removes the folders it created (when empty)."""
    created: List[Path] = [p for p in path.parents if not os.path.lexists(p)]  # deepest first
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield
    except BaseException as err:
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        if isinstance(err, OSError):
            raise _write_error(path, err) from err
        raise


def _remove_quietly(path: PathLike) -> None:
    """Best-effort cleanup: remove ``path`` if it is there; never raises (the error being handled matters more)."""
    try:
        if os.path.lexists(path):
            os.remove(path)
    except OSError:
        pass


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


class _SizeRangeCheck:
    """Forward hook that makes an ONNX graph reject inputs outside ``[low, high]``; installed only while
    :func:`export_onnx` traces the model (see :func:`_checking_size_range`), so eager runs never see it.

    ``torch.export`` keeps its range as assertions that the ONNX exporter drops; onnxruntime then runs any
    height and width, and sizes under the range (where the traced rules no longer hold) give wrong numbers.
    The hook subtracts from every output an exact zero: the sum of a zero tensor with
    ``min(height - low, high - height, width - low, high - width)`` elements. That is an ``Expand`` in the
    graph, and onnxruntime fails on a negative size (0 elements, at the ends of the range, is fine).
    ``x - 0.0`` is ``x`` bit for bit (also ``-0.0`` and NaN), so results inside the range do not change. The
    size comes from the input's shape at run time, so constant folding cannot remove the check, and every
    output depends on it, so onnxruntime runs it whichever outputs are asked for; :func:`export_onnx` finds
    it in the exported graph (a warning if not) and names its node after the range.
    """

    def __init__(self, low: int, high: int):
        self.low, self.high = low, high

    def __call__(self, module: nn.Module, args: Tuple[Any, ...], output: Any) -> Any:
        if not is_exporting() or not args or not isinstance(args[0], Tensor):
            return output
        height, width = args[0].shape[-2:]
        slack = torch.sym_min(torch.sym_min(height - self.low, self.high - height),
                              torch.sym_min(width - self.low, self.high - width))
        zero = torch.zeros(slack, device=args[0].device).sum()
        if isinstance(output, Tensor):
            return output - zero.to(output.dtype)
        if isinstance(output, (list, tuple)):
            return type(output)(o - zero.to(o.dtype) if isinstance(o, Tensor) else o for o in output)
        return output


@contextlib.contextmanager
def _checking_size_range(model: nn.Module, low: int, high: int) -> Iterator[None]:
    """Trace ``model`` with :class:`_SizeRangeCheck` (a forward hook, so the weights keep their names)."""
    handle = model.register_forward_hook(_SizeRangeCheck(low, high))
    try:
        yield
    finally:
        handle.remove()


def _range_check_name(low: int, high: int) -> str:
    """The ONNX name of the node that rejects a size outside the range: onnxruntime's error quotes it."""
    return f"images_height_and_width_must_be_in_{low}_to_{high}"


def _name_range_check(proto: Any, low: int, high: int) -> bool:
    """Find the range check in the exported graph (``output - ReduceSum(Expand(0, slack))`` for every output)
    and give its node a name that says what failed; False if the graph does not have it for every output."""
    producers = {out: node for node in proto.graph.node for out in node.output}
    checks = []
    for output in proto.graph.output:
        node = producers.get(output.name)
        if node is None or node.op_type != "Sub" or len(node.input) != 2:
            return False
        while node is not None and node.op_type != "ReduceSum":  # past a Cast for outputs that are not float32
            node = producers.get(node.input[-1] if node.op_type == "Sub" else node.input[0])
            if node is not None and node.op_type not in ("Cast", "ReduceSum"):
                return False
        fill = producers.get(node.input[0]) if node is not None else None
        if fill is None or fill.op_type not in ("Expand", "ConstantOfShape"):
            return False
        checks.append(fill)
    for i, node in enumerate({id(n): n for n in checks}.values()):
        node.name = _range_check_name(low, high) + (f"_{i}" if i else "")
    return bool(checks)


def export_onnx(
    model: nn.Module, path: PathLike, min_size: Optional[int] = None, max_size: int = 2048, max_batch: int = 1024,
    opset: Optional[int] = None, verify: bool = True, metadata: Optional[Dict[str, str]] = None,
    fixed_size: Optional[Tuple[int, int]] = None,
) -> Path:
    """Write ``model`` as an ONNX file with dynamic batch, height and width (or one ``fixed_size``).

    The file is written atomically (a temporary file renamed into place). Input ``images`` is
    ``(batch, channels, height, width)``; outputs are ``logits`` for a classifier, else ``features_<i>``.
    The model's preprocessing (mean, std, input size, crop fraction) is stored as metadata.

    Sizes the file accepts: any batch; heights and widths in ``[min_size, max_size]``, stored as the
    metadata ``min_size`` and ``max_size``. The graph itself rejects any other height or width: onnxruntime
    raises an error (``Non-zero status code returned while running Expand node.
    Name:'images_height_and_width_must_be_in_<min>_to_<max>' ... Size() must be >= 0``) instead of returning
    wrong numbers. The check is one tiny ``Expand``/``ReduceSum`` and leaves results bit for bit unchanged.
    The number of channels is fixed in the input's shape (onnxruntime checks it: ``Got invalid dimensions for
    input``), and so are height and width of a ``fixed_size`` export (stored as the metadata ``fixed_size``,
    ``"<height>,<width>"``).

    Args:
        verify: Run the file in onnxruntime (when installed) at two sizes, one of them not a multiple of 32,
            and check it against PyTorch (``ValueError`` if it differs by more than 1e-4).
        metadata: Extra key/value strings to store (``min_size``, ``max_size`` and ``fixed_size`` are always
            the export's own).
        fixed_size: ``(height, width)``: see :func:`export_program`.

    Raises:
        ValueError: a bad size range, a model in training mode, a failed verification, or ``path`` cannot be
            written (an existing folder, a file where a folder should be, a read-only folder, a full disk:
            checked before the export where possible; the message names the path and the fix, and no partial
            file is left).
    """
    import onnx

    path = Path(path)
    check_writable(path)
    if fixed_size is None:
        low, high = size_range(model, min_size, max_size)
        range_meta = {"min_size": str(low), "max_size": str(high)}
        with _checking_size_range(model, low, high):
            program = export_program(model, low, high, max_batch)
    else:
        program = export_program(model, min_size, max_size, max_batch, fixed_size=fixed_size)
        fixed_size = tuple(program.example_inputs[0][0].shape[2:])
        range_meta = {"fixed_size": f"{fixed_size[0]},{fixed_size[1]}"}
    with torch.no_grad():
        sample_out = program.module()(program.example_inputs[0][0])
    outputs = ["logits"] if isinstance(sample_out, Tensor) else [f"features_{i}" for i in range(len(sample_out))]
    kwargs: Dict[str, Any] = {} if opset is None else {"opset_version": opset}
    onnx_program = torch.onnx.export(program, dynamo=True, input_names=["images"], output_names=outputs,
                                     verbose=False, **kwargs)
    proto = onnx_program.model_proto
    _name_axes(proto)
    if fixed_size is None and not _name_range_check(proto, low, high):
        warnings.warn(f"{path}: the ONNX graph's check of the size range [{low}, {high}] was not found (a changed "
                      "exporter?); inputs outside the range may run and give wrong results", RuntimeWarning)
    for key, value in {**_metadata(model), **(metadata or {}), **range_meta}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with _writing(path):
        atomic_write_bytes(path, lambda f: onnx.save_model(proto, f))
    if verify:
        if fixed_size is not None:
            sizes = [(1, *fixed_size), (3, *fixed_size)]
        else:
            sizes = [(1, min(max(224, low), high), min(max(224, low), high)), (2, low + (high - low) // 3, low + 5)]
        verify_onnx(model, path, sizes)
    return path


def quantize_onnx(source: PathLike, path: PathLike, per_channel: bool = False) -> Path:
    """An int8 copy of an exported ONNX file, with onnxruntime's dynamic quantization.

    The weights of every ``MatMul``/``Gemm`` (the linear layers: most of the model's time) are stored as int8
    and their inputs quantized on the fly at run time; convolutions, attention and normalisation stay fp32.
    Dynamic batch/height/width, the size-range check and the metadata carry over. Written atomically: on any
    error the temporary file is removed (best effort; the original error is the one raised).

    Args:
        source: An fp32 file from :func:`export_onnx`.
        path: Where to write the int8 file.
        per_channel: One scale per output channel instead of one per weight matrix.

    Raises:
        FileNotFoundError: no ``source``.
        ValueError: ``path`` cannot be written (see :func:`export_onnx`).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, path = Path(source), Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"ONNX file not found: {source}")
    check_writable(path)
    # created by the quantizer like any new file (mkstemp's owner-only mode would not suit a deployed model)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with _writing(path):
        try:
            quantize_dynamic(source, tmp, op_types_to_quantize=["MatMul", "Gemm"], per_channel=per_channel,
                             weight_type=QuantType.QInt8)
            os.replace(tmp, path)
        except BaseException:
            _remove_quietly(tmp)
            raise
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
