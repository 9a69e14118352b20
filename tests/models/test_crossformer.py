"""The model (models/crossformer.py): timm's model checks for every variant, any input size, the paper's
ablation switches, and the attention layer's numerics."""
import math

import pytest
import timm
import torch
from timm.models import get_notrace_functions, get_notrace_modules

import crossformer_vision as cv
from crossformer_vision import LSDAttention
from crossformer_vision.models.crossformer import SMALL_VARIANTS
from crossformer_vision.runtime import RuntimeOptions

from attention_helpers import assert_same_forward_and_backward

MICRO = dict(embed_dim=32, depths=[2, 2, 2, 1], num_heads=[1, 2, 4, 8], drop_path_rate=0.0, num_classes=10)

# ================================================================================================ timm's model checks
# Every variant has the official parameter count and passes the checks timm's tests/test_models.py makes. The checks
# that run the model build each registered variant with 16 channels per attention head (its depths, heads, groups,
# intervals and ACLs; a quarter of the multiply-accumulates); parameter counts, FLOPs and checkpoints use full widths.
NAMES = cv.list_models()


def _narrow(name):
    """Keyword arguments that build ``name`` at 16 channels per head (every stage keeps its head count)."""
    return dict(embed_dim=16 * cv.VARIANTS[name]["num_heads"][0])


def test_list_models_and_registry():
    assert NAMES == [
        "crossformer_tiny", "crossformer_small", "crossformer_base", "crossformer_large",
        "crossformerpp_small", "crossformerpp_base", "crossformerpp_large", "crossformerpp_huge",
    ]
    assert set(NAMES) <= set(timm.list_models("crossformer*"))
    # official weights live outside any hub: nothing is listed as downloadable, every tag has a config
    assert timm.list_pretrained("crossformer*") == []
    for n in NAMES:
        assert timm.models.get_pretrained_cfg(f"{n}.in1k").custom_load


@pytest.mark.parametrize("name", NAMES)
def test_exact_official_parameter_count(name):
    expected = cv.PAPER[name]["exact_params"]
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        models = (timm.create_model(name), cv.create_model(name))
    for model in models:
        assert sum(p.numel() for p in model.parameters()) == expected


def test_unknown_model_name_suggests_close_matches():
    with pytest.raises(ValueError, match="did you mean crossformer_small"):
        cv.create_model("crossformer_smal")
    with pytest.raises(ValueError, match="needs checkpoint_path"):
        cv.create_model("crossformer_tiny", pretrained=True)


@pytest.mark.parametrize("name", NAMES)
def test_default_cfg_and_heads(name):
    """timm test_model_default_cfgs + pretrained_cfg contents."""
    model = timm.create_model(name, **_narrow(name)).eval()
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["pool_size"] == (7, 7)
    assert cfg["crop_pct"] == 0.875 and cfg["interpolation"] == "bicubic"
    assert cfg["mean"] == timm.data.IMAGENET_DEFAULT_MEAN and cfg["std"] == timm.data.IMAGENET_DEFAULT_STD
    state = model.state_dict()
    assert cfg["classifier"] + ".weight" in state
    assert all(c + ".weight" in state for c in cfg["first_conv"])
    data_cfg = timm.data.resolve_data_config(model=model)
    assert data_cfg["crop_pct"] == 0.875 and data_cfg["interpolation"] == "bicubic"
    assert model.num_features == model.head_hidden_size == model.feature_info[-1]["num_chs"]

    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (1, model.num_features, 7, 7)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (1, model.head_hidden_size)
        logits = model(x)
        assert logits.shape == (1, 1000) and not torch.isnan(logits).any()
        torch.testing.assert_close(model.forward_head(feats), logits)
        model.reset_classifier(0)
        assert model.num_classes == 0 and isinstance(model.get_classifier(), torch.nn.Identity)
        torch.testing.assert_close(model(x), pre)
        model.reset_classifier(0, "")
        assert model(x).shape == (1, model.num_features, 7, 7)
        model.reset_classifier(7, "avg")
        assert model(x).shape == (1, 7) and model.get_classifier().out_features == 7
    bare = timm.create_model(name, num_classes=0, global_pool="", **_narrow(name)).eval()
    with torch.no_grad():
        assert bare(x).shape == (1, bare.num_features, 7, 7)


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter(name):
    """timm test_model_backward (128x128, batch 2, 42 classes)."""
    model = timm.create_model(name, num_classes=42, **_narrow(name)).train()
    out = model(torch.randn(2, 3, 128, 128))
    out.mean().backward()
    assert out.shape == (2, 42) and not torch.isnan(out).any()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize("name", NAMES)
