import warnings
from pathlib import Path
from typing import Any, Dict

import pytest
import torch

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden"

torch.set_num_threads(2)
warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated.*")
warnings.filterwarnings("ignore", message=".*nodes obtained by tracing the model in eval mode.*")


def load_golden(name: str) -> Dict[str, Any]:
    """A golden file with its weights resolved (``weights_from`` minus ``drop_keys`` plus its own), float32."""
    data = torch.load(GOLDEN / f"{name}.pt", weights_only=True)
    if "weights_from" in data:
        base = load_golden(data["weights_from"])
        state_dict = {k: v for k, v in base["state_dict"].items() if k not in data["drop_keys"]}
        state_dict.update(data["state_dict"])
        data["state_dict"] = state_dict
    data["state_dict"] = {k: v.float() if v.is_floating_point() else v for k, v in data["state_dict"].items()}
    data["inputs"] = [x.float() for x in data["inputs"]]
    return data


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield



def official_keys(variant: str, branch: str = "main"):
    """``[(key, shape)]`` and buffer names of an official state dict (tests/data/official_state_dict_keys.json)."""
    import json

    with open(DATA / "official_state_dict_keys.json") as f:
        entry = json.load(f)[variant][branch]
    return [(k, tuple(s)) for k, s in entry["state_dict"]], set(entry["buffers"]), entry["params"]


def to_official_layout(model, variant: str, branch: str = "main") -> Dict[str, torch.Tensor]:
    """``model``'s weights under the official key names of ``variant`` (with v1's DPB index buffers)."""
    import crossformer_vision as cv

    ours = model.state_dict()
    keys, buffers, _ = official_keys(variant, branch)
    out = {}
    for key, shape in keys:
        if key in buffers:  # derived index buffers: any values of the right shape and kind
            out[key] = torch.zeros(shape, dtype=torch.long if key.endswith("index") else torch.float32)
            continue
        (new_key, value), = cv.convert_official_state_dict({key: torch.empty(shape)}).items()
        assert tuple(ours[new_key].shape) == shape, (key, new_key)
        out[key] = ours[new_key].clone()
    return out
