"""Run folders and training checkpoints: creation that leaves nothing behind on failure, safe reading, RNG state.

A run folder holds ``config.yaml`` (the resolved recipe, with a comment per ``--resume`` that changed fields),
``metrics.csv``, ``curves.png``, ``last.pth`` (everything needed to resume), ``best.pth`` (the weights at the
best validation metric) and ``summary.json``. Checkpoints hold tensors and plain data only, written atomically
(:mod:`crossformer_vision.utils.files`) and read with :func:`load_state_file` (no code runs).

* :func:`create_run_dir` and :class:`RunDirGuard`: a run that fails before its first checkpoint leaves no folder.
* :func:`capture_rng_state` / :func:`restore_rng_state` / :func:`resume_rng`: every generator of every process.
"""
import os
import random
import shutil
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from ..models.official import load_checkpoint_file
from ..utils.distributed import DistInfo, broadcast_object, is_main_process
from ..utils.files import PathLike, atomic_write_text

__all__ = ["RunDirGuard", "capture_rng_state", "check_state", "create_run_dir", "inference_path", "load_state_file",
           "read_run_checkpoint", "restore_rng_state", "resume_path", "resume_rng", "seed_everything", "stopped_note",
           "write_config"]

#: Entries only a run's ``last.pth`` has (what resuming needs beyond the weights).
STATE_KEYS = ("optimizer", "scheduler", "scaler", "num_updates", "history", "rng")
#: The command of each task, for "use `crossformer segment` for it".
_COMMANDS = {"classification": "crossformer train", "detection": "crossformer detect", "segmentation": "crossformer segment"}


def load_state_file(path: PathLike, fmt: Optional[str] = None, keys: Sequence[str] = ()) -> Dict[str, Any]:
    """Read a file written by :func:`atomic_save` safely (:func:`crossformer_vision.weights.load_checkpoint_file`:
    tensors and plain data only, no code runs), optionally checking what it is.

    Args:
        fmt: The ``format`` entry the file must have (e.g. ``"crossformer-vision/classification"``).
        keys: Entries the file must have.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable (truncated, corrupt, not a checkpoint, unsafe), another format, or entries missing;
            one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return check_state(load_checkpoint_file(path), path, fmt, keys)


def check_state(state: Any, path: PathLike, fmt: Optional[str] = None, keys: Sequence[str] = ()) -> Dict[str, Any]:
    """``state`` (read from ``path``) if it has the ``format`` entry ``fmt`` and every entry of ``keys``; else
    ValueError naming the file."""
    if fmt is not None and (not isinstance(state, dict) or state.get("format") != fmt):
        raise ValueError(f"{path} is not a crossformer training checkpoint of this kind (no '{fmt}' format entry)")
    missing = [key for key in keys if key not in state]
    if missing:
        raise ValueError(f"{path} is a crossformer checkpoint without {', '.join(missing)}: it is damaged, or was "
                         f"written by an incompatible version; use another checkpoint of the run (last.pth, best.pth)")
    return state


def create_run_dir(output: PathLike, name: str) -> Path:
    """Create ``output/name`` on rank 0 (``name-2``, ``name-3``... if taken) and return it on every rank.

    Raises:
        ValueError: on every rank, when the folder cannot be created (``output`` is a file, read-only, full...).
    """
    path, error = None, None
    if is_main_process():
        root = Path(output)
        try:
            if root.exists() and not root.is_dir():
                raise ValueError(f"the output folder {root} (log.output, --output) is a file, not a folder; give a "
                                 f"folder for run folders")
            root.mkdir(parents=True, exist_ok=True)
            for i in range(1, 10000):
                candidate = root / (name if i == 1 else f"{name}-{i}")
                try:
                    candidate.mkdir()
                except FileExistsError:
                    continue
                path = str(candidate)
                break
            if path is None:
                raise ValueError(f"could not create a run folder named {name} in {root}: all names are taken")
        except ValueError as err:
            error = str(err)
        except OSError as err:
            error = (f"cannot create a run folder in {root} ({err.strerror or err}: {err.filename}); choose a folder "
                     f"you can write to with --output (log.output)")
    path, error = broadcast_object((path, error))
    if error:
        raise ValueError(error)
    return Path(path)


class RunDirGuard:
    """Remove a run folder made by this process if the run fails before anything worth keeping is in it.

    >>> with RunDirGuard(run_dir, created=True) as guard:
    ...     ...            # train
    ...     guard.keep()   # after the first checkpoint: from now on the folder stays, whatever happens
    """

    def __init__(self, run_dir: Path, created: bool) -> None:
        self.run_dir = Path(run_dir)
        self.armed = created and is_main_process()

    def keep(self) -> None:
        self.armed = False

    def __enter__(self) -> "RunDirGuard":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and self.armed:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def write_config(path: PathLike, cfg: Mapping[str, Any], resumes: Sequence[Mapping[str, Any]] = ()) -> None:
    """Write a run's resolved recipe as YAML, atomically, with a comment per ``--resume`` that changed fields."""
    import yaml

    lines = [f"# resumed at epoch {r['epoch'] + 1} with changes: {'; '.join(r['changes'])}\n" for r in resumes]
    atomic_write_text(path, "".join(lines) + yaml.safe_dump(dict(cfg), sort_keys=False))


