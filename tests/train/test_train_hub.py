"""Runs as model folders (train/hub.py, ``crossformer export RUN --format hf``): plain timm in a fresh process builds
the trained classifier with its labels and predicts what the run predicts; features_only, timm's own save_for_hf,
``crossformer eval|predict -k DIR``; a segmentation run exported and predicted from its folder."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file

from crossformer_vision.cli import main
from crossformer_vision.models.official import CheckpointError, load_checkpoint_file
from crossformer_vision.train import load_classifier, train
from crossformer_vision.train.hub import export_run
from dense_helpers import DETECT, SEGMENT, tiny


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One digits epoch of crossformer_micro with an EMA of the weights (a few seconds)."""
    root = tmp_path_factory.mktemp("hub")
    train("classification", "digits", ["train.epochs=1", "train.ema=true", "train.ema_decay=0.9", f"log.output={root}",
                                       "log.name=digits", "log.progress=false", "log.tensorboard=false"])
    return root / "digits"


@pytest.fixture(scope="module")
def folder(run):
    out = run.parent / "digits-hf"
    assert main(["export", str(run), "--format", "hf", "-o", str(out)]) == 0
    return out


def test_folder_holds_config_weights_and_card(run, folder):
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "crossformer_micro" and config["num_classes"] == 10
    assert config["label_names"] == [str(i) for i in range(10)] and config["pretrained_cfg"]["input_size"] == [1, 32, 32]
    assert config["crossformer_vision"]["run"]["weights"] == "ema"
    best = load_checkpoint_file(run / "best.pth")
    weights = load_file(folder / "model.safetensors")
    assert all(torch.equal(weights[k], v) for k, v in best["model_ema"].items())  # the EMA weights, where kept
    card = (folder / "README.md").read_text()
    summary = json.loads((run / "summary.json").read_text())
    for text in ("license: mit", "crossformer_micro", "`9`", "train 1257, val 180, test 360", "| 0 | 124 | 18 | 36 |",
                 "adamw", f"| test_top1 | {summary['test_top1']:.4g} |", "@article{wang2023crossformerpp",
                 "local-dir:digits-hf"):
        assert text in card, text


