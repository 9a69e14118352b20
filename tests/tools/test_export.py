"""One exported graph (torch.export and ONNX) serves every batch size, height and width, with eager's numbers."""
import errno
import os
import re

import numpy as np
import pytest
import torch

import crossformer_vision as cv
import crossformer_vision.tools.export as export_module
from crossformer_vision.cli import main
from crossformer_vision.models.crossformer import SMALL_VARIANTS
from crossformer_vision.tools.export import export_onnx, export_program, quantize_onnx, save_program, size_range

# A small model that still has every branch of the grouping: SDA and LDA with padding (group 4, interval 2 in
# stage 1), the small-map rule in the later stages at small inputs, and both outcomes of it across the range.
SMALL = dict(SMALL_VARIANTS["crossformer_micro"], num_classes=7)
# (batch, height, width): square, not multiples of 32, one side at the minimum, batch 1 and 3
SIZES = [(1, 64, 64), (3, 97, 130), (2, 225, 71), (1, 64, 150)]
# the node of an ONNX export for 64..256 that rejects other heights and widths (onnxruntime's error names it)
RANGE_CHECK = "images_height_and_width_must_be_in_64_to_256"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return cv.CrossFormer(**SMALL).eval()


@pytest.fixture(scope="module")
def onnx_file(model, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "micro.onnx", max_size=256)


def _inputs(batch, height, width):
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(height * width))


def test_torch_export_serves_every_size(model, tmp_path):
    program = export_program(model, max_size=256)
    path = save_program(program, tmp_path / "micro.pt2")
    loaded = torch.export.load(path).module()
    for batch, height, width in SIZES:
        x = _inputs(batch, height, width)
        with torch.no_grad():
            expected = model(x)
            got = loaded(x)
        assert got.shape == (batch, 7)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


class _Pyramid(torch.nn.Module):
    """The four stage maps, as a detection/segmentation backbone uses them."""

    def __init__(self, body):
        super().__init__()
        self.body = body
        self.min_input_size = body.min_input_size

    def forward(self, x):
        return self.body.forward_intermediates(x, intermediates_only=True)


def test_torch_export_feature_maps(model):
    pyramid = _Pyramid(model).eval()
    program = export_program(pyramid, max_size=160)
    x = _inputs(1, 150, 97)
    with torch.no_grad():
        expected, got = pyramid(x), program.module()(x)
    assert [tuple(g.shape[-2:]) for g in got] == [(37, 24), (18, 12), (9, 6), (4, 3)]
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=0)


def test_torch_export_fixed_interval_rule():
    """The original dense backbone's rule (group size follows the input) exports too."""
    torch.manual_seed(0)
    model = cv.CrossFormer(**dict(SMALL, lda_mode="fixed_interval")).eval()
    program = export_program(model, max_size=200)
    for batch, height, width in [(1, 64, 64), (2, 130, 97)]:
        x = _inputs(batch, height, width)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(x), model(x), atol=1e-5, rtol=0)


def test_onnx_matches_pytorch_at_three_sizes(model, onnx_file):
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(onnx_file))
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["producer"] == "crossformer-vision" and meta["model"] == "CrossFormer"
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    for batch, height, width in [(1, 112, 112), (3, 97, 130), (2, 256, 200)]:
        x = _inputs(batch, height, width)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {"images": x.numpy()})[0]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-4


def test_exported_range_is_enforced(model):
    program = export_program(model, max_size=128)
    with pytest.raises(Exception, match="(?i)height|width|s[0-9]+|range|guard|constraint"):
        program.module()(torch.randn(1, 3, 64, 200))


def test_bad_export_requests_are_clear(model):
    with pytest.raises(ValueError, match="below the smallest input"):
        size_range(model, min_size=8)
    with pytest.raises(ValueError, match="max_size 40 is below min_size 64"):
        size_range(model, min_size=64, max_size=40)
    trained = cv.CrossFormer(**SMALL)
    with pytest.raises(ValueError, match=r"eval mode: call model.eval\(\)"):
        export_program(trained)


