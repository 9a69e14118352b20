"""Which path a call takes (runtime/dispatch.py), the runtime options, and the package's layering."""
import ast
from pathlib import Path

import pytest
import timm
import torch

import crossformer_vision as cv
from crossformer_vision.models.crossformer import SMALL_VARIANTS
from crossformer_vision.runtime import EXPORT, INFERENCE, PIECES, REFERENCE, Plan, RuntimeOptions, choose, onednn
from crossformer_vision.runtime.kernels import opaque_attention_available

PACKAGE = Path(cv.__file__).parent


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    return cv.CrossFormer(**SMALL_VARIANTS["crossformer_micro"], num_classes=5).eval()


def _plans(model, x):
    """The plan of every block and attention layer during one forward of ``model``."""
    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.append(
        (type(m).__name__, choose(m.runtime, args[0], m.training, m.qkv if hasattr(m, "qkv") else m.attn.qkv,
                                  getattr(m, "fused_attn", True), getattr(m, "mlp", None)))))
        for m in model.modules() if isinstance(m, (cv.LSDAttention, cv.CrossFormerBlock))]
    model(x)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_rules(micro):
    small, large = torch.randn(1, 3, 32, 32), torch.randn(2, 3, 256, 256)  # stage 1: 64 tokens; 2 x 64 x 64
    block = micro.stages[0].blocks[0]
    options = RuntimeOptions()
    with torch.no_grad():
        # 2. training mode or autograd: the modules as written
        assert choose(options, torch.randn(1, 8, 8, 32), True, block.attn.qkv).path == REFERENCE
    plan = choose(options, torch.randn(1, 8, 8, 32), False, block.attn.qkv)
    # autograd on: F.linear keeps the backward, the bias is computed (its weights get gradients)
    assert plan == Plan(REFERENCE, "explicit", onednn=False, cached_bias=False, fused_mlp=False, gather=False)
    with torch.no_grad():
        # 4. inference of a few tokens: whole tensors, cached bias, oneDNN where it applies, explicit softmax on the CPU
        plan = choose(options, torch.randn(1, 8, 8, 32), False, block.attn.qkv, True, block.mlp)
        assert plan == Plan(INFERENCE, "explicit", onednn=onednn.available(), cached_bias=True, fused_mlp=False, gather=False)
        # 3. many tokens on the CPU: pieces, the MLP fused where oneDNN runs
        plan = choose(options, torch.randn(2, 64, 64, 32), False, block.attn.qkv, True, block.mlp)
        assert plan == Plan(PIECES, "explicit", onednn=onednn.available(), cached_bias=True, fused_mlp=onednn.available(),
                            gather=False)
        # the options switch each speed path off
        assert choose(RuntimeOptions(cpu_pieces=0), torch.randn(2, 64, 64, 32), False, block.attn.qkv).path == INFERENCE
        assert not choose(RuntimeOptions(onednn=False), torch.randn(1, 8, 8, 32), False, block.attn.qkv).onednn
        assert not choose(RuntimeOptions(bias_cache=False), torch.randn(1, 8, 8, 32), False, block.attn.qkv).cached_bias
        assert choose(RuntimeOptions(sdpa_on_cpu=True), torch.randn(1, 8, 8, 32), False, block.attn.qkv).attention == "sdpa"
        assert choose(RuntimeOptions(sdpa_on_cpu=True), torch.randn(1, 8, 8, 32), False, block.attn.qkv, False).attention == "explicit"
        # other dtypes keep F.linear
        assert not choose(options, torch.randn(1, 8, 8, 32).double(), False, block.attn.qkv).onednn
        paths = {name: {p.path for n, p in _plans(micro, small) if n == name} for name in ("LSDAttention", "CrossFormerBlock")}
        assert paths == {"LSDAttention": {INFERENCE}, "CrossFormerBlock": {INFERENCE}}
        assert {p.path for n, p in _plans(micro, large) if n == "CrossFormerBlock"} == {PIECES, INFERENCE}
    # torch.jit.trace (fvcore's counter) records the modules as written
    with torch.no_grad():
        traced = []
        hook = block.register_forward_pre_hook(lambda m, a: traced.append(choose(m.runtime, a[0], m.training, m.attn.qkv)))
        torch.jit.trace(micro, small, check_trace=False)
        hook.remove()
    assert traced and all(p.path == REFERENCE for p in traced)


