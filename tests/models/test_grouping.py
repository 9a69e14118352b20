"""The SDA/LDA grouping rule (models/grouping.py): layouts, views and gathers agree, padding is masked."""
import pytest
import torch

import crossformer_vision as cv
from crossformer_vision.models import grouping
from crossformer_vision.models.grouping import (GroupLayout, group_layout, group_qkv, padding_mask, token_coordinates,
                                                ungroup)


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


LAYOUTS = [  # (height, width, layout): SDA, LDA, padded, small maps, both rules
    (12, 12, group_layout(12, 12, 4, 3, False, False)),
    (13, 17, group_layout(13, 17, 4, 3, True, False)),
    (13, 17, group_layout(13, 17, 4, 3, True, True)),
    (3, 9, group_layout(3, 9, 4, 3, True, True)),
    (25, 11, group_layout(25, 11, 4, 3, False, False)),
    (5, 7, GroupLayout(5, 7, 1, 5, 7)),
]


def _reference_groups(x, layout):
    """Group members by their definition: token (gy, gx) of group (ry, rx, iy, ix) is embedding
    ((ry*gh + gy)*i + iy, (rx*gw + gx)*i + ix) of the padded map; groups in (ry, rx, iy, ix) order."""
    gh, gw, i, hp, wp = layout
    rh, rw = hp // (gh * i), wp // (gw * i)
    padded = torch.nn.functional.pad(x, (0, 0, 0, wp - x.shape[2], 0, hp - x.shape[1]))
    groups = []
    for ry in range(rh):
        for rx in range(rw):
            for iy in range(i):
                for ix in range(i):
                    rows = [(ry * gh + gy) * i + iy for gy in range(gh)]
                    cols = [(rx * gw + gx) * i + ix for gx in range(gw)]
                    groups.append(padded[:, rows][:, :, cols].reshape(x.shape[0], gh * gw, -1))
    return torch.stack(groups, 1).flatten(0, 1)  # (B*nG, N, C)


@pytest.mark.parametrize("height,width,layout", LAYOUTS)
def test_views_and_gathers_follow_the_definition(height, width, layout):
    heads, head_dim = 2, 3
    qkv = torch.randn(2, height, width, 3 * heads * head_dim)
    expected = _reference_groups(qkv, layout).view(-1, layout.gh * layout.gw, 3, heads, head_dim)
    for coordinates in (None, token_coordinates(layout, qkv.device)):  # views (eager), gathers (torch.export)
        q, k, v = group_qkv(qkv, layout, heads, coordinates)
        for got, want in zip((q, k, v), expected.permute(2, 0, 3, 1, 4)):
            assert torch.equal(got, want)
        # ungroup is the inverse (and crops the padding)
        assert torch.equal(ungroup(q, layout, 2, height, width, coordinates is not None), qkv[..., : heads * head_dim])


@pytest.mark.parametrize("height,width,layout", LAYOUTS)
def test_padding_mask_marks_exactly_the_padding(height, width, layout):
    inside = _reference_groups(torch.ones(1, height, width, 1), layout)[..., 0] == 1  # zero-padded map of ones
    assert torch.equal(padding_mask(height, width, layout, torch.device("cpu")), ~inside)
    coordinates = token_coordinates(layout, torch.device("cpu"))
    assert torch.equal(padding_mask(height, width, layout, torch.device("cpu"), coordinates), ~inside)


def test_group_order_is_stated_once():
    """Views, gathers and the mask all derive from one permutation of the padded map's six axes."""
    assert grouping.group_axes() == [0, 3, 2, 5, 1, 4]  # (ry, gy, iy, rx, gx, ix) -> (ry, rx, iy, ix, gy, gx)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("long_distance,fixed_interval", [(False, False), (True, False), (True, True)])
def test_padded_content_does_not_leak(monkeypatch, long_distance, fixed_interval, fused):
    """Padding with huge values instead of zeros changes nothing: padded keys are masked out."""
    attn = cv.LSDAttention(32, 2, 4, 3, long_distance, fixed_interval=fixed_interval, fused_attn=fused)
    cv.optimize(attn, sdpa_on_cpu=fused).eval()  # exercise SDPA on the CPU too
    x = torch.randn(2, 13, 17, 32)
    with torch.no_grad():
        expected = attn(x)
        real_pad = grouping.F.pad
        monkeypatch.setattr(grouping.F, "pad", lambda t, pad, *a, **k: real_pad(t, pad, value=1e4))
        attn.train()  # no cached bias; same math
        got = attn(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
