"""Official checkpoints: key coverage, every layout and wrapper, safe reading, timm's pretrained path."""
import json
import os
import pickle
import struct
import sys
import types

import pytest
import timm
import torch

import crossformer_vision as cv
from conftest import official_keys, to_official_layout
from crossformer_vision.models import official
from crossformer_vision.models.official import CheckpointError

VARIANTS = cv.list_models()
BRANCHES = [(v, b) for v in VARIANTS for b in (["main", "v1"] if not v.startswith("crossformerpp") else ["main"])]


@pytest.mark.parametrize("variant,branch", BRANCHES, ids=[f"{v}-{b}" for v, b in BRANCHES])
def test_every_official_key_is_mapped_or_deliberately_dropped(variant, branch):
    keys, buffers, params = official_keys(variant, branch)
    with torch.device("meta"):
        model = timm.create_model(variant)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    official = {k: torch.empty(shape, device="meta") for k, shape in keys}
    converted = cv.convert_official_state_dict(official)
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours
    dropped = set(official) - {k for k in official if cv.convert_official_state_dict({k: official[k]})}
    assert dropped == buffers  # only the DPB index buffers, which are derived from the input size
    assert sum(v.numel() for k, v in official.items() if k not in buffers) == params


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return timm.create_model("crossformer_tiny").eval()


@pytest.fixture(scope="module")
def target():
    """A crossformer_tiny to load into (tests either overwrite all of its weights or fail before loading)."""
    return timm.create_model("crossformer_tiny")


def _fake_yacs_config():
    """A genuine yacs-style CfgNode pickled under its real module name, without needing yacs installed."""
    module = types.ModuleType("yacs.config")

    class CfgNode(dict):
        pass

    CfgNode.__module__ = "yacs.config"
    CfgNode.__qualname__ = "CfgNode"
    module.CfgNode = CfgNode
    node = CfgNode(MODEL=CfgNode(NAME="crossformer_tiny"), TRAIN=CfgNode(BASE_LR=1e-3))
    return module, node


@pytest.fixture(scope="module")
def official_training_state(tiny, tmp_path_factory):
    """Released-checkpoint layout (original branch, with index buffers) inside a training state with a config."""
    path = tmp_path_factory.mktemp("ckpt") / "crossformer-t.pth"
    module, config = _fake_yacs_config()
    sys.modules["yacs"] = types.ModuleType("yacs")
    sys.modules["yacs.config"] = module
    try:
        torch.save({"model": to_official_layout(tiny, "crossformer_tiny", "v1"), "optimizer": {"state": {}},
                    "epoch": 299, "max_accuracy": 81.5, "config": config}, path)
    finally:
        del sys.modules["yacs.config"], sys.modules["yacs"]
    return path


def test_load_official_training_checkpoint(tiny, official_training_state):
    model = timm.create_model("crossformer_tiny").eval()
    report = cv.load_official_checkpoint(model, official_training_state)
    assert report.missing_keys == [] and report.unexpected_keys == []
    assert all(k.endswith(("attn.biases", "attn.relative_position_index")) for k in report.dropped_keys)
    assert len(report.dropped_keys) == 32
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), tiny(x), rtol=0, atol=0)
    raw = cv.load_checkpoint_file(official_training_state)
    assert raw["config"]["MODEL"]["NAME"] == "crossformer_tiny" and raw["epoch"] == 299


