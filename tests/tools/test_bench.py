"""``crossformer bench``, the benchmark library and the scripts in benchmarks/, on tiny models (no timed asserts)."""
import copy
import importlib.util
import json
import math
import os
import tempfile
from pathlib import Path

import pytest
import torch
from torch import nn

import crossformer_vision as cv
from crossformer_vision import CrossFormer, count_macs
from crossformer_vision.cli import main
from crossformer_vision.models.crossformer import SMALL_VARIANTS as NAMED_CONFIGS
from crossformer_vision.runtime import RuntimeOptions, onednn
from crossformer_vision.tools.bench import BenchOptions, format_table, record_matmuls, replay_matmuls, run_benchmark
from crossformer_vision.tools.bench import _MatmulRecorder

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"
# one thread: timings stay sane while other work shares the two cores
QUICK = ["--img-size", "32", "-b", "2", "--threads", "1", "--warmup", "1", "--reps", "2", "--min-rep-time", "0",
         "--roofline-size", "128"]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_script_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _numbers(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _numbers(v)
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield tree


def _check_row(row, memory: bool):
    assert "error" not in row, row
    assert all(math.isfinite(v) and v >= 0 for v in _numbers(row))
    for key in ("infer_img_s", "train_img_s", "latency_ms"):
        stats = row[key]
        assert stats["n"] == 2 and 0 < stats["min"] <= stats["median"] <= stats["max"]
    assert row["params"] > 0 and row["gmacs"] > 0
    for key in ("infer_peak_frac", "train_peak_frac", "infer_gflops"):
        assert 0 < row[key] < (2 if key.endswith("frac") else math.inf)
    replay = row["replay"]
    assert replay["ops"] == sum(replay["counts"].values()) > 0 and replay["overhead"] >= 0.5
    assert 0 < replay["peak_frac"] < 2
    assert ("mem_infer_mib" in row) == memory
    if memory:
        assert 0 < row["mem_infer_mib"] <= row["mem_train_mib"] and row["mem_kind"] == "cpu_peak_rss_growth"


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    return CrossFormer(**NAMED_CONFIGS["crossformer_micro"]).eval()


def _call_counts(model, x, types):
    counts = dict.fromkeys(types, 0)
    hooks = [m.register_forward_hook(lambda mod, i, o, t=t: counts.__setitem__(t, counts[t] + 1))
             for t in types for m in model.modules() if type(m) is t]
    with torch.inference_mode():
        ops = record_matmuls(model, x)
    for h in hooks:
        h.remove()
    return ops, counts


def test_replay_records_every_linear_conv_and_attention(micro):
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        micro(x)  # fills the attention-bias cache: the recorded forward is the steady state
    ops, calls = _call_counts(micro, x, (nn.Linear, nn.Conv2d))
    kinds = [op.kind for op in ops]
    # qkv, proj, fc1, fc2 per block + the head. Where this build has oneDNN's kernels, qkv and proj always
    # go through them in inference; the MLP does in cache-sized pieces (here: 2 x 8 x 8 = 128 tokens, so
    # pieces of 64 tokens cut stage 1 only)
    depths = NAMED_CONFIGS["crossformer_micro"]["depths"]
    assert kinds.count("linear") == 4 * sum(depths) + 1
    if onednn.available():
        assert sum("_linear_pointwise" in op.name for op in ops) == 2 * sum(depths)
        try:
            pieces, _ = _call_counts(cv.optimize(micro, cpu_pieces=64), x, (nn.Linear,))
        finally:
            cv.optimize(micro)
        # stage 1, per image: one attention piece (qkv, proj) and one MLP piece (fc1, fc2); later stages whole
        expected = 2 * 4 * depths[0] + 2 * sum(depths[1:])
        assert sum("_linear_pointwise" in op.name for op in pieces) == expected
    assert kinds.count("conv") == calls[nn.Conv2d] == 10
    # on the CPU our attention is explicit: q @ k^T and attn @ v, two matmuls of activations per block
    assert kinds.count("attention") == 2 * sum(NAMED_CONFIGS["crossformer_micro"]["depths"])
    conv = next(op.describe() for op in ops if op.kind == "conv")
    assert conv["args"][0]["shape"] == [2, 3, 32, 32] and conv["args"][3] == [4, 4]  # input, ..., stride
    # the matmuls are the model's MACs (count_macs also counts the norms, so a little more)
    assert 0.9 < sum(op.macs() for op in ops) / 2 / count_macs(micro, (3, 32, 32)) <= 1.0
    times = replay_matmuls(ops, warmup=1, reps=2)
    assert len(times) == 2 and all(t > 0 for t in times)


def test_replay_sees_the_decomposed_cpu_ops_under_no_grad(micro):
    micro = cv.optimize(copy.deepcopy(micro), sdpa_on_cpu=True)  # SDPA's CPU kernel, as on GPUs (the fixture is shared)
    recorder = _MatmulRecorder({p.data_ptr(): p for p in micro.parameters()})
    with torch.no_grad(), recorder:
        micro(torch.randn(1, 3, 32, 32))
    names = {op.name for op in recorder.ops}
    assert {op.kind for op in recorder.ops} == {"linear", "conv", "attention"}
    if torch.backends.mkldnn.is_available():
        assert any("_scaled_dot_product_flash_attention_for_cpu" in n for n in names), names
    assert all(op.macs() > 0 for op in recorder.ops)


def test_library_run_in_process_with_a_timm_convnet():
    opts = BenchOptions(batch_size=2, img_size=32, threads=1, warmup=1, reps=2, min_rep_time=0, memory=False,
                        roofline_size=128, reuse_memory=True)  # as `crossformer train` runs (pytest's process does)
    result = run_benchmark(["crossformer_micro", "resnet10t"], opts)
    assert result["roofline"]["gflops"] > 0 and result["machine"]["threads"] == 1
    for row in result["rows"]:
        _check_row(row, memory=False)
    assert result["rows"][0]["source"] == "crossformer" and result["rows"][1]["source"] == "timm"
    assert result["rows"][1]["replay"]["counts"]["conv"] > 10  # a ResNet: convolutions, one linear head
    if onednn.available():  # the kernel our CPU inference uses is timed beside torch.mm
        assert result["roofline"]["onednn_gflops"] > 0
        assert all(0 < row["infer_onednn_frac"] < 2 for row in result["rows"])
    table = format_table(result)
    assert table.count("\n| ") == 3 and "| resnet10t |" in table
    assert result["options"]["reuse_memory"] and "float32, freed memory reused;" in table


def test_reuse_memory_flag_reaches_the_options():
    import argparse

    from crossformer_vision.tools.bench import add_arguments, options_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert options_from_args(parser.parse_args(["--reuse-memory"])).reuse_memory is True
    assert options_from_args(parser.parse_args([])).reuse_memory is False


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    argv = ["bench", "crossformer_micro", "test_vit", *QUICK, "--json", str(out / "b.json"), "--plot", str(out / "b.png")]
    return main(argv), out


def test_cli_writes_table_json_and_png(cli_run, capsys):
    status, out = cli_run
    assert status == 0
    result = json.loads((out / "b.json").read_text())
    assert set(result) == {"machine", "options", "roofline", "rows"}
    assert result["machine"]["torch"] == torch.__version__ and result["machine"]["device_name"]
    assert result["machine"]["isa"] and result["machine"]["aten_capability"] == torch.backends.cpu.get_cpu_capability()
    assert [r["model"] for r in result["rows"]] == ["crossformer_micro", "test_vit"]
    for row in result["rows"]:
        _check_row(row, memory=True)
    vit = result["rows"][1]["replay"]
    assert vit["counts"]["attention"] > 0 and vit["counts"]["conv"] == 1  # patch embedding
    assert (out / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_model_name_exits_2_with_close_matches(capsys):
    assert main(["bench", "crossformer_smal", "--no-memory"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "did you mean crossformer_small" in err


def test_profile_script_groups_ops(capsys, tmp_path):
    profile = _script("profile_model")
    assert profile.category("aten::addmm") == "linear" and profile.category("aten::bmm") == "attention"
    assert profile.category("aten::native_layer_norm") == "layernorm" and profile.category("aten::clone") == "copies"
    assert profile.main(["crossformer_micro", "--img-size", "32", "-b", "2", "--iters", "1", "--warmup", "1",
                         "--threads", "1", "--json", str(tmp_path / "p.json")]) == 0
    share = json.loads((tmp_path / "p.json").read_text())["share"]
    assert abs(sum(share.values()) - 1) < 1e-6 and share["linear"] > 0 and share["conv"] > 0
    assert share["fused"] == 0
    assert "| attention |" in capsys.readouterr().out


def test_profile_script_compiled(tmp_path, monkeypatch):
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "enable_kernel_profile", False)  # the script turns it on; put back
    profile = _script("profile_model")
    assert profile.category("graph_0_cpp_fused_add_native_layer_norm_3") == "fused"
    torch._dynamo.reset()
    assert profile.main(["crossformer_micro", "--img-size", "64", "-b", "2", "--iters", "1", "--warmup", "1",
                         "--threads", "1", "--compile", "--json", str(tmp_path / "p.json")]) == 0
    torch._dynamo.reset()
    share = json.loads((tmp_path / "p.json").read_text())["share"]
    assert share["fused"] > 0 and share["linear"] > 0


def test_scaling_script(tmp_path, capsys):
    scaling = _script("scaling")
    assert scaling.main(["--models", "vit_small_patch16_224", "--sizes", "32", "--threads", "1", "--warmup", "0",
                         "--reps", "1", "--json", str(tmp_path / "s.json"), "--plot", str(tmp_path / "s.png")]) == 0
    row = json.loads((tmp_path / "s.json").read_text())["rows"][0]
    assert row["pixels"] == 32 * 32 and row["time_ms"] > 0 and row["memory_mib"] > 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_scaling_script_times_training_and_reports_growth_per_pixel(tmp_path, capsys):
    scaling = _script("scaling")
    assert scaling.main(["--models", "crossformer_micro", "--sizes", "32", "64", "--threads", "1", "--warmup", "0",
                         "--reps", "1", "--train", "--json", str(tmp_path / "s.json"), "--plot", str(tmp_path / "s.png")]) == 0
    result = json.loads((tmp_path / "s.json").read_text())
    assert [r["size"] for r in result["rows"]] == [32, 64]
    assert all(r["train_ms"] > 0 and r["train_memory_mib"] > 0 for r in result["rows"])
    growth = scaling.per_pixel_growth(result, "train_ms")
    assert growth[("crossformer_micro", 32)] == 1.0
    small, large = result["rows"]
    assert growth[("crossformer_micro", 64)] == pytest.approx((large["train_ms"] / large["pixels"])
                                                             / (small["train_ms"] / small["pixels"]))
    out = capsys.readouterr().out
    assert "train step (ms)" in out and "| crossformer_micro | 64 |" in out


def test_grad_checkpoint_script_runs_both_settings_in_fresh_processes(tmp_path, capsys):
    script = _script("grad_checkpoint_memory")
    assert script.main(["--model", "crossformer_micro", "-b", "2", "--img-size", "32", "--threads", "1", "--warmup", "0",
                        "--reps", "1", "--json", str(tmp_path / "g.json")]) == 0
    result = json.loads((tmp_path / "g.json").read_text())
    assert result["without"]["mem_train_mib"] > 0 and result["with"]["mem_train_mib"] > 0
    assert result["with"]["model"] == "crossformer_micro" and "reduction:" in capsys.readouterr().out


def test_matmul_of_two_activations_counts_as_attention():
    class Explicit(nn.Module):  # attention written as matmuls, like timm's Swin
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(8, 24)
            self.w = nn.Parameter(torch.randn(8, 8))

        def forward(self, x):
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            return ((q @ k.transpose(-2, -1)).softmax(-1) @ v) @ self.w

    ops = record_matmuls(Explicit(), torch.randn(2, 5, 8))
    assert [op.kind for op in ops] == ["linear", "attention", "attention", "linear"]
    assert [op.macs() for op in ops] == [2 * 5 * 8 * 24, 2 * 5 * 8 * 5, 2 * 5 * 5 * 8, 2 * 5 * 8 * 8]


def test_onnx_speed_script(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    script = _script("onnx_speed")
    assert script.main(["crossformer_micro", "-b", "2", "--sizes", "64", "80x96", "--threads", "1", "--warmup", "0",
                        "--reps", "1", "--json", str(tmp_path / "o.json")]) == 0
    rows = json.loads((tmp_path / "o.json").read_text())
    assert [(r["height"], r["width"]) for r in rows] == [(64, 64), (80, 96)]
    assert all(r["torch_eager_img_s"] > 0 and r["onnxruntime_img_s"] > 0 and r["max_abs_diff"] < 1e-4 for r in rows)
    assert "| crossformer_micro | 2 | 80x96 |" in capsys.readouterr().out


def test_straightforward_profile_switches_off_the_speed_paths():
    model = CrossFormer(**NAMED_CONFIGS["crossformer_micro"])
    _script("profile_model").straightforward(model)
    assert all(b.runtime.cpu_pieces == 0 for b in model.modules() if isinstance(b, cv.CrossFormerBlock))
    assert all(a.runtime.sdpa_on_cpu for a in model.modules() if isinstance(a, cv.LSDAttention))
    assert all(not m.runtime.onednn for m in model.modules() if isinstance(getattr(m, "runtime", None), RuntimeOptions))
    assert CrossFormer(**NAMED_CONFIGS["crossformer_micro"]).runtime.onednn, "per model now, not process-wide"


def test_linear_backends_script_covers_every_linear_layer(tmp_path, capsys):
    script = _script("linear_backends")
    assert script.main(["--model", "crossformer_micro", "-b", "1", "--img-size", "32", "--threads", "1",
                        "--warmup", "0", "--reps", "1", "--json", str(tmp_path / "l.json")]) == 0
    rows = json.loads((tmp_path / "l.json").read_text())
    depths = NAMED_CONFIGS["crossformer_micro"]["depths"]
    assert sum(r["calls"] for r in rows) == 4 * sum(depths) + 1  # qkv, proj, fc1, fc2 per block + the head
    assert (rows[0]["m"], rows[0]["k"]) != (2048, 2048) and rows[-1]["calls"] in (0, 1)
    assert all(r["blas_gflops"] > 0 and ("onednn_gflops" in r) == onednn.available() for r in rows)
    out = capsys.readouterr().out
    assert "| 2048x2048 -> 2048 |" in out and "all linear layers of one forward" in out


def test_onnx_int8_script(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from crossformer_vision import trainer

    summary = trainer.train("digits", ["train.epochs=1", "sched.warmup_epochs=0", f"log.output={tmp_path}",
                                       "log.name=digits", "log.progress=false"])
    capsys.readouterr()
    script = _script("onnx_int8")
    assert script.main(["--speed-model", "crossformer_micro", "--img-size", "64", "-b", "2", "--threads", "1",
                        "--warmup", "0", "--reps", "1", "--run", str(tmp_path / "digits"),
                        "--json", str(tmp_path / "q.json")]) == 0
    result = json.loads((tmp_path / "q.json").read_text())
    speed, accuracy = result["speed"], result["accuracy"]
    assert speed["ort_fp32_img_s"] > 0 and speed["ort_int8_img_s"] > 0 and speed["int8_mib"] < speed["fp32_mib"]
    assert speed["ort_fp32_max_abs_diff"] < 1e-4 < speed["ort_int8_max_abs_diff"]
    assert accuracy["images"] == 360 and accuracy["img_size"] == 32
    # the exported fp32 graph predicts what PyTorch predicts; the script's top-1 is the run's own test top-1
    assert accuracy["ort_fp32_agreement"] == 1.0
    assert round(100 * accuracy["torch_top1"], 2) == round(summary["test_top1"], 2)
    assert accuracy["ort_int8_agreement"] > 0.9
    out = capsys.readouterr().out
    assert "| onnxruntime int8 |" in out and "digits test split (360 images, 32x32)" in out


def test_vs_official_script_with_a_stand_in_checkout(tmp_path, capsys):
    """The official code is not part of the project: a stand-in checkout whose models/crossformer.py is our
    class (it takes the official constructor arguments) exercises the import, the configuration, the weight
    conversion, the timing and the table."""
    script = _script("vs_official")
    repo = tmp_path / "CrossFormer"
    (repo / "models").mkdir(parents=True)
    (repo / "models" / "crossformer.py").write_text("from crossformer_vision import CrossFormer  # stand-in\n")
    assert script.main(["crossformer_micro", "--official-repo", str(repo), "--img-size", "64", "-b", "2",
                        "--small-batch", "1", "--swin", "test_vit", "--threads", "1", "--warmup", "0", "--rounds", "2",
                        "--json", str(tmp_path / "v.json")]) == 0
    result = json.loads((tmp_path / "v.json").read_text())
    assert result["outputs"]["max_abs_diff"] < 1e-4 and result["machine"]["isa"]
    assert set(result["rates"]) == {"ours", "official", "swin"} and set(result["ratios"]) == {"official", "swin"}
    assert all(len(t) == 2 and min(t) > 0 for per in result["times"].values() for t in per.values())
    assert {(t["measurement"], t["against"]) for t in result["targets"]} == {
        ("infer", "swin"), ("infer", "official"), ("infer_small", "official"), ("latency", "official"),
        ("train", "swin"), ("train", "official")}
    out = capsys.readouterr().out
    assert "| official | inference b2 |" in out and "| swin | training step b2 |" in out and "cpu: " in out

    # an original-branch-like checkout: no use_acl, so no CrossFormer++
    (repo / "models" / "crossformer.py").write_text(
        "import torch\n\nclass CrossFormer(torch.nn.Module):\n"
        "    def __init__(self, img_size=224, patch_size=(4,), embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),\n"
        "                 group_size=7, num_classes=1000):\n        super().__init__()\n")
    assert script.main(["crossformerpp_small", "--official-repo", str(repo)]) == 2
    assert "check out the main branch" in capsys.readouterr().err
    assert script.main(["--official-repo", str(tmp_path / "nowhere")]) == 2
    assert "must be a checkout of https://github.com/cheerss/CrossFormer" in capsys.readouterr().err


def test_interleaved_rounds_rotate_and_ratios_are_paired():
    script = _script("vs_official")
    order = []
    calls = {n: {"infer": (lambda n=n: order.append(n)), "latency": (lambda n=n: order.append(n))} for n in ("ours", "a", "b")}
    times = script.interleaved(calls, warmup=1, rounds=3)
    assert order[:6] == ["ours", "a", "b"] * 2 and order[6:9] == ["a", "b", "ours"] and order[12:15] == ["b", "ours", "a"]
    assert all(len(t) == 3 for per in times.values() for t in per.values())
    # a slow round slows every model: paired ratios stay 2x, unpaired medians would not see it
    times = {"ours": {"infer": [1.0, 5.0, 1.0], "latency": [0.1, 0.5, 0.1]},
             "a": {"infer": [2.0, 10.0, 2.0], "latency": [0.2, 1.0, 0.2]}}
    result = script.paired_ratios(times, {"infer": 4, "latency": 1})
    assert result["ratios"]["a"] == {"infer": 2.0, "latency": 0.5}
    assert result["rates"]["ours"]["infer"] == 4.0 and result["rates"]["a"]["latency"] == 200.0
    rows = script.targets_table({"official": {"infer": 1.6, "infer_small": 1.3, "latency": 0.7, "train": 1.2}})
    assert [(r["measurement"], r["met"]) for r in rows] == [("infer", True), ("infer_small", False), ("latency", True),
                                                            ("train", False)]


def test_an_isa_limit_gets_its_own_compile_cache(monkeypatch):
    from crossformer_vision.tools import bench

    for name in bench.ISA_LIMIT_VARIABLES + ("TORCHINDUCTOR_CACHE_DIR",):
        monkeypatch.delenv(name, raising=False)
    assert bench.isa_limit_cache_env() == {}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    folder = bench.isa_limit_cache_env()["TORCHINDUCTOR_CACHE_DIR"]
    assert folder.endswith("_isa_avx2-avx2") and os.path.dirname(folder) == tempfile.gettempdir()
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    assert bench.isa_limit_cache_env()["TORCHINDUCTOR_CACHE_DIR"] != folder  # another limit, another cache
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # torch sets its default once it used it
    assert bench.isa_limit_cache_env()["TORCHINDUCTOR_CACHE_DIR"] != default_cache_dir()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere")
    assert bench.isa_limit_cache_env() == {}  # the user's choice stands


def test_cpu_facts_name_the_isa_its_extensions_limits_and_libraries(monkeypatch):
    from crossformer_vision.tools import bench

    for name in bench.ISA_LIMIT_VARIABLES:  # the suite may itself run under a cap
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(bench, "_cpuinfo", lambda: {"model name": "Some EPYC", "flags": "fpu sse avx avx2 fma"})
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    facts = bench.cpu_facts()
    assert facts["cpu"] == "Some EPYC" and facts["isa"] == "AVX2" and facts["isa_extensions"] == []
    assert facts["isa_limits"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    if torch.backends.mkldnn.is_available():
        assert facts["onednn"] and facts["onednn"][0].isdigit()
    monkeypatch.setattr(bench, "_cpuinfo", lambda: {"model name": "Some Xeon",
                                                    "flags": "avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16"})
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    facts = bench.cpu_facts()
    assert facts["isa"] == "AVX-512" and facts["isa_extensions"] == ["AVX512-VNNI", "AVX512-BF16", "AMX"]
    line = bench.describe_cpu(facts)
    assert line.startswith("Some Xeon, AVX-512 (+AVX512-VNNI, AVX512-BF16, AMX), ATen ") and "limited" not in line
    monkeypatch.setattr(bench, "_cpuinfo", lambda: {})  # no /proc/cpuinfo: what ATen dispatches to
    assert bench.cpu_facts()["isa"] == torch.backends.cpu.get_cpu_capability()


def test_gpu_check_rehearses_on_the_cpu(tmp_path, capsys):
    """benchmarks/gpu_check.sh runs this script on a lent GPU; here it runs with tiny models on the CPU: the
    correctness checks compare the device with the CPU, the speed table and the files come out."""
    script = _script("gpu_check")
    assert script.main(["--out", str(tmp_path), "--device", "cpu", "--tiny", "--no-compile"]) == 0
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert set(result["checks"]) == {"classifier", "dense_backbone", "detector_step"}
    for check in result["checks"].values():
        assert check["fp32"]["max_rel_diff"] == 0.0 and check["fp32"]["ok"]  # the same device: the same numbers
        assert 0 < check["bf16"]["max_rel_diff"] < script.BF16_TOL and check["bf16"]["cosine"] > 0.99
    assert [r["model"] for r in result["rows"]] == list(script.TINY_MODELS)
    assert all(r["infer_img_s"]["median"] > 0 and r["train_img_s"]["median"] > 0 and r["infer_peak_frac"] > 0
               and r["compiled"] is False for r in result["rows"])
    assert (tmp_path / "gpu_check.png").stat().st_size > 10_000
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| detector_step |" in md and "| crossformer_micro |" in md and md in capsys.readouterr().out
    if not torch.cuda.is_available():
        assert script.main(["--out", str(tmp_path)]) == 2
        assert "no CUDA device here" in capsys.readouterr().err


def test_gpu_check_tolerances_fail_real_differences():
    script = _script("gpu_check")
    ref = [torch.linspace(-1, 1, 100)]
    assert script.compare(ref, [ref[0] + 5e-5], bf16=False)["ok"]
    assert not script.compare(ref, [ref[0] + 2e-4], bf16=False)["ok"]
    assert script.compare(ref, [ref[0] * 1.01], bf16=True)["ok"]
    assert not script.compare(ref, [ref[0] + 0.1], bf16=True)["ok"]  # 10% off
