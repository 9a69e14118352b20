"""``crossformer eval`` and ``crossformer predict``, official checkpoints, and bad input through the command line."""
import json

import pytest
import torch
from PIL import Image

import crossformer_vision as cv
from crossformer_vision.cli import main
from crossformer_vision.trainer import train
from train_helpers import CLASSES, draw, fast_overrides, make_image_folder, run_cli


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished run (with EMA) on a small three-class ImageFolder dataset with a test split."""
    root = tmp_path_factory.mktemp("cli")
    data = make_image_folder(root / "data", {"train": 16, "val": 4, "test": 5})
    summary = train("folder", fast_overrides(root / "runs", data__path=str(data), train__ema=True,
                                             train__ema_decay=0.5) + ["log.name=shapes"])
    return {"dir": root / "runs" / "shapes", "data": data, "summary": summary, "root": root}


def test_eval_reports_the_runs_test_split_by_default(run, capsys):
    assert main(["eval", str(run["dir"]), "--json", "--workers", "0"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 15 and result["data"] == str(run["data"] / "test")
    assert result["top1"] == pytest.approx(run["summary"]["test_top1"]) and result["top5"] == 100.0
    assert result["loss"] == pytest.approx(run["summary"]["test_loss"], abs=1e-5)
    assert main(["eval", str(run["dir"] / "best.pth"), "--data", str(run["data"]), "--split", "val", "--ema",
                 "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"crossformer_micro on {run['data'] / 'val'} (12 images): top-1 ")


def test_predict_prints_top_k_with_class_names_and_skips_broken_files(run, capsys, tmp_path):
    files = [run["data"] / "test" / name / "test_000.png" for name in CLASSES]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG but nothing else")
    assert main(["predict", *map(str, files), str(broken), "--checkpoint", str(run["dir"]), "--topk", "2", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert [p["file"] for p in result["predictions"]] == [str(f) for f in files]
    for item, name in zip(result["predictions"], CLASSES):
        probs = [t["probability"] for t in item["top"]]
        assert len(probs) == 2 and probs[0] >= probs[1] and sum(probs) <= 1 + 1e-6
        assert item["top"][0]["class"] == name  # the shapes are easy: the run gets them right
    assert result["skipped"][0]["file"] == str(broken)
    assert "skipped 1 unreadable images" in captured.err and captured.err.count("\n") == 1
    assert main(["predict", str(run["data"] / "test" / "dot"), "-k", str(run["dir"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 * 4 and lines[0].endswith("test_000.png") and lines[1].strip().endswith("%  dot")


def _official_tiny(tmp_path):
    """A 1000-class CrossFormer-T saved in the official checkpoint layout, and the model it came from."""
    from conftest import to_official_layout

    model = cv.create_model("crossformer_tiny").eval()
    path = tmp_path / "crossformer-t.pth"
    torch.save({"model": to_official_layout(model, "crossformer_tiny")}, path)
    return model, path


def test_official_checkpoints_use_the_models_preprocessing_and_imagenet_names(tmp_path, capsys):
    import timm

    model, path = _official_tiny(tmp_path)
    root = tmp_path / "imagenet_val"
    rng = __import__("numpy").random.default_rng(0)
    files = []
    for synset, shape in (("n01440764", (300, 400)), ("n01443537", (260, 230))):
        (root / synset).mkdir(parents=True)
        files.append(root / synset / "a.jpg")
        Image.fromarray(draw(0, shape, rng)).save(files[-1])
    assert main(["eval", str(path), "--model", "crossformer_tiny", "--data", str(root), "--json", "--workers", "0"]) == 0
    result = json.loads(capsys.readouterr().out)
    # the model's own preprocessing: resize to 224 / 0.875 = 256, centre crop 224, bicubic, ImageNet mean/std
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    batch = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
    with torch.no_grad():
        logits = model(batch)
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).item()
    assert result["images"] == 2 and result["loss"] == pytest.approx(expected, rel=1e-4)
    assert main(["predict", str(files[0]), "--checkpoint", str(path), "--model", "crossformer_tiny", "--json",
                 "--topk", "3"]) == 0
    top = json.loads(capsys.readouterr().out)["predictions"][0]["top"]
    names = timm.data.ImageNetInfo()
    best = int(logits[0].argmax())
    assert top[0]["index"] == best and top[0]["class"] == names.label_names()[best]
    assert top[0]["label"] == names.label_descriptions()[best]


def _assert_one_line_error(capsys, code, *needles):
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.count("\n") == 0 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_bad_training_input_is_one_line_exit_2_and_leaves_no_run_folder(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "torch.utils.tensorboard", None)  # as if not installed
    out = tmp_path / "runs"
    empty = tmp_path / "empty"
    empty.mkdir()
    flat = tmp_path / "flat"
    (flat / "train").mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(flat / "train" / "loose.png")
    broken = make_image_folder(tmp_path / "broken", {"train": 1, "val": 1})
    for f in broken.rglob("*.png"):
        f.write_bytes(b"corrupt")
    truncated = tmp_path / "truncated" / "last.pth"
    truncated.parent.mkdir()
    truncated.write_bytes((run["dir"] / "last.pth").read_bytes()[:20000])
    cases = [
        (["--data", str(tmp_path / "missing")], ["dataset folder not found", "expected", "/train"]),
        (["--data", str(empty)], ["no train split", "it is empty"]),
        (["--data", str(flat)], ["1 images but no class subfolders: expected one folder per class"]),
        (["--data", str(broken)], ["no readable images in", "3 files could not be read"]),
        (["--data", str(run["data"]), "--model", "crossformer_smal"], ["unknown model 'crossformer_smal'; did you mean crossformer_small"]),
        (["--config", "crossformer_smal"], ["recipe 'crossformer_smal' not found; did you mean crossformer_small"]),
        (["--data", str(run["data"]), "--batch-size", "16", "--model", "crossformer_tiny", "--pretrained",
          str(run["dir"] / "best.pth")],
         ["does not fit CrossFormer"]),
        (["--resume", str(truncated.parent)], ["could not read checkpoint", "truncated or corrupt"]),
        (["train.epochz=3"], ["unknown config key 'train.epochz'; did you mean train.epochs"]),
        (["--data", str(run["data"]), "--batch-size", "16", "log.tensorboard=true"], ["tensorboard is not installed"]),
    ]
    for args, needles in cases:
        code = main(["train", *args, f"log.output={out}", "log.progress=false"])
        _assert_one_line_error(capsys, code, "crossformer train: error:", *needles)
        assert not out.exists() or not any(out.iterdir()), (args, list(out.iterdir()))


def test_bad_checkpoints_and_images_for_eval_and_predict(run, tmp_path, capsys):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"definitely not a checkpoint" * 100)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes((run["dir"] / "best.pth").read_bytes()[:30000])
    plain = tmp_path / "plain.pth"  # weights only, no architecture recorded (like an official file)
    torch.save(torch.load(run["dir"] / "best.pth", weights_only=True)["model"], plain)
    cases = [
        (["eval", str(truncated)], ["could not read checkpoint", "truncated or corrupt"]),
        (["eval", str(garbage)], ["not a PyTorch or safetensors checkpoint", "garbage.pth"]),  # not "could run code"
        (["eval", str(tmp_path / "nothing.pth")], ["checkpoint not found"]),
        (["eval", str(plain)], ["does not record its architecture", "add --model NAME"]),
        (["eval", str(plain), "--model", "crossformer_tiny"], ["does not fit this model", "depths=[1, 1, 2, 1]"]),
        (["eval", str(run["dir"]), "--model", "crossformer_small"], ["is a crossformer_micro run, not crossformer_small"]),
        (["eval", str(run["dir"]), "--data", "digits"], ["digits dataset", "classes"]),
        (["predict", str(tmp_path / "none.png"), "-k", str(run["dir"])], ["no such image file or folder"]),
    ]
    for args, needles in cases:
        code = main(args)
        _assert_one_line_error(capsys, code, f"crossformer {args[0]}: error:", *needles)


def test_the_installed_command_reports_bad_input_without_a_traceback(tmp_path):
    proc = run_cli(["train", "--data", str(tmp_path / "nowhere"), f"log.output={tmp_path / 'runs'}"])
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("crossformer train: error: dataset folder not found")
    assert not (tmp_path / "runs").exists()