def test_timm_pretrained_file_same_and_new_head_and_features(tiny, official_training_state):
    overlay = dict(file=str(official_training_state))
    x = torch.randn(1, 3, 160, 224)
    with torch.no_grad():
        expected_logits = tiny(x)
        expected_feats = tiny.forward_intermediates(x, intermediates_only=True)
        same = timm.create_model("crossformer_tiny", pretrained=True, pretrained_cfg_overlay=overlay).eval()
        torch.testing.assert_close(same(x), expected_logits, rtol=0, atol=0)

        ten = timm.create_model("crossformer_tiny", pretrained=True, pretrained_cfg_overlay=overlay, num_classes=10).eval()
        assert ten.head.fc.weight.shape == (10, 512)
        torch.testing.assert_close(ten.forward_features(x), tiny.forward_features(x), rtol=0, atol=0)

        feats = timm.create_model("crossformer_tiny", pretrained=True, pretrained_cfg_overlay=overlay, features_only=True).eval()
        for a, b in zip(feats(x), expected_feats):
            torch.testing.assert_close(a, b, rtol=0, atol=0)

        gray = timm.create_model("crossformer_tiny", pretrained=True, pretrained_cfg_overlay=overlay, in_chans=1).eval()
        assert gray.patch_embed.projs[0].weight.shape[1] == 1
        torch.testing.assert_close(gray.patch_embed.projs[0].weight, tiny.patch_embed.projs[0].weight.sum(1, keepdim=True))
        own = cv.create_model("crossformer_tiny", checkpoint_path=official_training_state).eval()
        torch.testing.assert_close(own(x), expected_logits, rtol=0, atol=0)


@pytest.mark.parametrize("wrap", ["plain", "model", "state_dict", "ddp", "already_converted"])
def test_wrappers_and_prefixes(tiny, target, wrap):
    official = to_official_layout(tiny, "crossformer_tiny", "main")
    checkpoint = {
        "plain": official,
        "model": {"model": official, "epoch": 1},
        "state_dict": {"state_dict": official},
        "ddp": {"model": {"module." + k: v for k, v in official.items()}},
        "already_converted": tiny.state_dict(),
    }[wrap]
    target.load_state_dict(cv.convert_official_state_dict(checkpoint), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), tiny.state_dict().values()))


def test_crossformerpp_layout_with_acl():
    torch.manual_seed(1)
    source = timm.create_model("crossformerpp_small").eval()
    official = to_official_layout(source, "crossformerpp_small", "main")
    assert "layers.2.blocks.2.ex_conv.weight" in official and "layers.2.blocks.2.ex_ln.bias" in official
    model = timm.create_model("crossformerpp_small").eval()
    model.load_state_dict(cv.convert_official_state_dict({"model": official}), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)


