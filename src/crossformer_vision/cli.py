"""The ``crossformer`` command.

Subcommands live in :mod:`crossformer_vision.commands`: every module there that defines
``register(subparsers)`` adds one (``info``, ``train``, ``eval``...). The handler a module registers is
called with the parsed arguments and returns an exit status.

Bad input (``ValueError``/``TypeError``, unreadable checkpoints) ends the command with one line on
stderr and exit status 2, never a traceback; ``CROSSFORMER_DEBUG=1`` shows the traceback.
"""
import argparse
import importlib
import os
import pkgutil
import sys
from typing import List, Optional

from . import __version__, commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crossformer",
        description="CrossFormer and CrossFormer++: train, evaluate, predict, inspect, benchmark, export.",
    )
    parser.add_argument("--version", action="version", version=f"crossformer-vision {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as err:
        if os.environ.get("CROSSFORMER_DEBUG"):
            raise
        print(f"crossformer {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"crossformer {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