def test_export_command(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "tiny.onnx"
    # a registered model with random weights, a reduced size range to keep the check quick
    assert main(["export", "crossformer_tiny", "--num-classes", "5", "--output", str(out), "--max-size", "96"]) == 0
    assert out.is_file() and "height, width in [64, 96]" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file is left behind"
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["model"] == "crossformer_tiny" and meta["mean"].startswith("0.485") and meta["crop_pct"] == "0.875"
    assert main(["export"]) == 2
    assert "give a model NAME" in capsys.readouterr().err
    assert main(["export", "crossformer_tiny", "--min-size", "4"]) == 2
    assert "below the smallest input" in capsys.readouterr().err


@pytest.fixture(scope="module")
def digits_like():
    """The demo's shape: crossformer_micro on 32x32 greyscale images (stage 4 sees a 1x1 map)."""
    torch.manual_seed(0)
    return cv.CrossFormer(**SMALL_VARIANTS["crossformer_micro"], in_chans=1, num_classes=10).eval()


def test_fixed_size_export_below_the_dynamic_minimum(digits_like, tmp_path):
    """A model trained at 32x32 exports for that size (any batch) although a size range starts at 64."""
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    path = export_onnx(digits_like, tmp_path / "digits.onnx", fixed_size=(32, 32))  # verified at batches 1 and 3
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 1, 32, 32]
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(session.run(None, {"images": x.numpy()})[0]), digits_like(x),
                                   atol=1e-4, rtol=0)
    for height, width in [(64, 64), (32, 48), (31, 32)]:  # a fixed size is in the input's shape: ORT checks it
        with pytest.raises(Exception, match="(?i)dimension|shape"):
            session.run(None, {"images": torch.randn(1, 1, height, width).numpy()})
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["fixed_size"] == "32,32" and "min_size" not in meta
    program = export_program(digits_like, fixed_size=(32, 48))
    with torch.no_grad():
        assert program.module()(torch.randn(3, 1, 32, 48)).shape == (3, 10)
    with pytest.raises(ValueError, match="below this model's smallest input"):
        export_program(digits_like, fixed_size=(16, 32))


def test_int8_copy_keeps_the_predictions_and_the_dynamic_sizes(model, onnx_file, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx
    import onnxruntime as ort

    int8 = quantize_onnx(onnx_file, tmp_path / "micro.int8.onnx")
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops, ops
    assert "Conv" in ops, "convolutions stay fp32"
    assert int8.stat().st_size < 0.6 * onnx_file.stat().st_size
    assert not list(tmp_path.glob(".*tmp*")), "written atomically"
    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    for batch, height, width in [(2, 64, 64), (1, 97, 130)]:
        x = torch.randn(batch, 3, height, width)
        with torch.no_grad():
            want = model(x)
        got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
        assert got.shape == want.shape
        # int8 weights: close to the fp32 logits, not equal
        assert 0 < float((got - want).abs().max()) < 0.1 * float(want.abs().max())
        assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.99
    with pytest.raises(Exception, match=RANGE_CHECK):  # the size-range check carries over
        session.run(None, {"images": _inputs(1, 33, 64).numpy()})
    with pytest.raises(FileNotFoundError, match="ONNX file not found"):
        quantize_onnx(tmp_path / "missing.onnx", tmp_path / "x.onnx")


def test_export_command_fixed_size_and_int8(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "micro.onnx"
    assert main(["export", "crossformer_tiny", "--num-classes", "3", "--output", str(out), "--fixed-size", "64x96",
                 "--int8", "--no-verify"]) == 0
    printed = capsys.readouterr().out
    assert "height 64, width 96" in printed and "micro.int8.onnx" in printed
    assert out.is_file() and (tmp_path / "micro.int8.onnx").is_file()
    assert main(["export", "crossformer_tiny", "--format", "pt2", "--int8"]) == 2
    assert "--int8 quantizes an ONNX file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", "crossformer_tiny", "--fixed-size", "big"])
    assert "expected a size like 224" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# An ONNX file rejects heights and widths outside its range (onnxruntime alone runs them, with wrong numbers).


