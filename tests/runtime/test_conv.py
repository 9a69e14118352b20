"""The stem's large kernels in blocks (runtime/conv.py): the same numbers as the direct convolution, forward and
backward, taken only where the dispatch rule says."""
import pytest
import timm
import torch

import crossformer_vision as cv
from crossformer_vision.models import layers
from crossformer_vision.runtime import RuntimeOptions
from crossformer_vision.runtime.conv import blockable, space_to_depth_conv
from crossformer_vision.runtime.dispatch import conv_in_blocks


def _close(a, b):
    a, b = a.detach(), b.detach()
    scale = b.abs().max()
    assert (a - b).abs().max() <= 1e-5 * max(float(scale), 1.0), float((a - b).abs().max())


@pytest.mark.parametrize("in_ch,kernel,stride", [(3, 4, 4), (3, 8, 4), (3, 16, 4), (3, 32, 4), (8, 2, 2), (8, 4, 2)])
@pytest.mark.parametrize("size", [(64, 64), (37, 50), (4, 7)])
def test_space_to_depth_equals_the_direct_convolution(in_ch, kernel, stride, size):
    if min(size) < stride:
        pytest.skip("smaller than one output pixel")
    conv = torch.nn.Conv2d(in_ch, 5, kernel, stride=stride, padding=(kernel - stride) // 2)
    assert blockable(conv)
    x = torch.randn(2, in_ch, *size, requires_grad=True)
    ref = conv(x)
    grads_ref = torch.autograd.grad((ref * ref).sum(), (x, conv.weight, conv.bias))
    out = space_to_depth_conv(x, conv)
    assert out.shape == ref.shape == (2, 5, size[0] // stride, size[1] // stride)
    _close(out, ref)
    grads = torch.autograd.grad((out * out).sum(), (x, conv.weight, conv.bias))
    for g, g_ref in zip(grads, grads_ref):
        assert g.shape == g_ref.shape
        _close(g, g_ref)


def test_blockable_refuses_other_convolutions():
    assert not blockable(torch.nn.Conv2d(3, 4, 6, stride=4, padding=1))  # kernel not a multiple of the stride
    assert not blockable(torch.nn.Conv2d(3, 4, 8, stride=4, padding=0))  # not centred
    assert not blockable(torch.nn.Conv2d(3, 4, 8, stride=4, padding=2, dilation=2))
    assert not blockable(torch.nn.Conv2d(4, 4, 8, stride=4, padding=2, groups=2))
    assert not blockable(torch.nn.Conv2d(3, 4, 8, stride=4, padding=2, padding_mode="reflect"))
    assert not blockable(torch.nn.Conv2d(3, 4, (8, 4), stride=4, padding=(2, 0)))


def test_rule_blocks_only_large_kernels_in_cpu_training():
    on, off = RuntimeOptions(), RuntimeOptions(conv_blocks=False)
    x = torch.randn(1, 3, 32, 32)
    big, small = torch.nn.Conv2d(3, 4, 16, 4, 6), torch.nn.Conv2d(3, 4, 8, 4, 2)
    merge = torch.nn.Conv2d(3, 4, 4, 2, 1)
    assert conv_in_blocks(on, x, big)
    assert not conv_in_blocks(off, x, big)
    assert not conv_in_blocks(on, x, small) and not conv_in_blocks(on, x, merge)
    with torch.no_grad():  # inference: direct is faster
        assert not conv_in_blocks(on, x, big)
    big.eval()  # evaluation with gradients (e.g. saliency) keeps the direct convolution's numbers
    assert not conv_in_blocks(on, x, big)
    big.train().requires_grad_(False)  # a frozen stem computes no weight gradient
    assert not conv_in_blocks(on, x, big)


def test_model_trains_the_same_with_and_without_blocks(monkeypatch):
    calls = []

    def counting(x, conv):
        calls.append(conv.kernel_size[0])
        return space_to_depth_conv(x, conv)

    monkeypatch.setattr(layers, "space_to_depth_conv", counting)
    model = timm.create_model("crossformer_micro", num_classes=4).train()
    x, target = torch.randn(2, 3, 64, 64), torch.tensor([1, 3])
    results = []
    for blocks in (True, False):
        cv.optimize(model, conv_blocks=blocks)
        model.zero_grad()
        torch.manual_seed(1)  # the same drop-path draws
        loss = torch.nn.functional.cross_entropy(model(x), target)
        loss.backward()
        results.append((loss.detach(), model.patch_embed.projs[3].weight.grad.clone(),
                        model.stages[0].blocks[0].attn.qkv.weight.grad.clone()))
    assert calls == [16, 32], "the stem's 16 and 32 kernels in blocks, only while the option is on"
    (loss_a, stem_a, qkv_a), (loss_b, stem_b, qkv_b) = results
    _close(loss_a, loss_b)
    _close(stem_a, stem_b)
    _close(qkv_a, qkv_b)
    calls.clear()
    cv.optimize(model)
    with torch.no_grad():
        model.eval()(x)
    assert calls == [], "inference runs the direct convolution"
