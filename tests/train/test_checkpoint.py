"""Run folders and checkpoint files (train.checkpoint), with the lower layers they use: atomic files
(utils.files), RNG state in weights-only files, metric sums over ranks (utils.distributed), logs (train.report)."""
import random

import numpy as np
import pytest
import torch

from crossformer_vision.data.samplers import ShardSampler
from crossformer_vision.train.checkpoint import (RunDirGuard, capture_rng_state, create_run_dir, load_state_file,
                                                restore_rng_state, resume_rng, seed_everything)
from crossformer_vision.train.report import plot_history, write_csv
from crossformer_vision.utils.distributed import DistInfo, MetricSums, unwrap_model
from crossformer_vision.utils.files import atomic_save, atomic_write_bytes, atomic_write_text


def test_atomic_save_replaces_whole_files_or_nothing(tmp_path):
    path = tmp_path / "last.pth"
    atomic_save({"epoch": 1, "w": torch.ones(3)}, path)

    def crash(f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # e.g. killed while writing

    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, crash)
    assert torch.load(path, weights_only=True)["epoch"] == 1  # the previous file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]  # no temporary file left
    atomic_save({"epoch": 2}, path)
    assert torch.load(path, weights_only=True) == {"epoch": 2}
    atomic_write_text(tmp_path / "a.txt", "x\n")
    assert (tmp_path / "a.txt").read_text() == "x\n"


def test_load_state_file_refuses_truncated_and_pickled_code(tmp_path):
    path = tmp_path / "ckpt.pth"
    atomic_save({"w": torch.randn(100, 100)}, path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_state_file(path)
    torch.save({"fn": print}, path)
    with pytest.raises(ValueError, match="refusing to load .*could run arbitrary code"):
        load_state_file(path)
    with pytest.raises(FileNotFoundError):
        load_state_file(tmp_path / "missing.pth")


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    seed_everything(3)
    torch.rand(5), np.random.rand(5), random.random(), np.random.randn()  # noqa: B018 (advance; cache a gaussian)
    atomic_save({"rng": [capture_rng_state()]}, tmp_path / "s.pth")
    expected = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)], np.random.randn(3))
    seed_everything(99)
    restore_rng_state(torch.load(tmp_path / "s.pth", weights_only=True)["rng"][0])
    got = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)], np.random.randn(3))
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])
    assert expected[2] == got[2] and np.array_equal(expected[3], got[3])


def test_metric_sums_weight_by_count_and_shards_cover_every_sample_once():
    sums = MetricSums()
    sums.add("loss", torch.tensor(1.0), count=3)
    sums.add("loss", 3.0, count=1)
    sums.add("skipped", 2.0, mean=False)
    out = sums.reduce()
    assert out["loss"] == pytest.approx(1.5) and out["loss_count"] == 4 and out["skipped"] == 2
    shards = [list(ShardSampler(10, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(10)) and [len(s) for s in shards] == [4, 3, 3]


def test_run_dir_is_unique_and_removed_if_the_start_fails(tmp_path):
    first = create_run_dir(tmp_path, "run")
    second = create_run_dir(tmp_path, "run")
    assert (first.name, second.name) == ("run", "run-2")
    with pytest.raises(RuntimeError):
        with RunDirGuard(first, created=True):
            (first / "config.yaml").write_text("x")
            raise RuntimeError("failed before the first checkpoint")
    assert not first.exists()
    with pytest.raises(RuntimeError):
        with RunDirGuard(second, created=True) as guard:
            guard.keep()  # a checkpoint exists now
            raise RuntimeError("failed later")
    assert second.exists()


def test_csv_and_curves_are_written(tmp_path):
    history = [{"epoch": 1, "train_loss": 1.0, "val_top1": 50.0}, {"epoch": 2, "train_loss": 0.5, "val_top1": 75.0}]
    write_csv(tmp_path / "m.csv", history)
    assert (tmp_path / "m.csv").read_text() == "epoch,train_loss,val_top1\n1,1,50\n2,0.5,75\n"
    plot_history(tmp_path / "c.png", history, {"loss": ["train_loss"], "accuracy": ["val_top1", "absent"]})
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unwrap_model_finds_the_module_inside_compile_wrappers():
    model = torch.nn.Linear(2, 2)
    assert unwrap_model(torch.compile(model)) is model and unwrap_model(model) is model


def test_resume_rng_restores_this_rank_or_reseeds_for_a_new_process_count():
    one = DistInfo(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device("cpu"))
    torch.manual_seed(3)
    saved = capture_rng_state()
    expected = torch.rand(3)
    torch.manual_seed(99)
    assert resume_rng([saved], one, reseed=7) is None
    assert torch.equal(torch.rand(3), expected)
    note = resume_rng([saved, saved], one, reseed=7)  # the run had 2 processes, now 1
    assert "had 2 processes, now 1" in note
    assert torch.equal(torch.rand(3), torch.rand(3, generator=torch.Generator().manual_seed(7)))  # seed 7 + rank 0
