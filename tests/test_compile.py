"""torch.compile: one graph per forward (no graph breaks), dynamic input sizes, eager's numbers."""
import pytest
import torch

import crossformer_vision as cv
from crossformer_vision.recipes import NAMED_CONFIGS


@pytest.fixture()
def model():
    torch._dynamo.reset()
    torch.manual_seed(0)
    yield cv.CrossFormer(**NAMED_CONFIGS["crossformer_micro"], num_classes=4).eval()
    torch._dynamo.reset()


def test_forward_has_no_graph_breaks(model):
    explanation = torch._dynamo.explain(model)(torch.randn(2, 3, 64, 64))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_fullgraph_follows_new_input_sizes(model):
    """A new size makes dynamo recompile once with symbolic sizes; sizes with the same grouping regime
    (which stages pad, which take the small-map rule) reuse that graph, and other regimes still work."""
    from torch._dynamo.utils import counters

    counters.clear()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        for height, width in [(64, 64), (128, 96), (160, 224), (96, 192)]:  # multiples of 32: no padding
            x = torch.randn(2, 3, height, width)
            torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=0)
        assert counters["stats"]["unique_graphs"] == 2, dict(counters["stats"])
        x = torch.randn(2, 3, 97, 130)  # padded stages: another regime
        torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=0)


def test_fullgraph_training_step_matches_eager(model):
    model.train()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 3, 64, 96)
    torch.manual_seed(1)
    want = model(x)
    want.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    torch.manual_seed(1)
    got = compiled(x)
    got.sum().backward()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], atol=1e-4, rtol=1e-4, msg=name)


def test_compiled_features_only_backbone():
    torch._dynamo.reset()
    backbone = cv.create_model("crossformer_tiny", features_only=True).eval()
    compiled = torch.compile(backbone, fullgraph=True, backend="aot_eager")
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        for a, b in zip(compiled(x), backbone(x)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch._dynamo.reset()