def stopped_note(run_dir: Path, guard: "RunDirGuard", finished: int, unit: str) -> str:
    """The end of the message of a run that stopped on an error: what the run folder keeps and how to go on."""
    if guard.armed:
        return f"; no {unit} had finished, so no run folder was kept"
    return (f"; the run folder keeps its last good checkpoint {run_dir / 'last.pth'} ({unit} {finished}): fix the "
            f"problem, then continue with --resume {run_dir}")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> Dict[str, Any]:
    """This process's global RNG states as tensors and plain numbers (``weights_only``-loadable)."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "algorithm": str(np_state[0]),
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": int(py_version), "internal": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss_next": py_gauss},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Undo :func:`capture_rng_state`: set every global generator back to the captured state."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["algorithm"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resume_rng(states: Sequence[Mapping[str, Any]], info: DistInfo, reseed: int) -> Optional[str]:
    """Restore this rank's generators from a checkpoint's per-rank ``states`` (see :func:`capture_rng_state`).

    When the run now has a different number of processes, seed ``reseed + rank`` instead and return a note
    to print (the data order, which comes from the sampler's seed, is unchanged).
    """
    if len(states) == info.world_size:
        restore_rng_state(states[info.rank])
        return None
    seed_everything(reseed + info.rank)
    return (f"note: the run had {len(states)} processes, now {info.world_size}: random streams restart "
            f"from the seed (the data order is unchanged)")


def resume_path(resume: Union[str, "os.PathLike[str]"]) -> Path:
    """The ``last.pth`` of a run folder given to ``--resume`` (or the file itself).

    Raises:
        FileNotFoundError: neither a run folder with a ``last.pth`` nor a file.
    """
    path = Path(resume)
    if path.is_dir():
        path = path / "last.pth"
        if not path.is_file():
            raise FileNotFoundError(f"nothing to resume in {path.parent}: it has no last.pth (is it a run folder?)")
    elif not path.is_file():
        raise FileNotFoundError(f"--resume {resume}: no such run folder or checkpoint")
    return path


def inference_path(checkpoint: Union[str, "os.PathLike[str]"]) -> Path:
    """The file to evaluate or predict with: a run folder's ``best.pth`` (else ``last.pth``), or the file given.

    Raises:
        FileNotFoundError: no such file, or a folder without either checkpoint.
    """
    path = Path(checkpoint)
    if path.is_dir():
        for name in ("best.pth", "last.pth"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path} is a folder without best.pth or last.pth; give a run folder or a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def read_run_checkpoint(path: Path, task: Any, need_state: bool, state: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A checkpoint of one of our runs of ``task`` (a :class:`~crossformer_vision.train.tasks.Task` class or
    object) from ``path`` (or ``state``, already read from it), checked, with the entries of the first checkpoint
    version renamed: ``round`` (classification called it ``epoch``), ``classes`` (detection/segmentation:
    ``class_names``), and ``best["round"]``.

    Args:
        need_state: It must be a ``last.pth`` (resumable), not a ``best.pth``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable, not ours, of another task, or entries missing; one line naming the file.
    """
    if state is None:
        state = load_state_file(path)
    check_state(state, path, task.checkpoint_format, task.checkpoint_keys)
    saved_task = state["config"].get("task", "classification") if isinstance(state["config"], Mapping) else None
    if saved_task != task.name:
        if saved_task not in _COMMANDS:
            raise ValueError(f"{path} has no valid task in its config: it is damaged or from an incompatible version")
        raise ValueError(f"{path} is a {saved_task} run ({state['config'].get('model', {}).get('arch')}); "
                         f"use `{_COMMANDS[saved_task]}` for it")
    if need_state:
        if "optimizer" not in state:
            raise ValueError(f"{path} holds weights only (a best.pth?); resume from the run's last.pth")
        check_state(state, path, keys=STATE_KEYS)
    state = dict(state)
    state.setdefault("round", state.get("epoch"))
    state.setdefault("classes", state.get("class_names"))
    best = dict(state["best"])
    if "round" not in best:
        best["round"] = best.pop("epoch", None)
    state["best"] = best
    return state
