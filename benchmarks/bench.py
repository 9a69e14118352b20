"""Throughput, latency, memory, roofline and matmul replay: the same run as ``crossformer bench``.

    python benchmarks/bench.py                                  # the default comparison, every core
    python benchmarks/bench.py crossformer_small convnext_tiny -b 32 --threads 8 --json out.json --plot out.png
    python benchmarks/bench.py --device cuda --amp bf16 --compile

Options and output: ``python benchmarks/bench.py --help`` and docs/benchmarks.md.
"""
import argparse
import sys
from typing import List, Optional

from crossformer_vision.tools.bench import add_arguments, run_from_args


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_from_args(args)
    except ValueError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
