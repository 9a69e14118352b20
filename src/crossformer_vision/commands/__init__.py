"""Subcommands of the ``crossformer`` command: each module defines ``register(subparsers)``."""
