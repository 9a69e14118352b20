"""Any input size, decided at forward time; batch independence; clear errors for bad input."""
import pytest
import timm
import torch

import crossformer_vision as cv

MICRO = dict(embed_dim=32, depths=[2, 2, 2, 1], num_heads=[1, 2, 4, 8], drop_path_rate=0.0, num_classes=10)
SIZES = [(224, 224), (225, 301), (97, 130), (640, 480), (1333, 800), (32, 32), (33, 47), (300, 64)]


@pytest.mark.parametrize("pp", [False, True], ids=["crossformer", "crossformerpp"])
@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_any_size_classification_and_features(size, pp):
    extra = dict(group_size=[4, 4, 14, 7], crs_interval=[4, 2, 1, 1], use_acl=True, depths=[2, 2, 6, 1]) if pp else {}
    model = cv.CrossFormer(**{**MICRO, **extra}).eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_intermediates(x, intermediates_only=True)
    assert logits.shape == (1, 10) and torch.isfinite(logits).all()
    h, w = size
    for i, f in enumerate(feats):
        h, w = (h // 4, w // 4) if i == 0 else (h // 2, w // 2)
        assert f.shape == (1, 32 * 2**i, h, w)
        assert torch.isfinite(f).all()


def test_real_variant_at_detection_size():
    model = timm.create_model("crossformer_tiny", features_only=True).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 800, 1333))
    assert [tuple(o.shape[2:]) for o in outs] == [(200, 333), (100, 166), (50, 83), (25, 41)]


@pytest.mark.parametrize("size", [(224, 224), (130, 97)])
def test_batch_elements_are_independent(size):
    model = cv.CrossFormer(**MICRO).eval()
    x = torch.randn(3, 3, *size)
    with torch.no_grad():
        batched = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


def test_sizes_change_between_calls_without_state():
    """No module keeps settings from an earlier input (the official dense backbone does)."""
    model = cv.CrossFormer(**MICRO).eval()
    a, b = torch.randn(1, 3, 224, 320), torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        first = model(a)
        model(b)
        again = model(a)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    fresh = cv.CrossFormer(**MICRO).eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(b), model(b), rtol=0, atol=0)


def test_channels_last_and_non_contiguous_inputs():
    model = cv.CrossFormer(**MICRO).eval()
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(model(x.contiguous(memory_format=torch.channels_last)), ref, rtol=1e-5, atol=1e-5)
        strided = x.transpose(2, 3).contiguous().transpose(2, 3)
        assert not strided.is_contiguous()
        torch.testing.assert_close(model(strided), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "x,message",
    [
        (torch.randn(3, 224, 224), "expected an image batch of shape \\(batch, channels, height, width\\)"),
        (torch.randn(1, 1, 3, 224, 224), "expected an image batch"),
        (torch.randn(1, 1, 224, 224), "expected 3 input channels, got 1"),
        (torch.randn(1, 224, 224, 3), "expected 3 input channels, got 224"),
        (torch.randn(1, 3, 3, 224), "input of 3x224 pixels is too small.*at least 32"),
        (torch.randn(1, 3, 31, 64), "at least 32"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "floating point.*x.float\\(\\)"),
    ],
    ids=["rank3", "rank5", "one-channel", "channels-last-array", "smaller-than-patch", "smaller-than-stride", "uint8"],
)
def test_bad_input_raises_clear_value_error(x, message):
    model = cv.CrossFormer(**MICRO).eval()
    with pytest.raises(ValueError, match=message):
        model(x)
    with pytest.raises(ValueError, match=message):
        model.forward_intermediates(x)


def test_pruned_feature_model_accepts_smaller_inputs():
    model = timm.create_model("crossformer_tiny", features_only=True, out_indices=(0, 1)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 8, 12))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 2, 3), (1, 128, 1, 1)]
    with pytest.raises(ValueError, match="at least 8"):
        model(torch.randn(1, 3, 7, 12))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(lda_mode="adaptive"), "lda_mode must be one of"),
        (dict(pos_embed="sinusoidal"), "pos_embed must be one of"),
        (dict(embed_layer="patchify"), "embed_layer must be one of"),
        (dict(num_heads=[1, 2, 4]), "num_heads needs one entry per stage"),
        (dict(num_heads=[3, 2, 4, 8]), "divisible by num_heads"),
        (dict(patch_size=[4, 7]), "kernel size 7 does not fit stride 4"),
        (dict(merge_size=[[2, 4]]), "merge_size needs 3 entries"),
        (dict(norm_layer="batchnorm"), "unknown norm_layer"),
        (dict(embed_dim=8), "dynamic position bias needs dim >= 16"),
    ],
)
def test_bad_configuration_raises_clear_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cv.CrossFormer(**{**MICRO, **kwargs})
