"""Files that survive crashes: atomic writes, leftovers of killed writers, file-system errors in one line.

:func:`atomic_write_bytes` / :func:`atomic_save` / :func:`atomic_write_text` write a temporary file in the
target's folder, flush and fsync it, then ``os.replace`` it: a reader sees the old file or the new one,
never half of one. Under several processes only rank 0 should call them. A writer killed mid-write (SIGKILL,
power loss) leaves ``.<name>.tmp-<pid>``; :func:`remove_stale_temp_files` deletes those whose process is
gone. :func:`describe_os_error` turns a file-system error into one line with what to do.
"""
import errno
import io
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, List, Mapping, Union

import torch

__all__ = ["PathLike", "atomic_save", "atomic_write_bytes", "atomic_write_text", "describe_os_error",
           "json_ready", "printable_path", "remove_stale_temp_files"]

PathLike = Union[str, "os.PathLike[str]"]


def json_ready(obj: Any) -> Any:
    """``obj`` as strict JSON data: tuples as lists, NaN/inf as None (pycocotools' undefined APs are NaN), numpy and
    torch scalars as numbers, keys as strings; ValueError for anything else."""
    if isinstance(obj, Mapping):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return json_ready(obj.item())
    raise ValueError(f"cannot write {type(obj).__name__} value {str(obj)[:60]!r} as JSON (not JSON data)")


def printable_path(path: PathLike) -> str:
    """``path`` for a one-line message: as it is, or ``ascii()``-escaped when it holds a newline or control character."""
    text = os.fspath(path)
    return text if text.isprintable() else ascii(text)


def describe_os_error(err: OSError) -> str:
    """One line for a file-system error: what failed on which path, and what to do."""
    where = f" {err.filename}" if err.filename else ""
    what = err.strerror or type(err).__name__
    hints = {
        errno.ENOSPC: "free some disk space (files written before are intact), then run again (or --resume a run)",
        errno.EACCES: "choose a folder you can write to (e.g. --output)",
        errno.EPERM: "choose a folder you can write to (e.g. --output)",
        errno.EROFS: "the file system is read-only: choose another folder (e.g. --output)",
        errno.EISDIR: "give a file name, not a folder",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.EEXIST: "a file of that name is in the way",
    }
    hint = hints.get(err.errno or -1)
    return f"{what}:{where}" + (f"; {hint}" if hint else "")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: PathLike, writer: Callable[[io.BufferedWriter], None]) -> None:
    """Write ``path`` through ``writer(file)`` into a temporary file beside it, fsync, then rename over ``path``.

    A crash at any moment leaves either the previous ``path`` or the complete new one (and possibly a
    ``.tmp`` file, which is never read).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:  # best effort: an error here must not hide the one being raised
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_save(obj: Any, path: PathLike) -> None:
    """``torch.save(obj, path)``, atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))


_TEMP_NAME = re.compile(r"^\..+\.tmp-(\d+)$")  # temporary files of atomic_write_bytes: .<name>.tmp-<pid>


def remove_stale_temp_files(folder: PathLike) -> List[Path]:
    """Delete the temporary files that writers killed mid-write (SIGKILL, power loss) left in ``folder``.

    Only files of :func:`atomic_write_bytes` whose process no longer runs are removed; returns them.
    """
    removed = []
    for path in Path(folder).iterdir():
        match = _TEMP_NAME.match(path.name)
        if match is None or not path.is_file() or _process_alive(int(match.group(1))):
            continue
        try:
            path.unlink()
            removed.append(path)
        except OSError:  # another process removed it, or no permission: nothing to do
            pass
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True