def test_features_only_and_intermediates(name):
    """timm test_model_forward_features / forward_intermediates: four NCHW maps at strides 4..32."""
    features = timm.create_model(name, features_only=True, **_narrow(name)).eval()
    assert features.feature_info.reduction() == [4, 8, 16, 32]
    channels = features.feature_info.channels()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        outs = features(x)
    assert [o.shape[1] for o in outs] == channels
    for o, r in zip(outs, [4, 8, 16, 32]):
        assert o.shape[2] <= math.ceil(96 / r) + 1 and o.shape[3] <= math.ceil(96 / r) + 1
        assert o.is_contiguous() and not torch.isnan(o).any()

    model = timm.create_model(name, **_narrow(name)).eval()
    shared = {k[len("model."):]: v for k, v in features.state_dict().items()}
    model.load_state_dict({**model.state_dict(), **shared})
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        for a, b in zip(inter, outs):
            torch.testing.assert_close(a, b)
        nhwc = model.forward_intermediates(x, indices=[1, 3], output_fmt="NHWC", intermediates_only=True)
        torch.testing.assert_close(nhwc[1], inter[3].permute(0, 2, 3, 1))
        early = model.forward_intermediates(x, indices=2, stop_early=True, intermediates_only=True)
        torch.testing.assert_close(early[0], inter[2])
        model.set_grad_checkpointing()
        final_ckpt, _ = model.forward_intermediates(x)
        torch.testing.assert_close(final_ckpt, final, rtol=1e-4, atol=1e-5)


def test_prune_intermediate_layers():
    model = timm.create_model("crossformer_tiny").eval()
    kept = model.prune_intermediate_layers([0, 1])
    assert kept == [0, 1] and len(model.stages) == 2
    assert isinstance(model.norm, torch.nn.Identity) and model.num_classes == 0
    with torch.no_grad():
        outs = model.forward_intermediates(torch.randn(1, 3, 64, 64), intermediates_only=True)
    assert [o.shape for o in outs] == [(1, 64, 16, 16), (1, 128, 8, 8)]
    features = timm.create_model("crossformer_tiny", features_only=True, out_indices=(1, 2))
    assert features.feature_info.channels() == [128, 256] and len(features.model.stages) == 3


@pytest.mark.parametrize("name", NAMES)
def test_torchscript(name):
    """timm test_model_forward_torchscript: scripted model equals eager."""
    with timm.set_scriptable(True):
        model = timm.create_model(name, **_narrow(name)).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


def _fx_model(model, train=False):
    from torchvision.models.feature_extraction import NodePathTracer, create_feature_extractor, get_graph_node_names

    kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(), param_shapes_constant=True)
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=kwargs)
    train_return = [train_nodes[-1]]
    if train:
        graph = NodePathTracer(**kwargs).trace(model)
        nodes = list(reversed(graph.nodes))
        outputs = [n.name for n in nodes[0]._input_nodes.keys()]
        names = [n.name for n in nodes]
        train_return = [train_nodes[-names.index(o)] for o in outputs]
    return create_feature_extractor(model, train_return_nodes=train_return, eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=kwargs)


@pytest.mark.parametrize("name", ["crossformer_tiny", "crossformerpp_small"])
def test_fx_forward_backward_and_fx_torchscript(name):
    """timm test_model_forward_fx / backward_fx / forward_fx_torchscript."""
    model = timm.create_model(name, **_narrow(name)).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        expected = model(x)
        assert torch.equal(torch.cat(tuple(_fx_model(model)(x).values())), expected)
    train = timm.create_model(name, num_classes=42, **_narrow(name)).train()
    fx_train = _fx_model(train, train=True)
    out = torch.cat(tuple(fx_train(torch.randn(2, 3, 128, 128)).values()))
    out.mean().backward()
    assert out.shape[-1] == 42 and all(p.grad is not None for p in fx_train.parameters())
    with timm.set_scriptable(True):
        scriptable = timm.create_model(name, **_narrow(name)).eval()
    scripted = torch.jit.script(_fx_model(scriptable))
    with torch.inference_mode():
        assert tuple(scripted(x).values())[0].shape == (1, 1000)


@pytest.mark.parametrize("name", ["crossformer_tiny", "crossformerpp_small"])
def test_grad_checkpointing_same_output_and_gradients(name):
    model = timm.create_model(name, num_classes=5, **_narrow(name)).train()
    x = torch.randn(2, 3, 96, 96)
    torch.manual_seed(1)
    ref = model(x)
    ref.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    torch.manual_seed(1)
    out = model(x)
    out.sum().backward()
    torch.testing.assert_close(out, ref)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-6)


