"""Eval-mode speed paths give the numbers of the plain path."""
import torch

import crossformer_vision as cv
from crossformer_vision.model import DEFAULT_CHUNK_TOKENS, CrossFormerBlock
from crossformer_vision.recipes import NAMED_CONFIGS


def _set_chunk(model, tokens):
    blocks = [m for m in model.modules() if isinstance(m, CrossFormerBlock)]
    for block in blocks:
        block.chunk_tokens = tokens
    return len(blocks)


def test_chunked_eval_forward_equals_plain_forward():
    torch.manual_seed(0)
    model = cv.CrossFormer(**NAMED_CONFIGS["crossformer_micro"], num_classes=5).eval()
    x = torch.randn(3, 3, 97, 130)
    assert _set_chunk(model, 0) == 5
    with torch.no_grad():
        plain = model(x)
        plain_features = model.forward_intermediates(x, intermediates_only=True)
        # pieces of 40 tokens: several images per piece in the late stages, several row blocks per image early
        _set_chunk(model, 40)
        calls = []
        hooks = [b.norm2.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0])) for b in model.modules()
                 if isinstance(b, CrossFormerBlock)]
        chunked = model(x)
        for h in hooks:
            h.remove()
        chunked_features = model.forward_intermediates(x, intermediates_only=True)
    assert max(calls) <= 40 and len(calls) > 5, "the MLP really ran in pieces"
    torch.testing.assert_close(chunked, plain, atol=1e-5, rtol=0)
    for a, b in zip(chunked_features, plain_features):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_training_forward_is_never_chunked():
    torch.manual_seed(0)
    model = cv.CrossFormer(**NAMED_CONFIGS["crossformer_micro"], num_classes=5).train()
    _set_chunk(model, 8)
    sizes = []
    hooks = [b.mlp.register_forward_hook(lambda m, i, o: sizes.append(i[0].numel())) for b in model.modules()
             if isinstance(b, CrossFormerBlock)]
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    for h in hooks:
        h.remove()
    assert min(sizes) > 8 * 32, "training keeps whole tensors (drop-path draws one mask per image)"


def test_default_chunk_is_cache_sized():
    block = cv.create_model("crossformer_tiny").stages[0].blocks[0]
    assert block.chunk_tokens == DEFAULT_CHUNK_TOKENS == 2048


def test_cpu_uses_the_explicit_path_unless_asked(monkeypatch):
    import torch.nn.functional as F

    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(0)
    model = cv.CrossFormer(**NAMED_CONFIGS["crossformer_micro"], num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        explicit = model(x)
        assert not calls
        for module in model.modules():
            if isinstance(module, cv.LSDAttention):
                module.sdpa_on_cpu = True
        fused = model(x)
    assert len(calls) == 5
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=0)
