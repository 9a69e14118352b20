"""Model folders (models/hub.py): timm's ``local-dir:`` loads ours and its own ``save_for_hf`` folders through the
safe reader only; config.json is checked before anything is allocated (safetensors headers: test_official); the variant of a
checkpoint is inferred from its tensor shapes (on the meta device)."""
import json

import pytest
import timm
import torch
from timm.models import save_for_hf

import crossformer_vision as cv
from conftest import DATA
from crossformer_vision.models import hub
from crossformer_vision.models.official import CheckpointError

CLASSES = ["cat", "dog", "eel"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return timm.create_model("crossformer_micro", num_classes=3, in_chans=1).eval()


def _write(model, folder, **kwargs):
    args = {**hub._variant_args("crossformer_micro"), "num_classes": model.num_classes, "in_chans": 1}
    pc = {**model.pretrained_cfg, "input_size": (1, 32, 32), "mean": (0.5,), "std": (0.5,)}
    config = hub.classifier_config("crossformer_micro", args, pc, model.num_features, CLASSES, info={"task": "classification"})
    return hub.write_model_folder(folder, model.state_dict(), config, "# card\n", **kwargs)


def test_local_dir_builds_the_classifier_with_labels_and_features(model, tmp_path):
    folder = _write(model, tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    x = torch.randn(2, 1, 40, 48)
    for kwargs in ({}, {"pretrained": True}):  # weights always load from a folder
        loaded = timm.create_model(f"local-dir:{folder}", **kwargs).eval()
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
        assert loaded.pretrained_cfg["label_names"] == CLASSES and loaded.pretrained_cfg["source"] == "local-dir"
        assert tuple(loaded.pretrained_cfg["input_size"]) == (1, 32, 32) and list(loaded.pretrained_cfg["mean"]) == [0.5]
    features = timm.create_model(f"local-dir:{folder}", features_only=True).eval()
    expected = model.forward_intermediates(x, intermediates_only=True)
    for got, want in zip(features(x), expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert features.pretrained_cfg["label_names"] == CLASSES
    # a new head on the same folder: the backbone loads, the classifier is new
    five = timm.create_model(f"local-dir:{folder}", num_classes=5)
    assert five.head.fc.out_features == 5
    torch.testing.assert_close(five.stages[0].blocks[0].attn.qkv.weight, model.stages[0].blocks[0].attn.qkv.weight)
    assert hub.load_model_folder(folder).num_classes == 3


def test_timm_save_for_hf_folders(model, tmp_path):
    x = torch.randn(1, 1, 32, 32)
    safe = tmp_path / "safe"
    save_for_hf(model, safe, safe_serialization=True)
    torch.testing.assert_close(timm.create_model(f"local-dir:{safe}").eval()(x), model(x), rtol=0, atol=0)
    # "both" (push_to_hf_hub's default): the pickle beside model.safetensors is never opened, even a hostile one
    both = tmp_path / "both"
    save_for_hf(model, both, safe_serialization="both")
    (both / "pytorch_model.bin").write_bytes(_hostile_pickle(tmp_path / "ran"))
    torch.testing.assert_close(timm.create_model(f"local-dir:{both}").eval()(x), model(x), rtol=0, atol=0)
    assert not (tmp_path / "ran").exists()
    # timm's default writes only a pickle: refused, with the way out in the message
    pickled = tmp_path / "pickled"
    save_for_hf(model, pickled)
    with pytest.raises(CheckpointError, match="only as a pickle.*name it explicitly"):
        timm.create_model(f"local-dir:{pickled}")
    # named explicitly, it is read by the restricted reader (plain tensors: fine)
    explicit = timm.create_model(f"local-dir:{pickled}", pretrained_cfg_overlay=dict(file=str(pickled / "pytorch_model.bin")))
    torch.testing.assert_close(explicit.eval()(x), model(x), rtol=0, atol=0)
    assert hub.load_model_folder(pickled, weights=pickled / "pytorch_model.bin").num_classes == 3


def _hostile_pickle(marker):
    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    import pickle

    return pickle.dumps({"head.fc.weight": Payload()})


def test_a_named_hostile_pickle_is_refused_without_running(model, tmp_path):
    folder = tmp_path / "evil"
    save_for_hf(model, folder)
    (folder / "pytorch_model.bin").write_bytes(_hostile_pickle(tmp_path / "ran"))
    with pytest.raises(CheckpointError, match="only as a pickle"):
        hub.load_model_folder(folder)
    with pytest.raises(CheckpointError, match="refusing to load"):
        hub.load_model_folder(folder, weights=folder / "pytorch_model.bin")
    assert not (tmp_path / "ran").exists()


def test_folder_weights_are_checked_against_the_model_first(model, tmp_path, monkeypatch):
    folder = _write(model, tmp_path / "m")
    other = timm.create_model("crossformer_micro", num_classes=3, in_chans=1, embed_dim=16, num_heads=(1, 1, 2, 4))
    monkeypatch.setattr(hub, "read_safetensors", lambda *a, **k: pytest.fail("tensors were read"))
    with pytest.raises(CheckpointError, match="does not fit this model.*embed_dim=32"):
        hub.read_folder_weights(folder, other)
    with pytest.raises(CheckpointError, match="does not fit this model"):  # strict: another head size is wrong too
        hub.read_folder_weights(folder, timm.create_model("crossformer_micro", num_classes=4, in_chans=1), strict=True)


def test_config_json_is_checked(model, tmp_path, monkeypatch):
    folder = _write(model, tmp_path / "m")
    monkeypatch.setattr(hub, "MAX_CONFIG_BYTES", 100)
    with pytest.raises(CheckpointError, match="refusing to read it"):
        hub.read_config(folder)
    monkeypatch.undo()
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        hub.load_model_folder(folder)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="has no config.json"):
        hub.load_model_folder(folder)
    (folder / "config.json").write_text(json.dumps({"architecture": "resnet18"}))
    with pytest.raises(CheckpointError, match="not a CrossFormer"):
        hub.load_model_folder(folder)


def test_write_refuses_a_non_empty_folder_and_non_json(model, tmp_path):
    _write(model, tmp_path / "m")
    with pytest.raises(ValueError, match="is not empty.*--overwrite"):
        _write(model, tmp_path / "m")
    _write(model, tmp_path / "m", overwrite=True)
    with pytest.raises(ValueError, match="not JSON data"):
        hub.write_model_folder(tmp_path / "n", {}, {"x": object()})
    assert not (tmp_path / "n").exists()


@pytest.mark.parametrize("branch", ["main", "v1"])
def test_infer_variant_from_official_shapes(branch):
    """Every published variant's official keys (from their JSON, on the meta device) name it, as a classifier and as
    the backbone of an mmdet/mmseg file."""
    with open(DATA / "official_state_dict_keys.json") as f:
        entries = {name: entry[branch] for name, entry in json.load(f).items() if branch in entry}
    for name, entry in entries.items():
        state = {k: torch.empty(shape, device="meta") for k, shape in entry["state_dict"]}
        assert hub.infer_variant(cv.convert_official_state_dict(state)) == name
        dense = {"backbone." + k: v for k, v in state.items() if not k.startswith(("head.", "norm."))}
        dense["neck.lateral_convs.0.conv.weight"] = torch.empty(8, 64, 1, 1, device="meta")
        assert hub.infer_variant(cv.convert_official_state_dict(dense)) == name


def test_infer_variant_says_when_nothing_fits():
    with torch.device("meta"):
        ablation = cv.CrossFormer(**{**cv.MODELS["crossformer_micro"], "pos_embed": "rpb"})
    with pytest.raises(CheckpointError, match="fit none of the registered variants.*--model"):
        hub.infer_variant(ablation.state_dict())
    with pytest.raises(CheckpointError, match="no CrossFormer weights"):
        hub.infer_variant({"conv1.weight": torch.empty(64, 3, 7, 7, device="meta")})
    # another input channel count is still the variant
    with torch.device("meta"):
        grey = cv.CrossFormer(**{**cv.MODELS["crossformer_micro"], "in_chans": 1, "num_classes": 7})
    assert hub.infer_variant(grey.state_dict()) == "crossformer_micro"