def _saved_activation_bytes(model, x):
    total = 0

    def pack(t):
        nonlocal total
        if not isinstance(t, torch.nn.Parameter):
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum().backward()
    return total


def test_grad_checkpointing_saves_memory():
    """Activations kept for backward shrink by far more than 40% (CrossFormer-S, 224x224)."""
    model = timm.create_model("crossformer_small", num_classes=10, drop_path_rate=0.0).train()
    x = torch.randn(2, 3, 224, 224)
    plain = _saved_activation_bytes(model, x)
    model.set_grad_checkpointing(True)
    checkpointed = _saved_activation_bytes(model, x)
    assert checkpointed < 0.4 * plain, (plain, checkpointed)


def test_optimizer_groups_use_no_weight_decay_and_group_matcher():
    from timm.optim import create_optimizer_v2

    model = timm.create_model("crossformer_tiny", pos_embed="rpb")
    no_decay = model.no_weight_decay()
    assert no_decay and all(n.endswith("relative_position_bias_table") for n in no_decay)
    optimizer = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    names = dict(model.named_parameters())
    assert all(id(names[n]) not in decayed for n in no_decay)
    assert all(id(p) not in decayed for n, p in names.items() if p.ndim <= 1)
    layered = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    scale_of = {id(p): g["lr_scale"] for g in layered.param_groups for p in g["params"]}
    stem = scale_of[id(names["patch_embed.projs.0.weight"])]
    first = scale_of[id(names["stages.0.blocks.0.attn.qkv.weight"])]
    last = scale_of[id(names["stages.3.blocks.5.attn.qkv.weight"])]
    head = scale_of[id(names["head.fc.weight"])]
    assert stem < first < last < head == 1.0
    matcher = model.group_matcher(coarse=True)
    assert "stem" in matcher and "blocks" in matcher


# ================================================================================================ any input size
# Any input size, decided at forward time; batch independence; clear errors for bad input.
SIZES = [(224, 224), (225, 301), (97, 130), (640, 480), (1333, 800), (32, 32), (33, 47), (300, 64)]


@pytest.mark.parametrize("pp", [False, True], ids=["crossformer", "crossformerpp"])
@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_any_size_classification_and_features(size, pp):
    extra = dict(group_size=[4, 4, 14, 7], crs_interval=[4, 2, 1, 1], use_acl=True, depths=[2, 2, 6, 1]) if pp else {}
    model = cv.CrossFormer(**{**MICRO, **extra}).eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_intermediates(x, intermediates_only=True)
    assert logits.shape == (1, 10) and torch.isfinite(logits).all()
    h, w = size
    for i, f in enumerate(feats):
        h, w = (h // 4, w // 4) if i == 0 else (h // 2, w // 2)
        assert f.shape == (1, 32 * 2**i, h, w)
        assert torch.isfinite(f).all()


def test_real_variant_at_detection_size():
    model = timm.create_model("crossformer_tiny", features_only=True).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 800, 1333))
    assert [tuple(o.shape[2:]) for o in outs] == [(200, 333), (100, 166), (50, 83), (25, 41)]


@pytest.mark.parametrize("size", [(224, 224), (130, 97)])
def test_batch_elements_are_independent(size):
    model = cv.CrossFormer(**MICRO).eval()
    x = torch.randn(3, 3, *size)
    with torch.no_grad():
        batched = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


def test_sizes_change_between_calls_without_state():
    """No module keeps settings from an earlier input (the official dense backbone does)."""
    model = cv.CrossFormer(**MICRO).eval()
    a, b = torch.randn(1, 3, 224, 320), torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        first = model(a)
        model(b)
        again = model(a)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    fresh = cv.CrossFormer(**MICRO).eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(b), model(b), rtol=0, atol=0)


def test_channels_last_and_non_contiguous_inputs():
    model = cv.CrossFormer(**MICRO).eval()
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(model(x.contiguous(memory_format=torch.channels_last)), ref, rtol=1e-5, atol=1e-5)
        strided = x.transpose(2, 3).contiguous().transpose(2, 3)
        assert not strided.is_contiguous()
        torch.testing.assert_close(model(strided), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "x,message",
    [
        (torch.randn(3, 224, 224), "expected an image batch of shape \\(batch, channels, height, width\\)"),
        (torch.randn(1, 1, 3, 224, 224), "expected an image batch"),
        (torch.randn(1, 1, 224, 224), "expected 3 input channels, got 1"),
        (torch.randn(1, 224, 224, 3), "expected 3 input channels, got 224"),
        (torch.randn(1, 3, 3, 224), "input of 3x224 pixels is too small.*at least 32"),
        (torch.randn(1, 3, 31, 64), "at least 32"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "floating point.*x.float\\(\\)"),
    ],
    ids=["rank3", "rank5", "one-channel", "channels-last-array", "smaller-than-patch", "smaller-than-stride", "uint8"],
)
def test_bad_input_raises_clear_value_error(x, message):
    model = cv.CrossFormer(**MICRO).eval()
    with pytest.raises(ValueError, match=message):
        model(x)
    with pytest.raises(ValueError, match=message):
        model.forward_intermediates(x)


