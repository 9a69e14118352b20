"""The ``crossformer`` entry point and ``crossformer info``."""
import json
import subprocess
import sys

from crossformer_vision.cli import main


def test_info_lists_every_model_with_params(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "crossformer_tiny" in out and "27,776,794" in out and "crossformerpp_huge" in out


def test_info_name_prints_configuration_json(capsys):
    assert main(["info", "crossformerpp_small"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 23_325_340
    assert info["architecture"]["group_size"] == [4, 4, 14, 7] and info["architecture"]["use_acl"] is True
    assert info["pretrained_cfg"]["crop_pct"] == 0.875
    assert [f["reduction"] for f in info["feature_info"]] == [4, 8, 16, 32]


def test_unknown_model_is_one_line_and_exit_status_2():
    proc = subprocess.run([sys.executable, "-m", "crossformer_vision.cli", "info", "crossformer_smal"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "unknown model 'crossformer_smal'; did you mean crossformer_small" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_command_prints_help():
    assert main([]) == 2


def test_crossformer_micro_is_a_registered_model_everywhere(tmp_path, capsys):
    import timm
    import torch

    import crossformer_vision as cv

    assert "crossformer_micro" in cv.list_models(small=True) and "crossformer_micro" not in cv.list_models()
    demo = cv.create_model("crossformer_micro", num_classes=10, in_chans=1)
    assert sum(p.numel() for p in demo.parameters()) == 1_690_481  # the digits demo's 1.69M
    model = cv.create_model("crossformer_micro", num_classes=10)
    assert timm.create_model("crossformer_micro", in_chans=1).pretrained_cfg["input_size"] == (3, 32, 32)
    assert main(["info"]) == 0 and "crossformer_micro" in capsys.readouterr().out
    assert main(["info", "crossformer_micro"]) == 0
    assert json.loads(capsys.readouterr().out)["architecture"]["depths"] == [1, 1, 2, 1]
    weights = tmp_path / "micro.pth"
    torch.save(model.state_dict(), weights)
    folder = tmp_path / "val" / "3"  # an official-style file's 10 classes are named 0..9
    folder.mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (40, 40)).save(folder / "x.png")
    assert main(["eval", str(weights), "--model", "crossformer_micro", "--data", str(tmp_path / "val"),
                 "--json", "--workers", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 1
    assert main(["export", "crossformer_micro", "--fixed-size", "32", "--format", "pt2", "-o", str(tmp_path / "m.pt2")]) == 0
    assert (tmp_path / "m.pt2").stat().st_size > 1_000_000


def test_bad_model_arguments_say_what_is_expected():
    import pytest

    import crossformer_vision as cv

    with pytest.raises(TypeError, match="model name must be a string"):
        cv.create_model(None)
    for kwargs, message in ((dict(num_heads=0), "num_heads must be positive integers, got 0"),
                            (dict(in_chans=0), "in_chans must be a positive integer, got 0"),
                            (dict(num_classes=-1), "num_classes must be an int >= 0"),
                            (dict(embed_dim=0), "embed_dim must be a positive integer"),
                            (dict(drop_path_rate=1.5), "drop_path_rate must be in")):
        with pytest.raises(ValueError, match=message):
            cv.CrossFormer(**kwargs)
