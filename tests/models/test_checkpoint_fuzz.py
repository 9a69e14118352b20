"""Fuzzed checkpoint files: whatever the bytes, reading gives the data or one CheckpointError line naming the file.

Never a raw exception (KeyError, struct.error, MemoryError...); "could run arbitrary code" only for pickles
that really ask for code, never for random bytes; no file makes a reader allocate gigabytes.
"""
import contextlib
import io
import os
import pickle
import random
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pytest
import torch

import crossformer_vision as cv
from crossformer_vision import cli
from crossformer_vision.trainer import load_for_inference
from crossformer_vision.weights import CheckpointError, load_checkpoint_file, unwrap_state_dict

UNSAFE = "could run arbitrary code"
SEED = 1234


def _small_model() -> torch.nn.Module:
    return cv.CrossFormer(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), group_size=(4, 4, 2, 1),
                          crs_interval=(2, 1, 1, 1), merge_size=((2, 4), (2, 4), (2, 4)), patch_size=(4, 8, 16, 32),
                          num_classes=10)


def _saved(obj, zip_format: bool = True) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=zip_format)
    return buf.getvalue()


def _safetensors_bytes() -> bytes:
    from safetensors.torch import save

    return save({"w": torch.ones(3)})


def _with_member(archive: bytes, name: str, data: bytes, compress: int = zipfile.ZIP_STORED) -> bytes:
    """``archive`` (a zip) with the member ending in ``name`` replaced by ``data``."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename.endswith(name):
                dst.writestr(info.filename, data, compress_type=compress)
            else:
                dst.writestr(info, src.read(info))
    return out.getvalue()


class _System:
    """Pickles to a call of os.system that would create ``marker``: refused, and observable if it ever ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _huge_allocations() -> List[Tuple[str, bytes]]:
    """Tiny pickles whose opcodes ask for gigabytes (memo index, bytes/bytearray sizes, bytearray(n))."""
    memo = b"r" + struct.pack("<I", 0xFFFFFFF0)  # LONG_BINPUT: the C unpickler sizes (and zeroes) its memo to 2x this
    bytearray_call = b"\x80\x02c__builtin__\nbytearray\n\x8a\x05" + (1 << 34).to_bytes(5, "little") + b"\x85R."
    return [
        ("memo-index-proto4.pth", b"\x80\x04N" + memo + b"."),
        ("memo-index-after-config.pth", b"\x80\x02N" + memo + b"cyacs.config\nCfgNode\n."),
        ("binbytes8-1tib.pth", b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"xx."),
        ("bytearray8-16gib.pth", b"\x80\x05\x96" + struct.pack("<Q", 1 << 34) + b"xx."),
        ("bytearray-of-16gib.pth", bytearray_call),
        ("bytearray-of-16gib-in-zip.pth", _with_member(_saved({"w": torch.ones(1)}), "data.pkl", bytearray_call)),
        ("bytearray-of-16gib-deflated.pth",
         _with_member(_saved({"w": torch.ones(1)}), "data.pkl", bytearray_call, zipfile.ZIP_DEFLATED)),
    ]


