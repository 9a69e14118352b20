"""LSDA: grouping rules, SDPA vs explicit path, the bias cache, numerical safety."""
import pytest
import torch

import crossformer_vision as cv
from crossformer_vision.layers import DynamicPositionBias, LSDAttention, group_layout

MICRO = dict(embed_dim=32, depths=[2, 2, 2, 1], num_heads=[1, 2, 4, 8], drop_path_rate=0.0, num_classes=10)


@pytest.mark.parametrize(
    "args,expected",
    [
        # (H, W, G, I, LDA, fixed_interval) -> (gh, gw, interval, hp, wp)
        ((56, 56, 7, 8, False, False), (7, 7, 1, 56, 56)),  # SDA, no padding
        ((56, 56, 7, 8, True, False), (7, 7, 8, 56, 56)),  # LDA at 224: one span of G*I
        ((64, 64, 7, 8, True, False), (7, 7, 8, 112, 112)),  # LDA at 256: pad to a multiple of G*I
        ((64, 64, 7, 8, False, False), (7, 7, 1, 70, 70)),  # SDA at 256: pad to a multiple of G
        ((7, 10, 7, 1, False, False), (7, 10, 1, 7, 10)),  # small map: the whole map is one group
        ((7, 10, 7, 1, False, True), (7, 7, 1, 7, 14)),  # original rule: square groups of min(H, W)
        ((56, 80, 7, 8, True, True), (7, 10, 8, 56, 80)),  # original LDA: interval fixed, group follows input
        ((18, 12, 7, 2, True, True), (9, 6, 2, 18, 12)),
        ((14, 20, 14, 1, True, False), (14, 20, 1, 14, 20)),  # ++ stage 3: G=14 covers the map
    ],
)
def test_group_layout_rules(args, expected):
    assert group_layout(*args) == expected


def _attention(long_distance, fixed_interval=False, fused=True, pos_embed="dpb"):
    attn = LSDAttention(32, 2, 4, 3, long_distance, fixed_interval=fixed_interval, fused_attn=fused, pos_embed=pos_embed)
    attn.sdpa_on_cpu = fused  # exercise SDPA on the CPU too
    return attn


@pytest.mark.parametrize("pos_embed", ["dpb", "dpb_residual", "rpb", "none"])
@pytest.mark.parametrize("long_distance,fixed_interval", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("size", [(12, 12), (13, 17), (3, 9), (25, 11)])
def test_sdpa_equals_explicit_forward_and_backward(size, long_distance, fixed_interval, pos_embed):
    fused = _attention(long_distance, fixed_interval, True, pos_embed).train()
    explicit = _attention(long_distance, fixed_interval, False, pos_embed).train()
    explicit.load_state_dict(fused.state_dict())
    x = torch.randn(2, *size, 32, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y1, y2 = fused(x), explicit(x2)
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
    y1.square().sum().backward()
    y2.square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-5)
    for (n, a), b in zip(fused.named_parameters(), explicit.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=n)


def test_fully_padded_groups_give_finite_gradients():
    """57x57 with G=7, I=8 pads to 112x112: many groups hold only padding (official mask is -1e6, not -inf)."""
    for fused in (True, False):
        attn = LSDAttention(32, 2, 7, 8, True, fused_attn=fused).train()
        attn.sdpa_on_cpu = fused
        x = torch.randn(1, 57, 57, 32, requires_grad=True)
        attn(x).sum().backward()
        assert torch.isfinite(x.grad).all()
        assert all(torch.isfinite(p.grad).all() for p in attn.parameters())


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("long_distance,fixed_interval", [(False, False), (True, False), (True, True)])
def test_padded_content_does_not_leak(monkeypatch, long_distance, fixed_interval, fused):
    """Padding with huge values instead of zeros changes nothing: padded keys are masked out."""
    attn = _attention(long_distance, fixed_interval, fused).eval()
    x = torch.randn(2, 13, 17, 32)
    with torch.no_grad():
        expected = attn(x)
        import crossformer_vision.layers as layers

        real_pad = layers.F.pad
        monkeypatch.setattr(layers.F, "pad", lambda t, pad, *a, **k: real_pad(t, pad, value=1e4))
        attn.train()  # no cached bias; same math
        got = attn(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def _count_dpb_calls(model):
    calls = []
    for m in model.modules():
        if isinstance(m, DynamicPositionBias):
            m.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_eval_bias_cache_computes_each_layout_once():
    model = cv.CrossFormer(**MICRO).eval()
    calls = _count_dpb_calls(model)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        first = model(x)
        n_first = len(calls)
        second = model(x)
        assert len(calls) == n_first == 7  # one per block, then none
        model(torch.randn(1, 3, 256, 192))  # a new size adds layouts
        assert len(calls) > n_first
    assert torch.equal(first, second)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), first)
    # training, or autograd enabled, never caches (DPB weights need gradients)
    before = len(calls)
    model(x)
    assert len(calls) == before + 7
    model.train()
    with torch.no_grad():
        model(x)
    assert len(calls) == before + 14


