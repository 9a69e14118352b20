"""Parameter and MAC counts (the model zoo table's numbers)."""
import pytest
import timm

import crossformer_vision as cv


@pytest.fixture(scope="module")
def models():
    return {name: cv.create_model(name) for name in ("crossformer_tiny", "crossformer_small")}


@pytest.mark.parametrize("name", ["crossformer_tiny", "crossformer_small"])
def test_fvcore_count_equals_the_official_codes(models, name):
    model = models[name]
    macs = cv.count_macs(model, (3, 224, 224), backend="fvcore")
    assert round(macs / 1e9, 3) == cv.PAPER[name]["official_fvcore_gflops"]
    assert all(m.fused_attn for m in model.modules() if isinstance(m, cv.LSDAttention))  # restored


def test_torch_counter_counts_attention_and_scales_with_pixels(models):
    model = models["crossformer_tiny"]
    at_224 = cv.count_macs(model, (3, 224, 224), backend="torch")
    assert abs(at_224 / cv.count_macs(model, (3, 224, 224), backend="fvcore") - 1) < 0.01
    at_448 = cv.count_macs(model, (3, 448, 448), backend="torch")
    assert 3.9 < at_448 / at_224 < 4.3  # linear in pixels, unlike global attention
    assert cv.count_params(model) == cv.PAPER["crossformer_tiny"]["exact_params"]


def test_counts_any_timm_model():
    resnet = timm.create_model("resnet18")
    assert abs(cv.count_macs(resnet, backend="torch") / 1e9 - 1.82) < 0.01
    with pytest.raises(ValueError, match="backend must be"):
        cv.count_macs(resnet, backend="ptflops")