def _corpus(marker: Path) -> List[Tuple[str, bytes, str]]:
    """About 300 (name, content, kind) files, the same on every run."""
    rng = random.Random(SEED)

    def noise(n: int) -> bytes:
        return bytes(rng.getrandbits(8) for _ in range(n))

    files = [(f"random-{n:02d}.pth", noise(n), "random") for n in range(65)]
    files += [(f"random-more-{i:02d}.pth", noise(rng.randrange(1, 65)), "random") for i in range(35)]
    files += [("hello.pth", b"hello", "random"), ("lone-0x80.pth", b"\x80", "random"), ("zeros.pth", bytes(4096), "random")]
    files += [(f"0x80-random-{i:02d}.pth", b"\x80" + noise(rng.randrange(1, 48)), "random") for i in range(25)]
    files += [(f"proto2-garbage-{i:02d}.pth", b"\x80\x02" + noise(rng.randrange(1, 48)), "random") for i in range(25)]
    for fmt, zip_format in (("zip", True), ("legacy", False)):
        good = _saved({"model": {"w": torch.ones(3)}}, zip_format)
        files.append((f"{fmt}-intact.pth", good, "intact"))
        for cut in sorted(set([1, 2, 3, 4, len(good) - 1] + rng.sample(range(5, len(good) - 1), 20))):
            files.append((f"{fmt}-truncated-at-{cut}.pth", good[:cut], "truncated"))
        for i in range(30):
            at = rng.randrange(len(good))
            flipped = bytearray(good)
            flipped[at] ^= 1 << rng.randrange(8)
            files.append((f"{fmt}-flip-{i:02d}-at-{at}.pth", bytes(flipped), "flipped"))
    tensors = _safetensors_bytes()
    files.append(("intact.safetensors", tensors, "intact"))
    files.append(("safetensors-content.pth", tensors, "intact"))
    files += [(f"random-{i:02d}.safetensors", noise(rng.randrange(1, 65)), "safetensors") for i in range(5)]
    files += [(f"truncated-at-{cut}.safetensors", tensors[:cut], "safetensors")
              for cut in sorted(rng.sample(range(1, len(tensors)), 8))]
    for i in range(8):
        at = rng.randrange(len(tensors))
        flipped = bytearray(tensors)
        flipped[at] ^= 1 << rng.randrange(8)
        files.append((f"flip-{i}-at-{at}.safetensors", bytes(flipped), "flipped"))
    payload = _System(marker)
    files += [(f"os-system-protocol-{p}.pth", pickle.dumps(payload, protocol=p), "unsafe") for p in (0, 2, 4)]
    files.append(("os-system-in-zip.pth", _saved({"model": {"w": torch.ones(3)}, "extra": payload}), "unsafe"))
    files.append(("os-system-legacy.pth", _saved({"model": {"w": torch.ones(3)}, "extra": payload}, False), "unsafe"))
    files += [(name, data, "huge") for name, data in _huge_allocations()]
    return files


def _vm_size() -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError):
        return None


