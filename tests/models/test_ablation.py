"""The paper's attention ablation (models/ablation.py, ``CrossFormer(attn_type=...)``): every attention type runs at
odd sizes and trains, the Swin-like layer attends within (shifted) windows and the PVT-like one reduces keys by
the stage's ratio, as shown by perturbing one token; LSDA is unchanged."""
import pytest
import torch

import crossformer_vision as cv
from crossformer_vision.models import CrossFormer, LSDAttention
from crossformer_vision.models.ablation import ShiftedWindowAttention, SpatialReductionAttention
from crossformer_vision.runtime import RuntimeOptions

from attention_helpers import assert_same_forward_and_backward, mixed_tokens

TINY = dict(embed_dim=16, depths=(2, 2, 2, 1), num_heads=(1, 2, 4, 8), group_size=(4, 3, 2, 1), crs_interval=(4, 2, 2, 1),
            num_classes=5, drop_path_rate=0.0)


# ------------------------------------------------------------------------------------------------ the model
@pytest.mark.parametrize("attn_type", ["lsda", "swin", "pvt"])
@pytest.mark.parametrize("embed_layer", ["cel", "conv"])
def test_every_attention_runs_at_odd_sizes_and_trains(attn_type, embed_layer):
    # small pieces: CPU inference of stage 1 runs in pieces (runtime.cpu), the attention bias from the cache
    model = CrossFormer(**TINY, attn_type=attn_type, embed_layer=embed_layer, runtime=RuntimeOptions(cpu_pieces=300))
    assert model.attn_type == attn_type
    for size in [(97, 130), (33, 47)]:
        model.train()
        x = torch.randn(2, 3, *size)
        out = model(x)
        assert out.shape == (2, 5) and torch.isfinite(out).all()
        model.zero_grad()
        out.square().sum().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not missing, missing
        model.eval()
        with torch.no_grad():  # inference paths (pieces, oneDNN, bias cache) equal the reference path
            fast = model(x)
        torch.testing.assert_close(fast, model(x).detach(), rtol=1e-4, atol=1e-5)


def test_lsda_is_the_default_and_unchanged():
    torch.manual_seed(0)
    default = CrossFormer(**TINY)
    torch.manual_seed(0)
    lsda = CrossFormer(**TINY, attn_type="lsda")
    assert all(type(b.attn) is LSDAttention for s in default.stages for b in s.blocks)
    assert default.state_dict().keys() == lsda.state_dict().keys()
    x = torch.randn(1, 3, 97, 130)
    torch.testing.assert_close(default.eval()(x), lsda.eval()(x), rtol=0, atol=0)


def test_unknown_attention_and_pvt_with_rpb_are_refused():
    with pytest.raises(ValueError, match="attn_type must be one of"):
        CrossFormer(**TINY, attn_type="global")
    with pytest.raises(ValueError, match="pos_embed='rpb'"):
        CrossFormer(**TINY, attn_type="pvt", pos_embed="rpb")


# CrossFormer-S at 224x224 with 1000 classes: the paper gives only accuracy for these rows (docs/model_zoo.md).
SMALL = cv.VARIANTS["crossformer_small"]
S_PARAMS = {("lsda", "cel"): 30_657_394, ("swin", "cel"): 30_657_394, ("pvt", "cel"): 36_564_274,
            ("lsda", "conv"): 28_286_578, ("swin", "conv"): 28_286_578, ("pvt", "conv"): 34_193_458}


@pytest.mark.parametrize("attn_type,embed_layer", list(S_PARAMS))
def test_crossformer_small_parameter_counts(attn_type, embed_layer):
    with torch.device("meta"):  # shapes only
        model = CrossFormer(**SMALL, attn_type=attn_type, embed_layer=embed_layer)
    assert sum(p.numel() for p in model.parameters()) == S_PARAMS[attn_type, embed_layer]


def test_pvt_adds_one_reduction_per_block_with_ratio_above_one():
    with torch.device("meta"):
        lsda = sum(p.numel() for p in CrossFormer(**SMALL).parameters())
        pvt = CrossFormer(**SMALL, attn_type="pvt")
    dims, depths, ratios = (96, 192, 384, 768), (2, 2, 6, 2), (8, 4, 2, 1)
    # conv R x R (+ bias) and LayerNorm per block where R > 1; q and kv hold as many weights as qkv
    extra = sum(d * (c * c * r * r + c + 2 * c) for c, d, r in zip(dims, depths, ratios) if r > 1)
    assert sum(p.numel() for p in pvt.parameters()) - lsda == extra


# ------------------------------------------------------------------------------------------------ Swin-like
def _windows(height, width, group, shift, row, col):
    """Reference: the tokens of ``(row, col)``'s window after rolling the map by ``-shift``, on its side of the seams."""
    def place(y, x):
        ry, rx = (y - shift) % height, (x - shift) % width
        return ry // group, rx // group, ry >= height - shift if shift else False, rx >= width - shift if shift else False

    return {(y, x) for y in range(height) for x in range(width) if place(y, x) == place(row, col)}


