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