@contextlib.contextmanager
def _memory_cap(extra: int = 1 << 30):
    """Cap this process's address space ``extra`` bytes above its current size (Linux), so that a reader that
    tries to allocate gigabytes fails at once instead of taking the machine's memory."""
    try:
        import resource
    except ImportError:
        resource = None
    vm = _vm_size()
    if resource is None or vm is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = vm + extra if hard == resource.RLIM_INFINITY else min(vm + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _error_of(call: Callable[[], object], path: Path) -> Optional[str]:
    """None if ``call()`` returns; else its CheckpointError/ValueError message, checked to be one line naming ``path``."""
    try:
        call()
    except ValueError as err:  # CheckpointError is a ValueError
        message = str(err)
    except BaseException as err:  # noqa: BLE001 - the point of the test: nothing else may escape
        pytest.fail(f"{path.name}: {type(err).__name__} escaped: {err!r}"[:500])
    else:
        return None
    assert "\n" not in message and "\r" not in message, f"{path.name}: message of several lines: {message!r}"
    assert path.name in message, f"{path.name}: message does not name the file: {message}"
    return message


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Tuple[List[Tuple[Path, str]], Path]:
    folder = tmp_path_factory.mktemp("fuzz")
    marker = folder / "os-system-ran"
    files = []
    for name, data, kind in _corpus(marker):
        path = folder / name
        path.write_bytes(data)
        files.append((path, kind))
    return files, marker


def test_every_fuzzed_file_loads_or_gives_one_clear_line(corpus):
    files, marker = corpus
    assert 280 <= len(files) <= 340
    model = _small_model()
    outcomes: Dict[str, List[str]] = {}
    with _memory_cap():
        for i, (path, kind) in enumerate(files):
            first = _error_of(lambda: load_checkpoint_file(path), path)
            into_model = _error_of(lambda: cv.load_official_checkpoint(model, path), path)
            messages = [first, into_model]
            if i % 6 == 0 or kind in ("intact", "unsafe", "huge"):
                messages.append(_error_of(lambda: load_for_inference(path, model_name="crossformer_tiny"), path))
            errors = [m for m in messages if m is not None]
            if first is not None:
                assert into_model is not None
            outcomes.setdefault(kind, []).append(first or "loaded")
            if kind in ("random", "safetensors", "truncated"):
                assert first is not None and not any(UNSAFE in m for m in errors), f"{path.name}: {errors}"
            if kind == "unsafe":
                assert len(errors) == len(messages) and all(UNSAFE in m for m in errors), f"{path.name}: {errors}"
            if kind == "huge":
                assert first is not None
                if not path.name.startswith(("binbytes8", "bytearray8")):  # those sizes are only reserved, never
                    assert "MemoryError" not in first, first  # written: else memory is zero-filled up front
            if kind == "intact":
                assert first is None
                assert torch.equal(unwrap_state_dict(load_checkpoint_file(path))["w"], torch.ones(3))
                assert "has no classifier head" in messages[-1]  # loaded, then found to be no classifier
            if kind == "truncated" and path.name.endswith(".pth") and int(path.stem.rsplit("-", 1)[1]) >= 4:
                assert "truncated or corrupt" in first, first
            if kind == "safetensors":
                assert "could not read safetensors file" in first, first
    assert not marker.exists()
    random_messages = outcomes["random"]
    assert any("not a PyTorch or safetensors checkpoint" in m for m in random_messages)
    assert any("truncated or corrupt" in m for m in random_messages)
    assert any(m == "loaded" for m in outcomes["flipped"])  # flips in tensor data or padding go unnoticed
    assert any(m != "loaded" for m in outcomes["flipped"])


def test_refused_pickle_names_the_global(corpus):
    files, _ = corpus
    path = next(p for p, kind in files if p.name == "os-system-protocol-2.pth")
    with pytest.raises(CheckpointError, match=r"refusing to load .*os-system-protocol-2\.pth.*'posix\.system'"):
        load_checkpoint_file(path)


def test_zip_that_would_inflate_hugely_is_refused_before_reading(tmp_path):
    """torch reads deflated members too: 100 MiB of zeros in a 100 KiB file would be inflated into memory."""
    saved = _saved({"model": {"w": torch.zeros(100 << 20, dtype=torch.uint8)}})
    path = tmp_path / "zip-bomb.pth"
    with zipfile.ZipFile(io.BytesIO(saved)) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            with src.open(info) as member_in, dst.open(info.filename, "w") as member_out:
                while chunk := member_in.read(1 << 22):
                    member_out.write(chunk)
    del saved
    assert path.stat().st_size < 1 << 20
    with pytest.raises(CheckpointError, match=r"zip-bomb\.pth: .*would inflate to 10485\d+ bytes"):
        load_checkpoint_file(path)


def _torchscript() -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.save is deprecated, yet such files exist
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), buf)
    return buf.getvalue()


def _tar() -> bytes:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("storages")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"K\x00"))
    return buf.getvalue()


def _zip_without_pickle() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("arr_0.npy", b"\x93NUMPY")
    return buf.getvalue()


@pytest.mark.parametrize("make,expected", [
    (_torchscript, "it is a TorchScript archive, not a checkpoint"),  # torch.load would hand it to torch.jit.load
    (_tar, "legacy .tar format"),
    (_zip_without_pickle, "zip archive but not a PyTorch checkpoint (no data.pkl"),
])
def test_files_torch_load_would_not_unpickle_are_refused_by_name(tmp_path, make, expected):
    path = tmp_path / f"{make.__name__.strip('_')}.pth"
    path.write_bytes(make())
    for call in (lambda: load_checkpoint_file(path), lambda: cv.load_official_checkpoint(_small_model(), path)):
        message = _error_of(call, path)
        assert message is not None and expected in message, message


@pytest.mark.parametrize("name,content,expected", [
    ("not-a-checkpoint.pth", b"hello", "is not a PyTorch or safetensors checkpoint"),
    ("half.pth", _saved({"model": {"w": torch.ones(3)}})[:300], "truncated or corrupt"),
    ("code.pth", pickle.dumps(_System(Path("/nonexistent/marker")), protocol=2), UNSAFE),
])
def test_eval_command_prints_one_line(tmp_path, capsys, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    assert cli.main(["eval", str(path), "--model", "crossformer_tiny"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("crossformer eval: error: ") and name in err and expected in err, err
