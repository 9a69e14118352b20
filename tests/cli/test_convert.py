"""``crossformer convert``: official checkpoints of every layout (made here from our models: conftest.to_official_layout,
and mmdet/mmseg files as in tests/dense/test_dense_weights.py) become folders that timm loads with the same outputs;
the variant is inferred from the shapes; bad files end with one line and exit status 2."""
import json
import pickle
import re

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import crossformer_vision as cv
from conftest import to_official_layout
from crossformer_vision.cli import main


def _convert(capsys, *args):
    rc = main(["convert", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def _official_names(state_dict):
    """Our keys -> the official code's (the inverse of convert_official_state_dict), for configurations the
    official key lists do not cover (crossformer_micro)."""
    out = {}
    for key, value in state_dict.items():
        if m := re.match(r"stages\.(\d+)\.downsample\.(.*)", key):
            key = f"layers.{int(m[1]) - 1}.downsample.{m[2].replace('projs.', 'reductions.')}"
        elif m := re.match(r"stages\.(\d+)\.blocks\.(\d+)\.(.*)", key):
            key = f"layers.{m[1]}.blocks.{m[2]}.{m[3].replace('acl.conv.', 'ex_conv.').replace('acl.norm.', 'ex_ln.')}"
        elif key.startswith("head.fc."):
            key = "head." + key[len("head.fc."):]
        out[key] = value
    assert set(cv.convert_official_state_dict(out)) == set(state_dict)
    return out


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return timm.create_model("crossformer_tiny", drop_path_rate=0.0).eval()


def test_released_training_state_infers_the_variant(tiny, tmp_path, capsys):
    """First-release layout (DPB index buffers) inside a training state -> crossformer_tiny, ImageNet names."""
    path = tmp_path / "crossformer-t.pth"
    torch.save({"model": to_official_layout(tiny, "crossformer_tiny", "v1"), "optimizer": {"state": {}},
                "epoch": 299}, path)
    rc, out, err = _convert(capsys, path, "-o", tmp_path / "cf-t")
    assert rc == 0, err
    assert "crossformer_tiny (inferred from the tensor shapes" in out and "1000 classes (ImageNet names)" in out
    model = timm.create_model(f"local-dir:{tmp_path / 'cf-t'}").eval()
    x = torch.randn(1, 3, 64, 96)
    torch.testing.assert_close(model(x), tiny(x), rtol=0, atol=0)
    assert model.pretrained_cfg["label_names"][:2] == ["n01440764", "n01443537"]
    assert model.pretrained_cfg["label_descriptions"]["n01440764"].startswith("tench")
    config = json.loads((tmp_path / "cf-t" / "config.json").read_text())
    assert config["crossformer_vision"]["converted_from"]["layout"].startswith("official classification checkpoint "
                                                                                "(first release layout), from a training")
    card = (tmp_path / "cf-t" / "README.md").read_text()
    assert "license: mit" in card and "@inproceedings{wang2022crossformer" in card and "crossformer_tiny" in card


def test_crossformerpp_with_another_head(tmp_path, capsys):
    """CrossFormer++ (the current code's layout, ACL) with a 5-class head -> crossformerpp_small, 5 outputs."""
    torch.manual_seed(1)
    model = timm.create_model("crossformerpp_small", drop_path_rate=0.0).eval()
    official = to_official_layout(model, "crossformerpp_small", "main")
    official["head.weight"], official["head.bias"] = torch.randn(5, model.num_features) * 0.02, torch.randn(5)
    model.reset_classifier(5)
    model.head.fc.load_state_dict({"weight": official["head.weight"], "bias": official["head.bias"]})
    torch.save(official, tmp_path / "cfpp-s.pth")
    rc, out, err = _convert(capsys, tmp_path / "cfpp-s.pth", "-o", tmp_path / "cfpp")
    assert rc == 0, err
    assert "crossformerpp_small (inferred" in out and "5 classes" in out
    loaded = timm.create_model(f"local-dir:{tmp_path / 'cfpp'}").eval()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert loaded.num_classes == 5 and "label_names" not in json.loads((tmp_path / "cfpp" / "config.json").read_text())


def test_mmdet_backbone_becomes_a_feature_model(tiny, tmp_path, capsys):
    official = to_official_layout(tiny, "crossformer_tiny", "main")
    state = {"backbone." + k: v for k, v in official.items() if not k.startswith(("head.", "norm."))}
    state["neck.lateral_convs.0.conv.weight"] = torch.randn(16, 64, 1, 1)
    state["bbox_head.retina_cls.weight"] = torch.randn(9, 16, 3, 3)
    torch.save({"state_dict": state, "meta": {"CLASSES": ["cat"]}}, tmp_path / "retinanet.pth")
    rc, out, err = _convert(capsys, tmp_path / "retinanet.pth", "-o", tmp_path / "bb")
    assert rc == 0, err
    assert "mmdetection/mmsegmentation checkpoint" in out and "no classifier head" in out and "fixed_interval" in out
    backbone = timm.create_model(f"local-dir:{tmp_path / 'bb'}")
    ours = tiny.state_dict()
    for key, value in backbone.state_dict().items():
        if not key.startswith("norm."):
            assert torch.equal(value, ours[key]), key
    assert backbone.num_classes == 0 and backbone.lda_mode == "fixed_interval"
    features = timm.create_model(f"local-dir:{tmp_path / 'bb'}", features_only=True)
    assert [f.shape[1] for f in features(torch.randn(1, 3, 64, 64))] == [64, 128, 256, 512]


def test_small_grey_model_with_its_own_head_predicts(tmp_path, capsys):
    """A 7-class, 1-channel crossformer_micro in official key names: inferred, and `crossformer predict -k DIR`."""
    torch.manual_seed(2)
    model = timm.create_model("crossformer_micro", num_classes=7, in_chans=1).eval()
    torch.save({"state_dict": _official_names(model.state_dict())}, tmp_path / "micro.pth")
    rc, out, err = _convert(capsys, tmp_path / "micro.pth", "-o", tmp_path / "micro", "--json")
    assert rc == 0, err
    result = json.loads(out)
    assert (result["model"], result["num_classes"], result["in_chans"], result["inferred"]) == ("crossformer_micro", 7, 1, True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40), np.uint8)).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "a.png"), "-k", str(tmp_path / "micro"), "--json", "--device", "cpu"]) == 0
    top = json.loads(capsys.readouterr().out)["predictions"][0]["top"]
    assert len(top) == 5 and {t["class"] for t in top} <= {str(i) for i in range(7)}


