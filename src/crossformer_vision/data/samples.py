"""Samples that cannot be produced: unreadable files are skipped and counted, every other failure is one line.

* A file that cannot be decoded (damaged, truncated, deleted while training) raises :class:`UnreadableError`;
  :func:`read_sample` replaces it by the next readable sample (training) or leaves it out (evaluation, which
  must not see an image twice), and counts it. :class:`SkipUnreadable` and :class:`CollateSkipped` do that
  for any dataset and collate function.
* Anything else that fails while producing a sample (a transform step, a label out of range) is a
  :class:`DataError` naming the file, also when raised in a DataLoader worker (:func:`data_batches`).
"""
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

from torch.utils.data import Dataset

__all__ = ["MAX_CONSECUTIVE_UNREADABLE", "CollateSkipped", "DataError", "SkipUnreadable", "UnreadableError",
           "apply_transform", "data_batches", "load_or_unreadable", "loader_error", "read_sample"]


class DataError(ValueError):
    """A sample that cannot be produced: the message names the file, the step that failed and what to do.

    Raised in DataLoader worker processes too: PyTorch re-raises it in the main process with the worker's
    traceback as its message; the constructor keeps only the original one-line message.
    """

    def __init__(self, message: str) -> None:
        if message.startswith("Caught ") and "Original Traceback" in message:
            last = message.rstrip().splitlines()[-1]  # "crossformer_vision.data.DataError: <message>"
            message = last.split(": ", 1)[1] if ": " in last else last
        super().__init__(message)


def loader_error(err: BaseException) -> Optional[DataError]:
    """A :class:`DataError` for an exception that a DataLoader worker raised, else None.

    Errors of our datasets already are :class:`DataError`; anything else from a worker (a custom collate,
    a sampler, memory) becomes one line with the worker's last message and how to see the whole traceback.
    """
    if isinstance(err, DataError):
        return err
    text = str(err)
    if not (text.startswith("Caught ") and "in DataLoader worker process" in text):
        return None
    last = text.rstrip().splitlines()[-1].strip()
    return DataError(f"a data loading worker failed: {last[:300]}; run with data.workers=0 (and CROSSFORMER_DEBUG=1) "
                     f"to see where")


def data_batches(loader: Iterable[Any]) -> Iterator[Any]:
    """The batches of ``loader``; an error raised in one of its worker processes becomes one :class:`DataError`."""
    try:
        yield from loader
    except Exception as err:
        data_error = loader_error(err)
        if data_error is None:
            raise
        raise data_error from None


class UnreadableError(ValueError):
    """The file of a sample cannot be decoded (damaged, truncated, vanished); :func:`read_sample` skips it."""

    def __init__(self, path: Any, error: BaseException) -> None:
        detail = " ".join(str(error).split())[:200]
        super().__init__(f"{path}: {type(error).__name__}: {detail}")
        self.path = path


def load_or_unreadable(path: Path, load: Callable[[Path], Any]) -> Any:
    """``load(path)``; a decoding failure becomes :class:`~crossformer_vision.data.UnreadableError` (skipped and counted)."""
    try:
        return load(path)
    except Exception as err:  # decoders raise OSError, ValueError, SyntaxError, struct.error...
        raise UnreadableError(path, err) from None


#: Consecutive unreadable samples after which :func:`read_sample` gives up (the data has gone, not one file).
MAX_CONSECUTIVE_UNREADABLE = 100


def read_sample(load: Callable[[int], Any], index: int, length: int, replace: bool) -> Tuple[Any, int]:
    """``(load(index), 0)``, or when its file is unreadable (:class:`UnreadableError`) ``(load(next readable), 1)``
    with ``replace``, else ``(None, 1)``. The first failure of each sample is warned about once.

    Raises:
        DataError: :data:`MAX_CONSECUTIVE_UNREADABLE` samples in a row are unreadable.
    """
    for offset in range(min(length, MAX_CONSECUTIVE_UNREADABLE)):
        try:
            return load((index + offset) % length), int(offset > 0)
        except UnreadableError as err:
            if offset == 0:
                # one line (no source line of the DataLoader under it), every time: the epoch's count follows
                warnings.warn_explicit(f"skipping unreadable image {err}", UserWarning, "crossformer-vision", 0)
            if not replace:
                return None, 1
    raise DataError(f"{min(length, MAX_CONSECUTIVE_UNREADABLE)} samples in a row could not be read, from sample "
                    f"{index}: has the dataset moved or its disk gone? Check the data path and the files")


class SkipUnreadable(Dataset):
    """``dataset`` whose items are ``(sample, skipped)``: a sample whose file is unreadable is replaced by the
    next readable one (``replace=True``, for training) or is None (``replace=False``, for evaluation, which
    must not see an image twice); ``skipped`` is 1 then. Pair with :class:`CollateSkipped`."""

    def __init__(self, dataset: Dataset, replace: bool) -> None:
        self.dataset, self.replace = dataset, replace

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        return read_sample(self.dataset.__getitem__, index, len(self.dataset), self.replace)

    def __getattr__(self, name: str) -> Any:  # the wrapped dataset's attributes (num_classes, coco, ...)
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


class CollateSkipped:
    """Collate ``(sample, skipped)`` items with ``collate`` into ``(batch or None, skipped total)``."""

    def __init__(self, collate: Callable[[List[Any]], Any]) -> None:
        self.collate = collate

    def __call__(self, items: Sequence[Tuple[Any, int]]) -> Tuple[Any, int]:
        samples = [sample for sample, _ in items if sample is not None]
        return (self.collate(samples) if samples else None), int(sum(skipped for _, skipped in items))


def apply_transform(transform: Optional[Callable], path: Any, *inputs: Any) -> Any:
    """``transform(*inputs)`` for the sample of file ``path``; a failure becomes a :class:`DataError` naming the file
    (a :class:`~crossformer_vision.data.augment.TransformError` already names the step and its recipe field).
    No transform: ``inputs`` (one: itself)."""
    if transform is None:
        return inputs[0] if len(inputs) == 1 else inputs
    try:
        return transform(*inputs)
    except Exception as err:
        if getattr(err, "step", None):  # the factory's TransformError: "step X failed (...); set by field"
            raise DataError(f"cannot use image {path}: {err}") from None
        detail = " ".join(str(err).split())[:300]
        raise DataError(f"cannot use image {path}: its transform failed ({type(err).__name__}: {detail})") from None
