"""CrossFormer as segmentation_models_pytorch's ``tu-`` encoder: what smp's own encoder and model tests ask of it
(TorchScript of the encoder, a clear ValueError for its dilated mode, UPerNet / FPN built and run)."""
import pytest
import torch

import crossformer_vision  # noqa: F401  (registers crossformer_* with timm, hence smp's tu-crossformer_*)

smp = pytest.importorskip("segmentation_models_pytorch")


def test_smp_encoder_scripts_like_timm_convnext():
    """smp's test_torch_script: the scripted tu-crossformer_tiny encoder gives the eager features."""
    encoder = smp.encoders.get_encoder("tu-crossformer_tiny", weights=None).eval()
    scripted = torch.jit.script(encoder)
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        eager, script = encoder(x), scripted(x)
    assert [tuple(f.shape) for f in eager] == [(1, 3, 64, 64), (1, 0, 32, 32), (1, 64, 16, 16), (1, 128, 8, 8),
                                               (1, 256, 4, 4), (1, 512, 2, 2)]
    for a, b in zip(eager, script):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("stride", [8, 16])
def test_dilated_mode_is_a_clear_value_error(stride):
    """smp's test_dilated for encoders without a dilated mode expects ValueError (not a TypeError from __init__)."""
    with pytest.raises(ValueError, match="does not support dilated mode: output_stride=" + str(stride)):
        smp.encoders.get_encoder("tu-crossformer_micro", weights=None, output_stride=stride)
    with pytest.raises(ValueError, match="dilated"):  # DeepLabV3 asks for output stride 8 by default
        smp.create_model("deeplabv3", "tu-crossformer_micro", encoder_weights=None)
    # the default stride is accepted, also when given explicitly
    assert smp.encoders.get_encoder("tu-crossformer_micro", weights=None, output_stride=32).output_stride == 32


@pytest.mark.parametrize("arch", ["upernet", "fpn"])
def test_smp_decoders_on_crossformer(arch):
    """smp's model tests (random weights): forward, backward, another input size, classes and in_channels."""
    model = smp.create_model(arch, "tu-crossformer_micro", encoder_weights=None, classes=3)
    x = torch.rand(2, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 3, 64, 64)
    out.mean().backward()
    model = smp.create_model(arch, "tu-crossformer_micro", encoder_weights=None, in_channels=1, classes=7).eval()
    with torch.inference_mode():
        assert model(torch.rand(1, 1, 96, 64)).shape == (1, 7, 96, 64)


def test_smp_encoder_exports_strictly():
    """smp's test_torch_export: torch.export(strict=True) of the encoder at a static size gives the eager features."""
    encoder = smp.encoders.get_encoder("tu-crossformer_micro", weights=None).eval()
    x = torch.rand(1, 3, 64, 64)
    exported = torch.export.export(encoder, args=(x,), strict=True)
    with torch.inference_mode():
        for a, b in zip(encoder(x), exported.module()(x)):
            torch.testing.assert_close(a, b)
