"""oneDNN linear layers for CPU inference: same numbers as F.linear, used only where they apply."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import crossformer_vision as cv
from crossformer_vision.models.crossformer import SMALL_VARIANTS
from crossformer_vision.runtime import RuntimeOptions, choose, onednn
from crossformer_vision.runtime.dispatch import fusable_mlp

needs_onednn = pytest.mark.skipif(not onednn.available(), reason="this PyTorch build has no oneDNN linear kernels")
MICRO = dict(SMALL_VARIANTS["crossformer_micro"], num_classes=5)


def _profiled_ops(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {event.key for event in prof.key_averages()}


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    return cv.CrossFormer(**MICRO).eval()


@needs_onednn
@pytest.mark.parametrize("shape", [(7, 24), (2, 5, 9, 24)])
def test_kernels_equal_f_linear(shape):
    torch.manual_seed(0)
    layer = nn.Linear(24, 40)
    x = torch.randn(*shape[:-1], 30)[..., 3:27]  # not contiguous
    residual = torch.randn(*shape[:-1], 40)
    with torch.no_grad():
        plain = F.linear(x, layer.weight, layer.bias)
        torch.testing.assert_close(onednn.linear(x, layer), plain, atol=1e-5, rtol=0)
        torch.testing.assert_close(onednn.linear(x, layer, gelu=True), F.gelu(plain), atol=1e-5, rtol=0)
        torch.testing.assert_close(onednn.linear(x, layer, residual=residual), plain + residual, atol=1e-5, rtol=0)
        no_bias = nn.Linear(24, 40, bias=False)
        torch.testing.assert_close(onednn.linear(x, no_bias), F.linear(x, no_bias.weight), atol=1e-5, rtol=0)


@needs_onednn
def test_usable_only_for_fp32_cpu_inference_without_autograd():
    layer = nn.Linear(8, 8)
    x = torch.randn(2, 8)
    assert not onednn.usable(x, layer), "autograd on: F.linear keeps the backward"
    with torch.no_grad():
        assert onednn.usable(x, layer)
        assert not onednn.usable(x.double(), nn.Linear(8, 8).double())
        assert not onednn.usable(x.bfloat16(), nn.Linear(8, 8).bfloat16())
        assert not choose(RuntimeOptions(onednn=False), x.view(1, 1, 2, 8), False, layer).onednn
    with torch.inference_mode():
        assert onednn.usable(x, layer)
        assert choose(RuntimeOptions(), x.view(1, 1, 2, 8), False, layer).onednn


@needs_onednn
@pytest.mark.parametrize("cpu_pieces", [0, 40])
def test_model_outputs_equal_with_and_without_onednn(micro, cpu_pieces):
    x = torch.randn(3, 3, 97, 130)
    try:
        with torch.no_grad():
            cv.optimize(micro, cpu_pieces=cpu_pieces)
            ops = _profiled_ops(lambda: micro(x))
            fast = micro(x)
            cv.optimize(micro, cpu_pieces=cpu_pieces, onednn=False)
            plain_ops = _profiled_ops(lambda: micro(x))
            plain = micro(x)
    finally:
        cv.optimize(micro)
    assert "mkldnn::_linear_pointwise" in ops, "eval without autograd takes the oneDNN path"
    assert "mkldnn::_linear_pointwise" not in plain_ops
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=0)


@needs_onednn
def test_autograd_uses_f_linear(micro):
    x = torch.randn(2, 3, 64, 64)
    assert "mkldnn::_linear_pointwise" not in _profiled_ops(lambda: micro(x).sum().backward())
    micro.zero_grad(set_to_none=True)


@needs_onednn
def test_training_mode_without_autograd_keeps_dropout_and_drop_path():
    """The fused MLP would skip drop path and dropout, so training mode never fuses it."""
    torch.manual_seed(0)
    model = cv.CrossFormer(**MICRO, drop_path_rate=0.5, proj_drop_rate=0.2).train()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.manual_seed(1)
        fast = model(x)
        cv.optimize(model, onednn=False)
        torch.manual_seed(1)
        plain = model(x)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=0)
    block = model.stages[0].blocks[0]
    with torch.no_grad():
        assert not choose(RuntimeOptions(), torch.randn(1, 8, 8, 32), block.training, block.attn.qkv, True, block.mlp).fused_mlp


@needs_onednn
def test_custom_mlp_keeps_its_own_forward():
    """Only timm's plain fc1 -> exact GELU -> fc2 MLP is fused; another activation runs as written."""
    torch.manual_seed(0)
    model = cv.CrossFormer(**MICRO, act_layer="relu").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got = model(x)
        want = cv.optimize(model, onednn=False)(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    block = model.stages[0].blocks[0]
    assert not fusable_mlp(block.mlp)
    with torch.no_grad():
        assert not choose(RuntimeOptions(cpu_pieces=8), torch.randn(1, 8, 8, 32), False, block.attn.qkv, True, block.mlp).fused_mlp


@needs_onednn
@pytest.mark.skipif(not onednn.compiled_op_available(), reason="torch < 2.4 has no torch.library.custom_op")
def test_compiled_inference_keeps_onednn_as_one_op(micro):
    """Under torch.compile the kernels are the custom op crossformer_vision::onednn_linear: no graph break."""
    torch._dynamo.reset()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        explanation = torch._dynamo.explain(micro)(x)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        code = "\n".join(str(g.graph) for g in explanation.graphs)
        compiled = torch.compile(micro, fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(x), micro(x), atol=1e-5, rtol=0)
    torch._dynamo.reset()
    assert "crossformer_vision.onednn_linear" in code or "onednn_linear" in code