def test_pruned_feature_model_accepts_smaller_inputs():
    model = timm.create_model("crossformer_tiny", features_only=True, out_indices=(0, 1)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 8, 12))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 2, 3), (1, 128, 1, 1)]
    with pytest.raises(ValueError, match="at least 8"):
        model(torch.randn(1, 3, 7, 12))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(lda_mode="adaptive"), "lda_mode must be one of"),
        (dict(pos_embed="sinusoidal"), "pos_embed must be one of"),
        (dict(embed_layer="patchify"), "embed_layer must be one of"),
        (dict(num_heads=[1, 2, 4]), "num_heads needs one entry per stage"),
        (dict(num_heads=[3, 2, 4, 8]), "divisible by num_heads"),
        (dict(patch_size=[4, 7]), "kernel size 7 does not fit stride 4"),
        (dict(merge_size=[[2, 4]]), "merge_size needs 3 entries"),
        (dict(norm_layer="batchnorm"), "unknown norm_layer"),
        (dict(embed_dim=8), "dynamic position bias needs dim >= 16"),
    ],
)
def test_bad_configuration_raises_clear_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cv.CrossFormer(**{**MICRO, **kwargs})


# ================================================================================================ ablation switches
# The paper's Table 5 switches: position encoding and embedding layer.
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
    with torch.device("meta"):  # shapes only
        model = cv.create_model("crossformer_small", pos_embed=pos_embed)
    params = sum(p.numel() for p in model.parameters())
    assert abs(params / 1e6 - PAPER_S[pos_embed]) < 1e-4  # the paper rounds to 0.1K


def test_crossformer_small_rpb_adds_one_table_per_block():
    """The paper's RPB figure (30.6159M) is below the model without any bias, so we only pin our own count."""
    with torch.device("meta"):  # shapes only
        none = sum(p.numel() for p in cv.create_model("crossformer_small", pos_embed="none").parameters())
        rpb = sum(p.numel() for p in cv.create_model("crossformer_small", pos_embed="rpb").parameters())
    heads = [3] * 2 + [6] * 2 + [12] * 6 + [24] * 2
    assert rpb - none == sum(13 * 13 * h for h in heads) == 23_322


# ================================================================================================ attention layer
# LSDA: SDPA vs explicit path, numerical safety, dropout.
def _attention(long_distance, fixed_interval=False, fused=True, pos_embed="dpb"):
    # exercise SDPA on the CPU too
    return LSDAttention(32, 2, 4, 3, long_distance, fixed_interval=fixed_interval, fused_attn=fused,
                        pos_embed=pos_embed, runtime=RuntimeOptions(sdpa_on_cpu=fused))


@pytest.mark.parametrize("pos_embed", ["dpb", "dpb_residual", "rpb", "none"])
@pytest.mark.parametrize("long_distance,fixed_interval", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("size", [(12, 12), (13, 17), (3, 9), (25, 11)])
def test_sdpa_equals_explicit_forward_and_backward(size, long_distance, fixed_interval, pos_embed):
    fused = _attention(long_distance, fixed_interval, True, pos_embed).train()
    explicit = _attention(long_distance, fixed_interval, False, pos_embed).train()
    assert_same_forward_and_backward(fused, explicit, torch.randn(2, *size, 32))


def test_fully_padded_groups_give_finite_gradients():
    """57x57 with G=7, I=8 pads to 112x112: many groups hold only padding (official mask is -1e6, not -inf)."""
    for fused in (True, False):
        attn = LSDAttention(32, 2, 7, 8, True, fused_attn=fused, runtime=RuntimeOptions(sdpa_on_cpu=fused)).train()
        x = torch.randn(1, 57, 57, 32, requires_grad=True)
        attn(x).sum().backward()
        assert torch.isfinite(x.grad).all()
        assert all(torch.isfinite(p.grad).all() for p in attn.parameters())


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
    torch.manual_seed(0)
    model = cv.CrossFormer(**SMALL_VARIANTS["crossformer_micro"], num_classes=5, attn_drop_rate=0.5,
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
