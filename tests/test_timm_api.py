"""Every variant has the official parameter count and passes the checks timm's tests/test_models.py makes."""
import math

import pytest
import timm
import torch
from timm.models import get_notrace_functions, get_notrace_modules

import crossformer_vision as cv

NAMES = cv.list_models()


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
    for model in (timm.create_model(name), cv.create_model(name)):
        assert sum(p.numel() for p in model.parameters()) == expected


def test_unknown_model_name_suggests_close_matches():
    with pytest.raises(ValueError, match="did you mean crossformer_small"):
        cv.create_model("crossformer_smal")
    with pytest.raises(ValueError, match="needs checkpoint_path"):
        cv.create_model("crossformer_tiny", pretrained=True)


@pytest.mark.parametrize("name", NAMES)
def test_default_cfg_and_heads(name):
    """timm test_model_default_cfgs + pretrained_cfg contents."""
    model = timm.create_model(name).eval()
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
    bare = timm.create_model(name, num_classes=0, global_pool="").eval()
    with torch.no_grad():
        assert bare(x).shape == (1, bare.num_features, 7, 7)


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter(name):
    """timm test_model_backward (128x128, batch 2, 42 classes)."""
    model = timm.create_model(name, num_classes=42).train()
    out = model(torch.randn(2, 3, 128, 128))
    out.mean().backward()
    assert out.shape == (2, 42) and not torch.isnan(out).any()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize("name", NAMES)
def test_features_only_and_intermediates(name):
    """timm test_model_forward_features / forward_intermediates: four NCHW maps at strides 4..32."""
    features = timm.create_model(name, features_only=True).eval()
    assert features.feature_info.reduction() == [4, 8, 16, 32]
    channels = features.feature_info.channels()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        outs = features(x)
    assert [o.shape[1] for o in outs] == channels
    for o, r in zip(outs, [4, 8, 16, 32]):
        assert o.shape[2] <= math.ceil(96 / r) + 1 and o.shape[3] <= math.ceil(96 / r) + 1
        assert o.is_contiguous() and not torch.isnan(o).any()

    model = timm.create_model(name).eval()
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
        model = timm.create_model(name).eval()
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
    model = timm.create_model(name).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        expected = model(x)
        assert torch.equal(torch.cat(tuple(_fx_model(model)(x).values())), expected)
    train = timm.create_model(name, num_classes=42).train()
    fx_train = _fx_model(train, train=True)
    out = torch.cat(tuple(fx_train(torch.randn(2, 3, 128, 128)).values()))
    out.mean().backward()
    assert out.shape[-1] == 42 and all(p.grad is not None for p in fx_train.parameters())
    with timm.set_scriptable(True):
        scriptable = timm.create_model(name).eval()
    scripted = torch.jit.script(_fx_model(scriptable))
    with torch.inference_mode():
        assert tuple(scripted(x).values())[0].shape == (1, 1000)


@pytest.mark.parametrize("name", ["crossformer_tiny", "crossformerpp_small"])
def test_grad_checkpointing_same_output_and_gradients(name):
    model = timm.create_model(name, num_classes=5).train()
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