def test_fx_tracing_and_export_have_their_own_rules(micro, monkeypatch):
    from crossformer_vision.runtime import dispatch

    x = torch.randn(1, 8, 8, 32)
    qkv = micro.stages[0].blocks[0].attn.qkv
    with torch.no_grad():
        monkeypatch.setattr(dispatch, "is_fx_tracing", lambda: True)
        assert choose(RuntimeOptions(), x, False, qkv).path == REFERENCE
        monkeypatch.setattr(dispatch, "is_exporting", lambda: True)
        assert choose(RuntimeOptions(), x, False, qkv) == Plan(EXPORT, "explicit", onednn=False, cached_bias=False,
                                                                fused_mlp=False, gather=True)


@pytest.mark.skipif(not opaque_attention_available(), reason="torch < 2.4: no custom ops")
def test_compiled_inference_runs_the_opaque_attention(micro):
    torch._dynamo.reset()
    attn = micro.stages[0].blocks[0].attn
    with torch.no_grad():
        plan = torch.compile(lambda x: choose(RuntimeOptions(), x, False, attn.qkv), fullgraph=True, backend="eager")
        assert plan(torch.randn(1, 8, 8, 32)).attention == "opaque"
    torch._dynamo.reset()


def test_cpu_uses_the_explicit_path_unless_asked(monkeypatch, micro):
    import torch.nn.functional as F

    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = torch.randn(1, 3, 64, 64)
    try:
        with torch.no_grad():
            explicit = micro(x)
            assert not calls
            cv.optimize(micro, sdpa_on_cpu=True)
            fused = micro(x)
    finally:
        cv.optimize(micro)
    assert len(calls) == 5
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=0)


def test_optimize_is_the_one_call_that_sets_the_options():
    model = timm.create_model("crossformer_micro", num_classes=3)
    assert model.runtime == RuntimeOptions() == RuntimeOptions(onednn=True, cpu_pieces=2048, sdpa_on_cpu=False)
    holders = [m for m in model.modules() if hasattr(m, "runtime")]
    assert len({id(m.runtime) for m in holders}) == 1, "one instance shared by the whole model"
    assert cv.optimize(model, onednn=False, cpu_pieces=64) is model
    assert all(m.runtime == RuntimeOptions(onednn=False, cpu_pieces=64) for m in holders)
    cv.optimize(model)  # every call sets every option: back to the defaults
    assert all(m.runtime == RuntimeOptions() for m in holders)
    features = timm.create_model("crossformer_micro", features_only=True)
    cv.optimize(features, onednn=False, cpu_pieces=0, sdpa_on_cpu=True, bias_cache=False)
    plain = RuntimeOptions(onednn=False, cpu_pieces=0, sdpa_on_cpu=True, bias_cache=False)
    assert all(m.runtime == plain for m in features.modules() if hasattr(m, "runtime"))
    built = cv.CrossFormer(**SMALL_VARIANTS["crossformer_micro"], runtime=RuntimeOptions(cpu_pieces=0))
    assert built.stages[2].blocks[1].attn.runtime.cpu_pieces == 0
    with pytest.raises(TypeError, match="expects a model with CrossFormer modules, got Linear"):
        cv.optimize(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="cpu_pieces must be an int >= 0"):
        cv.optimize(model, cpu_pieces=-1)
    with pytest.raises(TypeError, match="onednn must be True or False"):
        RuntimeOptions(onednn="yes")
    with pytest.raises(TypeError, match="runtime must be a crossformer_vision.RuntimeOptions"):
        cv.CrossFormer(**SMALL_VARIANTS["crossformer_micro"], runtime={"onednn": False})


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            yield node.level, node.module or "", [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield 0, a.name, []


def test_layering_runtime_below_models_no_private_names_across_modules():
    """runtime never imports the model (it gets the modules as arguments); nothing in models/, runtime/ or tools/
    imports a private name from another module."""
    for folder in ("models", "runtime", "tools"):
        for path in (PACKAGE / folder).glob("*.py"):
            for level, module, names in _imports(path):
                if folder == "runtime":
                    assert "models" not in module.split(".") and not (level == 2 and module.startswith("models")), path
                    assert not (level == 2 and module == "" and "models" in names), path
                ours = level > 0 or module.startswith("crossformer_vision")
                assert not ours or not [n for n in names if n.startswith("_") and n != "__version__"], (path, names)
