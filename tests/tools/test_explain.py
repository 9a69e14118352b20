"""``crossformer explain`` (tools/explain.py, cli/explain.py): the drawn groups are the tokens the attention actually
mixes (perturb one token, see which outputs change) at several sizes and both lda_modes; the drawn attention weights
give the layer's output; the position-bias maps are the layer's bias; the embedding boxes are what the stem's kernels
read; the command writes PNGs and a page, and bad input is one line."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from crossformer_vision.cli import main
from crossformer_vision.models import CrossFormer
from crossformer_vision.models.grouping import group_qkv
from crossformer_vision.tools.explain import (attention_weights, embedding_footprints, explain_image, pixel_token,
                                              position_bias_map, record_attention_inputs, stage_strides, token_group)

from attention_helpers import mixed_tokens

# two blocks (SDA, LDA) per stage; groups 4/3/3/2 and intervals 4/3/2/1 pad most maps
TINY = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), group_size=(4, 3, 3, 2), crs_interval=(4, 3, 2, 1),
            num_classes=0, drop_path_rate=0.0)


def _tokens(height, width):
    return {(0, 0), (height // 2, width // 2), (height - 1, width - 1), (height - 1, 0), (0, width - 1)}


@pytest.fixture(scope="module", params=["fixed_group", "fixed_interval"])
def model(request):
    torch.manual_seed(0)
    return CrossFormer(**TINY, lda_mode=request.param).eval()


# (97, 130): padding everywhere; (45, 77): stages 3-4 are small maps (one group); (64, 200): wide, stage 4 small
@pytest.mark.parametrize("size", [(97, 130), (45, 77), (64, 200)])
def test_groups_are_the_tokens_the_attention_mixes(model, size):
    records = record_attention_inputs(model, torch.randn(1, 3, *size))
    assert [(r.stage, r.block) for r in records] == [(i, j) for i in range(4) for j in range(2)]
    small = 0
    for rec in records:
        height, width = rec.size
        for row, col in _tokens(height, width):
            group = token_group(rec.attn, height, width, row, col)
            assert set(group.members) == mixed_tokens(rec.attn, rec.x, row, col), (rec.stage, rec.block, row, col)
            assert len(group.tokens) == group.layout.gh * group.layout.gw
            assert all(r >= height or c >= width for r, c in group.padded)
            small += group.small_map
    if size != (97, 130):
        assert small  # the small-map rule is exercised


def test_drawn_groups_in_explain_json_are_the_mixed_tokens(model, tmp_path):
    """End to end: what explain_image writes (and draws) for a pixel near the bottom-right corner, padding included."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (97, 130, 3), dtype=np.uint8))
    result = explain_image(model, image, str(tmp_path), at=(127, 95), dpi=30)
    summary = json.loads((tmp_path / "explain.json").read_text())
    assert summary["stages"] == result["stages"] and summary["pixel"] == [127, 95]
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1).unsqueeze(0)
    mean = torch.tensor(summary["mean"]).view(1, 3, 1, 1)  # ImageNet's: a bare CrossFormer has no pretrained_cfg
    std = torch.tensor(summary["std"]).view(1, 3, 1, 1)
    records = record_attention_inputs(model, (x - mean) / std)
    padded = 0
    for entry in summary["stages"]:
        for kind, block in (("SDA", 0), ("LDA", 1)):
            rec = records[2 * (entry["stage"] - 1) + block]
            row, col = entry["token"]
            assert (row, col) == pixel_token(127, 95, entry["stride"], rec.size)
            assert {tuple(t) for t in entry[kind]["members"]} == mixed_tokens(rec.attn, rec.x, row, col)
            padded += len(entry[kind]["padding"])
            weights = entry[kind]["attention"]["weights_by_head"]
            assert len(weights) == rec.attn.num_heads and all(abs(sum(w) - 1) < 1e-4 for w in weights)
    assert padded  # the corner pixel's groups reach into the padding


