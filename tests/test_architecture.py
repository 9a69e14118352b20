"""The package's layers (docs/architecture.md): each folder imports only from folders below it, no private name
crosses a module, no import cycles, and no code of the package goes through the one-release re-export modules."""
import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

import crossformer_vision as cv

PACKAGE = Path(cv.__file__).parent

#: Folder -> layer; a module may import from its own folder and from any lower layer.
LAYERS = {"utils": 0, "runtime": 1, "models": 2, "dense": 3, "data": 4, "metrics": 4, "tools": 4, "train": 5, "cli": 6}

#: Former module paths kept as thin re-exports for one release (nothing in the package may import them).
SHIMS = {"layers", "model", "variants", "weights", "onednn", "_tracing", "bench", "flops", "export", "engine", "trainer",
         "recipes", "dense.datasets", "dense.metrics", "dense.synthetic", "dense.visualize", "dense.trainer",
         "dense.recipes"}


def _modules() -> Dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(p for p in parts if p != "__init__")
        out[name] = path
    return out


def _resolve(module: str, node: ast.ImportFrom) -> List[str]:
    """Package-relative names (``"train.loop"``) an import refers to, or [] for other packages."""
    if node.level == 0:
        if not (node.module or "").startswith("crossformer_vision"):
            return []
        base = node.module.split(".")[1:]
    else:
        is_package = _modules()[module].name == "__init__.py"
        here = module.split(".") if module else []
        base = here if is_package else here[:-1]
        base = base[: len(base) - (node.level - 1)] + (node.module.split(".") if node.module else [])
    known = _modules()
    names = []
    for alias in node.names:  # "from . import dense" imports a module, "from .x import y" a name of x
        candidate = ".".join(base + [alias.name])
        names.append(candidate if candidate in known else ".".join(base))
    return names


def _imports(module: str) -> List[Tuple[str, str, bool]]:
    """``(target module, imported name, at module level)`` of every package import in ``module``."""
    tree = ast.parse(_modules()[module].read_text())
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for target, alias in zip(_resolve(module, node), node.names):
                out.append((target, alias.name, id(node) in top))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("crossformer_vision."):
                    out.append((alias.name.split(".", 1)[1], "", id(node) in top))
    return out


def _layer(module: str) -> int:
    return LAYERS.get(module.split(".")[0], 7)  # the package's __init__ and the shims sit on top


def test_every_folder_has_a_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(LAYERS), folders ^ set(LAYERS)


def test_folders_import_only_from_below():
    wrong = []
    for module in _modules():
        if module in SHIMS or module == "" or module.split(".")[0] not in LAYERS:
            continue
        own = module.split(".")[0]
        for target, name, _ in _imports(module):
            other = target.split(".")[0]
            if other == own or (target == "" and name == "__version__"):
                continue
            if target in SHIMS or target == "" or _layer(target) >= _layer(module):
                if module == "dense" and target.split(".")[0] in ("data", "metrics", "train"):
                    continue  # dense.__getattr__: the one-release deprecated names, imported lazily on use
                wrong.append(f"{module} -> {target}")
    assert not wrong, wrong


def test_no_private_name_crosses_a_module():
    wrong = [f"{module} imports {target}.{name}" for module in _modules() for target, name, _ in _imports(module)
             if name.startswith("_") and target != module and not name.startswith("__")]
    assert not wrong, wrong


def test_no_import_cycles():
    graph: Dict[str, Set[str]] = {m: {t for t, _, top in _imports(m) if top and t != m} for m in _modules()}
    state: Dict[str, int] = {}
    cycles = []

    def visit(node: str, path: List[str]) -> None:
        state[node] = 1
        for target in graph.get(node, ()):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target] if target in path else [node, target])
            elif state.get(target) is None:
                visit(target, path + [target])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])
    # a package importing its own submodules in __init__ is not a cycle of behaviour; anything else is
    real = [c for c in cycles if not all(a.startswith(b) or b.startswith(a) for a, b in zip(c, c[1:]))]
    assert not real, real


def test_shims_re_export_the_same_objects():
    import warnings

    from crossformer_vision import data, dense, engine, metrics, recipes, train, trainer
    from crossformer_vision.dense import recipes as dense_recipes
    from crossformer_vision.dense import trainer as dense_trainer
    from crossformer_vision.train import inference, loop
    from crossformer_vision.utils import files

    assert trainer.evaluate is inference.evaluate_classifier and trainer.predict is inference.predict_classes
    assert trainer.NonFiniteLossError is loop.NonFiniteLossError and engine.atomic_save is files.atomic_save
    assert dense_trainer.train is train.train and dense_trainer.evaluate is inference.evaluate_dense
    assert recipes.resolve_config("digits")["data"]["dataset"] == "digits"
    assert dense_recipes.resolve_dense_config("detection")["task"] == "detection"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert dense.CocoInstances is data.detection.CocoInstances and dense.CocoEvaluator is metrics.CocoEvaluator
    assert any(issubclass(w.category, DeprecationWarning) and "moved to crossformer_vision.data" in str(w.message)
               for w in caught)