def _hostile(path, marker):
    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    path.write_bytes(pickle.dumps({"model": Payload()}))


def test_bad_files_get_one_line(tmp_path, capsys):
    micro = timm.create_model("crossformer_micro")
    official = _official_names(micro.state_dict())
    rpb = timm.create_model("crossformer_micro", pos_embed="rpb")
    files = {
        "page.pth": lambda p: p.write_bytes(b"<!DOCTYPE html><html>404</html>"),
        "evil.pth": lambda p: _hostile(p, tmp_path / "ran"),
        "resnet.pth": lambda p: torch.save({"conv1.weight": torch.zeros(4, 3, 7, 7), "fc.weight": torch.zeros(2, 4)}, p),
        "micro.pth": lambda p: torch.save(official, p),
        "ablation.pth": lambda p: torch.save(_official_names(rpb.state_dict()), p),
        "run.pth": lambda p: torch.save({"format": "crossformer-vision/classification", "model": micro.state_dict()}, p),
        "cut.safetensors": lambda p: p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":"),
    }
    for name, make in files.items():
        make(tmp_path / name)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    cases = [
        (["page.pth"], "not a PyTorch or safetensors checkpoint"),
        (["evil.pth"], "refusing to load"),
        (["resnet.pth"], "no CrossFormer weights"),
        (["micro.pth", "--model", "crossformer_tiny"], "does not fit crossformer_tiny"),
        (["ablation.pth"], "fit none of the registered variants"),
        (["run.pth"], "crossformer export RUN --format hf"),
        (["cut.safetensors"], "safetensors"),
        (["missing.pth"], "not found"),
        (["micro.pth", "--model", "crossformer_smal"], "unknown model 'crossformer_smal'; did you mean crossformer_small"),
    ]
    for args, message in cases:
        rc, out, err = _convert(capsys, tmp_path / args[0], *args[1:], "-o", tmp_path / "out")
        assert rc == 2 and len(err.strip().splitlines()) == 1, (args, err)
        assert err.startswith("crossformer convert: error: ") and message in err, (args, err)
        assert not (tmp_path / "out").exists()
    rc, _, err = _convert(capsys, tmp_path / "micro.pth", "-o", tmp_path / "full")
    assert rc == 2 and "is not empty" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ran").exists()
