"""The ``crossformer`` command.

Subcommands are the modules of this package: every one that defines ``register(subparsers)`` adds its
commands (``info``, ``train``, ``eval``, ``detect``/``segment`` from :mod:`.dense`...). The handler a module registers is
called with the parsed arguments and returns an exit status.

Bad input (``ValueError``/``TypeError``, unreadable checkpoints, data errors raised in DataLoader workers,
file-system errors such as a read-only folder or a full disk) ends the command with one line on stderr and
exit status 2, never a traceback; ``CROSSFORMER_DEBUG=1`` shows the traceback. SIGTERM stops a command
like Ctrl-C (exit status 143): run folders without a finished epoch and temporary files are removed.
``section.field=value`` recipe overrides may come anywhere on the command line.
"""
import argparse
import importlib
import os
import pkgutil
import re
import signal
import sys
import threading
from typing import Any, List, Optional

from .. import __version__
from ..utils.files import describe_os_error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crossformer",
        description="CrossFormer and CrossFormer++: train, evaluate, predict, inspect, benchmark, export, convert "
        "official weights.",
    )
    parser.add_argument("--version", action="version", version=f"crossformer-vision {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):  # __main__ runs the command when imported
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


#: A ``section.field=value`` recipe override (accepted anywhere on the command line of commands that take them).
_OVERRIDE = re.compile(r"^[A-Za-z_][\w-]*\.[\w.-]+=")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every cleanup (run folders, temporary files) runs the same way."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def _split_overrides(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: List[str]) -> None:
    """Move ``section.field=value`` items that argparse could not place (after a flag) into ``args.overrides``."""
    overrides = [item for item in extra if _OVERRIDE.match(item)]
    unknown = [item for item in extra if not _OVERRIDE.match(item)]
    if overrides and isinstance(getattr(args, "overrides", None), list):
        args.overrides.extend(overrides)
    else:
        unknown = extra
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    _split_overrides(parser, args, extra)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.handler(args) or 0)
    except (ValueError, TypeError, OSError) as err:
        if os.environ.get("CROSSFORMER_DEBUG"):
            raise
        if isinstance(err, BrokenPipeError):  # output piped into `head` and the like
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        text = str(err) if isinstance(err, (ValueError, TypeError, FileNotFoundError)) else describe_os_error(err)
        print(f"crossformer {args.command}: error: {' '.join(text.split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated)
        print(f"crossformer {args.command}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