def test_attention_weights_give_the_layer_output(model):
    records = record_attention_inputs(model, torch.randn(1, 3, 97, 130))
    for rec in records:
        height, width = rec.size
        with torch.no_grad():
            out = rec.attn(rec.x)
            for row, col in _tokens(height, width):
                group, weights = attention_weights(rec.attn, rec.x, row, col)
                assert torch.allclose(weights.sum(-1), torch.ones(rec.attn.num_heads), atol=1e-5)
                pad = torch.tensor(group.padding)
                assert float(weights[:, pad].sum()) < 1e-6 if pad.any() else True
                _, _, v = group_qkv(rec.attn.qkv(rec.x), group.layout, rec.attn.num_heads)  # (nG, nH, N, hd)
                mixed = torch.einsum("hn,hnd->hd", weights, v[group.index]).reshape(-1)
                torch.testing.assert_close(rec.attn.proj(mixed), out[0, row, col], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pos_embed", ["dpb", "dpb_residual", "rpb"])
def test_position_bias_map_is_the_layers_bias(pos_embed):
    model = CrossFormer(**TINY, pos_embed=pos_embed)
    attn = model.stages[0].blocks[1].attn
    for gh, gw in [(4, 4), (3, 5)]:
        grid = position_bias_map(attn, gh, gw)
        bias = attn.pos(gh, gw).detach()  # (nH, N, N), query i, key j
        assert grid.shape == (attn.num_heads, 2 * gh - 1, 2 * gw - 1)
        for i in range(gh * gw):
            for j in range(0, gh * gw, 3):
                dy, dx = i // gw - j // gw, i % gw - j % gw
                torch.testing.assert_close(grid[:, dy + gh - 1, dx + gw - 1], bias[:, i, j])
    assert position_bias_map(CrossFormer(**TINY, pos_embed="none").stages[0].blocks[0].attn, 4, 4) is None


def test_embedding_boxes_are_what_the_stem_kernels_read():
    model = CrossFormer(**TINY).eval()
    height, width = 50, 61
    sizes = [(height // s, width // s) for s in stage_strides(model)]
    for x, y in [(25, 30), (0, 0), (59, 47)]:  # (59, 47): the last token (the stride drops pixel column 60)
        stem = embedding_footprints(model, x, y, sizes)[0]
        row, col = stem["token"]
        assert (row, col) == pixel_token(x, y, 4, sizes[0])
        for proj, kernel in zip(model.patch_embed.projs, stem["kernels"]):
            x0, y0, x1, y1 = kernel["box"]
            assert x1 - x0 == y1 - y0 == kernel["kernel"] == proj.kernel_size[0]
            assert x0 <= x < x1 and y0 <= y < y1
            image = torch.randn(1, 3, height, width)
            with torch.no_grad():
                base = proj(image)[0, :, row, col]
                for px, py, inside in [(x0, y0, True), (x1 - 1, y1 - 1, True), (x0 - 1, y0, False), (x1, y1 - 1, False)]:
                    if not (0 <= px < width and 0 <= py < height):
                        continue
                    bumped = image.clone()
                    bumped[0, :, py, px] += 5.0
                    changed = not torch.allclose(proj(bumped)[0, :, row, col], base)
                    assert changed == inside, (kernel["kernel"], px, py)


# ------------------------------------------------------------------------------------------------ the command
@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "odd.png"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (45, 70, 3), dtype=np.uint8)).save(path)
    return path


def test_command_writes_pngs_and_a_page(photo, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["explain", str(photo), "--model", "crossformer_micro", "-o", str(out), "--at", "60,40", "--dpi", "30"]) == 0
    assert "index.html" in capsys.readouterr().out
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["attention.png", "embedding.png", "groups.png"] + [f"position_bias_stage{i}.png" for i in range(1, 5)]
    page = (out / "index.html").read_text()
    assert all(f'src="{name}"' in page for name in pngs)
    assert "crossformer explain" in page and "--at 60,40" in page
    summary = json.loads((out / "explain.json").read_text())
    assert summary["size"] == [70, 45] and summary["pixel"] == [60, 40] and summary["map_sizes"][0] == [11, 17]
    for name in pngs:
        with Image.open(out / name) as picture:
            assert picture.format == "PNG" and min(picture.size) > 50


def test_command_loads_a_checkpoint_file_and_pretrained_weights(photo, tmp_path):
    torch.manual_seed(0)
    net = CrossFormer(patch_size=(4, 8, 16, 32), embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8),
                      group_size=(4, 4, 2, 1), crs_interval=(2, 1, 1, 1), num_classes=10)
    weights = tmp_path / "micro.pth"
    torch.save({"model": net.state_dict()}, weights)
    for source in (["-k", str(weights)], ["--pretrained", str(weights)]):
        out = tmp_path / source[0].strip("-")
        assert main(["explain", str(photo), *source, "--model", "crossformer_micro", "-o", str(out), "--dpi", "30",
                     "--max-side", "60"]) == 0
        summary = json.loads((out / "explain.json").read_text())
        assert summary["size"] == [60, 39]  # shrunk to a longer side of 60


@pytest.mark.parametrize("extra,message", [
    ([], "name the model"),
    (["--model", "crossformer_micro", "--at", "70,10"], "outside the 70x45 image"),
    (["--model", "crossformer_micro", "--at", "1;2"], "--at takes two whole pixel numbers"),
    (["--model", "crossformer_micro", "--max-side", "20"], "needs at least 32x32"),
    (["-k", "x.pth", "--pretrained", "x.pth", "--model", "crossformer_micro"], "not both"),
    (["--model", "crossformer_nano"], "unknown model"),
])
def test_bad_input_is_one_line_and_exit_status_2(photo, tmp_path, capsys, extra, message):
    assert main(["explain", str(photo), "-o", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("crossformer explain: error:") and message in err, err


def test_not_an_image_is_one_line(tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    assert main(["explain", str(bad), "--model", "crossformer_micro", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot read" in err


def test_missing_image_is_one_line(tmp_path, capsys):
    assert main(["explain", str(tmp_path / "nowhere.jpg"), "--model", "crossformer_micro", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no such image file" in err and "nowhere.jpg" in err


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_grey_and_transparent_images_are_read_in_the_models_mode(tmp_path, mode):
    path = tmp_path / f"odd-{mode}.png"
    channels = {"L": (), "RGBA": (4,)}[mode]
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (37, 51, *channels), dtype=np.uint8), mode).save(path)
    out = tmp_path / "out"
    assert main(["explain", str(path), "--model", "crossformer_micro", "-o", str(out), "--dpi", "30"]) == 0
    summary = json.loads((out / "explain.json").read_text())
    assert summary["size"] == [51, 37] and summary["pixel"] == [25, 18] and len(summary["mean"]) == 3


def test_ablation_models_get_position_bias_and_embedding_but_no_lsda_groups(tmp_path):
    model = CrossFormer(**TINY, attn_type="swin").eval()
    image = Image.fromarray(np.random.default_rng(3).integers(0, 255, (40, 56, 3), dtype=np.uint8))
    result = explain_image(model, image, str(tmp_path), dpi=30)
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == ["embedding.png"] + [f"position_bias_stage{i}.png" for i in range(1, 5)]
    assert result["stages"] == [] and "attention is not LSDA" in (tmp_path / "index.html").read_text()