@pytest.mark.parametrize("size", [(12, 12), (13, 17), (9, 26)])
def test_shifted_windows_differ_between_consecutive_blocks(size):
    model = CrossFormer(**TINY, attn_type="swin").eval()
    first, second = (b.attn for b in model.stages[0].blocks)
    assert isinstance(first, ShiftedWindowAttention) and (first.shift_size, second.shift_size) == (0, 2)
    x = torch.randn(1, *size, 16)
    height, width = size
    differ = 0
    for row, col in [(0, 0), (height // 2, width // 2), (height - 1, width - 1), (1, width - 2)]:
        plain, shifted = mixed_tokens(first, x, row, col), mixed_tokens(second, x, row, col)
        assert plain == _windows(height, width, 4, 0, row, col)
        assert shifted == _windows(height, width, 4, 2, row, col)
        differ += plain != shifted
    assert differ >= 3


def test_small_maps_are_one_window_and_not_shifted():
    attn = ShiftedWindowAttention(16, 1, 4, shifted=True)
    assert attn.shift(4, 9) == 0 and attn.shift(5, 5) == 2
    x = torch.randn(1, 4, 9, 16)
    assert mixed_tokens(attn, x, 1, 1) == {(y, c) for y in range(4) for c in range(9)}


@pytest.mark.parametrize("size", [(12, 12), (13, 17)])
def test_shifted_window_sdpa_equals_explicit_for_batches(size):
    """The region mask is one bias per group: the SDPA path must broadcast it per image like LSDA's padding mask."""
    fused = ShiftedWindowAttention(32, 2, 4, True, fused_attn=True, runtime=RuntimeOptions(sdpa_on_cpu=True)).train()
    explicit = ShiftedWindowAttention(32, 2, 4, True, fused_attn=False).train()
    assert_same_forward_and_backward(fused, explicit, torch.randn(3, *size, 32))


# ------------------------------------------------------------------------------------------------ PVT-like
def test_pvt_reduction_ratio_is_the_stage_interval():
    model = CrossFormer(**TINY, attn_type="pvt")
    for stage, ratio in zip(model.stages, TINY["crs_interval"]):
        for block in stage.blocks:
            attn = block.attn
            assert isinstance(attn, SpatialReductionAttention) and attn.sr_ratio == ratio
            if ratio > 1:
                assert attn.sr.kernel_size == attn.sr.stride == (ratio, ratio)
            else:
                assert isinstance(attn.sr, torch.nn.Identity)
    attn = model.stages[0].blocks[0].attn
    assert attn.reduced_size(24, 32) == (6, 8) and attn.reduced_size(25, 33) == (7, 9)  # ceil(H / 4) x ceil(W / 4)


def test_pvt_every_query_sees_the_whole_image():
    attn = SpatialReductionAttention(16, 2, 4).eval()
    x = torch.randn(1, 10, 13, 16)
    everything = {(y, c) for y in range(10) for c in range(13)}
    assert mixed_tokens(attn, x, 0, 0) == everything and mixed_tokens(attn, x, 9, 12) == everything


def test_pvt_position_bias_is_the_dpb_of_query_to_key_offsets():
    """With R = 1 the keys are the tokens: the bias is the DPB of a group covering the whole map (LSDA's rule)."""
    attn = SpatialReductionAttention(32, 2, 1)
    bias = attn.compute_bias(5, 7, torch.float32, torch.device("cpu"))
    torch.testing.assert_close(bias, attn.pos(5, 7).unsqueeze(0))
    # R = 2: pooled key (j, i) sits at token (2j, 2i) (centre of its 2x2 region, rounded down)
    attn = SpatialReductionAttention(32, 2, 2)
    bias = attn.compute_bias(5, 7, torch.float32, torch.device("cpu"))  # keys 3 x 4
    table = attn.pos.table(5, 7).view(9, 13, 2)
    for (y, x), (j, i) in [((0, 0), (0, 0)), ((4, 6), (2, 3)), ((3, 1), (0, 3))]:
        expected = table[y - 2 * j + 4, x - 2 * i + 6]
        torch.testing.assert_close(bias[0, :, y * 7 + x, j * 4 + i], expected)


def test_pvt_sdpa_equals_explicit():
    fused = SpatialReductionAttention(32, 2, 2, fused_attn=True, runtime=RuntimeOptions(sdpa_on_cpu=True))
    explicit = SpatialReductionAttention(32, 2, 2, fused_attn=False)
    explicit.load_state_dict(fused.state_dict())
    x = torch.randn(2, 9, 11, 32)
    torch.testing.assert_close(fused(x), explicit(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attn_type", ["swin", "pvt"])
def test_features_only_at_an_odd_size(attn_type):
    import timm

    model = timm.create_model("crossformer_micro", attn_type=attn_type, features_only=True).eval()
    with torch.no_grad():
        features = model(torch.randn(1, 3, 97, 130))
    assert [tuple(f.shape) for f in features] == [(1, 32, 24, 32), (1, 64, 12, 16), (1, 128, 6, 8), (1, 256, 3, 4)]
    assert all(torch.isfinite(f).all() for f in features)