def test_detection_checkpoint_loads_backbone_and_drops_heads(tiny, target, tmp_path):
    backbone = {k: v for k, v in to_official_layout(tiny, "crossformer_tiny", "v1").items() if not k.startswith(("norm.", "head."))}
    mmdet = {
        "meta": {"mmdet_version": "2.8.0", "CLASSES": ("person", "car"), "epoch": 12},
        "state_dict": {
            **{"backbone." + k: v for k, v in backbone.items()},
            "neck.lateral_convs.0.conv.weight": torch.zeros(256, 128, 1, 1),
            "bbox_head.retina_cls.weight": torch.zeros(18, 256, 3, 3),
        },
        "optimizer": {"state": {}, "param_groups": []},
    }
    path = tmp_path / "retinanet_crossformer_t.pth"
    torch.save(mmdet, path)
    converted = cv.convert_official_state_dict(torch.load(path, weights_only=True))
    assert not any(k.startswith(("neck", "bbox_head", "backbone")) for k in converted)
    model = timm.create_model("crossformer_tiny", num_classes=0).eval()
    report = cv.load_official_checkpoint(model, path, strict=False)
    assert sorted(report.missing_keys) == ["norm.bias", "norm.weight"] and report.unexpected_keys == []
    features = timm.create_model("crossformer_tiny", features_only=True, pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        for a, b in zip(features(x), tiny.forward_intermediates(x, intermediates_only=True)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="no classifier head or final norm.*features_only"):
        cv.load_official_checkpoint(target, path)


class _Payload:
    """Pickles to a call of os.makedirs: harmless, but observable if it ever ran."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.makedirs, (self.target,))


def test_pickled_code_is_refused_not_executed(tiny, target, tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": tiny.state_dict(), "extra": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refusing to load.*posix.makedirs|refusing to load.*makedirs"):
        cv.load_official_checkpoint(target, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        timm.create_model("crossformer_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert not marker.exists()


def test_unreadable_files_give_clear_errors(tiny, target, tmp_path):
    good = tmp_path / "good.pth"
    torch.save(tiny.state_dict(), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: os.path.getsize(good) // 2])
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00\x01 definitely not a checkpoint" * 100)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    bad_safetensors = tmp_path / "bad.safetensors"
    bad_safetensors.write_bytes(b"\xff" * 64)
    model = target
    for path, message in [
        (truncated, "truncated or corrupt"),
        (garbage, "not a PyTorch or safetensors checkpoint"),
        (empty, "checkpoint file is empty"),
        (tmp_path / "missing.pth", "checkpoint file not found"),
        (bad_safetensors, "could not read safetensors file"),
    ]:
        with pytest.raises(CheckpointError, match=message):
            cv.load_official_checkpoint(model, path)
    no_weights = tmp_path / "no_weights.pth"
    torch.save({"optimizer": {"lr": 0.1}, "epoch": 3}, no_weights)
    with pytest.raises(CheckpointError, match="no model weights found"):
        cv.load_official_checkpoint(model, no_weights)


def test_checkpoint_of_another_variant_is_named_in_the_error(target, tmp_path):
    small = timm.create_model("crossformer_small")
    path = tmp_path / "small.pth"
    torch.save({"model": to_official_layout(small, "crossformer_small", "v1")}, path)
    with pytest.raises(CheckpointError, match=r"differ in shape.*embed_dim=96, depths=\[2, 2, 6, 2\].*embed_dim=64, depths=\[1, 1, 8, 6\]"):
        cv.load_official_checkpoint(target, path)
    with pytest.raises(CheckpointError, match="does not fit"):
        timm.create_model("crossformer_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def test_safetensors_roundtrip_is_atomic(tiny, tmp_path):
    path = tmp_path / "tiny.safetensors"
    cv.save_weights(tiny, path, metadata={"architecture": "crossformer_tiny"})
    assert os.listdir(tmp_path) == ["tiny.safetensors"]
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        assert f.metadata()["architecture"] == "crossformer_tiny"
    model = timm.create_model("crossformer_tiny").eval()
    assert cv.load_weights(model, path).missing_keys == []
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), tiny.state_dict().values()))
    loaded = timm.create_model("crossformer_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), tiny.state_dict().values()))


def test_restricted_reader_rejects_unlisted_classes(tmp_path):
    path = tmp_path / "obj.pth"
    torch.save({"model": {"w": torch.ones(1)}, "thing": types.SimpleNamespace(a=1)}, path)
    with pytest.raises(CheckpointError, match="types.SimpleNamespace"):
        cv.load_checkpoint_file(path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def _safetensors(path, header, data=b""):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


@pytest.mark.parametrize("header, data, message", [
    ({"w": {"dtype": "F32", "shape": [10 ** 12], "data_offsets": [0, 16]}}, b"\0" * 16, "needs 4000000000000 bytes"),
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, "describes 16 bytes"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "v": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "overlap"),
    ({"w": {"dtype": "X9", "shape": [1], "data_offsets": [0, 1]}}, b"\0", "dtype 'X9'"),
    ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "invalid shape"),
])
def test_safetensors_header_is_checked_before_reading(tmp_path, monkeypatch, header, data, message):
    import safetensors

    monkeypatch.setattr(safetensors, "safe_open", lambda *a, **k: pytest.fail("tensors were read"))
    path = _safetensors(tmp_path / "w.safetensors", header, data)
    with pytest.raises(CheckpointError, match=message):
        official.read_safetensors(path)


def test_truncated_and_lying_headers(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(CheckpointError, match="header claims"):
        official.read_safetensors_header(path)
    path.write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match="not a complete safetensors"):
        official.read_safetensors_header(path)