@pytest.fixture(scope="module")
def onnx_run(onnx_file):
    """An onnxruntime session of ``onnx_file`` (exported for 64..256) that does not log the expected failures."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    return ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("height, width", [(33, 64), (50, 100), (63, 250), (64, 63), (257, 64), (128, 300)])
def test_onnx_rejects_sizes_outside_its_range(onnx_run, height, width):
    """Sizes below the range ran and gave logits ~10% off; now they fail, as do sizes above it."""
    with pytest.raises(Exception, match=RANGE_CHECK):
        onnx_run.run(None, {"images": _inputs(1, height, width).numpy()})


def test_onnx_range_check_keeps_results_and_is_documented(model, onnx_file, onnx_run):
    import onnx

    for batch, height, width in [(1, 64, 64), (2, 64, 200), (3, 97, 130), (1, 256, 64), (1, 256, 256)]:
        x = _inputs(batch, height, width)
        with torch.no_grad():
            expected = model(x).numpy()
        got = onnx_run.run(None, {"images": x.numpy()})[0]
        assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4
    with pytest.raises(Exception, match="(?i)invalid dimensions"):  # channels are fixed in the input's shape
        onnx_run.run(None, {"images": _inputs(1, 64, 64)[:, :1].numpy()})
    proto = onnx.load(str(onnx_file))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert (meta["min_size"], meta["max_size"]) == ("64", "256")
    assert [n.op_type for n in proto.graph.node if n.name == RANGE_CHECK] == ["Expand"], "kept, not folded away"
    assert not model._forward_hooks, "the check is only attached while exporting: eager runs never see it"


class _TwoMaps(torch.nn.Module):
    """A tiny model with two outputs, quick to export."""

    min_input_size = 32

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=2)

    def forward(self, x):
        y = self.conv(x)
        return [y, y.mean((2, 3))]


def test_onnx_range_check_guards_every_output_and_failed_writes_leave_nothing(tmp_path, monkeypatch):
    import onnx
    import onnxruntime as ort

    path = export_onnx(_TwoMaps().eval(), tmp_path / "two.onnx", max_size=100)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for name in ("features_0", "features_1"):  # asked for alone, each output still runs the check
        assert session.run([name], {"images": np.zeros((1, 3, 64, 100), np.float32)})[0].shape[0] == 1
        with pytest.raises(Exception, match="images_height_and_width_must_be_in_64_to_100"):
            session.run([name], {"images": np.zeros((1, 3, 40, 80), np.float32)})

    def full_disk(proto, f):
        f.write(b"half a model")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(onnx, "save_model", full_disk)
    target = tmp_path / "new" / "two.onnx"
    with pytest.raises(ValueError, match=re.escape(f"cannot write {target}: no space left")) as info:
        export_onnx(_TwoMaps().eval(), target, max_size=100)
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.onnx"], "no partial file, temporary file or folder"


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _one_error_line(capsys, *words):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("crossformer export: error: cannot write "), err
    for word in words:
        assert word in err, err
    return err


def test_export_command_output_in_the_way_is_one_line_before_exporting(tmp_path, capsys, monkeypatch):
    """An existing folder or a file where a folder should be: found before the (slow) export, nothing written."""

    def no_export(*args, **kwargs):
        raise AssertionError("the output is checked before exporting")

    monkeypatch.setattr(export_module, "export_program", no_export)
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "folder.int8.onnx").mkdir()
    folder, afile = str(tmp_path / "folder"), str(tmp_path / "afile")
    cases = [
        (["--output", folder], [folder, "existing folder"]),
        (["--format", "pt2", "--output", folder], [folder, "existing folder"]),
        (["--output", f"{afile}/m.onnx"], [f"{afile}/m.onnx", f"{afile} is a file, not a folder"]),
        (["--format", "pt2", "--output", f"{afile}/sub/m.pt2"], [f"{afile} is a file, not a folder"]),
        (["--int8", "--output", f"{folder}.onnx"], [f"{folder}.int8.onnx", "existing folder"]),  # the int8 copy's
    ]
    before = _tree(tmp_path)
    for extra, words in cases:
        assert main(["export", "crossformer_tiny", *extra]) == 2
        _one_error_line(capsys, *words)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left on the device; free some space"),
                                         (errno.EACCES, "permission denied"), (errno.EROFS, "read-only")])
def test_export_command_failed_write_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch, code, words):
    """A full disk, a read-only folder (simulated: as root chmod does not stop writes) while writing the file."""
    monkeypatch.setattr(export_module, "export_program", lambda *args, **kwargs: "a program")
    monkeypatch.setattr(torch.export, "save", lambda program, f: f.write(b"a whole program"))
    atomic_write_bytes = export_module.atomic_write_bytes

    def failing_write(path, writer):
        def half(f):
            f.write(b"half a program")
            raise OSError(code, os.strerror(code))  # PermissionError for EACCES

        atomic_write_bytes(path, half)  # the project's writer, with its own cleanup

    monkeypatch.setattr(export_module, "atomic_write_bytes", failing_write)
    out = tmp_path / "new" / "tiny.pt2"
    assert main(["export", "crossformer_tiny", "--format", "pt2", "--output", str(out)]) == 2
    _one_error_line(capsys, str(out), words)
    assert _tree(tmp_path) == [], "no half-written file, no temporary file, no folder made for it"


def test_quantize_cleanup_never_hides_the_error(onnx_file, tmp_path, monkeypatch):
    import onnxruntime.quantization as quantization

    def half_quantized(source, target, **kwargs):
        with open(target, "wb") as f:
            f.write(b"half a model")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    monkeypatch.setattr(quantization, "quantize_dynamic", half_quantized)
    with pytest.raises(ValueError, match="no space left"):
        quantize_onnx(onnx_file, tmp_path / "micro.int8.onnx")
    assert _tree(tmp_path) == []

    def cannot_remove(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(os, "remove", cannot_remove)
    with pytest.raises(ValueError, match="no space left"):  # the first error, not the cleanup's
        quantize_onnx(onnx_file, tmp_path / "micro.int8.onnx")
    monkeypatch.undo()
    for leftover in tmp_path.iterdir():
        leftover.unlink()
    with pytest.raises(ValueError, match="existing folder"):
        quantize_onnx(onnx_file, tmp_path)