@pytest.mark.parametrize("how", ["in_place", "optimizer_step", "load_state_dict", "to_double"])
def test_changed_dpb_weights_change_the_output(how):
    model = cv.CrossFormer(**MICRO).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        before = model(x)
    dpb = [p for n, p in model.named_parameters() if ".attn.pos." in n]
    if how == "in_place":
        with torch.no_grad():
            for p in dpb:
                p.add_(0.5)
    elif how == "optimizer_step":
        opt = torch.optim.SGD(dpb, lr=1.0)
        for p in dpb:
            p.grad = torch.ones_like(p)
        opt.step()
    elif how == "load_state_dict":
        state = {k: (v + 0.5 if ".attn.pos." in k else v) for k, v in model.state_dict().items()}
        model.load_state_dict(state)
    else:
        model.double()
        x = x.double()
    with torch.no_grad():
        after = model(x)
    reference = cv.CrossFormer(**MICRO).eval().to(after.dtype)
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = reference(x)
    if how != "to_double":
        assert not torch.allclose(after, before)
    torch.testing.assert_close(after, expected, rtol=0, atol=0)


def test_writes_through_data_need_clear_bias_cache():
    model = cv.CrossFormer(**MICRO).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        before = model(x)
        for n, p in model.named_parameters():
            if ".attn.pos." in n:
                p.data += 0.5  # invisible to autograd's version counter
        model.clear_bias_cache()
        after = model(x)
    assert not torch.allclose(after, before)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_autocast_with_padding_is_finite(dtype):
    model = cv.CrossFormer(**MICRO).eval()
    x = torch.randn(2, 3, 250, 190)
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        y = model(x)
    assert torch.isfinite(y).all()
    with torch.no_grad():
        torch.testing.assert_close(y.float(), model(x), rtol=0.1, atol=0.15)


def test_attention_dropout_applies_in_training_only():
    """The explicit CPU path drops attention weights in training (attn_drop_rate) and never in eval."""
    from crossformer_vision.recipes import NAMED_CONFIGS

    torch.manual_seed(0)
    model = cv.CrossFormer(**NAMED_CONFIGS["crossformer_micro"], num_classes=5, attn_drop_rate=0.5,
                           drop_path_rate=0.0).train()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.manual_seed(1)
        first = model(x)
        torch.manual_seed(1)
        again = model(x)
        torch.manual_seed(2)
        other = model(x)
        model.eval()
        plain = model(x)
        for m in model.modules():
            if isinstance(m, cv.LSDAttention):
                m.attn_drop.p = 0.0
        model.train()
        undropped = model(x)
    torch.testing.assert_close(first, again)  # same seed, same mask
    assert (first - other).abs().max() > 1e-3 and (first - plain).abs().max() > 1e-3
    torch.testing.assert_close(undropped, plain, atol=1e-5, rtol=0)
