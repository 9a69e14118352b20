"""torch.compile: one graph per forward (no graph breaks), dynamic input sizes, eager's numbers."""
import pytest
import torch

import crossformer_vision as cv
from crossformer_vision.models.crossformer import SMALL_VARIANTS


@pytest.fixture()
def model():
    torch._dynamo.reset()
    torch.manual_seed(0)
    yield cv.CrossFormer(**SMALL_VARIANTS["crossformer_micro"], num_classes=4).eval()
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
    backbone = cv.create_model("crossformer_micro", features_only=True).eval()
    compiled = torch.compile(backbone, fullgraph=True, backend="aot_eager")
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        for a, b in zip(compiled(x), backbone(x)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch._dynamo.reset()


def _region_calls(explanation) -> int:
    """Calls of nested compile regions (``invoke_subgraph``) in the traced graphs."""
    return sum("invoke_subgraph" in str(node.target)
               for graph in explanation.graphs for node in graph.graph.nodes if node.op == "call_function")


@pytest.mark.skipif(not hasattr(torch.compiler, "nested_compile_region"), reason="torch < 2.8: no nested regions")
def test_compiled_inference_works_in_pieces_for_static_sizes_only(model):
    """Under torch.compile, CPU inference runs in the same pieces as eagerly while sizes are static (the first
    size compiled), each piece a nested compile region; once dynamo makes sizes dynamic, whole tensors keep
    one graph for every size."""
    from torch._dynamo.utils import counters

    x = torch.randn(2, 3, 64, 64)  # stage 1: 2 x 16 x 16 = 512 tokens; stage 4: 2 x 2 x 2 = 8
    with torch.no_grad():
        default = _region_calls(torch._dynamo.explain(model)(x))
        cv.optimize(model, cpu_pieces=200)
        torch._dynamo.reset()
        pieces = _region_calls(torch._dynamo.explain(model)(x))
        torch._dynamo.mark_dynamic(x, 0)
        torch._dynamo.reset()
        dynamic = _region_calls(torch._dynamo.explain(model)(x))
        # default pieces (2048 tokens): stage 1 (512 tokens) is not cut. 200-token pieces cut stage 1 (one
        # block, 2 images of 16x16): one attention piece per image, MLP rows of 200 + 56 per image
        assert (default, pieces, dynamic) == (0, 2 * (1 + 2), 0)

        torch._dynamo.reset()
        counters.clear()
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        for height, width in [(64, 64), (96, 128), (128, 64)]:
            x = torch.randn(2, 3, height, width)
            torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=0)
        assert counters["stats"]["unique_graphs"] == 2, dict(counters["stats"])
