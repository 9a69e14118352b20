"""CPU speed paths (runtime/cpu.py): cache-sized pieces and the eval-mode bias cache give the numbers
of the plain path; the allocator setting of CPU training keeps freed memory."""
import platform
import subprocess
import sys
import textwrap

import pytest
import torch

import crossformer_vision as cv
from crossformer_vision.models.crossformer import SMALL_VARIANTS
from crossformer_vision.runtime import DEFAULT_CPU_PIECES

MICRO = dict(SMALL_VARIANTS["crossformer_micro"], num_classes=5)
# four stages of two blocks (seven bias computations per forward at 224x224: the last stage's second block is cut)
TWO_BLOCKS = dict(embed_dim=32, depths=[2, 2, 2, 1], num_heads=[1, 2, 4, 8], drop_path_rate=0.0, num_classes=10)


def _blocks(model):
    return [m for m in model.modules() if isinstance(m, cv.CrossFormerBlock)]


def test_pieces_equal_the_plain_forward():
    torch.manual_seed(0)
    model = cv.optimize(cv.CrossFormer(**MICRO).eval(), cpu_pieces=0)
    x = torch.randn(3, 3, 97, 130)
    assert len(_blocks(model)) == 5
    with torch.no_grad():
        plain = model(x)
        plain_features = model.forward_intermediates(x, intermediates_only=True)
        # pieces of 40 tokens: several images per piece in the late stages, several row blocks per image early
        cv.optimize(model, cpu_pieces=40)
        calls = []
        hooks = [b.norm2.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0])) for b in _blocks(model)]
        chunked = model(x)
        for h in hooks:
            h.remove()
        chunked_features = model.forward_intermediates(x, intermediates_only=True)
    assert max(calls) <= 40 and len(calls) > 5, "the MLP really ran in pieces"
    torch.testing.assert_close(chunked, plain, atol=1e-5, rtol=0)
    for a, b in zip(chunked_features, plain_features):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_training_forward_is_never_in_pieces():
    torch.manual_seed(0)
    model = cv.optimize(cv.CrossFormer(**MICRO).train(), cpu_pieces=8)
    sizes = []
    hooks = [b.mlp.register_forward_hook(lambda m, i, o: sizes.append(i[0].numel())) for b in _blocks(model)]
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    for h in hooks:
        h.remove()
    assert min(sizes) > 8 * 32, "training keeps whole tensors (drop-path draws one mask per image)"


def test_default_pieces_are_cache_sized():
    with torch.device("meta"):
        block = cv.create_model("crossformer_tiny").stages[0].blocks[0]
    assert block.runtime.cpu_pieces == DEFAULT_CPU_PIECES == 2048


# ---------------------------------------------------------------------------------------------- bias cache
def _count_dpb_calls(model):
    calls = []
    for m in model.modules():
        if isinstance(m, cv.DynamicPositionBias):
            m.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_eval_bias_cache_computes_each_layout_once():
    model = cv.CrossFormer(**TWO_BLOCKS).eval()
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
    # optimize(bias_cache=False): computed at every call
    cv.optimize(model.eval(), bias_cache=False)
    with torch.no_grad():
        model(x)
        model(x)
    assert len(calls) == before + 28


@pytest.mark.parametrize("how", ["in_place", "optimizer_step", "load_state_dict", "to_double"])
def test_changed_dpb_weights_change_the_output(how):
    model = cv.CrossFormer(**TWO_BLOCKS).eval()
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
    reference = cv.CrossFormer(**TWO_BLOCKS).eval().to(after.dtype)
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = reference(x)
    if how != "to_double":
        assert not torch.allclose(after, before)
    torch.testing.assert_close(after, expected, rtol=0, atol=0)


def test_writes_through_data_are_seen_and_clear_bias_cache_still_works():
    model = cv.CrossFormer(**TWO_BLOCKS).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        before = model(x)
        for n, p in model.named_parameters():
            if ".attn.pos." in n:
                p.data += 0.5  # invisible to autograd's version counter; the cache compares the weights themselves
        seen = model(x)
        model.clear_bias_cache()
        after = model(x)
    assert not torch.allclose(after, before)
    assert torch.equal(seen, after)


_RSS_AFTER_FREE = textwrap.dedent("""
    import sys, torch
    from crossformer_vision.runtime.cpu import reuse_freed_memory

    def rss_mib():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024

    reused = reuse_freed_memory() if sys.argv[1] == "reuse" else None
    for _ in range(2):  # the second round reuses what the first freed
        x = torch.ones(64 * 2**20)  # 256 MiB, written
        held = rss_mib()
        del x
    print(reused, held - rss_mib())
""")


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_reuse_freed_memory_keeps_a_freed_large_tensor_in_the_process():
    def run(mode):  # a fresh process each: the setting is process-wide and cannot be undone
        out = subprocess.run([sys.executable, "-c", _RSS_AFTER_FREE, mode], capture_output=True, text=True, check=True)
        reused, released = out.stdout.split()
        return reused, float(released)

    reused, released = run("reuse")
    assert reused == "True" and released < 16  # kept for the next allocation
    reused, released = run("default")
    assert reused == "None" and released > 200  # glibc's default: the 256 MiB mmap goes back to the system


def test_reuse_freed_memory_does_nothing_outside_glibc(monkeypatch):
    from crossformer_vision.runtime import cpu

    monkeypatch.setattr(cpu.platform, "libc_ver", lambda: ("", ""))
    assert cpu.reuse_freed_memory() is False