def test_plain_timm_in_a_fresh_process_predicts_like_the_run(run, folder, tmp_path):
    torch.manual_seed(0)
    x = torch.randn(4, 1, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    script = textwrap.dedent(f"""
        import json, torch, timm
        import crossformer_vision
        torch.set_num_threads({torch.get_num_threads()})  # as here: the same summation order, so equal bits
        model = timm.create_model("local-dir:{folder}").eval()
        with torch.no_grad():
            logits = model(torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True))
        features = timm.create_model("local-dir:{folder}", features_only=True).eval()
        with torch.no_grad():
            shapes = [list(f.shape) for f in features(torch.zeros(1, 1, 64, 64))]
        torch.save(logits, {str(tmp_path / 'logits.pt')!r})
        print(json.dumps({{"labels": model.pretrained_cfg["label_names"], "shapes": shapes}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["labels"] == [str(i) for i in range(10)]
    assert result["shapes"] == [[1, 32, 16, 16], [1, 64, 8, 8], [1, 128, 4, 4], [1, 256, 2, 2]]
    model, _ = load_classifier(run, use_ema=True)
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "logits.pt", weights_only=True), model(x), rtol=0, atol=0)


def test_eval_and_predict_accept_the_folder(run, folder, tmp_path, capsys):
    assert main(["eval", str(run), "--ema", "--json", "--device", "cpu", "--workers", "0"]) == 0
    from_run = json.loads(capsys.readouterr().out)
    assert main(["eval", str(folder), "--json", "--device", "cpu", "--workers", "0"]) == 0  # the run's own test split
    from_folder = json.loads(capsys.readouterr().out)
    assert from_folder["data"] == "digits/test" and from_folder["top1"] == from_run["top1"]
    image = tmp_path / "digit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32), np.uint8)).save(image)
    outputs = []
    for args in ([str(run), "--ema"], [str(folder)]):
        assert main(["predict", str(image), "-k", *args, "--json", "--device", "cpu"]) == 0
        outputs.append(json.loads(capsys.readouterr().out)["predictions"][0]["top"])
    assert outputs[0] == outputs[1]
    assert main(["predict", str(image), "-k", str(folder), "--ema"]) == 2
    assert "one set of weights" in capsys.readouterr().err


def test_timm_save_for_hf_round_trip(folder, tmp_path, capsys):
    model = timm.create_model(f"local-dir:{folder}").eval()
    timm.models.save_for_hf(model, tmp_path / "again", safe_serialization=True)
    again = timm.create_model(f"local-dir:{tmp_path / 'again'}").eval()
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
    assert again.pretrained_cfg["label_names"] == model.pretrained_cfg["label_names"]
    top1 = []
    for path in (folder, tmp_path / "again"):  # timm's folder has no recipe: its data are named
        assert main(["eval", str(path), "--data", "digits", "--json", "--device", "cpu", "--workers", "0"]) == 0
        top1.append(json.loads(capsys.readouterr().out)["top1"])
    assert top1[0] == top1[1]
    assert main(["eval", str(tmp_path / "again"), "--device", "cpu"]) == 2
    assert "give --data" in capsys.readouterr().err


def test_export_choices_and_errors(run, tmp_path, capsys):
    plain = export_run(run, tmp_path / "plain", ema=False)
    assert plain["weights"] == "model"
    best = load_checkpoint_file(run / "best.pth")
    weights = load_file(tmp_path / "plain" / "model.safetensors")
    assert all(torch.equal(weights[k], v) for k, v in best["model"].items())
    with pytest.raises(ValueError, match="not empty"):
        export_run(run, tmp_path / "plain")
    torch.save(best["model"], tmp_path / "weights.pth")
    with pytest.raises(CheckpointError, match="crossformer convert"):
        export_run(tmp_path / "weights.pth", tmp_path / "other")
    assert main(["export", "crossformer_micro", "--format", "hf", "-o", str(tmp_path / "x")]) == 2
    assert "not a model name" in capsys.readouterr().err


def test_segmentation_run_exported_and_predicted_from_the_folder(tmp_path, capsys):
    assert main(["segment", "train", "--name", "seg", *tiny(tmp_path, *SEGMENT[:-2], "train.iterations=2")]) == 0
    capsys.readouterr()
    run, folder = tmp_path / "runs" / "seg", tmp_path / "seg-hf"
    assert main(["export", str(run), "--format", "hf", "-o", str(folder)]) == 0
    assert "crossformer segment predict IMAGES -k" in capsys.readouterr().out
    config = json.loads((folder / "config.json").read_text())
    assert config["task"] == "segmentation" and config["build_config"]["arch"] == config["architecture"].split("/")[1]
    assert "single scale" in config["test_protocol"] and config["crossformer_vision"]["recipe"]["task"] == "segmentation"
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (70, 90, 3), np.uint8)).save(image)
    results = []
    for source, out in ((run, "a"), (folder, "b")):
        assert main(["segment", "predict", str(image), "-k", str(source), "-o", str(tmp_path / out), "--json",
                     "--device", "cpu"]) == 0
        results.append(json.loads(capsys.readouterr().out)["predictions"][0]["classes"])
    assert results[0] == results[1]
    assert (tmp_path / "a" / "photo.png").read_bytes() == (tmp_path / "b" / "photo.png").read_bytes()
    scores = []
    for source in (run, folder):  # the folder's recipe names the run's validation data
        assert main(["segment", "eval", str(source), "--json", "--device", "cpu"]) == 0
        result = json.loads(capsys.readouterr().out)
        scores.append((result["images"], result["mIoU"], result["pixel_accuracy"]))
    assert scores[0] == scores[1] and scores[0][0] == 4
    with pytest.raises(RuntimeError, match="Unknown model"):  # no timm entry point for segmenters
        timm.create_model(f"local-dir:{folder}")
    assert main(["predict", str(image), "-k", str(folder)]) == 2
    assert "crossformer segment eval|predict" in capsys.readouterr().err
    assert main(["detect", "predict", str(image), "-k", str(folder)]) == 2
    assert "not a detection model" in capsys.readouterr().err


def test_detection_run_exported_and_predicted_from_the_folder(tmp_path, capsys):
    assert main(["detect", "train", "--name", "det", *tiny(tmp_path, *DETECT, "train.epochs=1")]) == 0
    capsys.readouterr()
    run, folder = tmp_path / "runs" / "det", tmp_path / "det-hf"
    assert main(["export", str(run), "--format", "hf", "-o", str(folder)]) == 0
    assert "crossformer detect predict IMAGES -k" in capsys.readouterr().out
    config = json.loads((folder / "config.json").read_text())
    assert config["task"] == "detection" and config["architecture"] == "crossformer_vision/maskrcnn"
    assert config["class_names"] == ["circle", "square", "triangle", "cross"] and config["num_classes"] == 4
    assert "pipeline_tag: object-detection" in (folder / "README.md").read_text()
    best = load_checkpoint_file(run / "best.pth")
    weights = load_file(folder / "model.safetensors")
    assert weights.keys() == best["model"].keys() and all(torch.equal(weights[k], v) for k, v in best["model"].items())
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (64, 96, 3), np.uint8)).save(image)
    results = []
    for source, out in ((run, "a"), (folder, "b")):
        assert main(["detect", "predict", str(image), "-k", str(source), "-o", str(tmp_path / out), "--score-threshold",
                     "0.0", "--json", "--device", "cpu"]) == 0
        results.append(json.loads(capsys.readouterr().out)["predictions"][0]["detections"])
    assert results[0] == results[1]
    assert main(["detect", "predict", str(image), "-k", str(folder), "--config", "detection_demo"]) == 2
    assert "leave out --config" in capsys.readouterr().err
    assert main(["segment", "predict", str(image), "-k", str(folder)]) == 2
    assert "not a segmentation model: use `crossformer detect eval|predict`" in capsys.readouterr().err


def test_a_folder_with_only_a_pickle_is_refused_in_one_line(folder, tmp_path, capsys):
    """A folder whose weights exist only as pytorch_model.bin: one line with the way out; named explicitly, it loads
    through the restricted reader and predicts what the safetensors folder predicts."""
    model = timm.create_model(f"local-dir:{folder}").eval()
    pickled = tmp_path / "pickled"
    timm.models.save_for_hf(model, pickled)  # timm's default: pytorch_model.bin only
    assert sorted(p.name for p in pickled.iterdir()) == ["config.json", "pytorch_model.bin"]
    image = tmp_path / "digit.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (32, 32), np.uint8)).save(image)
    assert main(["predict", str(image), "-k", str(pickled), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "only as a pickle" in err and "pytorch_model.bin" in err
    outputs = []
    for source in (folder, pickled / "pytorch_model.bin"):
        assert main(["predict", str(image), "-k", str(source), "--json", "--device", "cpu"]) == 0
        outputs.append(json.loads(capsys.readouterr().out)["predictions"][0]["top"])
    assert outputs[0] == outputs[1]
