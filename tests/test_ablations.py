"""The paper's Table 5 switches: position encoding and embedding layer."""
import pytest
import torch

import crossformer_vision as cv

MICRO = dict(embed_dim=32, depths=[2, 2, 2, 1], num_heads=[1, 2, 4, 8], drop_path_rate=0.0, num_classes=10)


@pytest.mark.parametrize("embed_layer", ["cel", "conv"])
@pytest.mark.parametrize("pos_embed", ["dpb", "dpb_residual", "rpb", "ape", "none"])
def test_every_switch_runs_at_any_size_and_trains(pos_embed, embed_layer):
    model = cv.CrossFormer(**MICRO, pos_embed=pos_embed, embed_layer=embed_layer)
    model.eval()
    with torch.no_grad():
        for size in [(224, 224), (160, 288), (97, 130)]:
            assert torch.isfinite(model(torch.randn(1, 3, *size))).all()
    model.train()
    model(torch.randn(2, 3, 96, 128)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_switches_change_the_modules():
    base = cv.CrossFormer(**MICRO)
    names = dict(base.named_parameters())
    assert "stages.0.blocks.0.attn.pos.pos_proj.weight" in names
    assert len(base.patch_embed.projs) == 4 and len(base.stages[1].downsample.projs) == 2

    conv = cv.CrossFormer(**MICRO, embed_layer="conv")
    assert [p.kernel_size for p in conv.patch_embed.projs] == [(4, 4)]
    assert [p.kernel_size for p in conv.stages[1].downsample.projs] == [(2, 2)]

    rpb = dict(cv.CrossFormer(**MICRO, pos_embed="rpb").named_parameters())
    assert rpb["stages.0.blocks.0.attn.pos.relative_position_bias_table"].shape == (13 * 13, 1)
    ape = dict(cv.CrossFormer(**MICRO, ape=True).named_parameters())  # official flag name
    assert ape["absolute_pos_embed.pos_embed"].shape == (1, 56, 56, 32)
    assert not any(".attn.pos." in n for n in ape)
    none = dict(cv.CrossFormer(**MICRO, pos_embed="none").named_parameters())
    assert not any(".attn.pos." in n for n in none)


def test_dpb_residual_differs_from_dpb_with_the_same_weights():
    dpb = cv.CrossFormer(**MICRO).eval()
    residual = cv.CrossFormer(**MICRO, pos_embed="dpb_residual").eval()
    residual.load_state_dict(dpb.state_dict())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert not torch.allclose(dpb(x), residual(x))


# CrossFormer-S position-encoding ablation (paper Table 5): parameter counts in millions.
PAPER_S = {k: v for k, v in cv.PAPER_ABLATION_S.items() if k != "rpb"}


@pytest.mark.parametrize("pos_embed", list(PAPER_S))
def test_crossformer_small_ablation_parameter_counts_match_the_paper(pos_embed):
    model = cv.create_model("crossformer_small", pos_embed=pos_embed)
    params = sum(p.numel() for p in model.parameters())
    assert abs(params / 1e6 - PAPER_S[pos_embed]) < 1e-4  # the paper rounds to 0.1K


def test_crossformer_small_rpb_adds_one_table_per_block():
    """The paper's RPB figure (30.6159M) is below the model without any bias, so we only pin our own count."""
    none = sum(p.numel() for p in cv.create_model("crossformer_small", pos_embed="none").parameters())
    rpb = sum(p.numel() for p in cv.create_model("crossformer_small", pos_embed="rpb").parameters())
    heads = [3] * 2 + [6] * 2 + [12] * 6 + [24] * 2
    assert rpb - none == sum(13 * 13 * h for h in heads) == 23_322
